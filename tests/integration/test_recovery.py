"""Failure recovery with real Spark and TensorFlow: checkpoints, restarts, resuming."""

import glob
import json
import os
import time

import numpy as np
import pytest

import nodefuns
from sparktf import TFCluster
from sparktf.errors import NodeError

pytestmark = pytest.mark.integration


def fit(sc, out, model_dir, epochs=6, kill_epoch=None, **kw):
    os.makedirs(out, exist_ok=True)
    args = {"out": str(out), "model_dir": str(model_dir), "epochs": epochs,
            "kill_epoch": kill_epoch}
    cluster = TFCluster.run(sc, nodefuns.checkpointed_fit, args, 2, reservation_timeout=120, **kw)
    return cluster


def starts(out):
    return sorted((json.load(open(p)) for p in glob.glob(os.path.join(out, "start-*.json"))),
                  key=lambda s: s["attempt"])


def test_restart_after_sigkill_resumes_from_checkpoint(sc, tmp_path, no_leftovers, caplog):
    baseline = fit(sc, tmp_path / "base", tmp_path / "base-model")
    baseline.shutdown()
    base = json.load(open(tmp_path / "base" / "final-0.json"))

    out = tmp_path / "restart"
    cluster = fit(sc, out, tmp_path / "model", kill_epoch=2, max_restarts=1)
    cluster.shutdown()
    assert cluster.restarts == 1
    assert os.path.exists(out / "killed")
    restored = [s["restored"] for s in starts(out) if s["attempt"] == 1]
    assert len(restored) == 2 and restored[0] == restored[1] >= 2, starts(out)
    assert "restart 1 of 1 after: TF node worker:1" in caplog.text
    assert "killed by signal 9" in caplog.text
    final = json.load(open(out / "final-1.json"))
    assert final["latest"].endswith("ckpt-6")
    assert final["loss"] <= base["loss"] * 1.5 + 1e-3, (final, base)


def test_without_restarts_the_driver_raises_and_a_new_run_resumes(sc, tmp_path, no_leftovers):
    cluster = fit(sc, tmp_path / "a", tmp_path / "model", kill_epoch=2)
    with pytest.raises(NodeError, match="worker:1.*killed by signal 9"):
        cluster.shutdown()
    raised = time.time()
    killed = float(open(tmp_path / "a" / "killed").read())
    assert raised - killed < 10

    again = fit(sc, tmp_path / "b", tmp_path / "model")
    again.shutdown()
    restored = {s["restored"] for s in starts(tmp_path / "b")}
    assert len(restored) == 1 and restored.pop() >= 2
    assert json.load(open(tmp_path / "b" / "final-0.json"))["latest"].endswith("ckpt-6")


def test_spark_mode_restart_feeds_the_interrupted_epoch_again(sc, tmp_path, no_leftovers):
    # Much more than the nodes' buffers hold, so the kill lands while epoch 2 is fed.
    rows = [(np.full(4, i % 7, dtype="float32"), i) for i in range(12000)]
    rdd = sc.parallelize(rows, 40)
    cluster = TFCluster.run(sc, nodefuns.checkpointed_fit,
                            {"out": str(tmp_path), "model_dir": str(tmp_path / "model"),
                             "epochs": 3, "kill_epoch": 1, "spark": True}, 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120,
                            max_restarts=1)
    cluster.train(rdd, num_epochs=3)
    cluster.shutdown()
    assert cluster.restarts == 1
    assert [s["restored"] for s in starts(tmp_path) if s["attempt"] == 1] == [1, 1]
    assert json.load(open(tmp_path / "final-1.json"))["latest"].endswith("ckpt-3")
