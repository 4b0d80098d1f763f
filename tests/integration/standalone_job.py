"""Submitted by test_standalone.py to a standalone master: TENSORFLOW and SPARK mode."""

import json
import os
import sys

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


if __name__ == "__main__":
    out = sys.argv[1]
    sc = SparkContext.getOrCreate()
    cluster = TFCluster.run(sc, report, {"out": out}, 2, master_node="chief",
                            reservation_timeout=120)
    cluster.shutdown(timeout=120)
    cluster = TFCluster.run(sc, count, {"out": out}, 2, input_mode=TFCluster.InputMode.SPARK,
                            reservation_timeout=120)
    cluster.train(sc.parallelize(range(10000), 5).map(lambda i: (np.zeros(3, "float32"), i)))
    cluster.shutdown(timeout=120)
    total = sum(int(open(os.path.join(out, f"sum-{i}")).read()) for i in range(2))
    print("standalone_job: ok", total)
