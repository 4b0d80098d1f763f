"""MNIST with InputMode.SPARK: Spark reads the CSV and feeds a MultiWorkerMirroredStrategy CNN.

    spark-submit --master local-cluster[2,1,2048] examples/mnist/keras/mnist_spark.py \\
        --cluster_size 2 --images_labels data/mnist/csv/train \\
        --model_dir mnist_model --export_dir mnist_export

Spark feeds the first epoch; by default (``--cache``) the nodes keep the rows they received
and replay epochs 2..N themselves, shuffled within each node (``cluster.train(..., cache=True)``:
no Spark job per epoch re-reading and re-parsing the CSV). The rows must fit in the nodes'
memory, or past ``SPARKTF_CACHE_MEMORY_MB`` (default 1024) in an encrypted spill file;
``--no-cache`` has Spark feed every epoch (TensorFlowOnSpark's way, a fresh order each epoch).

The chief exports a SavedModel to ``--export_dir`` (a local path or an ``hdfs://``,
``webhdfs://`` or ``s3://`` URL). ``--model_dir`` is accepted as in TensorFlowOnSpark but not
used: ``mnist_tf.py`` shows checkpointing and resuming.
"""

from __future__ import annotations

import argparse
import os
import sys


def main_fun(args, ctx):
    """Runs on every TF node (a fresh Python process per node)."""
    import tensorflow as tf
    from mnist_model import build_model

    import sparktf

    if args.seed is not None:   # same initial weights and dropout masks run after run
        tf.keras.utils.set_random_seed(args.seed)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # dataset()'s epoch agreement gives every worker the same number of steps, so the
    # strategy need not all-reduce "has every worker still data?" at every step.
    strategy.extended.experimental_enable_get_next_as_optional = False
    feed = ctx.get_data_feed(train_mode=True)
    # With --cache every epoch replays the first one's rows: one dataset iteration spans
    # all epochs and the steps per epoch are known, so Keras keeps one iterator (about 2x
    # faster for these small epochs). With --no-cache, steps_per_epoch() is None: each
    # epoch runs to the end of its fed data.
    ds = feed.dataset(args.batch_size, epochs=args.epochs).map(
        lambda image, label: (tf.reshape(image, (-1, 28, 28, 1)), label))
    with strategy.scope():
        model = build_model(tf)
    hist = model.fit(ds, epochs=args.epochs, steps_per_epoch=feed.steps_per_epoch(strategy),
                     verbose=2)
    print(f"final loss: {hist.history['loss'][-1]:.4f}", flush=True)
    # Every MWMS worker must take part in saving; only the chief's copy is the export,
    # written to a local path or an hdfs://, webhdfs:// or s3:// URL.
    if sparktf.export_model(args.export_dir, model.save, ctx):
        print(f"exported SavedModel to {args.export_dir}", flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cluster_size", type=int, default=2, help="number of TF nodes")
    p.add_argument("--images_labels", default="data/mnist/csv/train", help="CSV input")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=64, help="per-worker batch size")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="nodes replay epochs 2..N from the rows fed once (--no-cache: Spark "
                        "feeds every epoch)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed TensorFlow on every node (initial weights, dropout)")
    p.add_argument("--partitions", type=int, default=None,
                   help="coalesce the training data to N partitions (with --seed and 1, every "
                        "run feeds the nodes the same rows in the same order)")
    p.add_argument("--model_dir", default="mnist_model", help="unused (see mnist_tf.py)")
    p.add_argument("--export_dir", default="mnist_export")
    return p


def run(sc, args) -> None:
    """Train on SparkContext ``sc``, fed from the CSV by Spark, and export."""
    from mnist_model import parse_csv
    from sparktf import TFCluster

    model_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_model.py")
    if os.path.exists(model_py):   # on YARN in cluster mode it comes with --py-files instead
        sc.addPyFile(model_py)
    data = sc.textFile(args.images_labels).map(parse_csv)
    if args.partitions:
        data = data.coalesce(args.partitions)
    cluster = TFCluster.run(sc, main_fun, args, args.cluster_size, num_ps=0,
                            input_mode=TFCluster.InputMode.SPARK, master_node="chief")
    cluster.train(data, args.epochs, cache=args.cache)
    cluster.shutdown()
    print(f"mnist_spark: trained {args.epochs} epochs on {args.cluster_size} nodes; "
          f"model exported to {args.export_dir}", flush=True)


def main() -> None:
    args = parser().parse_args()
    from pyspark import SparkContext
    run(SparkContext.getOrCreate(), args)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
