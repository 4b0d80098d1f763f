"""The MNIST examples on remote storage: S3 (moto) and HDFS (Hadoop's MiniDFSCluster).

The examples' ``run(sc, args)`` functions run in the session's Spark (no
spark-submit): ``mnist_data_setup`` writes ``s3a://`` with Spark's own writers
(hadoop-aws) and HDFS from the executors through ``sparktf.fs``,
``mnist_tf`` trains from TFRecords and Parquet there, each worker reporting
the files it read (checked against the NameNode's audit log on HDFS),
checkpoints and resumes from them, and exports a model that loads back and
predicts the held-out test set.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from pyspark import cloudpickle

from sparktf import fs, local_copy, readers

pytestmark = [pytest.mark.integration, pytest.mark.hadoop]

MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "examples", "mnist")
for _path in (MNIST, os.path.join(MNIST, "keras")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import mnist_data_setup  # noqa: E402
import mnist_tf  # noqa: E402

# The executors and TF nodes get the examples' functions by value, not by import.
cloudpickle.register_pickle_by_value(mnist_data_setup)
cloudpickle.register_pickle_by_value(mnist_tf)


def data_setup(sc, output, env=None, formats="csv,tfr,parquet"):
    args = mnist_data_setup.parser().parse_args(["--output", output, "--formats", formats])
    return mnist_data_setup.run(sc, args, env=env)


def train(sc, report_dir, env=None, **options):
    """Run mnist_tf on 2 nodes with ``--option value`` arguments; the workers' reports."""
    argv = ["--cluster_size", "2", "--steps_per_epoch", "20", "--report_dir", str(report_dir)]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    mnist_tf.run(sc, mnist_tf.parser().parse_args(argv), env=env)
    return [json.load(open(os.path.join(report_dir, f"worker-{rank}.json"))) for rank in (0, 1)]


def assert_sharded(reports, files):
    """Every file was read by exactly one worker, and every worker read some."""
    mine = [r["files"] for r in reports]
    assert all(mine), mine
    assert sorted(f for m in mine for f in m) == sorted(files), (mine, files)


def part_files(url):
    return [u for u in fs.listdir(url) if os.path.basename(u).startswith("part-")]


@pytest.fixture(scope="module")
def s3a(sc, s3_server):
    """``s3a://BUCKET``: Spark's own S3 file system on the moto server.

    The session's Spark has hadoop-aws and the AWS SDK on ``spark.jars`` (conftest's
    ``sc`` adds them when a test uses this fixture); the endpoint and credentials go
    into its Hadoop configuration, which Spark ships to the executors with each job.
    """
    from servers import s3a as s3a_jars

    conf = sc._jsc.hadoopConfiguration()
    for name, value in s3a_jars.hadoop_conf(s3_server["endpoint"], s3_server["env"]).items():
        conf.set(name, value)
    return f"s3a://{s3_server['bucket']}"


@pytest.fixture(scope="module")
def s3_mnist(sc, s3a):
    """MNIST written to S3 by mnist_data_setup with Spark's own writers on ``s3a://``."""
    return data_setup(sc, s3a + "/mnist")


def test_data_setup_writes_s3(s3_mnist):
    for fmt in ("csv", "tfr", "parquet"):
        for split in ("train", "test"):
            names = [os.path.basename(u) for u in fs.listdir(f"{s3_mnist}/{fmt}/{split}")]
            assert len(names) == 5 and "_SUCCESS" in names, names
    lines = b"".join(fs.open_input(u).read() for u in part_files(s3_mnist + "/csv/test"))
    lines = lines.decode().splitlines()
    assert len(lines) == 1000 and len(lines[0].split(",")) == 785


def test_train_on_s3_resume_from_s3_checkpoint_and_export(sc, s3_server, s3_mnist, tmp_path,
                                                          no_leftovers):
    env, model_dir = s3_server["env"], s3_server["url"] + "/mnist-model"
    first = train(sc, tmp_path / "first", env, images_labels=s3_mnist + "/parquet/train",
                  format="parquet", epochs=2, model_dir=model_dir,
                  export_dir=s3_server["url"] + "/mnist-export-1")
    assert [r["initial_epoch"] for r in first] == [0, 0]
    assert_sharded(first, part_files(s3_mnist + "/parquet/train"))
    assert fs.exists(model_dir + "/ckpt-2.index")
    assert fs.exists(s3_server["url"] + "/mnist-export-1/saved_model.pb")

    # Same model directory, 3 epochs in all: resumes after epoch 2, now from TFRecords.
    export = s3_server["url"] + "/mnist-export-2"
    second = train(sc, tmp_path / "second", env, images_labels=s3_mnist + "/tfr/train",
                   format="tfr", epochs=3, model_dir=model_dir, export_dir=export)
    assert [r["initial_epoch"] for r in second] == [2, 2]
    assert_sharded(second, part_files(s3_mnist + "/tfr/train"))
    assert fs.exists(model_dir + "/ckpt-3.index")

    tf_keras = pytest.importorskip("tf_keras")
    with local_copy(export) as path:
        model = tf_keras.models.load_model(path)
    test = next(readers.parquet_dataset(s3_mnist + "/parquet/test",
                                        batch_size=1000).as_numpy_iterator())
    predicted = np.argmax(model.predict(test["image"].reshape(-1, 28, 28, 1), verbose=0), 1)
    accuracy = float(np.mean(predicted == test["label"]))
    print(f"S3 export, 3 epochs x 20 steps: test accuracy {accuracy:.4f}")
    assert len(test["label"]) == 1000 and accuracy > 0.8, accuracy


def export_accuracy(export, test_data):
    """Accuracy of the exported model on the 1,000 held-out images."""
    tf_keras = pytest.importorskip("tf_keras")
    with local_copy(export) as path:
        model = tf_keras.models.load_model(path)
    test = next(readers.parquet_dataset(test_data, batch_size=1000).as_numpy_iterator())
    predicted = np.argmax(model.predict(test["image"].reshape(-1, 28, 28, 1), verbose=0), 1)
    assert len(test["label"]) == 1000
    return float(np.mean(predicted == test["label"]))


def test_train_on_hdfs_each_file_read_by_one_worker_resume_and_export(sc, hadoop, tmp_path,
                                                                      no_leftovers):
    """TENSORFLOW mode on hdfs://: data, checkpoints and export on the real NameNode.

    The NameNode's audit log shows each training file opened by exactly one HDFS
    client (each node process has its own), the one of the worker that reported it.
    """
    base = f"{hadoop.namenode}/tmp/mnist"
    data_setup(sc, base, formats="tfr,parquet")
    files = part_files(f"{base}/tfr/train")
    seen = len(hadoop.audit())
    reports = train(sc, tmp_path / "first", images_labels=f"{base}/tfr/train", format="tfr",
                    epochs=1, model_dir=f"{base}/model", export_dir=f"{base}/export-1")
    assert_sharded(reports, files)
    clients = {}   # HDFS path -> RPC client ids that opened it
    for event in hadoop.audit()[seen:]:
        if event[0] == "ok" and event[3] == "open" and "/tfr/train/part-" in event[4]:
            clients.setdefault(event[4], set()).add(event[6])
    paths = {"/" + u.split("://", 1)[1].split("/", 1)[1]: u for u in files}
    assert set(clients) == set(paths), (clients, paths)
    assert all(len(ids) == 1 for ids in clients.values()), clients
    by_worker = [{next(iter(clients[p])) for p, u in paths.items() if u in r["files"]}
                 for r in reports]
    assert all(len(ids) == 1 for ids in by_worker) and by_worker[0] != by_worker[1], by_worker
    assert fs.exists(f"{base}/model/ckpt-1.index")

    # Same model directory, 2 epochs in all: resumes after epoch 1, from Parquet.
    second = train(sc, tmp_path / "second", images_labels=f"{base}/parquet/train",
                   format="parquet", epochs=2, model_dir=f"{base}/model",
                   export_dir=f"{base}/export-2")
    assert [r["initial_epoch"] for r in second] == [1, 1]
    assert_sharded(second, part_files(f"{base}/parquet/train"))
    assert fs.exists(f"{base}/model/ckpt-2.index")
    accuracy = export_accuracy(f"{base}/export-2", f"{base}/parquet/test")
    print(f"HDFS export, 2 epochs x 20 steps: test accuracy {accuracy:.4f}")
    assert accuracy > 0.75, accuracy


def test_train_from_local_files(sc, tmp_path, no_leftovers):
    """mnist_tf.py on local paths. Parquet through the example runs on HDFS and S3 above,
    and local Parquet in the readers' unit tests."""
    fmt = "tfr"
    base = str(tmp_path / "mnist")
    data_setup(sc, base, formats=fmt)
    reports = train(sc, tmp_path / "reports", images_labels=f"{base}/{fmt}/train",
                    format=fmt, epochs=1, model_dir=tmp_path / "model",
                    export_dir=tmp_path / "export")
    read = [[f.removeprefix("file://") for f in r["files"]] for r in reports]
    assert all(read) and sorted(read[0] + read[1]) == sorted(
        u.removeprefix("file://") for u in part_files(f"{base}/{fmt}/train"))
    assert (tmp_path / "model" / "ckpt-1.index").exists()
    assert (tmp_path / "export" / "saved_model.pb").exists()
