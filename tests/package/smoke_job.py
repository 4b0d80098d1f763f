"""A smoke job for an installed sparktf wheel: a 2-node TENSORFLOW-mode cluster on local-cluster.

tests/package/test_wheel.py copies this file out of the source tree and runs it with the fresh
venv's Python, from a directory outside the tree.  It exits non-zero (an AssertionError or the
node's error) unless:

* the driver and both TF nodes import sparktf from the venv's site-packages, and no path of
  the source tree (``argv[1]``) is on their ``sys.path``;
* the two nodes form a real TF cluster (a MultiWorkerMirroredStrategy all-reduce of rank + 1
  sums 1 + 2);
* nothing warns: warnings are errors in this process (docker/install.sh, run before, makes
  pyspark's pandas check itself, the one a DataFrame job runs, with warnings as errors).

It prints one JSON line with what the nodes reported.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import warnings

warnings.simplefilter("error")  # any warning (pyspark's "pandas >= 3.0.0" one) fails the job


def where(source: str) -> dict:
    """Where this process imports sparktf from, and whether the source tree is on sys.path."""
    import sparktf
    return {"file": os.path.realpath(sparktf.__file__), "prefix": os.path.realpath(sys.prefix),
            "leak": [p for p in sys.path if p and os.path.realpath(p).startswith(source)]}


def map_fun(args, ctx):
    import tensorflow as tf
    out, source = args
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    value = strategy.run(lambda: tf.constant(ctx.rank + 1.0))  # chief 1, worker 2
    total = float(strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None))
    report = dict(where(source), job=ctx.job_name, index=ctx.task_index, total=total)
    with open(os.path.join(out, f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        json.dump(report, f)


def main() -> None:
    source = os.path.realpath(sys.argv[1])
    me = where(source)
    assert me["file"].startswith(me["prefix"] + os.sep), f"driver imports {me['file']}"
    assert not me["leak"], f"source tree on the driver's sys.path: {me['leak']}"
    assert not os.getcwd().startswith(source), os.getcwd()

    from pyspark import SparkConf, SparkContext

    from sparktf import TFCluster

    seconds = {}
    t0 = time.monotonic()
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the executors' Python: this venv's
    conf = (SparkConf().setMaster("local-cluster[2,1,1024]").setAppName("sparktf-wheel-smoke")
            .set("spark.driver.host", "127.0.0.1").set("spark.ui.enabled", "false"))
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    seconds["spark"] = time.monotonic() - t0
    out = tempfile.mkdtemp(prefix="sparktf-smoke-")
    try:
        cluster = TFCluster.run(sc, map_fun, (out, source), num_executors=2,
                                master_node="chief", input_mode=TFCluster.InputMode.TENSORFLOW,
                                reservation_timeout=120)
        cluster.shutdown(timeout=300)
        reports = []
        for name in sorted(os.listdir(out)):
            with open(os.path.join(out, name)) as f:
                reports.append(json.load(f))
        seconds["tf cluster"] = time.monotonic() - t0 - sum(seconds.values())
    finally:
        sc.stop()
        shutil.rmtree(out, ignore_errors=True)
    assert [(r["job"], r["index"]) for r in reports] == [("chief", 0), ("worker", 0)], reports
    for r in reports:
        assert r["file"].startswith(r["prefix"] + os.sep), f"node imports {r['file']}"
        assert r["prefix"] == me["prefix"], r
        assert not r["leak"], f"source tree on a node's sys.path: {r['leak']}"
        assert r["total"] == 3.0, r
    print(json.dumps({"driver": me, "nodes": reports, "seconds": seconds}))


if __name__ == "__main__":
    main()
