"""Run by test_recovery.py and killed with SIGKILL: a driver with a TF cluster and TensorBoard.

Prints ``RUNNING`` once every node runs map_fun, then waits to be killed.
"""

import os
import sys
import time

from pyspark import SparkConf, SparkContext

from sparktf import TFCluster


def wait(args, ctx):
    with open(os.path.join(args["out"], f"pid-{ctx.executor_id}"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(3600)


if __name__ == "__main__":
    conf = (SparkConf().setMaster("local[2]").setAppName("sparktf-orphans")
            .set("spark.driver.host", "127.0.0.1").set("spark.ui.enabled", "false"))
    sc = SparkContext(conf=conf)
    cluster = TFCluster.run(sc, wait, {"out": sys.argv[1]}, 2, tensorboard=True,
                            reservation_timeout=120)
    print("RUNNING", cluster.tensorboard_url(), flush=True)
    time.sleep(3600)
