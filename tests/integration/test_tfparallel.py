"""TFParallel.run on real Spark: barrier and plain instances, too few slots, a failing instance."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from pyspark import cloudpickle

from sparktf import NodeError, ReservationTimeout, TFParallel

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])   # instances need not import it


def report(args, ctx):
    """Write what the instance saw: its ctx, its process and whether pyspark is loaded."""
    import sys
    with open(os.path.join(args["out"], f"instance-{ctx.executor_id}.json"), "w") as f:
        json.dump({"worker_num": ctx.worker_num, "num_workers": ctx.num_workers,
                   "job_name": ctx.job_name, "task_index": ctx.task_index,
                   "defaultFS": ctx.defaultFS, "pid": os.getpid(), "ppid": os.getppid(),
                   "pyspark_worker": "pyspark.worker" in sys.modules,
                   "legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS")}, f)


def fail_on_one(args, ctx):
    if ctx.executor_id == 1:
        raise ValueError(f"instance {ctx.executor_id} cannot read its shard")


@pytest.mark.parametrize("use_barrier", [True, False])
def test_instances_run_in_fresh_processes(sc, tmp_path, use_barrier):
    assert TFParallel.run(sc, report, {"out": str(tmp_path)}, 2, use_barrier=use_barrier) is None
    seen = [json.load(open(tmp_path / f"instance-{i}.json")) for i in range(2)]
    assert [s["worker_num"] for s in seen] == [0, 1] == [s["task_index"] for s in seen]
    assert all(s["num_workers"] == 2 and s["job_name"] == "worker" for s in seen)
    assert all(s["defaultFS"].startswith("file://") for s in seen)
    assert not any(s["pyspark_worker"] for s in seen) and seen[0]["pid"] != seen[1]["pid"]
    assert all(s["legacy_keras"] == "1" for s in seen)
    for s in seen:     # the instance process is gone, not left behind
        assert not os.path.exists(f"/proc/{s['pid']}")


def test_too_few_slots_fail_at_once(sc):
    start = time.monotonic()
    with pytest.raises(ReservationTimeout, match="TFParallel.run needs 4 task slots at once"):
        TFParallel.run(sc, report, {"out": "/nonexistent"}, 4)
    assert time.monotonic() - start < 5


def test_an_instance_error_names_the_instance_with_its_traceback(sc):
    with pytest.raises(NodeError) as raised:
        TFParallel.run(sc, fail_on_one, {}, 2)
    message = str(raised.value)
    assert message.startswith("TFParallel instance 1 on ")
    assert "ValueError: instance 1 cannot read its shard" in message.splitlines()[0]
    assert "in fail_on_one" in message and raised.value.node == "instance:1"
