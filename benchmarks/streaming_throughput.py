"""Streaming inference: rows/s on a streaming DataFrame vs the same files as a batch DataFrame.

    .venv/bin/python benchmarks/streaming_throughput.py [--rows 200000] [--partitions 8]
        [--repeat 3]

One cluster of 2 nodes (a map_fun that returns each row's label) scores the same
Parquet files (``image array<float>`` of 784, ``label long``; ``--partitions`` files)
four ways, interleaved, into Spark's ``noop`` sink:

* batch: ``cluster.inference(spark.read.parquet(dir))``;
* stream, one micro-batch: ``spark.readStream...parquet(dir)``, ``availableNow``, a fresh
  checkpoint each run (start of the query to its end);
* stream, one file per micro-batch (``maxFilesPerTrigger=1``): one task per micro-batch, so
  one of the two executors and nodes works at a time;
* stream, two files per micro-batch (``maxFilesPerTrigger=2``): both at work, so the
  difference to the batch is the per-micro-batch cost (planning, listing, offset and
  commit logs).

Target: streaming rows/s >= 0.8x batch.  Then the end-to-end latency of one micro-batch:
a query with a ``processingTime`` trigger watches a directory; a Parquet file of 1,000 rows
is renamed into it and the clock stops when ``foreachBatch`` has written its results
(Parquet): landing to results in the sink, median of 5.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time

import common
import consumers

LATENCY_ROWS = 1000
TRIGGER = "100 milliseconds"


def land_file(directory: str, rows: int, seed: int) -> float:
    """Write a Parquet file of ``rows`` rows beside ``directory`` and rename it in;
    the time it landed."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    pixels = pa.array(rng.random(rows * 784, dtype=np.float32))
    offsets = pa.array(np.arange(0, rows * 784 + 1, 784, dtype=np.int32))
    table = pa.table({"image": pa.ListArray.from_arrays(offsets, pixels),
                      "label": pa.array(rng.integers(0, 10, rows), pa.int64())})
    tmp = os.path.join(os.path.dirname(directory), f".land-{seed}.parquet")
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(directory, f"land-{seed}.parquet"))
    return time.perf_counter()


def main() -> None:
    args = common.parse_args(__doc__)
    sc = common.spark_context()
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession
    cloudpickle.register_pickle_by_value(consumers)
    from sparktf import TFCluster

    spark = SparkSession(sc)
    work = tempfile.mkdtemp(prefix="sparktf-stream-bench-")
    data = os.path.join(work, "data")
    try:
        df = common.mnist_like_df(sc, args.rows, args.partitions)
        df.repartition(args.partitions).write.parquet(data)
        df.unpersist()
        schema = spark.read.parquet(data).schema
        cluster = TFCluster.run(sc, consumers.sparktf_infer_label, {"batch_size": 1024}, 2,
                                input_mode=TFCluster.InputMode.SPARK)

        def infer(frame):
            return cluster.inference(frame, schema="pred long", keep_columns=["label"])

        runs = [0]
        phases: dict[str, list[dict]] = {}  # variant -> durationMs of its last run's batches

        def batch():
            infer(spark.read.parquet(data)).write.format("noop").mode("overwrite").save()

        def stream(name, **options):
            def run():
                runs[0] += 1
                reader = spark.readStream.schema(schema)
                for k, v in options.items():
                    reader = reader.option(k, v)
                query = (infer(reader.parquet(data)).writeStream.format("noop")
                         .option("checkpointLocation", os.path.join(work, f"ckpt-{runs[0]}"))
                         .trigger(availableNow=True).start())
                query.awaitTermination()
                rows = sum(p["numInputRows"] for p in query.recentProgress)
                assert rows == args.rows, f"the stream read {rows} rows of {args.rows}"
                phases[name] = [p["durationMs"] for p in query.recentProgress
                                if p["numInputRows"]]
            return name, run

        variants = dict([
            ("batch DataFrame", batch),
            stream("stream, one micro-batch (availableNow)"),
            stream(f"stream, {args.partitions} micro-batches (maxFilesPerTrigger=1)",
                   maxFilesPerTrigger=1),
            stream(f"stream, {-(-args.partitions // 2)} micro-batches (maxFilesPerTrigger=2)",
                   maxFilesPerTrigger=2)])
        for fn in variants.values():  # warm-up: Python workers, the first query's planning
            fn()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeat):  # interleaved, so that load drift hits all alike
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
                print(f"  {name}: {times[name][-1]:.2f} s "
                      f"({args.rows / times[name][-1]:,.0f} rows/s)", flush=True)
        results = {name: statistics.median(t) for name, t in times.items()}
        common.report("Streaming inference throughput (cluster.inference, 2 nodes)", args.rows,
                      results, [(name, "batch DataFrame", 0.8) for name in variants
                                if name != "batch DataFrame"])
        print("  (ratios are streaming rows/s over batch rows/s)")
        print("\nWhere a micro-batch's time goes (mean per micro-batch of the last run, ms; "
              "addBatch = scoring through the nodes, the rest is Spark's own work: offsets "
              "and file listing, planning, the offset and commit logs):")
        for name, batches in phases.items():
            total = statistics.mean(b["triggerExecution"] for b in batches)
            add = statistics.mean(b.get("addBatch", 0) for b in batches)
            print(f"  {name}: {len(batches)} micro-batch(es), {total:.0f} ms each: addBatch "
                  f"{add:.0f} ms, the rest {total - add:.0f} ms")
        latency(spark, infer, schema, work)
        cluster.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        sc.stop()


def latency(spark, infer, schema, work: str) -> None:
    """Landing of a 1,000-row file to its results written by foreachBatch, median of 5."""
    landing, out = os.path.join(work, "landing"), os.path.join(work, "latency-out")
    os.makedirs(landing)
    written: dict[int, float] = {}  # batch id -> when its results were written
    cond = threading.Condition()

    def sink(frame, batch_id):
        frame.write.mode("append").parquet(out)
        with cond:
            written[batch_id] = time.perf_counter()
            cond.notify_all()

    query = (infer(spark.readStream.schema(schema).parquet(landing)).writeStream
             .foreachBatch(sink).option("checkpointLocation", os.path.join(work, "ckpt-lat"))
             .trigger(processingTime=TRIGGER).start())
    delays = []
    try:
        for i in range(6):  # the first one warms the query up and is not counted
            with cond:
                before = len(written)
            landed = land_file(landing, LATENCY_ROWS, i)
            with cond:
                if not cond.wait_for(lambda: len(written) > before, timeout=120):
                    raise RuntimeError("no micro-batch result within 120 s")
                done = max(written.values())
            if i:
                delays.append(done - landed)
                print(f"  micro-batch of {LATENCY_ROWS:,} rows: {delays[-1]:.2f} s from "
                      "landing to results in the sink", flush=True)
    finally:
        query.stop()
    got = spark.read.parquet(out).count()
    assert got == 6 * LATENCY_ROWS, f"{got} result rows for {6 * LATENCY_ROWS}"
    print(f"\nEnd-to-end latency of one micro-batch of {LATENCY_ROWS:,} rows "
          f"(trigger {TRIGGER}, file landing to results in a Parquet sink): median "
          f"{statistics.median(delays):.2f} s, min {min(delays):.2f} s, max {max(delays):.2f} s")


if __name__ == "__main__":
    main()
