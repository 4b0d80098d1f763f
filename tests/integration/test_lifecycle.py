"""Cluster life cycle against real Spark: roles, TF_CONFIG, failures, timeouts, leftovers."""

import glob
import json
import os
import shutil
import socket
import time

import pytest

import feedfuns
import nodefuns
from sparktf import TFCluster
from sparktf.errors import NodeError, ReservationTimeout, ShutdownTimeout

pytestmark = pytest.mark.integration


def read_reports(out):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "node-*.json")))]


def test_roles_tf_config_and_ctx(sc, tmp_path, no_leftovers):
    args = {"out": str(tmp_path), "wait_for": 3}
    cluster = TFCluster.run(sc, nodefuns.report, args, 3, num_ps=1, master_node="chief",
                            reservation_timeout=120)
    cluster.shutdown(timeout=60)
    reports = read_reports(tmp_path)
    assert [(r["job_name"], r["task_index"]) for r in reports] == [
        ("ps", 0), ("chief", 0), ("worker", 0)]
    spec = reports[0]["cluster_spec"]
    assert set(spec) == {"ps", "chief", "worker"}
    addrs = spec["ps"] + spec["chief"] + spec["worker"]
    assert len(set(addrs)) == 3, "nodes on one host need distinct ports"
    for r in reports:
        assert r["cluster_spec"] == spec
        assert r["tf_config"]["task"] == {"type": r["job_name"], "index": r["task_index"]}
        assert r["tf_config"]["cluster"] == spec
        assert r["num_workers"] == 2 and r["worker_num"] == r["executor_id"]
        assert r["defaultFS"].startswith("file:")
        assert r["abs"] == "file://" + os.path.join(r["working_dir"], "x/y")
        assert r["legacy"] == "1"
        assert r["secret_env"] == [], "PySpark's worker secret leaked into the node"
    assert len({r["pid"] for r in reports}) == 3
    for r in reports:  # node directories hold the secret: private, and gone after shutdown
        assert r["modes"] == {".": "0o700", "spec.json": "0o600", "payload.pkl": "0o600"}
        assert not os.path.exists(r["node_dir"])


def test_worker_only_cluster_gets_tf_config(sc, tmp_path, no_leftovers):
    argv = ["train.py", "--out", str(tmp_path)]  # TFoS users pass sys.argv
    cluster = TFCluster.run(sc, nodefuns.report, argv, 2, reservation_timeout=120,
                            legacy_keras=False, keep_node_dirs=True)
    cluster.shutdown(timeout=60)
    reports = read_reports(tmp_path)
    assert [r["argv"] for r in reports] == [argv, argv], "sys.argv is tf_args, as in TFoS"
    for r in reports:
        assert os.path.exists(os.path.join(r["node_dir"], "node.log"))  # kept on request
        shutil.rmtree(r["node_dir"])
    assert [r["tf_config"]["task"] for r in reports] == [
        {"type": "worker", "index": 0}, {"type": "worker", "index": 1}]
    assert reports[0]["legacy"] is None


def test_exception_in_worker_raises_on_driver_with_traceback(sc, no_leftovers):
    t0 = None
    with pytest.raises(NodeError) as err:  # from run() if the worker fails before the chief runs
        cluster = TFCluster.run(sc, nodefuns.fail_on_worker, None, 2, master_node="chief",
                                reservation_timeout=120)
        t0 = time.monotonic()
        cluster.shutdown(timeout=120)
    assert t0 is None or time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "worker:0" in msg and "host 127.0.0.1" in msg and "executor" in msg
    assert "ValueError: boom" in msg and "Traceback" in msg and "fail_on_worker" in msg
    assert "last lines of the node's log:" in msg


def test_os_exit_in_worker_raises_on_driver(sc, no_leftovers):
    # The worker exits a second after it starts; on a loaded machine that can be before the
    # chief is running, and then run() itself raises the error (as it should).
    t0 = None
    with pytest.raises(NodeError, match=r"worker:0 .*exited with code 3"):
        cluster = TFCluster.run(sc, nodefuns.exit_on_worker, None, 2, master_node="chief",
                                reservation_timeout=120)
        t0 = time.monotonic()
        cluster.shutdown(timeout=120)
    assert t0 is None or time.monotonic() - t0 < 10


def test_too_few_slots_fails_within_reservation_timeout(sc, no_leftovers):
    t0 = time.monotonic()
    with pytest.raises(ReservationTimeout) as err:
        TFCluster.run(sc, nodefuns.report, None, 5, reservation_timeout=5)
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert "needs 5 task slots" in msg and "only 3" in msg
    for setting in ("spark.executor.instances", "spark.cores.max", "spark.task.cpus",
                    "spark.dynamicAllocation.enabled"):
        assert setting in msg


def test_shutdown_timeout_names_running_nodes(sc, tmp_path, no_leftovers):
    cluster = TFCluster.run(sc, nodefuns.sleep_forever, {"out": str(tmp_path)}, 2,
                            reservation_timeout=120)
    with pytest.raises(ShutdownTimeout, match=r"worker:0 .*running.*worker:1"):
        cluster.shutdown(timeout=2)
    pids = [int(open(p).read()) for p in glob.glob(str(tmp_path / "pid-*"))]
    assert len(pids) == 2


def test_bad_connections_to_control_channel_are_dropped(sc, tmp_path, no_leftovers, caplog):
    cluster = TFCluster.run(sc, nodefuns.sleep_forever, {"out": str(tmp_path)}, 1,
                            reservation_timeout=120)
    host, port = cluster.control_address
    with socket.create_connection((host, port)) as s:  # not our protocol at all
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(100)
    from sparktf.wire import connect, new_secret
    chan = connect((host, port), new_secret())  # right protocol, wrong secret
    chan.send({"type": "hello", "node": 0, "kind": "node"})
    with pytest.raises((EOFError, OSError)):
        chan.recv()
    assert "does not speak the sparktf protocol" in caplog.text
    assert "failed authentication" in caplog.text
    assert cluster.nodes[0].state == "running"
    assert "worker:0 (executor 0) starting map_fun" in cluster.logs("worker:0")
    with pytest.raises(ShutdownTimeout):
        cluster.shutdown(timeout=1)


def test_release_port_false_keeps_the_port_until_released(sc, tmp_path, no_leftovers):
    cluster = TFCluster.run(sc, feedfuns.check_release_port, {"out": str(tmp_path)}, 2,
                            release_port=False, reservation_timeout=120)
    cluster.shutdown(timeout=60)
    got = [json.load(open(p)) for p in glob.glob(str(tmp_path / "port-*.json"))]
    assert got == [{"bound": True, "taken_before": True}] * 2
