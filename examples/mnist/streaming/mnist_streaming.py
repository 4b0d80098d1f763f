"""MNIST from streams: train the CNN on CSV lines as they land in a directory, score others.

    # Train from a stream (Structured Streaming; or --mode dstream for Spark Streaming)
    spark-submit --master local-cluster[2,1,2048] examples/mnist/streaming/mnist_streaming.py \\
        --train_dir stream/train --export_dir mnist_stream_export --trigger "10 seconds"
    # Score a stream with the export: label, prediction -> Parquet
    spark-submit --master local-cluster[2,1,2048] examples/mnist/streaming/mnist_streaming.py \\
        --score_dir stream/test --export_dir mnist_stream_export \\
        --output predictions.parquet --checkpoint predictions.ckpt --trigger "10 seconds"
    # Score a Kafka topic of CSV lines instead (Spark's Kafka source: --packages, see README)
    spark-submit --packages org.apache.spark:spark-sql-kafka-0-10_2.13:<Spark version> ... \
        --score_kafka broker1:9092 --score_topic mnist --export_dir mnist_stream_export \
        --output predictions.parquet --checkpoint predictions.ckpt --trigger "10 seconds"

Input: text files of MNIST CSV lines (``label,p0,...,p783``, as ``mnist_data_setup.py``
writes under ``csv/``) moved into the watched directory while the job runs (write them
elsewhere and rename them in, so that Spark never reads a half-written file).

* **Training** (``--train_dir``): every micro-batch is fed to a MultiWorkerMirroredStrategy
  CNN (``mnist_model.py``) on ``--cluster_size`` nodes; each node runs ``model.fit`` on
  exactly one micro-batch at a time (``feed.next_batch_id()`` + ``feed.dataset()``). When
  the stream is stopped the chief exports a SavedModel to ``--export_dir``.
* **Scoring** (``--score_dir``, or ``--score_kafka`` with ``--score_topic``: one CSV line per
  message): ``cluster.inference`` on the streaming DataFrame; nodes load
  the export; ``label, prediction`` rows go to Parquet at ``--output`` with a checkpoint at
  ``--checkpoint`` (restart the job on the same checkpoint: every line is scored exactly once).

Both in one run train first, then score.  How the job stops: ``--trigger availableNow``
processes the files present and ends by itself; otherwise the job runs until
``python -m sparktf stop <stop file>`` (the driver logs the line), SIGTERM or Ctrl-C to the
driver's Python process, or ``--stop_after_rows N`` (the driver calls
``cluster.request_stop()`` once N rows went through).  Each stops gracefully: the
micro-batch in flight completes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def train_fun(args, ctx):
    """Runs on every TF node: fit on each micro-batch as it comes, export at the end."""
    import tensorflow as tf
    from mnist_model import build_model

    import sparktf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(train_mode=True)
    # One iteration of this dataset is one micro-batch (after next_batch_id()).
    ds = feed.dataset(args.batch_size).map(
        lambda image, label: (tf.reshape(image, (-1, 28, 28, 1)), label))
    with strategy.scope():
        model = build_model(tf)
    batches = 0
    while (batch_id := feed.next_batch_id()) is not None:
        hist = model.fit(ds, epochs=1, verbose=0)
        batches += 1
        print(f"micro-batch {batch_id}: loss {hist.history['loss'][-1]:.4f}", flush=True)
    if sparktf.export_model(args.export_dir, model.save, ctx):
        print(f"trained on {batches} micro-batches; exported to {args.export_dir}", flush=True)


def score_fun(args, ctx):
    """Runs on every TF node: load the export, predict each fed chunk of images."""
    import numpy as np
    import pyarrow as pa
    import tensorflow as tf

    import sparktf
    with sparktf.local_copy(ctx.absolute_path(args.export_dir)) as path:
        model = tf.keras.models.load_model(path)
    feed = ctx.get_data_feed(train_mode=False, input_mapping={"image": "image"})
    while not feed.should_stop():
        batch = feed.next_batch(args.batch_size)
        if not len(batch["image"]):
            break
        probs = model.predict_on_batch(batch["image"].reshape(-1, 28, 28, 1))
        feed.batch_results(pa.RecordBatch.from_pydict(
            {"prediction": np.argmax(probs, axis=1).astype(np.int64)}))


def file_lines(spark, directory, max_files):
    """The lines of the text files landing in ``directory`` (column ``value``)."""
    return spark.readStream.option("maxFilesPerTrigger", max_files).text(directory)


def kafka_lines(spark, brokers, topic):
    """The messages of a Kafka topic as text (column ``value``), from its earliest offset
    (a restarted query resumes from its checkpoint instead)."""
    return (spark.readStream.format("kafka").option("kafka.bootstrap.servers", brokers)
            .option("subscribe", topic).option("startingOffsets", "earliest").load()
            .selectExpr("CAST(value AS STRING) AS value"))


def csv_frame(lines):
    """A streaming DataFrame ``image array<float>`` (784, scaled to [0, 1]), ``label int``
    from one of CSV lines ``label,p0,...,p783`` (column ``value``)."""
    from pyspark.sql import functions as F
    parts = F.split("value", ",")
    return lines.select(
        F.transform(F.slice(parts, 2, 784), lambda x: x.cast("float") / 255.0)
        .cast("array<float>").alias("image"),
        parts[0].cast("int").alias("label"))


def trigger(text):
    return {"availableNow": True} if text == "availableNow" else {"processingTime": text}


def stop_after(cluster, rows, spark=None, dstream=None):
    """Call ``cluster.request_stop()`` once ``rows`` rows went through the stream."""
    seen = [0]

    def add(n):
        seen[0] += n
        if seen[0] >= rows:
            cluster.request_stop(f"{seen[0]} rows trained on (--stop_after_rows)")

    if dstream is not None:
        dstream.foreachRDD(lambda rdd: add(rdd.count()) if rdd.getNumPartitions() else None)
        return
    from pyspark.sql.streaming import StreamingQueryListener

    class Counter(StreamingQueryListener):
        def onQueryStarted(self, event): pass  # noqa: E704,N802
        def onQueryIdle(self, event): pass  # noqa: E704,N802
        def onQueryTerminated(self, event): pass  # noqa: E704,N802

        def onQueryProgress(self, event):  # noqa: N802
            add(event.progress.numInputRows)

    spark.streams.addListener(Counter())


def train(sc, spark, args):
    from pyspark.streaming import StreamingContext

    from mnist_model import parse_csv
    from sparktf import TFCluster
    cluster = TFCluster.run(sc, train_fun, args, args.cluster_size,
                            input_mode=TFCluster.InputMode.SPARK, master_node="chief")
    if args.mode == "dstream":
        ssc = StreamingContext(sc, args.batch_interval)
        stream = ssc.textFileStream(args.train_dir).map(parse_csv)
        cluster.train(stream)
        if args.stop_after_rows:
            stop_after(cluster, args.stop_after_rows, dstream=stream)
        ssc.start()
        cluster.shutdown(ssc)  # waits for a stop; the micro-batch in flight completes
    else:
        if args.stop_after_rows:
            stop_after(cluster, args.stop_after_rows, spark=spark)
        cluster.train(csv_frame(file_lines(spark, args.train_dir, args.max_files_per_trigger)),
                      checkpoint_location=args.train_checkpoint, trigger=trigger(args.trigger))
        cluster.shutdown()  # waits for a stop (or, availableNow, for the query to end)
    print(f"mnist_streaming: trained from a {args.mode} stream; model exported to "
          f"{args.export_dir}", flush=True)


def score(sc, spark, args):
    from sparktf import TFCluster
    cluster = TFCluster.run(sc, score_fun, args, args.cluster_size,
                            input_mode=TFCluster.InputMode.SPARK)
    lines = (kafka_lines(spark, args.score_kafka, args.score_topic) if args.score_kafka
             else file_lines(spark, args.score_dir, args.max_files_per_trigger))
    preds = cluster.inference(csv_frame(lines), schema="prediction long", keep_columns=["label"])
    query = (preds.writeStream.format("parquet").option("path", args.output)
             .option("checkpointLocation", args.checkpoint).trigger(**trigger(args.trigger))
             .start())
    if args.stop_after_rows:
        stop_after(cluster, args.stop_after_rows, spark=spark)
    cluster.shutdown(query)  # waits for a stop (or, availableNow, for the query to end)
    rows = spark.read.parquet(args.output)
    n, correct = rows.count(), rows.filter("label = prediction").count()
    print(f"mnist_streaming: {n} predictions in {args.output}; accuracy "
          f"{correct / max(n, 1):.4f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train_dir", help="directory of CSV files to train from (a stream)")
    p.add_argument("--score_dir", help="directory of CSV files to score (a stream)")
    p.add_argument("--score_kafka", metavar="BROKERS",
                   help="score the Kafka topic --score_topic at these bootstrap servers instead")
    p.add_argument("--score_topic", default="mnist", help="the Kafka topic to score")
    p.add_argument("--mode", choices=["structured", "dstream"], default="structured",
                   help="training stream: Structured Streaming or Spark Streaming (DStream)")
    p.add_argument("--export_dir", default="mnist_stream_export")
    p.add_argument("--output", default="mnist_stream_predictions",
                   help="Parquet output of scoring")
    p.add_argument("--checkpoint", default="mnist_stream_predictions.ckpt",
                   help="the scoring query's checkpoint")
    p.add_argument("--train_checkpoint", default=None,
                   help="the training query's checkpoint (structured)")
    p.add_argument("--trigger", default="10 seconds",
                   help="'availableNow' or a processing-time interval such as '10 seconds'")
    p.add_argument("--batch_interval", type=float, default=10,
                   help="DStream batch interval, seconds")
    p.add_argument("--max_files_per_trigger", type=int, default=1)
    p.add_argument("--stop_after_rows", type=int, default=0,
                   help="request a stop once this many rows went through (0: never)")
    p.add_argument("--cluster_size", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=64)
    args = p.parse_args()
    if args.score_dir and args.score_kafka:
        p.error("score from --score_dir or from --score_kafka, not both")
    if not (args.train_dir or args.score_dir or args.score_kafka):
        p.error("give --train_dir, --score_dir (or --score_kafka) or both")
    if args.mode == "dstream" and args.trigger == "availableNow" and args.train_dir:
        p.error("a DStream has no availableNow: stop it with --stop_after_rows, "
                "python -m sparktf stop, or SIGTERM")

    # sparktf's progress and the stop command's line (python -m sparktf stop PATH) on stderr
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sparktf").setLevel(logging.INFO)
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    sc = SparkContext.getOrCreate()
    spark = SparkSession(sc)
    model_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "keras", "mnist_model.py")
    if os.path.exists(model_py):  # on YARN in cluster mode it comes with --py-files instead
        sc.addPyFile(model_py)
    if args.train_dir:
        train(sc, spark, args)
    if args.score_dir or args.score_kafka:
        score(sc, spark, args)
    spark.stop()


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "keras"))
    main()
