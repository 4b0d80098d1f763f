"""Cached epochs (``train(..., cache=True)``) against epochs fed by Spark, in one run.

200,000 MNIST-shaped rows (784 float32 + label), 2 nodes on
``local-cluster[2,1,2048]``, a consumer that only counts rows
(``next_batch`` of whole numpy columns).  Every ``train(rdd, epochs,
cache=True)`` call feeds the first epoch from Spark and has the nodes replay the
others; the driver times each epoch (a fed epoch ends once its last chunk is in
the nodes' buffers, a replayed one once every node has queued its rows, so both
count the same thing).  The baseline is an epoch fed without caching, on the
same cluster.  Two clusters: the cache in memory, and the cache spilled whole
to the nodes' encrypted files (``SPARKTF_CACHE_MEMORY_MB=0``).

Target (issue 16): cached epochs >= 5x the rows/s of the fed first epoch.
"""

from __future__ import annotations

import statistics
import time

import common

EPOCHS = 4  # per train() call: one fed, three replayed


def timed_epochs(cluster, times: dict[str, list[float]]) -> None:
    """Record the wall time of every fed and every replayed epoch of ``cluster``."""
    feeder = cluster._feeder
    for method, label in (("train_epoch", "fed"), ("replay_epoch", "replayed")):
        inner = getattr(feeder, method)

        def wrapper(*a, _inner=inner, _label=label, **kw):
            t0 = time.perf_counter()
            out = _inner(*a, **kw)
            times[_label].append(time.perf_counter() - t0)
            return out
        setattr(feeder, method, wrapper)


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    sc = common.spark_context()
    import consumers
    from sparktf import TFCluster
    rdd = common.mnist_like_rdd(sc, args.rows, args.partitions)
    results = {}
    for variant, env in (("memory", {}), ("encrypted spill", {"SPARKTF_CACHE_MEMORY_MB": "0"})):
        cluster = TFCluster.run(sc, consumers.sparktf_count, {"column": "_1", "batch_size": 4096},
                                2, input_mode=TFCluster.InputMode.SPARK, env=env)
        cluster.train(rdd, 1)  # untimed: warms the executors' Python workers
        plain: dict[str, list[float]] = {"fed": [], "replayed": []}
        timed_epochs(cluster, plain)
        for _ in range(args.repeat):
            cluster.train(rdd, 1)
        cached: dict[str, list[float]] = {"fed": [], "replayed": []}
        timed_epochs(cluster, cached)
        for _ in range(args.repeat):
            cluster.train(rdd, EPOCHS, cache=True)
        cluster.shutdown(timeout=600)
        fed = statistics.median(plain["fed"])
        first = statistics.median(cached["fed"])
        replayed = statistics.median(cached["replayed"])
        print(f"{variant}: fed epochs {[round(t, 2) for t in plain['fed']]} s, fed and cached "
              f"{[round(t, 2) for t in cached['fed']]} s, replayed "
              f"{[round(t, 2) for t in cached['replayed']]} s", flush=True)
        results[variant] = (fed, first, replayed)
    rows = args.rows
    print(f"\nCached versus fed epochs ({rows:,} rows, 2 nodes, median epoch)")
    for variant, (fed, first, replayed) in results.items():
        ratio = fed / replayed
        print(f"  cache in {variant}:")
        print(f"    fed by Spark, no cache              {fed:7.2f} s {rows / fed:12,.0f} rows/s")
        print(f"    fed by Spark, kept in the cache     {first:7.2f} s {rows / first:12,.0f} rows/s"
              f"  ({fed / first:.2f}x)")
        print(f"    replayed by the nodes               {replayed:7.2f} s "
              f"{rows / replayed:12,.0f} rows/s  ({ratio:.2f}x the fed epoch; target >= 5x: "
              f"{'meets' if ratio >= 5 else 'MISSES'})")
    sc.stop()


if __name__ == "__main__":
    main()
