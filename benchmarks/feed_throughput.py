"""Training-feed throughput: sparktf (RDD, DataFrame) vs Spark's ceiling vs TensorFlowOnSpark.

    .venv/bin/python benchmarks/feed_throughput.py [--rows 200000] [--repeat 3] [--skip-tfos]

Prints rows/s of (a) sparktf with an RDD of numpy rows (a consumer that counts
rows column-wise through DataFeed.next_batch; (a2) the same through the tf.data
fast path), (b) sparktf with a DataFrame, (c) Spark's own ceiling
(foreachPartition counting rows in Python), (d) TensorFlowOnSpark 2.2.5 and (e)
Spark's own DataFrame-to-Arrow ceiling (mapInArrow counting rows), all on the
same data, 2 nodes on local-cluster[2,1,2048], and the ratios against the
targets.  Each sparktf and TFoS cluster first takes a 20,000-row warm-up epoch
so that the measured epoch sees running consumers.
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
    warm_rdd = common.mnist_like_rdd(sc, 20_000, 2)
    results: dict[str, float] = {}

    def count_partition(it):
        n = 0
        for _ in it:
            n += 1

    name = "(c) Spark foreachPartition ceiling"
    results[name] = common.median_time(name, args.rows,
                                       lambda: rdd.foreachPartition(count_partition), args.repeat)

    def train_with(run, map_fun, tf_args, data, warmup, name):
        """Median time of train() alone; cluster start and shutdown are timed apart."""
        clusters = []

        def once():
            cluster = run(sc, map_fun, tf_args, 2, 0, input_mode=1)
            clusters.append(cluster)
            # A warm-up epoch, larger than the nodes' buffers, so that the consumers
            # have started (imported TensorFlow) before the measured epoch.
            cluster.train(warmup, num_epochs=1)
            t0 = time.perf_counter()
            cluster.train(data, num_epochs=1)
            return time.perf_counter() - t0

        times = []
        for _ in range(args.repeat):
            times.append(once())
            print(f"  {name}: {times[-1]:.2f} s ({args.rows / times[-1]:,.0f} rows/s)", flush=True)
            t1 = time.perf_counter()
            clusters.pop().shutdown()
            print(f"  {name} shutdown: {time.perf_counter() - t1:.2f} s", flush=True)
        return sorted(times)[len(times) // 2]

    name = "(a) sparktf RDD of numpy rows"
    results[name] = train_with(TFCluster.run, consumers.sparktf_count,
                               {"batch_size": 256, "column": "_0"}, rdd, warm_rdd, name)
    name = "(a2) sparktf RDD, tf.data fast path consumer"
    results[name] = train_with(TFCluster.run, consumers.sparktf_count_tfdata,
                               {"batch_size": 256, "epochs": 2}, rdd, warm_rdd, name)
    df = common.mnist_like_df(sc, args.rows, args.partitions)
    warm_df = common.mnist_like_df(sc, 20_000, 2)
    def count_batches(batches):
        import pyarrow as pa
        n = sum(b.num_rows for b in batches)
        yield pa.RecordBatch.from_pydict({"n": [n]})

    name = "(e) Spark mapInArrow ceiling (DataFrame to Arrow)"
    results[name] = common.median_time(
        name, args.rows, lambda: df.mapInArrow(count_batches, "n long").collect(), args.repeat)
    name = "(b) sparktf DataFrame"
    results[name] = train_with(TFCluster.run, consumers.sparktf_count,
                               {"batch_size": 256, "column": "image"}, df, warm_df, name)
    df.unpersist()
    if tfos_path:
        from tensorflowonspark import TFCluster as TFoS
        name = "(d) TensorFlowOnSpark 2.2.5"
        results[name] = train_with(TFoS.run, consumers.tfos_count,
                                   argparse.Namespace(batch_size=256), rdd, warm_rdd, name)

    common.report("Training feed throughput", args.rows, results, [
        ("(a) sparktf RDD of numpy rows", "(d) TensorFlowOnSpark 2.2.5", 15),
        ("(a) sparktf RDD of numpy rows", "(c) Spark foreachPartition ceiling", 0.6),
        ("(b) sparktf DataFrame", "(a) sparktf RDD of numpy rows", 3),
        ("(b) sparktf DataFrame", "(e) Spark mapInArrow ceiling (DataFrame to Arrow)", 0.6),
    ])
    sc.stop()


if __name__ == "__main__":
    main()
