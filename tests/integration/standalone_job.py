"""Submitted by test_standalone.py to a standalone master: TENSORFLOW and SPARK mode, then
a lost executor: worker:1 kills the JVM of its own executor on the first attempt; with
``max_restarts=1`` the driver starts both nodes again on the executors left (the master
replaces the lost one on the spare worker) and the job completes."""

import json
import logging
import signal
import os
import sys
import time

import numpy as np
from pyspark import SparkContext

from sparktf import TFCluster


def report(args, ctx):
    with open(os.path.join(args["out"], f"node-{ctx.executor_id}.json"), "w") as f:
        json.dump({"job": ctx.job_name, "spec": ctx.cluster_spec}, f)


def count(args, ctx):
    feed = ctx.get_data_feed(input_mapping={"_1": "id"})
    total = 0
    while not feed.should_stop():
        batch = feed.next_batch(100)
        if not len(batch["id"]):
            break
        total += int(batch["id"].sum())
    with open(os.path.join(args["out"], f"sum-{ctx.executor_id}"), "w") as f:
        f.write(str(total))


def lose_executor(args, ctx):
    from sparktf.node import procs
    with open(os.path.join(args["out"], f"attempt-{ctx.attempt}-{ctx.executor_id}.json"),
              "w") as f:
        json.dump({"attempt": ctx.attempt, "job": ctx.job_name}, f)
    if ctx.attempt == 0 and ctx.task_index == 1:
        time.sleep(2)
        os.kill(procs.executor_jvm_pid(), signal.SIGKILL)
    time.sleep(120 if ctx.attempt == 0 else 1)  # attempt 0 ends by being stopped


if __name__ == "__main__":
    out = sys.argv[1]
    logging.basicConfig(level=logging.INFO)
    sc = SparkContext.getOrCreate()
    cluster = TFCluster.run(sc, report, {"out": out}, 2, master_node="chief",
                            reservation_timeout=120)
    cluster.shutdown(timeout=120)
    cluster = TFCluster.run(sc, count, {"out": out}, 2, input_mode=TFCluster.InputMode.SPARK,
                            reservation_timeout=120)
    cluster.train(sc.parallelize(range(10000), 5).map(lambda i: (np.zeros(3, "float32"), i)))
    cluster.shutdown(timeout=120)
    total = sum(int(open(os.path.join(out, f"sum-{i}")).read()) for i in range(2))
    print("standalone_job: ok", total, flush=True)
    cluster = TFCluster.run(sc, lose_executor, {"out": out}, 2, reservation_timeout=120,
                            max_restarts=1)
    cluster.shutdown(timeout=300)
    print(f"standalone_job: executor lost, restarts={cluster.restarts}", flush=True)
