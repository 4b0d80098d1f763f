"""Submitted by test_standalone.py: a node's executor JVM is killed; the cluster restarts.

On the first attempt worker:1 kills the JVM of its own executor; with
``max_restarts=1`` the driver starts both nodes again on the executors left
(the standalone master replaces the lost one on the spare worker) and the
job completes.
"""

import json
import logging
import os
import signal
import sys
import time

from pyspark import SparkContext

from sparktf import TFCluster


def lose_executor(args, ctx):
    from sparktf.node import procs
    with open(os.path.join(args["out"], f"attempt-{ctx.attempt}-{ctx.executor_id}.json"),
              "w") as f:
        json.dump({"attempt": ctx.attempt, "job": ctx.job_name, "host_port": ctx.tf_port}, f)
    if ctx.attempt == 0 and ctx.task_index == 1:
        time.sleep(2)
        os.kill(procs.executor_jvm_pid(), signal.SIGKILL)
    time.sleep(120 if ctx.attempt == 0 else 1)  # attempt 0 ends by being stopped


if __name__ == "__main__":
    out = sys.argv[1]
    logging.basicConfig(level=logging.INFO)
    sc = SparkContext.getOrCreate()
    cluster = TFCluster.run(sc, lose_executor, {"out": out}, 2, reservation_timeout=120,
                            max_restarts=1)
    cluster.shutdown(timeout=300)
    print(f"executor_loss_job: ok restarts={cluster.restarts}", flush=True)
    sc.stop()
