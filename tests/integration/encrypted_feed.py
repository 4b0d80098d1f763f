"""Encrypted channels on real Spark, real TF nodes, run by ``test_encryption.py`` in a pytest
process of its own whose SparkContext has Spark's RPC encryption on
(``spark.authenticate`` + ``spark.network.crypto.enabled``): sparktf must turn TLS on by
itself, without ``encrypt=True``.

A TCP relay that the test puts between the feeding tasks and the nodes' feed
servers, and between the nodes and the driver's control server, keeps every
byte that crosses.  The fed rows carry a known byte pattern, the inference
results echo it and the node prints it to its log (which reaches the driver over
the control channel); the pattern must reach the nodes and come back intact,
yet never cross either relay in clear.  (``tests/unit/test_tls.py`` shows the
same kind of tap finding the pattern on a clear channel, and which Spark settings
turn encryption on.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os
import socket
import stat
import threading

import numpy as np
import pytest
from pyspark import cloudpickle

import tlsfuns
from conftest import wait_no_sparktf_processes
from sparktf import TFCluster
from sparktf.driver import attempt as attemptmod
from sparktf.driver import feeding
from sparktf.wire import MAGIC, NONCE_BYTES

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(tlsfuns)

PATTERN = b"sparktf:clear-text-marker:0123456789ABCD"  # 40 bytes: 10 float32, none NaN
MARKER = np.frombuffer(PATTERN, dtype=np.float32)
ROWS, PARTITIONS = 2000, 4


class Relay:
    """A TCP relay in front of ``target`` that keeps every byte it forwards, both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = (target[0], target[1])
        self.listener = socket.create_server((target[0], 0))
        self.address = self.listener.getsockname()[:2]
        self.up = bytearray()  # client -> server
        self.down = bytearray()  # server -> client
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            with self._lock:
                self._socks += [client, server]
            for src, dst, buf in ((client, server, self.up), (server, client, self.down)):
                t = threading.Thread(target=self._pump, args=(src, dst, buf), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    buf += data
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def seen(self, data: bytes) -> bool:
        with self._lock:
            return data in self.up or data in self.down

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)  # close() alone wakes no blocked recv
                s.close()
        for t in self._threads:
            t.join(10)
        assert not any(t.is_alive() for t in self._threads)


def rows(sc):
    """(x float32[2], marker float32[10], y) with y = 3 x0 - 2 x1 + 1."""
    def part(p, _):
        rng = np.random.default_rng(p)
        x = rng.uniform(-1, 1, size=(ROWS // PARTITIONS, 2)).astype(np.float32)
        return [(xi, MARKER.copy(), float(3 * xi[0] - 2 * xi[1] + 1)) for xi in x]
    return sc.parallelize(range(PARTITIONS), PARTITIONS).mapPartitionsWithIndex(part)


def plain_client_is_dropped(address) -> int:
    """Connect without TLS, say a sparktf hello; return our port once the server hung up."""
    sock = socket.create_connection(tuple(address), timeout=10)
    try:
        sock.sendall(MAGIC + bytes(NONCE_BYTES))
        while sock.recv(4096):  # EOF (or a reset) within the timeout, else socket.timeout
            pass
    except ConnectionResetError:
        pass
    finally:
        port = sock.getsockname()[1]
        sock.close()
    return port


def test_spark_encryption_hides_rows_from_the_wire(sc, tmp_path, monkeypatch, caplog,
                                                 no_leftovers):
    relays: list[Relay] = []
    plan = attemptmod.Attempt._plan
    targets = feeding._feed_targets

    def relayed_plan(self, ps_socks):  # nodes reach the control server through a relay
        relays.append(Relay(self.control.address))
        return dataclasses.replace(plan(self, ps_socks), control=relays[-1].address)

    def relayed_targets(attempt, nodes):  # feeders reach each node through a relay
        out = targets(attempt, nodes)
        for t in out:
            relays.append(Relay(t["feed"]))
            t["feed"] = list(relays[-1].address)
        return out

    monkeypatch.setattr(attemptmod.Attempt, "_plan", relayed_plan)
    monkeypatch.setattr(feeding, "_feed_targets", relayed_targets)
    caplog.set_level(logging.INFO, logger="sparktf")
    out, nodes_dir = tmp_path / "out", tmp_path / "nodes"
    out.mkdir()
    args = {"out": str(out), "batch_size": 50, "epochs": 3}
    cluster = TFCluster.run(sc, tlsfuns.train_then_infer, args, 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120,
                            node_dir=str(nodes_dir))
    try:
        assert sc.getConf().get("spark.network.crypto.enabled") == "true"
        assert ("TLS 1.3 on the control and feed channels "
                "(spark.network.crypto.enabled is true)") in caplog.text, caplog.text
        data = rows(sc)
        cluster.train(data, num_epochs=args["epochs"])

        # Clients without TLS are dropped and logged; the cluster carries on.
        port = plain_client_is_dropped(cluster.control_address)
        assert any(r.levelno == logging.WARNING and f":{port}: TLS handshake" in r.getMessage()
                   for r in caplog.records), caplog.text
        node = cluster.nodes[0]
        port = plain_client_is_dropped(node.feed)
        log = cluster.logs(node.role.name, lines=200)
        assert f":{port} dropped: TLS handshake" in log, log

        results = cluster.inference(data).collect()
        assert len(results) == ROWS
        truth = data.map(lambda r: r[2]).collect()
        predictions = np.array([r[0] for r in results])
        assert np.abs(predictions - np.array(truth)).max() < 0.05
        assert all(np.asarray(r[1:], dtype=np.float32).tobytes() == PATTERN for r in results)
        log = cluster.logs(node.role.name, lines=200)
        assert "marker text: " + PATTERN.decode() in log  # crossed the control relay

        # On disk: the key only in the nodes' private spec files; no fed bytes (but in
        # node.log, map_fun's own stdout, which printed the marker).
        specs = glob.glob(str(nodes_dir / "*" / "node-*" / "spec.json"))
        assert len(specs) == 2
        for path in specs:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
            assert "PRIVATE KEY" in json.load(open(path))["tls_key"]
        for path in glob.glob(str(nodes_dir / "**"), recursive=True):
            if os.path.isfile(path) and os.path.basename(path) != "node.log":
                assert PATTERN[:16] not in open(path, "rb").read(), path
    finally:
        cluster.shutdown()
        for relay in relays:
            relay.close()

    fits = [json.load(open(p)) for p in sorted(glob.glob(str(out / "fit-*.json")))]
    assert len(fits) == 2
    for fit in fits:
        assert np.allclose(fit["kernel"], [3, -2], atol=0.05) and abs(fit["bias"] - 1) < 0.05
    assert not wait_no_sparktf_processes()  # each supervisor removes its node's directory
    assert not glob.glob(str(nodes_dir / "*" / "node-*"))  # before it exits
    # Every relay carried its channel's traffic, and none of it in clear.
    fed, echoed = ROWS * args["epochs"] * len(PATTERN), ROWS * len(PATTERN)
    assert sum(len(r.up) for r in relays) > fed and sum(len(r.down) for r in relays) > echoed
    assert len(relays) > 2 and all(r.up and r.down for r in relays)
    for relay in relays:
        assert not relay.seen(PATTERN[:16]) and not relay.seen(MAGIC)
