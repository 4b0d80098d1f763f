"""CheckpointManager and export_model against real stores: local, S3 (moto), HDFS, WebHDFS.

HDFS is Hadoop's MiniDFSCluster, over hdfs:// (hdfs-native) and webhdfs://.
"""

import os
import types
import uuid

import numpy as np
import pytest

import sparktf
from sparktf import fs

pytestmark = [pytest.mark.integration, pytest.mark.hadoop]


@pytest.fixture(params=["local", "s3", "hdfs", "webhdfs"])
def base(request, tmp_path):
    name = f"ckpt-{uuid.uuid4().hex[:6]}"
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "s3":
        return request.getfixturevalue("s3_server")["url"] + "/" + name
    hadoop = request.getfixturevalue("hadoop")
    root = hadoop.namenode if request.param == "hdfs" else hadoop.webhdfs
    return f"{root}/tmp/{name}"


def node(tmp_path, rank):
    """The attributes of ctx that the checkpoint helpers read."""
    d = tmp_path / f"node-{rank}"
    d.mkdir(exist_ok=True)
    return types.SimpleNamespace(is_chief=rank == 0, node_dir=str(d),
                                 absolute_path=lambda p: p)


def test_save_upload_prune_and_restore(base, tmp_path):
    import tensorflow as tf
    step = tf.Variable(0)
    chief = sparktf.CheckpointManager(tf.train.Checkpoint(step=step), base, node(tmp_path, 0),
                                      max_to_keep=2)
    worker = sparktf.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(0)), base,
                                       node(tmp_path, 1), max_to_keep=2)
    assert chief.restore_or_initialize() == 0
    for epoch in range(1, 5):
        step.assign(epoch * 10)
        assert chief.save(checkpoint_number=epoch).endswith(f"ckpt-{epoch}")
        assert worker.save(checkpoint_number=epoch) is None  # its scratch copy is gone
    names = sorted(os.path.basename(u) for u in fs.listdir(base))
    assert names == ["checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index",
                     "ckpt-4.data-00000-of-00001", "ckpt-4.index"]
    assert not os.listdir(tmp_path / "node-1")

    restored = tf.Variable(0)
    again = sparktf.CheckpointManager(tf.train.Checkpoint(step=restored), base,
                                      node(tmp_path, 1))
    assert again.latest_checkpoint.endswith("ckpt-4")
    assert again.restore_or_initialize() == 4
    assert int(restored.numpy()) == 40


def test_export_lands_whole_and_loads_back(base, tmp_path):
    import tensorflow as tf

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return 2 * x

    url = fs.join(base, "export")
    model = Double()
    assert sparktf.export_model(url, lambda p: tf.saved_model.save(model, p),
                                node(tmp_path, 1)) is None
    assert not fs.exists(url)  # a worker never writes the real export
    for _ in range(2):  # the second export replaces the first
        assert sparktf.export_model(url, lambda p: tf.saved_model.save(model, p),
                                    node(tmp_path, 0)) == url
    assert fs.exists(fs.join(url, "saved_model.pb"))
    with sparktf.local_copy(url) as path:
        loaded = tf.saved_model.load(path)
        np.testing.assert_allclose(loaded(tf.constant([1.0, 2.5])).numpy(), [2.0, 5.0])
    leftovers = [n for n in os.listdir(os.path.dirname(fs.filesystem(url)[1]) or "/")
                 if ".tmp-" in n] if fs.is_local(url) else []
    assert not leftovers
