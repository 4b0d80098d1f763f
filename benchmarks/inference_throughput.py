"""Inference throughput: sparktf (RDD, DataFrame) vs TensorFlowOnSpark 2.2.5 on the same data.

    .venv/bin/python benchmarks/inference_throughput.py [--rows 200000] [--repeat 3] [--skip-tfos]

On 2 nodes, with map_funs that return each row's label:

* sparktf ``cluster.inference(rdd)`` of (float32[784], label) rows, the map_fun
  reading rows through ``next_batch`` (as TFoS users write it) and, second,
  whole numpy columns through ``input_mapping``; the results counted;
* sparktf ``cluster.inference(df)`` (a DataFrame out, through ``mapInArrow``)
  of the same rows as ``image array<float>, label``, with the input_mapping
  map_fun, the result DataFrame counted after a ``noop`` write (so that every
  row is computed);
* TensorFlowOnSpark 2.2.5 ``inference(rdd)`` (``next_batch`` map_fun) on
  ``--tfos-rows`` rows.
"""

from __future__ import annotations

import argparse

import common
import consumers


def _extra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tfos-rows", type=int, default=40_000, help="rows TFoS infers")


def main() -> None:
    args = common.parse_args(__doc__, _extra)
    tfos_path = None if args.skip_tfos else common.prepare_tfos()
    sc = common.spark_context(tfos_path)
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession
    cloudpickle.register_pickle_by_value(consumers)
    from sparktf import TFCluster

    rdd = common.mnist_like_rdd(sc, args.rows, args.partitions)
    df = common.image_df(SparkSession(sc), args.rows, args.partitions)
    rates: dict[str, float] = {}

    def measure(name, run, map_fun, tf_args, action, rows):
        cluster = run(sc, map_fun, tf_args, 2, 0, input_mode=1)
        try:
            rates[name] = common.median_rate(name, rows, lambda: action(cluster), args.repeat)
        finally:
            cluster.shutdown()

    def count_rdd(data, rows):
        def action(cluster):
            n = cluster.inference(data).count()
            assert n == rows, f"{n} results for {rows} rows"
        return action

    def count_df(cluster):
        out = cluster.inference(df, schema="y long", keep_columns=["label"])
        out.write.format("noop").mode("overwrite").save()

    rows_rdd = "sparktf inference, RDD, next_batch rows"
    cols_rdd = "sparktf inference, RDD, input_mapping columns"
    frame = "sparktf inference, DataFrame out"
    tfos = "TensorFlowOnSpark 2.2.5 inference"
    measure(rows_rdd, TFCluster.run, consumers.sparktf_infer, {"batch_size": 256},
            count_rdd(rdd, args.rows), args.rows)
    measure(cols_rdd, TFCluster.run, consumers.sparktf_infer_columns,
            {"batch_size": 256, "column": "_1"}, count_rdd(rdd, args.rows), args.rows)
    measure(frame, TFCluster.run, consumers.sparktf_infer_columns,
            {"batch_size": 256, "column": "label"}, count_df, args.rows)
    if tfos_path:
        from tensorflowonspark import TFCluster as TFoS
        small = common.mnist_like_rdd(sc, args.tfos_rows, args.partitions)
        measure(tfos, TFoS.run, consumers.tfos_infer, argparse.Namespace(batch_size=256),
                count_rdd(small, args.tfos_rows), args.tfos_rows)
    common.report_rates("Inference throughput", rates, [
        (rows_rdd, tfos, 20), (cols_rdd, tfos, 20), (frame, tfos, 20),
        (frame, rows_rdd, 1.5), (frame, cols_rdd, 1.5)])
    sc.stop()


if __name__ == "__main__":
    main()
