"""The supervisor against a real control server and a real node process (no Spark)."""

import os
import socket
import subprocess
import sys

from pyspark import cloudpickle

from sparktf import protocol, tensorboard
from sparktf.control import ControlServer
from sparktf.node import supervisor
from sparktf.wire import new_secret


def make_spec(tmp_path, server, secret, **changes):
    node_dir = tmp_path / "node-0"
    node_dir.mkdir(mode=0o700)
    fields = dict(
        node=0, job="worker", index=0, host="127.0.0.1", tf_port=1, executor="driver",
        cluster_spec={"worker": ["127.0.0.1:1"]}, tf_config="{}", num_workers=1,
        input_mode=0, release_port=True, control=server.address, secret=secret.hex(),
        env={}, default_fs="file:///", working_dir=str(tmp_path), node_dir=str(node_dir),
        detach=False, attempt=0, tensorboard=False, log_dir=str(node_dir / "tb"),
        log_url=None)
    fields.update(changes)
    spec = protocol.NodeSpec(**fields)
    protocol.write_private(spec.payload_path, cloudpickle.dumps((lambda args, ctx: None, None)))
    path = str(node_dir / "spec.json")
    spec.write(path)
    return spec, path


def supervise(spec, path, server):
    """Run the node under a real supervisor; return its exit code and the driver's events."""
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    code = supervisor.Supervisor(spec, path, os.getpid(), os.dup(port.fileno())).wait()
    port.close()
    got = []
    while not got or got[-1][2].get("type") != "exit":
        got.append(server.events.get(timeout=60))
    return code, got


def test_tensorboard_reporting_its_url_at_once_reaches_the_driver(tmp_path, monkeypatch):
    """TensorBoard may print its URL before the supervisor finished starting up."""
    def start_and_report_at_once(log_dir, host, log, on_url, env=None):
        on_url("http://127.0.0.1:6006")
        return subprocess.Popen([sys.executable, "-c", "pass"])

    monkeypatch.setattr(tensorboard, "start", start_and_report_at_once)
    secret = new_secret()
    server = ControlServer("127.0.0.1", secret, num_nodes=1)
    try:
        spec, path = make_spec(tmp_path, server, secret, tensorboard=True)
        code, got = supervise(spec, path, server)
    finally:
        server.close()
    assert code == 0
    types = [(kind, msg.get("type")) for _, kind, msg in got]
    assert ("supervisor", "tensorboard") in types and ("supervisor", "started") in types
    url = next(msg for _, _, msg in got if msg.get("type") == "tensorboard")["url"]
    assert url == "http://127.0.0.1:6006"
    assert protocol.decode(got[-1][2]) == protocol.Exited(
        code=0, log_tail=got[-1][2]["log_tail"])
    assert not os.path.exists(spec.node_dir), "the node directory holds the secret: removed"


def test_the_exit_report_carries_the_exception_first(tmp_path):
    secret = new_secret()
    server = ControlServer("127.0.0.1", secret, num_nodes=1)

    def boom(args, ctx):
        raise ValueError("boom")

    try:
        spec, path = make_spec(tmp_path, server, secret, keep_node_dir=True)
        protocol.write_private(spec.payload_path, cloudpickle.dumps((boom, None)))
        code, got = supervise(spec, path, server)
    finally:
        server.close()
    exited = protocol.decode(got[-1][2])
    assert code == 1 and exited.code == 1 and not exited.stopped
    assert exited.error == "ValueError: boom" and "Traceback" in exited.traceback
    assert os.path.exists(spec.payload_path), "kept on request"


def test_the_exit_report_carries_the_rows_left_unread(tmp_path):
    """The supervisor's Exited may reach the driver before the node's own Finished: it
    carries the unread count too, so strict_feed cannot miss it."""
    def left_five_rows_unread(args, ctx):   # a SPARK-mode map_fun (pickled by value)
        import pyarrow as pa

        from sparktf.feed.receiver import Item
        ctx.mgr.buffer.put(Item(pa.RecordBatch.from_pydict({"x": list(range(5))})))

    secret = new_secret()
    server = ControlServer("127.0.0.1", secret, num_nodes=1)
    try:
        spec, path = make_spec(tmp_path, server, secret, input_mode=1)
        protocol.write_private(spec.payload_path,
                               cloudpickle.dumps((left_five_rows_unread, None)))
        code, got = supervise(spec, path, server)
    finally:
        server.close()
    finished = [protocol.decode(msg) for _, kind, msg in got if msg.get("type") == "finished"]
    assert code == 0 and [f.unread for f in finished] == [5]
    assert protocol.decode(got[-1][2]).unread == 5
