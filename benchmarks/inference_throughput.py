"""Inference throughput: sparktf vs TensorFlowOnSpark 2.2.5 on the same data.

    .venv/bin/python benchmarks/inference_throughput.py [--rows 200000] [--repeat 3] [--skip-tfos]

Both run ``cluster.inference(rdd)`` on 2 nodes with a map_fun that returns
each row's label through next_batch / batch_results, and count the results.
"""

from __future__ import annotations

import argparse

import common
import consumers


def main() -> None:
    args = common.parse_args(__doc__)
    tfos_path = None if args.skip_tfos else common.prepare_tfos()
    sc = common.spark_context(tfos_path)
    from pyspark import cloudpickle
    cloudpickle.register_pickle_by_value(consumers)
    from sparktf import TFCluster

    rdd = common.mnist_like_rdd(sc, args.rows, args.partitions)
    results: dict[str, float] = {}

    def measure(name, run, map_fun, tf_args):
        cluster = run(sc, map_fun, tf_args, 2, 0, input_mode=1)

        def once():
            n = cluster.inference(rdd).count()
            assert n == args.rows, f"{name}: {n} results for {args.rows} rows"

        once()  # warm-up: the nodes have started consuming
        results[name] = common.median_time(name, args.rows, once, args.repeat)
        cluster.shutdown()

    measure("sparktf inference", TFCluster.run, consumers.sparktf_infer, {"batch_size": 256})
    if tfos_path:
        from tensorflowonspark import TFCluster as TFoS
        measure("TensorFlowOnSpark 2.2.5 inference", TFoS.run, consumers.tfos_infer,
                argparse.Namespace(batch_size=256))
    common.report("Inference throughput", args.rows, results,
                  [("sparktf inference", "TensorFlowOnSpark 2.2.5 inference", 15)])
    sc.stop()


if __name__ == "__main__":
    main()
