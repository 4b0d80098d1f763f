"""Feed rows/s against the number of training nodes (2, 4, 8) on local-cluster, same data.

    .venv/bin/python benchmarks/feed_scale.py [--rows 100000] [--nodes 2,4,8] [--repeat 1]

With ``split="all"`` every chunk of every partition is split across all training
nodes, so each feeding task opens one connection per node and a chunk of R rows
becomes R/N rows per message; with ``split="segments"`` (from an epoch's second
feed on) each partition goes to the node(s) holding its share of the epoch, in
whole chunks.  For each N this starts local-cluster[N,1,1536] (N one-core
executors, oversubscribed on a small machine: read the trend, not the level),
feeds the same cached RDD of (float32[784], label) rows and the same DataFrame
(``--partitions`` partitions) to N nodes that count rows, ``--epochs`` epochs in
one ``train()`` per split (the variants taking turns in each of ``--repeat``
rounds), and prints rows/s, the ratio to the first N and the ratio of the two
splits (medians of the rounds' ratios).
"""

from __future__ import annotations

import argparse
import functools
import logging

import common
import consumers


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", default="2,4,8", help="comma-separated node counts")
    p.add_argument("--skip-df", action="store_true", help="feed only the RDD")
    p.add_argument("--epochs", type=int, default=3, help="epochs per train() call")
    p.add_argument("--splits", default="all,segments", help="train(split=...) values")


def main() -> None:
    args = common.parse_args(__doc__, _extra)
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession
    cloudpickle.register_pickle_by_value(consumers)
    logging.basicConfig(level=logging.WARNING)
    from sparktf import TFCluster

    runs: dict[str, list[float]] = {}
    ratios = []
    counts = [int(n) for n in args.nodes.split(",")]
    splits = args.splits.split(",")
    for n in counts:
        sc = common.spark_context(master=f"local-cluster[{n},1,1536]")
        data = {"RDD": (common.mnist_like_rdd(sc, args.rows, args.partitions),
                        common.mnist_like_rdd(sc, 4_000 * n, n), "_0")}
        if not args.skip_df:
            data["DataFrame"] = (common.image_df(SparkSession(sc), args.rows, args.partitions),
                                 common.image_df(SparkSession(sc), 4_000 * n, n), "image")
        variants = {}
        for kind, (source, warm, column) in data.items():
            for split in splits:
                name = f"{kind} feed, split={split}, {n} nodes"
                variants[name] = functools.partial(
                    common.epoch_rate, sc, TFCluster.run, consumers.sparktf_count,
                    {"batch_size": 256, "column": column}, source, warm, args.rows, name,
                    num_nodes=n, epochs=args.epochs, split=split)
                if n != counts[0]:
                    ratios.append((name, f"{kind} feed, split={split}, {counts[0]} nodes", 0.0))
            if len(splits) == 2:
                ratios.append((f"{kind} feed, split={splits[1]}, {n} nodes",
                               f"{kind} feed, split={splits[0]}, {n} nodes", 0.0))
        # The splits take turns round by round, after one untimed run that warms Spark's
        # JVMs: measured one after the other, whichever ran first was the slower (by up
        # to 1.36x at 2 nodes), whatever its split.
        runs.update(common.take_turns(variants, args.repeat, warm=(next(iter(variants)),)))
        sc.stop()
    common.report_rounds("Feed rows/s by number of nodes", runs, ratios)

if __name__ == "__main__":
    main()
