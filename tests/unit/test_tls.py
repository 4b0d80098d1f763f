"""sparktf.tls: TLS 1.3 under the authenticated framing, pinned to the cluster's certificate.

Real sockets on 127.0.0.1 and real OpenSSL; nothing is mocked.  The Spark
settings that turn encryption on are read from a real ``SparkConf`` (no JVM
needed to build one).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import stat
import threading

import pyarrow as pa
import pytest
from pyspark import SparkConf

from sparktf import tls
from sparktf.control import ControlClient, ControlServer
from sparktf.errors import ConfigError, ProtocolError
from sparktf.feed.receiver import FeedServer, Item
from sparktf.feed.sender import feed_train
from sparktf.protocol import NodeSpec
from sparktf.wire import MAGIC, NONCE_BYTES, Channel, connect, new_secret

HOST = "127.0.0.1"
IDENTITY = tls.new_identity()
SECRET = new_secret()
PATTERN = b"sparktf:clear-text-marker:0123456789ABCDEF"


class Tap:
    """A socket that keeps a copy of every byte that crosses it, both ways."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.wire = bytearray()

    def sendall(self, data) -> None:
        self.wire += bytes(data)
        self._sock.sendall(data)

    def recv(self, n: int) -> bytes:
        data = self._sock.recv(n)
        self.wire += data
        return data

    def recv_into(self, buf, n: int = 0) -> int:
        k = self._sock.recv_into(buf, n)
        self.wire += bytes(memoryview(buf)[:k])
        return k

    def __getattr__(self, name):
        return getattr(self._sock, name)


def pair(client_tls, server_tls, secret=SECRET, tap: bool = False):
    """A connected (client, server) Channel pair over TCP that exchanged a hello; the
    client's raw socket tapped."""
    listener = socket.create_server((HOST, 0))
    out: dict = {}

    def accept() -> None:
        sock, _ = listener.accept()
        try:
            out["server"] = Channel.server(sock, secret, tls=server_tls)
        except Exception as e:  # reported to the test
            out["error"] = e
            sock.close()

    t = threading.Thread(target=accept)
    t.start()
    raw = socket.create_connection(listener.getsockname(), timeout=10)
    sock = Tap(raw) if tap else raw
    try:
        client = Channel.client(sock, secret, tls=client_tls)
    finally:
        t.join()
        listener.close()
    if "error" in out:
        raise out["error"]
    client.send({"type": "hello"})  # the first frame each way carries no payload
    assert out["server"].recv() == ({"type": "hello"}, bytearray())
    out["server"].send({"type": "ok"})
    assert client.recv() == ({"type": "ok"}, bytearray())
    return client, out["server"], sock


def test_frames_cross_encrypted_and_authenticated():
    client, server, tapped = pair(IDENTITY.client(), IDENTITY.server(), tap=True)
    payload = PATTERN * 50_000  # 2 MB: many TLS records, a partial last one
    t = threading.Thread(target=client.send, args=({"type": "batch", "note": PATTERN.decode()},
                                                   payload))
    t.start()
    header, got = server.recv()
    t.join()
    assert header == {"type": "batch", "note": PATTERN.decode()} and got == payload
    server.send({"type": "results"}, PATTERN * 10)
    assert client.recv() == ({"type": "results"}, bytearray(PATTERN * 10))
    assert len(tapped.wire) > len(payload)  # everything crossed this socket...
    assert PATTERN[:16] not in tapped.wire  # ...and none of it in clear
    assert MAGIC not in tapped.wire  # the sparktf handshake runs inside TLS
    client.close()
    server.close()


def test_a_payload_in_parts_crosses_tls_whole():
    client, server, _ = pair(IDENTITY.client(), IDENTITY.server())
    parts = [PATTERN, pa.py_buffer(PATTERN * 3000), b"", PATTERN * 2]
    t = threading.Thread(target=client.send, args=({"type": "batch"}, parts), daemon=True)
    t.start()
    assert server.recv() == ({"type": "batch"}, bytearray(PATTERN * 3003))
    t.join(10)
    assert not t.is_alive()
    client.close()
    server.close()


def test_the_tap_sees_the_pattern_without_tls():
    """The check above can fail: over a clear channel the same tap finds the pattern."""
    client, server, tapped = pair(None, None, tap=True)
    client.send({"type": "batch"}, PATTERN)
    assert server.recv()[1] == PATTERN
    assert PATTERN in tapped.wire
    client.close()
    server.close()


def test_only_tls_13_is_spoken():
    client, server, _ = pair(IDENTITY.client(), IDENTITY.server())
    assert client.sock._obj.version() == "TLSv1.3" == server.sock._obj.version()
    client.close()
    server.close()
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    legacy = tls.ClientTLS(IDENTITY.cert_pem)
    legacy.context = old
    with pytest.raises((ProtocolError, OSError)):
        pair(legacy, IDENTITY.server())


def test_a_server_with_another_certificate_is_refused():
    """The client trusts the pinned certificate only: not another cluster's, not a CA's."""
    other = tls.new_identity()
    with pytest.raises(ProtocolError, match="TLS handshake .* failed .*certificate"):
        pair(IDENTITY.client(), other.server())


def test_a_client_without_tls_is_dropped_by_a_tls_server():
    with pytest.raises((ProtocolError, EOFError, OSError)):
        pair(None, IDENTITY.server())


def test_concurrent_send_and_receive_on_one_connection():
    """A control channel reads in one thread and sends in another (OpenSSL forbids that on
    one SSL object; TLSSocket serialises the SSL work, never the socket waits)."""
    client, server, _ = pair(IDENTITY.client(), IDENTITY.server())
    n = 2000
    got: list[int] = []

    def echo() -> None:  # the server answers each frame from its reading thread
        for _ in range(n):
            header, _ = server.recv()
            server.send({"echo": header["i"]})

    def read() -> None:
        for _ in range(n):
            got.append(client.recv()[0]["echo"])

    threads = [threading.Thread(target=echo), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for i in range(n):  # the main thread sends while `read` receives
        client.send({"i": i}, os.urandom(i % 7 * 1000))
    for t in threads:
        t.join(30)
    assert got == list(range(n))
    client.close()
    server.close()


def test_servers_drop_and_log_clear_clients_and_serve_tls_ones(caplog):
    caplog.set_level(logging.DEBUG, logger="sparktf")

    class NoControl:
        def send(self, msg: dict) -> None:
            pass

    control = ControlServer(HOST, SECRET, 2, status=lambda: {"error": ""},
                            tls=IDENTITY.server())
    feed = FeedServer(HOST, SECRET, NoControl(), tls=IDENTITY.server())
    try:
        for address in (control.address, feed.address):
            plain = socket.create_connection(address, timeout=10)
            plain.sendall(MAGIC + bytes(NONCE_BYTES))  # a sparktf client without TLS
            while plain.recv(4096):  # perhaps an alert, then EOF: dropped
                pass
            port = plain.getsockname()[1]
            plain.close()
            # A channel without TLS fails on the client side too (it reads an alert).
            with pytest.raises((ProtocolError, EOFError, OSError)):
                connect(address, SECRET, timeout=10).send({"type": "hello"})
            assert any(r.levelno == logging.WARNING and f":{port}" in r.getMessage()
                       and "TLS handshake" in r.getMessage() for r in caplog.records), \
                caplog.text
        # Legitimate TLS clients are served.
        events = []
        client = ControlClient(control.address, SECRET, 1, "node", events.append,
                               lambda: None, tls=IDENTITY.client())
        client.send({"type": "ready", "pid": 7})
        assert control.events.get(timeout=10) == (1, "node", {"type": "ready", "pid": 7})
        client._chan.sock.shutdown(socket.SHUT_RDWR)
        client.close()
        node = {"name": "n:0", "node": 0, "feed": list(feed.address),
                "control": list(control.address), "tls": IDENTITY.cert_pem}
        batch = pa.RecordBatch.from_pydict({"x": [1, 2, 3]})
        assert feed_train(0, [batch], [node], SECRET, 0, 1, 10, True) == {0: 3}
        while not isinstance(item := feed.buffer.get(), Item):
            pass
        assert item.batch.column(0).to_pylist() == [1, 2, 3]
    finally:
        control.close()
        feed.close()
        feed.buffer.close()
    assert IDENTITY.key_pem not in caplog.text


@pytest.mark.parametrize("setting", tls.SPARK_SETTINGS)
def test_spark_encryption_settings_turn_tls_on(setting, caplog):
    conf = SparkConf(loadDefaults=False).set(setting, "true")
    assert tls.spark_settings_on(conf) == [setting]
    assert isinstance(tls.for_cluster(None, conf), tls.Identity)
    assert isinstance(tls.for_cluster(True, conf), tls.Identity)
    caplog.set_level(logging.WARNING, logger="sparktf")
    assert tls.for_cluster(False, conf) is None
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and setting in warning[0] and "encrypt=False" in warning[0]


def test_no_spark_encryption_means_clear_unless_asked(caplog):
    conf = SparkConf(loadDefaults=False).set("spark.network.crypto.enabled", "false") \
        .set("spark.ssl.enabled", "False")
    caplog.set_level(logging.WARNING, logger="sparktf")
    assert tls.spark_settings_on(conf) == []
    assert tls.for_cluster(None, conf) is None
    assert tls.for_cluster(False, conf) is None
    assert isinstance(tls.for_cluster(True, conf), tls.Identity)
    assert not caplog.records
    for bad in (1, "yes", 0):
        with pytest.raises(ConfigError, match="encrypt must be"):
            tls.for_cluster(bad, conf)


def test_the_certificate_is_its_own_pinned_anchor():
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(IDENTITY.cert_pem.encode())
    assert cert.subject == cert.issuer
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "key_pem" not in repr(IDENTITY) and IDENTITY.key_pem[40:80] not in repr(IDENTITY)
    assert tls.client(None) is None and tls.identity(IDENTITY.cert_pem, None) is None


def test_the_key_file_is_private_and_gone_after_loading(monkeypatch, tmp_path):
    """load_cert_chain reads a file: an in-memory one, or (without memfd) a 0600 file in a
    0700 directory, removed once the key is loaded."""
    with tls._private_file("data") as path:
        assert path.startswith("/proc/self/fd/")
        assert open(path).read() == "data"
    monkeypatch.setattr(tls.tempfile, "tempdir", str(tmp_path))
    monkeypatch.delattr(tls.os, "memfd_create")
    with tls._private_file(IDENTITY.cert_pem + IDENTITY.key_pem) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(path)
    assert os.listdir(tmp_path) == []
    tls.ServerTLS(IDENTITY.cert_pem, IDENTITY.key_pem)  # loads through the fallback too
    assert os.listdir(tmp_path) == []


def test_the_node_spec_carries_the_key_in_its_private_file(tmp_path):
    fields = dict(node=0, job="worker", index=0, host=HOST, tf_port=1, executor="0",
                  cluster_spec={}, tf_config="{}", num_workers=1, input_mode=1,
                  release_port=True, control=(HOST, 1), secret=SECRET.hex(), env={},
                  default_fs="file:///", working_dir=str(tmp_path), node_dir=str(tmp_path),
                  detach=False, attempt=0, tensorboard=False, log_dir=str(tmp_path),
                  log_url=None, tls_cert=IDENTITY.cert_pem, tls_key=IDENTITY.key_pem)
    spec = NodeSpec(**fields)
    path = tmp_path / "spec.json"
    spec.write(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert NodeSpec.load(str(path)) == spec
    assert IDENTITY.key_pem not in repr(spec)
