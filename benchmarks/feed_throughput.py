"""Training-feed throughput: sparktf (RDD, DataFrame) vs Spark's ceilings vs TensorFlowOnSpark.

    .venv/bin/python benchmarks/feed_throughput.py [--rows 200000] [--repeat 3] [--skip-tfos]
    .venv/bin/python benchmarks/feed_throughput.py --only df --df-rows 1000000 \
        --df-kinds "binary 784 bytes"     # DataFrame per-row costs, past Spark's job overhead

For every row kind TFoS users feed (numpy float32 and uint8 images, Python
lists of ints; 784 values + an int label) it measures, on the same cached RDD,
(c) Spark's own ceiling (``foreachPartition`` counting rows in Python), (f)
the transport floor (``foreachPartition`` doing the least any feed to 2 nodes
must: each ~4 MB chunk of rows gathered into contiguous buffers and written
to 2 sink processes that read and drop it, ``sink.py``), (a)
sparktf's feed to a consumer that counts rows column-wise through
``DataFeed.next_batch`` and (d) TensorFlowOnSpark 2.2.5 (on ``--tfos-rows``
rows: it is slow).  For DataFrames (an ``array<float>`` image column and a
784-byte ``binary`` one) it measures (e) Spark's DataFrame-to-Arrow ceiling
(``mapInArrow`` counting rows, warm: one untimed run first), (g) its
transport floor (``mapInArrow`` writing each batch as Arrow IPC to 2 sinks)
and (b) sparktf's
DataFrame feed; and (a2) ``DataFeed.dataset()`` iterated in graph mode (a
``tf.function`` loop, as ``model.fit`` does) on the float32 rows.  2 nodes on
local-cluster[2,1,2048]; every sparktf and TFoS cluster takes a 20,000-row
warm-up epoch first.  The variants of a row kind take turns, ``--repeat`` rounds
of them, and each ratio is the median of the rounds' ratios, so that the
machine's load drifting between rounds moves both sides alike.  Prints rows/s
and every ratio of issue 16's targets.
"""

from __future__ import annotations

import argparse
import logging

import common
import consumers


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tfos-rows", type=int, default=40_000, help="rows fed to TFoS")
    p.add_argument("--only", default="", help="comma-separated parts: rdd,df,dataset,tfos")
    p.add_argument("--kinds", default=",".join(common.ROW_KINDS),
                   help="comma-separated RDD row kinds")
    p.add_argument("--df-kinds", default=",".join(common.DF_KINDS),
                   help="comma-separated DataFrame image kinds")
    p.add_argument("--df-rows", type=int, default=0,
                   help="rows of the DataFrames (default: --rows); with more rows the "
                        "per-row costs outweigh Spark's fixed cost of each job")


def main() -> None:
    args = common.parse_args(__doc__, _extra)
    parts = set(args.only.split(",")) if args.only else {"rdd", "df", "dataset", "tfos"}
    if args.skip_tfos:
        parts.discard("tfos")
    tfos_path = common.prepare_tfos() if "tfos" in parts else None
    sc = common.spark_context(tfos_path)
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession
    cloudpickle.register_pickle_by_value(consumers)
    logging.basicConfig(level=logging.WARNING)
    from sparktf import TFCluster

    runs: dict[str, list[float]] = {}
    ratios: list[tuple[str, str, float]] = []

    def count_partition(it):
        n = 0
        for _ in it:
            n += 1

    def count_batches(batches):
        import pyarrow as pa
        n = sum(b.num_rows for b in batches)
        yield pa.RecordBatch.from_pydict({"n": [n]})

    def feed(fn, tf_args, data, warm, rows, name, run=TFCluster.run):
        return lambda: common.epoch_rate(sc, run, fn, tf_args, data, warm, rows, name)

    count = {"batch_size": 256, "column": "_0"}
    for kind in args.kinds.split(","):
        if not parts & {"rdd", "tfos", "dataset"}:
            break
        rdd = common.rows_rdd(sc, args.rows, args.partitions, kind)
        warm = common.rows_rdd(sc, 20_000, args.partitions, kind)
        ceiling, ours = f"(c) Spark foreachPartition, {kind}", f"(a) sparktf RDD feed, {kind}"
        floor = f"(f) transport floor (c + gather + 2 sockets), {kind}"
        tfos = f"(d) TensorFlowOnSpark 2.2.5, {kind}"
        graph = "(a2) sparktf dataset(), graph-mode loop, numpy float32"
        target = 0.4 if kind == "list of ints" else 0.75
        variants: dict = {}
        with common.Sinks(2) as sinks:
            if "rdd" in parts:
                send = common.transport_floor(sinks.ports)
                variants[ceiling] = lambda: common.timed_rate(
                    ceiling, args.rows, lambda: rdd.foreachPartition(count_partition))
                variants[floor] = lambda: common.timed_rate(
                    floor, args.rows, lambda: rdd.foreachPartition(send))
                variants[ours] = feed(consumers.sparktf_count, count, rdd, warm, args.rows, ours)
                ratios += [(ours, ceiling, target), (floor, ceiling, 0), (ours, floor, 0)]
            if "dataset" in parts and kind == "numpy float32":
                variants[graph] = feed(consumers.sparktf_count_graph, {"batch_size": 256}, rdd,
                                       warm, args.rows, graph)
                ratios.append((graph, ours, 0.8))
            if tfos_path:
                from tensorflowonspark import TFCluster as TFoS
                small = common.rows_rdd(sc, args.tfos_rows, args.partitions, kind)
                variants[tfos] = feed(consumers.tfos_count, argparse.Namespace(batch_size=256),
                                      small, warm, args.tfos_rows, tfos, run=TFoS.run)
                ratios += [(ours, tfos, 20), (ceiling, tfos, 0)]
            runs.update(common.take_turns(variants, args.repeat,
                                          warm=[v for v in (ceiling, floor) if v in variants]))
        if tfos_path:
            small.unpersist()
        rdd.unpersist()
        warm.unpersist()

    if "df" in parts:
        spark = SparkSession(sc)
        rows = args.df_rows or args.rows
        for kind, rdd_kind in zip(common.DF_KINDS, ("numpy float32", "numpy uint8")):
            if kind not in args.df_kinds.split(","):
                continue
            df = common.image_df(spark, rows, args.partitions, kind)
            warm = common.image_df(spark, 20_000, args.partitions, kind)
            ceiling = f"(e) Spark mapInArrow ceiling, {kind}"
            ours = f"(b) sparktf DataFrame feed, {kind}"
            floor = f"(g) Arrow transport floor (e + IPC to 2 sockets), {kind}"
            with common.Sinks(2) as sinks:
                send = common.arrow_transport_floor(sinks.ports)
                runs.update(common.take_turns({
                    ceiling: lambda: common.timed_rate(
                        ceiling, rows,
                        lambda: df.mapInArrow(count_batches, "n long").collect()),
                    floor: lambda: common.timed_rate(
                        floor, rows, lambda: df.mapInArrow(send, "n long").collect()),
                    ours: feed(consumers.sparktf_count, {"batch_size": 256, "column": "image"},
                               df, warm, rows, ours),
                }, args.repeat, warm=(ceiling, floor)))
            ratios += [(ours, ceiling, 0.9), (floor, ceiling, 0), (ours, floor, 0),
                       (ours, f"(a) sparktf RDD feed, {rdd_kind}", 1.0)]
            df.unpersist()
            warm.unpersist()

    common.report_rounds("Training feed throughput", runs, ratios)
    sc.stop()


if __name__ == "__main__":
    main()
