"""Failure recovery with real Spark and TensorFlow: checkpoints, restarts, resuming."""

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import nodefuns
from conftest import sparktf_processes
from sparktf import TFCluster
from sparktf.errors import NodeError

pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))


def fit(sc, out, model_dir, epochs=6, kill_epoch=None, keras_backup=False, **kw):
    os.makedirs(out, exist_ok=True)
    args = {"out": str(out), "model_dir": str(model_dir), "epochs": epochs,
            "kill_epoch": kill_epoch, "keras_backup": keras_backup}
    cluster = TFCluster.run(sc, nodefuns.checkpointed_fit, args, 2, reservation_timeout=120, **kw)
    return cluster


def starts(out):
    return sorted((json.load(open(p)) for p in glob.glob(os.path.join(out, "start-*.json"))),
                  key=lambda s: s["attempt"])


def test_restart_after_sigkill_resumes_from_checkpoint(sc, tmp_path, no_leftovers, caplog):
    out = tmp_path / "restart"
    cluster = fit(sc, out, tmp_path / "model", kill_epoch=2, max_restarts=1)
    cluster.shutdown()
    assert cluster.restarts == 1
    assert os.path.exists(out / "killed")
    restored = [(s["restored"], s["first_epoch"]) for s in starts(out) if s["attempt"] == 1]
    assert len(restored) == 2 and restored[0] == restored[1] and restored[0][0] >= 2, starts(out)
    assert "restart 1 of 1 after: TF node worker:1" in caplog.text
    assert "killed by signal 9" in caplog.text
    final = json.load(open(out / "final-1.json"))
    assert final["latest"].endswith("ckpt-6")
    assert final["loss"] < 0.05, final  # as a run without the kill ends (next test)


def test_without_restarts_the_driver_raises_and_a_new_run_resumes(sc, tmp_path, no_leftovers):
    """The same with Keras' BackupAndRestore: the driver raises, a second run resumes."""
    cluster = fit(sc, tmp_path / "a", tmp_path / "model", kill_epoch=2, keras_backup=True)
    with pytest.raises(NodeError, match="worker:1.*killed by signal 9"):
        cluster.shutdown()
    raised = time.time()
    killed = float(open(tmp_path / "a" / "killed").read())
    assert raised - killed < 10

    again = fit(sc, tmp_path / "b", tmp_path / "model", keras_backup=True)
    again.shutdown()
    first = {s["first_epoch"] for s in starts(tmp_path / "b")}
    assert len(first) == 1 and first.pop() >= 2, starts(tmp_path / "b")
    final = json.load(open(tmp_path / "b" / "final-0.json"))
    assert final["epochs_run"] <= 4 and final["loss"] < 0.05, final


def test_spark_mode_restart_feeds_the_interrupted_epoch_again(sc, tmp_path, no_leftovers):
    # Much more than the nodes' buffers hold, so the kill lands while epoch 2 is fed.
    rows = [(np.full(4, i % 7, dtype="float32"), i) for i in range(6000)]
    rdd = sc.parallelize(rows, 20)
    cluster = TFCluster.run(sc, nodefuns.checkpointed_fit,
                            {"out": str(tmp_path), "model_dir": str(tmp_path / "model"),
                             "epochs": 3, "kill_epoch": 1, "spark": True}, 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120,
                            max_restarts=1)
    cluster.train(rdd, num_epochs=3)
    cluster.shutdown()
    assert cluster.restarts == 1
    assert [s["first_epoch"] for s in starts(tmp_path) if s["attempt"] == 1] == [1, 1]
    assert json.load(open(tmp_path / "final-1.json"))["latest"].endswith("ckpt-3")

    # A new cluster on the same model directory resumes there: one more epoch, the 4th.
    os.makedirs(tmp_path / "again")
    again = TFCluster.run(sc, nodefuns.checkpointed_fit,
                          {"out": str(tmp_path / "again"), "model_dir": str(tmp_path / "model"),
                           "epochs": 4, "spark": True}, 2,
                          input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120)
    again.train(rdd, num_epochs=1)
    again.shutdown()
    assert [s["first_epoch"] for s in starts(tmp_path / "again")] == [3, 3]
    assert json.load(open(tmp_path / "again" / "final-0.json"))["latest"].endswith("ckpt-4")


def test_killing_the_driver_leaves_no_node_or_tensorboard(tmp_path):
    """kill -9 of the driver: every node, supervisor and TensorBoard exits within 30 s."""
    assert not sparktf_processes(), "sparktf processes from an earlier test are still running"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    driver = subprocess.Popen([sys.executable, os.path.join(HERE, "orphan_driver.py"),
                               str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env, start_new_session=True, cwd=tmp_path)
    try:
        line = driver.stdout.readline()  # blocks until the cluster runs (or the driver dies)
        assert line.startswith("RUNNING http://"), line
        ours = sparktf_processes()
        kinds = " ".join(cmd for _, cmd in ours)
        assert "sparktf.node.main" in kinds and "sparktf.node.supervisor" in kinds
        assert "tensorboard.main" in kinds
        driver.kill()
        killed = time.monotonic()
        alive = {pid for pid, _ in ours}
        while alive and time.monotonic() - killed < 30:
            alive = {pid for pid in alive if pid in dict(sparktf_processes())}
            time.sleep(0.2)
        assert not alive, f"still running 30 s after the driver was killed: {sparktf_processes()}"
        print(f"all sparktf processes gone {time.monotonic() - killed:.1f}s after kill -9")
    finally:
        driver.kill()
        driver.wait()
        try:  # the Spark JVMs the driver started (its own process group)
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_the_secret_never_reaches_driver_or_executor_logs(sc, tmp_path, no_leftovers, caplog):
    import feedfuns
    caplog.set_level("DEBUG", logger="sparktf")
    cluster = TFCluster.run(sc, feedfuns.count_rows, {"out": str(tmp_path)}, 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120,
                            keep_node_dirs=True)
    spec = json.load(open(os.path.join(os.path.dirname(cluster.nodes[0].log), "spec.json")))
    secret = bytes.fromhex(spec["secret"])
    cluster.train(sc.parallelize([(np.zeros(4, "float32"), i) for i in range(500)], 3))
    cluster.shutdown()
    executor_dirs = {os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(n.log))))
                     for n in cluster.nodes}
    logs = [caplog.text] + [open(os.path.join(d, name), errors="replace").read()
                            for d in executor_dirs for name in ("stdout", "stderr")
                            if os.path.exists(os.path.join(d, name))]
    logs += [open(n.log, errors="replace").read() for n in cluster.nodes]
    assert len(logs) >= 5 and "sparktf" in "".join(logs[1:])
    for text in logs:
        assert secret.hex() not in text and repr(secret)[2:-1] not in text
    shutil.rmtree(os.path.dirname(os.path.dirname(cluster.nodes[0].log)))  # kept for the test
