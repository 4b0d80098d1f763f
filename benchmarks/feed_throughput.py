"""Training-feed throughput: sparktf (RDD, DataFrame) vs Spark's ceiling vs TensorFlowOnSpark.

    .venv/bin/python benchmarks/feed_throughput.py [--rows 200000] [--repeat 3] [--skip-tfos]

Prints rows/s of (a) sparktf with an RDD of numpy rows, (b) sparktf with a
DataFrame, (c) Spark's own ceiling (foreachPartition counting rows in Python)
and (d) TensorFlowOnSpark 2.2.5, all on the same data, 2 nodes on
local-cluster[2,1,2048], and the ratios against the targets.
"""

from __future__ import annotations

import argparse
import logging
import time

import common
import consumers


def main() -> None:
    args = common.parse_args(__doc__)
    tfos_path = None if args.skip_tfos else common.prepare_tfos()
    sc = common.spark_context(tfos_path)
    from pyspark import cloudpickle
    cloudpickle.register_pickle_by_value(consumers)
    logging.basicConfig(level=logging.WARNING)
    from sparktf import TFCluster

    rdd = common.mnist_like_rdd(sc, args.rows, args.partitions)
    results: dict[str, float] = {}

    def count_partition(it):
        n = 0
        for _ in it:
            n += 1

    results["(c) Spark foreachPartition ceiling"] = common.median_time(
        lambda: rdd.foreachPartition(count_partition), args.repeat)

    def sparktf_train(data):
        times = []
        for _ in range(args.repeat):
            cluster = TFCluster.run(sc, consumers.sparktf_count, {"batch_size": 256, "epochs": 1},
                                    2, input_mode=TFCluster.InputMode.SPARK,
                                    reservation_timeout=120)
            t0 = time.perf_counter()
            cluster.train(data, num_epochs=1)
            times.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            cluster.shutdown(timeout=120)
            print(f"  sparktf shutdown: {time.perf_counter() - t1:.2f} s")
        return sorted(times)[len(times) // 2]

    results["(a) sparktf RDD of numpy rows"] = sparktf_train(rdd)
    df = common.mnist_like_df(sc, args.rows, args.partitions)
    results["(b) sparktf DataFrame"] = sparktf_train(df)

    if tfos_path:
        from tensorflowonspark import TFCluster as TFoS
        times = []
        for _ in range(args.repeat):
            cluster = TFoS.run(sc, consumers.tfos_count, argparse.Namespace(batch_size=256), 2,
                               input_mode=TFoS.InputMode.SPARK)
            t0 = time.perf_counter()
            cluster.train(rdd, num_epochs=1)
            times.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            cluster.shutdown()
            print(f"  TFoS shutdown: {time.perf_counter() - t1:.2f} s")
        results["(d) TensorFlowOnSpark 2.2.5"] = sorted(times)[len(times) // 2]

    common.report("Training feed throughput", args.rows, results, [
        ("(a) sparktf RDD of numpy rows", "(d) TensorFlowOnSpark 2.2.5", 15),
        ("(a) sparktf RDD of numpy rows", "(c) Spark foreachPartition ceiling", 0.6),
        ("(b) sparktf DataFrame", "(a) sparktf RDD of numpy rows", 3),
    ])
    sc.stop()


if __name__ == "__main__":
    main()
