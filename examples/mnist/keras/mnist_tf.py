"""MNIST with InputMode.TENSORFLOW: each node reads its own shard of TFRecord or Parquet files.

    spark-submit --master local-cluster[2,1,2048] examples/mnist/keras/mnist_tf.py \\
        --cluster_size 2 --images_labels data/mnist/tfr/train --format tfr \\
        --model_dir mnist_model --export_dir mnist_export

Files are sharded by worker index (worker ``i`` of ``n`` reads files ``i, i+n, ...``);
Spark only hosts the TF cluster.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys


def shard_files(path, pattern, index, count):
    files = sorted(glob.glob(os.path.join(path, pattern)))
    if len(files) < count:
        raise ValueError(f"{len(files)} files under {path} cannot be sharded over {count} workers")
    return files[index::count]


def main_fun(args, ctx):
    import numpy as np
    import tensorflow as tf
    from mnist_model import build_model

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # This worker's rank among the num_workers training nodes (the chief is 0).
    rank = 0 if ctx.job_name == "chief" else ctx.task_index + ("chief" in ctx.cluster_spec)
    path = ctx.absolute_path(args.images_labels).removeprefix("file://")
    if args.format == "tfr":
        files = shard_files(path, "part-*", rank, ctx.num_workers)
        spec = {"image": tf.io.FixedLenFeature([784], tf.int64),
                "label": tf.io.FixedLenFeature([1], tf.int64)}

        def parse(record):
            ex = tf.io.parse_single_example(record, spec)
            return (tf.reshape(tf.cast(ex["image"], tf.float32) / 255.0, (28, 28, 1)),
                    ex["label"][0])
        ds = tf.data.TFRecordDataset(files).map(parse)
    else:
        import pyarrow.parquet as pq
        files = shard_files(path, "*.parquet", rank, ctx.num_workers)
        table = pq.read_table(files)
        images = np.stack(table.column("image").to_numpy(zero_copy_only=False)).astype("float32")
        ds = tf.data.Dataset.from_tensor_slices(
            (images.reshape(-1, 28, 28, 1), table.column("label").to_numpy()))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    # Shards may differ in size: repeat and fix the steps so every worker takes the same number.
    ds = ds.cache().shuffle(4096, seed=rank).repeat().batch(args.batch_size).with_options(options)
    with strategy.scope():
        model = build_model(tf)
    hist = model.fit(ds, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, verbose=2)
    print(f"final loss: {hist.history['loss'][-1]:.4f}", flush=True)
    chief = ctx.job_name == "chief"
    export_dir = ctx.absolute_path(args.export_dir).removeprefix("file://")
    model.save(export_dir if chief else os.path.join(ctx.node_dir, "export-tmp"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cluster_size", type=int, default=2)
    p.add_argument("--images_labels", default="data/mnist/tfr/train")
    p.add_argument("--format", choices=["tfr", "parquet"], default="tfr")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--steps_per_epoch", type=int, default=31)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--model_dir", default="mnist_model")
    p.add_argument("--export_dir", default="mnist_export")
    args = p.parse_args()

    from pyspark import SparkContext
    from sparktf import TFCluster

    sc = SparkContext.getOrCreate()
    sc.addPyFile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_model.py"))
    cluster = TFCluster.run(sc, main_fun, args, args.cluster_size,
                            input_mode=TFCluster.InputMode.TENSORFLOW, master_node="chief")
    cluster.shutdown()
    print(f"mnist_tf: trained {args.epochs} epochs on {args.cluster_size} nodes; "
          f"model exported to {args.export_dir}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
