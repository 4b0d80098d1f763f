"""Where a DataFrame feed epoch's CPU goes, by process kind, against Spark's own.

    .venv/bin/python benchmarks/feed_cpu.py [--rows 400000] [--df-kinds binary] [--repeat 3]

Issue 16 asks the DataFrame feed for 0.9x the rows/s of Spark's ``mapInArrow``
ceiling.  On a small machine both are CPU-bound, so the gap is the CPU that
feeding adds.  On ``local-cluster[2,1,2048]`` this measures, for the same cached
DataFrame (``--partitions`` partitions) and taking turns in each round: (e) the
ceiling (``mapInArrow`` counting batches), (g) the Arrow transport floor (each
record batch written to 2 sink processes), (b) one ``train()`` epoch to 2
sparktf nodes counting rows through ``next_batch`` (one cluster for all rounds,
started and warmed up first), and (h) the same batches sent through Arrow
Flight (gRPC, received in C++) to 2 ``flight_node.py`` processes that read them
through ``DataFeed.next_batch`` as the nodes do: another transport, for scale.
Around each it reads the CPU time of every process involved from ``/proc``
(``common.cpu_seconds``: executor JVMs, the driver JVM, Spark's Python workers,
the sparktf nodes, the sinks, the Flight nodes) and prints the medians over the
rounds: wall seconds, CPU seconds per kind, and what each variant adds to the
ceiling per kind.  Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import common
import consumers

VARIANTS = ("(e) mapInArrow ceiling", "(g) Arrow transport floor", "(b) sparktf train()",
            "(h) Arrow Flight to 2 consumers")


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--df-kinds", default=",".join(common.DF_KINDS),
                   help=f"comma-separated image column kinds, of {', '.join(common.DF_KINDS)}")


def node_main_threads() -> float:
    """CPU seconds so far of the sparktf nodes' main threads (``map_fun``: the consumer).

    The rest of a node's time is its other threads': receiving the feed, one thread per
    feeding connection (they end with the connection, so are counted by difference).
    """
    total = 0.0
    for pid in common.processes_of("sparktf nodes"):
        fields = common.stat_fields(f"/proc/{pid}/task/{pid}/stat")
        if fields is not None:
            total += common.cpu_of(fields)
    return total


def measure(fn) -> dict[str, float]:
    """Wall seconds (``"wall"``), CPU seconds per process kind and of the nodes' main threads
    during one ``fn()``."""
    before = {**common.cpu_seconds(), "node main threads": node_main_threads()}
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    after = {**common.cpu_seconds(), "node main threads": node_main_threads()}
    return {"wall": wall, **{k: after[k] - before[k] for k in after}}


def report(kind: str, rows: int, runs: dict[str, list[dict[str, float]]]) -> None:
    """Medians per variant and kind, and the CPU each variant adds to the ceiling."""
    keys = ["wall", *dict(common.PROCESS_KINDS)]
    med = {name: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
           for name, rounds in runs.items()}
    print(f"\nCPU seconds of one epoch of {rows:,} rows, `{kind}` "
          f"(medians of {len(next(iter(runs.values())))} rounds)")
    print(f"  {'':<28}{'wall s':>8}{'rows/s':>10}{'CPU s':>8}  "
          + "".join(f"{k:>16}" for k in keys[1:]))
    ceiling = med[VARIANTS[0]]
    for name, m in med.items():
        cpu = sum(m[k] for k in keys[1:])
        print(f"  {name:<28}{m['wall']:8.2f}{rows / m['wall']:10,.0f}{cpu:8.2f}  "
              + "".join(f"{m[k]:16.2f}" for k in keys[1:]))
    for name, m in list(med.items())[1:]:
        extra = {k: m[k] - ceiling[k] for k in keys[1:]}
        print(f"  {name} adds {sum(extra.values()):+.2f} CPU s to the ceiling's: "
              + ", ".join(f"{k} {v:+.2f}" for k, v in extra.items() if abs(v) >= 0.01)
              + f"; its rows/s {ceiling['wall'] / m['wall']:.2f}x the ceiling's")
    ours = med[VARIANTS[2]]
    print(f"  in the sparktf nodes: main threads (map_fun, the consumer) "
          f"{ours['node main threads']:.2f} CPU s, the others (receiving) "
          f"{ours['sparktf nodes'] - ours['node main threads']:.2f}")


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], _extra)
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession
    cloudpickle.register_pickle_by_value(consumers)
    logging.basicConfig(level=logging.WARNING)
    from sparktf import TFCluster

    def count_batches(batches):
        import pyarrow as pa
        n = 0
        for b in batches:
            n += b.num_rows
        yield pa.RecordBatch.from_pydict({"n": [n]})

    sc = common.spark_context()
    spark = SparkSession(sc)
    for kind in args.df_kinds.split(","):
        df = common.image_df(spark, args.rows, args.partitions, kind)
        warm = common.image_df(spark, 20_000, args.partitions, kind)
        cluster = TFCluster.run(sc, consumers.sparktf_count,
                                {"batch_size": 256, "column": "image"}, 2, 0, input_mode=1)
        try:
            with common.Sinks(2) as sinks, \
                    common.Sinks(2, "flight_node.py", ("image",)) as flight_nodes:
                send = common.arrow_transport_floor(sinks.ports)
                put = common.flight_feed(flight_nodes.ports)
                variants = dict(zip(VARIANTS, (
                    lambda: df.mapInArrow(count_batches, "n long").collect(),
                    lambda: df.mapInArrow(send, "n long").collect(),
                    lambda: cluster.train(df),
                    lambda: df.mapInArrow(put, "n long").collect())))
                for fn in variants.values():  # warm up every path once, untimed
                    fn()
                cluster.train(warm)
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
                for _ in range(args.repeat):
                    for name, fn in variants.items():
                        runs[name].append(measure(fn))
                        print(f"  {name}: {runs[name][-1]['wall']:.2f} s", flush=True)
        finally:
            cluster.shutdown()
        report(kind, args.rows, runs)
        df.unpersist()
        warm.unpersist()
    sc.stop()


if __name__ == "__main__":
    main()
