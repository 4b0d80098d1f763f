"""Cost of encryption: the training feed with and without TLS, in the same run.

    .venv/bin/python benchmarks/feed_encryption.py [--rows 200000] [--repeat 3]

Feeds the same cached MNIST-shaped data (784 float32 + label) to 2 nodes on
local-cluster[2,1,2048] whose consumers only count rows, through clusters
started with ``encrypt=False`` and ``encrypt=True`` (TLS 1.3 under the HMAC
framing, see sparktf/tls.py), alternating clear and encrypted runs (after one
untimed cluster) so that a change in the machine's load hits both alike.
Prints rows/s per variant and the encrypted/clear ratio against the target
(>= 0.8x), for an RDD of numpy rows and for a DataFrame.
"""

from __future__ import annotations

import logging
import statistics
import time

import common
import consumers


def main() -> None:
    args = common.parse_args(__doc__)
    sc = common.spark_context()
    from pyspark import cloudpickle
    cloudpickle.register_pickle_by_value(consumers)
    logging.basicConfig(level=logging.WARNING)
    from sparktf import TFCluster

    def epoch_time(data, warmup, column: str, encrypt: bool) -> float:
        """Seconds of one train() epoch; cluster start and shutdown are not timed."""
        cluster = TFCluster.run(sc, consumers.sparktf_count,
                                {"batch_size": 256, "column": column}, 2, 0, input_mode=1,
                                encrypt=encrypt)
        try:
            cluster.train(warmup, num_epochs=1)  # the consumers have imported what they need
            t0 = time.perf_counter()
            cluster.train(data, num_epochs=1)
            return time.perf_counter() - t0
        finally:
            cluster.shutdown()

    inputs = [("RDD of numpy rows", common.mnist_like_rdd(sc, args.rows, args.partitions),
               common.mnist_like_rdd(sc, 20_000, 2), "_0"),
              ("DataFrame", common.mnist_like_df(sc, args.rows, args.partitions),
               common.mnist_like_df(sc, 20_000, 2), "image")]
    results: dict[str, float] = {}
    ratios = []
    epoch_time(inputs[0][1], inputs[0][2], inputs[0][3], False)  # untimed: the first cluster
    # of a run also starts the executors' Python workers (3x slower in a measured run)
    for label, data, warmup, column in inputs:
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat):
            for encrypt in (False, True):
                t = epoch_time(data, warmup, column, encrypt)
                times[encrypt].append(t)
                print(f"  {label}, {'encrypted' if encrypt else 'clear'}: {t:.2f} s "
                      f"({args.rows / t:,.0f} rows/s)", flush=True)
        clear, tls = f"sparktf {label}, clear", f"sparktf {label}, TLS"
        results[clear] = statistics.median(times[False])
        results[tls] = statistics.median(times[True])
        ratios.append((tls, clear, 0.8))
    common.report("Training feed throughput, encrypted vs clear", args.rows, results, ratios)
    sc.stop()


if __name__ == "__main__":
    main()
