"""Feed rows/s against the number of training nodes (2, 4, 8) on local-cluster, same data.

    .venv/bin/python benchmarks/feed_scale.py [--rows 100000] [--nodes 2,4,8] [--repeat 1]

Every chunk of every partition is split across all training nodes (that keeps
the epoch agreement exact), so each feeding task opens one connection per node
and a chunk of R rows becomes R/N rows per message.  For each N this starts
local-cluster[N,1,1536] (N one-core executors, oversubscribed on a small
machine: read the trend, not the level), feeds the same cached RDD of
(float32[784], label) rows and the same DataFrame (``--partitions`` partitions)
to N nodes that count rows, and prints rows/s and the ratio to the first N.
"""

from __future__ import annotations

import argparse
import logging

import common
import consumers


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", default="2,4,8", help="comma-separated node counts")
    p.add_argument("--skip-df", action="store_true", help="feed only the RDD")


def main() -> None:
    args = common.parse_args(__doc__, _extra)
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession
    cloudpickle.register_pickle_by_value(consumers)
    logging.basicConfig(level=logging.WARNING)
    from sparktf import TFCluster

    rates: dict[str, float] = {}
    ratios = []
    counts = [int(n) for n in args.nodes.split(",")]
    for n in counts:
        sc = common.spark_context(master=f"local-cluster[{n},1,1536]")
        rdd = common.mnist_like_rdd(sc, args.rows, args.partitions)
        warm = common.mnist_like_rdd(sc, 4_000 * n, n)
        name = f"RDD feed, {n} nodes"
        rates[name] = common.epoch_rates(sc, TFCluster.run, consumers.sparktf_count,
                                         {"batch_size": 256, "column": "_0"}, rdd, warm,
                                         args.rows, args.repeat, name, num_nodes=n)
        dname = f"DataFrame feed, {n} nodes"
        if not args.skip_df:
            df = common.image_df(SparkSession(sc), args.rows, args.partitions)
            dwarm = common.image_df(SparkSession(sc), 4_000 * n, n)
            rates[dname] = common.epoch_rates(sc, TFCluster.run, consumers.sparktf_count,
                                              {"batch_size": 256, "column": "image"}, df, dwarm,
                                              args.rows, args.repeat, dname, num_nodes=n)
        if n != counts[0]:
            ratios += [(name, f"RDD feed, {counts[0]} nodes", 0.0),
                       (dname, f"DataFrame feed, {counts[0]} nodes", 0.0)]
        sc.stop()
    common.report_rates("Feed rows/s by number of nodes", rates, ratios)


if __name__ == "__main__":
    main()
