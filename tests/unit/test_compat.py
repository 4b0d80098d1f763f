"""sparktf.compat, TensorFlowOnSpark's helpers: the chief's export is a SavedModel that
loads and predicts; other nodes leave nothing behind; auto-sharding is turned off."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from sparktf import compat  # noqa: E402


def tf_keras_model():
    import tf_keras
    model = tf_keras.Sequential([tf_keras.layers.Input((4,)), tf_keras.layers.Dense(2)])
    model.compile(loss="mse")
    return model


def keras3_model():
    import keras
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(2)])
    model.compile(loss="mse")
    return model


def predict_saved_model(path, x):
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    out = fn(tf.constant(x))
    return next(iter(out.values())).numpy()


def scratch_dirs(root):
    return [n for n in os.listdir(root) if n.startswith("export-")]


@pytest.fixture
def scratch_root(tmp_path, monkeypatch):
    """Where non-chief nodes' throw-away exports go (the temp dir, no node_dir here)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.mark.parametrize("build", [tf_keras_model, keras3_model], ids=["tf_keras", "keras3"])
def test_export_saved_model_chief_and_others(build, tmp_path, scratch_root):
    model = build()
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    export = tmp_path / "export"
    assert compat.export_saved_model(model, str(export), is_chief=False) is None
    assert not export.exists() and scratch_dirs(scratch_root) == []
    # bytes, as TFoS's examples pass (export_lib.get_timestamped_export_dir returns bytes)
    assert compat.export_saved_model(model, os.fsencode(export), True) == str(export)
    assert (export / "saved_model.pb").exists()
    np.testing.assert_allclose(predict_saved_model(str(export), x), model.predict(x, verbose=0),
                               rtol=1e-5)
    assert scratch_dirs(scratch_root) == []


def test_export_saved_model_of_a_tf_module(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(3.0)
    module.f = tf.function(lambda x: x * module.v, input_signature=[tf.TensorSpec([], tf.float32)])
    compat.export_saved_model(module, str(tmp_path / "m"), is_chief=True)
    assert float(tf.saved_model.load(str(tmp_path / "m")).f(2.0)) == 6.0


def test_disable_auto_shard():
    options = tf.data.Options()
    assert options.experimental_distribute.auto_shard_policy != \
        tf.data.experimental.AutoShardPolicy.OFF
    assert compat.disable_auto_shard(options) is None
    assert options.experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.OFF
    ds = tf.data.Dataset.range(3).with_options(options)
    assert ds.options().experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.OFF


def test_is_gpu_available():
    assert compat.is_gpu_available() is (len(tf.config.list_physical_devices("GPU")) > 0)
