"""GPUs from Spark's resource scheduling, on local-cluster with a fake discovery script
(gpu_job.py, in its own process: it needs its own SparkContext with GPU settings)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

pytestmark = pytest.mark.integration


def test_each_node_gets_its_spark_gpu_ps_and_tensorboard_none(tmp_path, no_leftovers):
    script = tmp_path / "gpus.sh"
    script.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["0", "1", "2"]}\'\n')
    script.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_PYTHON"}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run([sys.executable, os.path.join(HERE, "gpu_job.py"), str(out),
                           str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    nodes = {os.path.basename(p)[:-5]: json.load(open(p)) for p in glob.glob(f"{out}/*-*.json")}
    assert set(nodes) == {"ps-0", "chief-0", "worker-0"}, nodes

    # Each training node sees exactly one of Spark's addresses, a different one each.
    chief, worker, ps = nodes["chief-0"], nodes["worker-0"], nodes["ps-0"]
    assert chief["visible"] in ("0", "1", "2") and worker["visible"] in ("0", "1", "2")
    assert chief["visible"] != worker["visible"]
    assert chief["ctx_gpus"] == [chief["visible"]] and worker["ctx_gpus"] == [worker["visible"]]
    # The ps node and TensorBoard see none, although the ps task holds a GPU too.
    assert ps["visible"] == "" and ps["ctx_gpus"] == []
    assert chief["tensorboard_visible"] == ""

    # The driver logs which node got which GPU.
    log = proc.stderr
    for name, got in (("chief:0", chief), ("worker:0", worker)):
        assert any(name in line and f"GPU {got['visible']} (from spark)" in line
                   for line in log.splitlines()), log[-3000:]
    assert any("ps:0" in line and 'no GPU (CUDA_VISIBLE_DEVICES="")' in line
               for line in log.splitlines())

    # 4 nodes on 3 GPUs: Spark cannot schedule them; run() says so within its timeout.
    assert "needs 4 task slots" in result["too_many"], result
    assert "spark.task.resource.gpu.amount=1" in result["too_many"], result
    assert result["too_many_seconds"] < 20, result

    # num_gpus=2 but Spark gave the task 1: the driver raises the node's GpuError, quickly.
    assert "num_gpus=2 but Spark assigned 1 GPU(s)" in result["num_gpus"], result
    assert "spark.task.resource.gpu.amount" in result["num_gpus"], result
    assert result["num_gpus_seconds"] < 8, result   # reported by the barrier task at once
