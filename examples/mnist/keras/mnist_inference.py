"""Predict the MNIST test set with an exported model through cluster.inference (SPARK mode).

    spark-submit --master local-cluster[2,1,2048] examples/mnist/keras/mnist_inference.py \\
        --cluster_size 2 --images_labels data/mnist/csv/test --export_dir mnist_export \\
        --output predictions

Writes ``label,prediction`` CSV lines to ``--output`` and prints the accuracy.

``--mode parallel`` is TensorFlowOnSpark's variant of this example: ``TFParallel.run``
starts ``--cluster_size`` independent single-node TensorFlow instances (no TF cluster, no
feed); each reads its share of the TFRecord files with ``tf.data``, predicts with the
export and writes ``label prediction`` lines to ``--output``/``part-NNNNN``:

    spark-submit --master local-cluster[2,1,2048] examples/mnist/keras/mnist_inference.py \
        --mode parallel --cluster_size 2 --images_labels data/mnist/tfr/test \
        --export_dir mnist_export --output predictions

``--export_dir`` may be a local path or an ``hdfs://``, ``webhdfs://`` or ``s3://`` URL;
``--images_labels`` and ``--output`` are read and written by Spark itself (for S3 Spark
needs ``hadoop-aws``: see the README).
"""

from __future__ import annotations

import argparse
import os
import sys


def infer_fun(args, ctx):
    import numpy as np
    import tensorflow as tf

    import sparktf
    # The export may be remote (hdfs://, webhdfs://, s3://): load it from a local copy.
    with sparktf.local_copy(ctx.absolute_path(args.export_dir)) as path:
        model = tf.keras.models.load_model(path)
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(args.batch_size)
        if not batch:
            break
        images = np.stack([image for image, _ in batch]).reshape(-1, 28, 28, 1)
        probs = model.predict_on_batch(images)
        feed.batch_results([(int(label), int(p)) for (_, label), p in
                            zip(batch, np.argmax(probs, axis=1))])


def parallel_fun(args, ctx):
    """One TFParallel instance: its share of the TFRecords in, ``label prediction`` lines out."""
    import numpy as np
    import tensorflow as tf

    import sparktf
    from sparktf import fs, readers
    with sparktf.local_copy(ctx.absolute_path(args.export_dir)) as path:
        model = tf.keras.models.load_model(path)
    spec = {"image": tf.io.FixedLenFeature([784], tf.int64),
            "label": tf.io.FixedLenFeature([1], tf.int64)}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        return tf.reshape(tf.cast(ex["image"], tf.float32) / 255.0, (28, 28, 1)), ex["label"][0]

    # Instance i of n reads files i, i+n, ... (TFoS: ds.shard(num_workers, worker_num)).
    ds = readers.tfrecord_dataset(args.images_labels, index=ctx.worker_num,
                                  count=ctx.num_workers).map(parse).batch(args.batch_size)
    lines = []
    for images, labels in ds:
        preds = np.argmax(model.predict_on_batch(images), axis=1)
        lines += [f"{label} {pred}" for label, pred in zip(labels.numpy().tolist(),
                                                          preds.tolist())]
    output = ctx.absolute_path(args.output)
    fs.makedirs(output)
    with fs.open_output(fs.join(output, f"part-{ctx.worker_num:05d}")) as f:
        f.write("".join(line + "\n" for line in lines).encode())


def run_parallel(sc, args) -> None:
    """TFoS's TFParallel variant: independent instances, then the accuracy from their files."""
    from sparktf import TFParallel, fs
    TFParallel.run(sc, parallel_fun, args, args.cluster_size)
    pairs = []
    for url in sorted(fs.glob(fs.join(args.output, "part-*"))):
        with fs.open_input(url) as f:
            pairs += [line.split() for line in f.read().decode().splitlines()]
    correct = sum(label == pred for label, pred in pairs)
    print(f"mnist_inference (TFParallel, {args.cluster_size} instances): {len(pairs)} "
          f"predictions written to {args.output}; test accuracy {correct / len(pairs):.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--mode", choices=["spark", "parallel"], default="spark",
                   help="spark: cluster.inference over Spark rows (CSV); parallel: TFParallel "
                        "instances reading TFRecords themselves")
    p.add_argument("--cluster_size", type=int, default=2)
    p.add_argument("--images_labels", default="data/mnist/csv/test")
    p.add_argument("--export_dir", default="mnist_export")
    p.add_argument("--output", default="predictions")
    p.add_argument("--batch_size", type=int, default=256)
    args = p.parse_args()

    from pyspark import SparkContext
    from sparktf import TFCluster
    from mnist_model import parse_csv

    sc = SparkContext.getOrCreate()
    if args.mode == "parallel":
        return run_parallel(sc, args)
    model_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_model.py")
    if os.path.exists(model_py):   # on YARN in cluster mode it comes with --py-files instead
        sc.addPyFile(model_py)
    data = sc.textFile(args.images_labels).map(parse_csv)
    cluster = TFCluster.run(sc, infer_fun, args, args.cluster_size,
                            input_mode=TFCluster.InputMode.SPARK)
    preds = cluster.inference(data).map(lambda r: (int(r[0]), int(r[1]))).cache()
    preds.map(lambda r: f"{r[0]},{r[1]}").saveAsTextFile(args.output)
    n, correct = preds.count(), preds.filter(lambda r: r[0] == r[1]).count()
    cluster.shutdown()
    print(f"mnist_inference: {n} predictions written to {args.output}; "
          f"test accuracy {correct / n:.4f}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
