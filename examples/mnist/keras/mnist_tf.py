"""MNIST with InputMode.TENSORFLOW: each node reads its own shard of TFRecord or Parquet files.

    spark-submit --master local-cluster[2,1,2048] examples/mnist/keras/mnist_tf.py \\
        --cluster_size 2 --images_labels data/mnist/tfr/train --format tfr \\
        --model_dir mnist_model --export_dir mnist_export

``--images_labels``, ``--model_dir``, ``--export_dir`` and ``--report_dir`` are
local paths or ``hdfs://``, ``webhdfs://`` or ``s3://`` URLs (S3 settings come
from the nodes' ``AWS_*`` environment variables).  Spark only hosts the TF
cluster: ``sparktf.readers`` gives worker ``i`` of ``n`` files ``i, i+n, ...``
(Parquet with fewer files than workers: row groups).  The chief checkpoints
every epoch to ``--model_dir``; a new run on the same directory resumes after
the last epoch saved.  With ``--report_dir`` every worker writes
``worker-RANK.json`` there: the files it read, the epoch it started at, its
final loss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def dataset(args, ctx):
    """This worker's (image, label) examples, from its share of the files."""
    import tensorflow as tf
    from sparktf import readers

    if args.format == "tfr":
        spec = {"image": tf.io.FixedLenFeature([784], tf.int64),
                "label": tf.io.FixedLenFeature([1], tf.int64)}

        def parse(record):
            ex = tf.io.parse_single_example(record, spec)
            return (tf.reshape(tf.cast(ex["image"], tf.float32) / 255.0, (28, 28, 1)),
                    ex["label"][0])
        return readers.tfrecord_dataset(args.images_labels, ctx).map(parse)
    ds = readers.parquet_dataset(args.images_labels, ctx, columns=["image", "label"],
                                 batch_size=args.batch_size)
    return ds.map(lambda b: (tf.reshape(b["image"], (-1, 28, 28, 1)), b["label"])).unbatch()


def write_report(args, ctx, **fields):
    """``worker-RANK.json`` under ``--report_dir``: this worker's files and ``fields``."""
    from sparktf import fs, readers

    files = readers.resolve(args.images_labels, ctx)
    # Fewer files than workers: Parquet is shared out by row group (files: None).
    mine = readers.shard(files, ctx) if len(files) >= ctx.num_workers else None
    report = dict(rank=ctx.rank, num_workers=ctx.num_workers, files=mine, **fields)
    url = fs.join(ctx.absolute_path(args.report_dir), f"worker-{ctx.rank}.json")
    with fs.open_output(url) as f:
        f.write(json.dumps(report).encode())


def main_fun(args, ctx):
    import tensorflow as tf
    from mnist_model import build_model

    import sparktf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # Shards may differ in size: repeat and fix the steps so every worker takes the same number.
    ds = dataset(args, ctx).cache().shuffle(4096, seed=ctx.rank).repeat().batch(args.batch_size)
    with strategy.scope():
        model = build_model(tf)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = sparktf.CheckpointManager(checkpoint, args.model_dir, ctx, max_to_keep=3)
    done = manager.restore_or_initialize()   # epochs already done by an earlier run
    hist = model.fit(ds, epochs=args.epochs, initial_epoch=done,
                     steps_per_epoch=args.steps_per_epoch, verbose=2,
                     callbacks=[manager.keras_callback()])
    loss = hist.history["loss"][-1] if hist.history.get("loss") else None
    print(f"epochs {done}..{args.epochs}, final loss: {loss}", flush=True)
    # Every MWMS worker takes part in saving; only the chief's copy becomes the export.
    sparktf.export_model(args.export_dir, model.save, ctx)
    if args.report_dir:
        write_report(args, ctx, initial_epoch=done, epochs=args.epochs, loss=loss)


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cluster_size", type=int, default=2)
    p.add_argument("--images_labels", default="data/mnist/tfr/train")
    p.add_argument("--format", choices=["tfr", "parquet"], default="tfr")
    p.add_argument("--epochs", type=int, default=8, help="total, including resumed epochs")
    p.add_argument("--steps_per_epoch", type=int, default=31)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--model_dir", default="mnist_model", help="checkpoints, to resume from")
    p.add_argument("--export_dir", default="mnist_export")
    p.add_argument("--report_dir", default="", help="where each worker reports what it read")
    p.add_argument("--max_restarts", type=int, default=0,
                   help="restart the TF cluster this often when a node or executor is lost")
    return p


def run(sc, args, env=None, main=None):
    """Train on SparkContext ``sc``; ``env``: extra environment variables for the TF nodes.

    ``main`` replaces :func:`main_fun` (a wrapper around it); returns the shut-down cluster.
    """
    from sparktf import TFCluster

    model_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_model.py")
    if os.path.exists(model_py):   # on YARN in cluster mode it comes with --py-files instead
        sc.addPyFile(model_py)
    cluster = TFCluster.run(sc, main or main_fun, args, args.cluster_size, env=env,
                            input_mode=TFCluster.InputMode.TENSORFLOW, master_node="chief",
                            max_restarts=args.max_restarts)
    cluster.shutdown()
    print(f"mnist_tf: trained {args.epochs} epochs on {args.cluster_size} nodes; "
          f"model exported to {args.export_dir}", flush=True)
    return cluster


def main() -> None:
    args = parser().parse_args()
    from pyspark import SparkContext
    run(SparkContext.getOrCreate(), args)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
