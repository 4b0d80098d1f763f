"""TensorFlowOnSpark 2.2.5's own keras/mnist_spark.py, with only its import lines changed,
trains on a real local-cluster Spark (SPARK mode, 2 nodes, MultiWorkerMirroredStrategy) and
exports a SavedModel that loads and predicts (tests/tfos/examples/mnist_spark.py)."""

import glob
import os

import numpy as np
import pytest

from test_examples import submit

pytestmark = pytest.mark.integration

TFOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tfos")
# tensorflow_estimator (imported by the example after training) does not import on TF 2.21.
SHIMS = os.path.join(TFOS, "shims")

ROWS = 350      # ~175 rows per node: 4 batches of 50 on each, far from a batch boundary
BATCH = 50


def write_csv(path, rows, seed=0):
    """MNIST-shaped CSV as TFoS's mnist_data_setup.py writes it: label, then 784 pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, rows)
    pixels = rng.integers(0, 256, (rows, 784))
    path.mkdir()
    for part, idx in enumerate(np.array_split(np.arange(rows), 2)):
        with open(path / f"part-0000{part}", "w") as f:
            for i in idx:
                f.write(",".join(map(str, [labels[i], *pixels[i]])) + "\n")
    return pixels


def test_tfos_mnist_spark_runs_to_a_saved_model(tmp_path, monkeypatch):
    tf = pytest.importorskip("tensorflow")
    pixels = write_csv(tmp_path / "csv", ROWS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (SHIMS, os.environ.get("PYTHONPATH")) if p))
    export = tmp_path / "export"
    model_dir = tmp_path / "model"
    text = submit(os.path.join(TFOS, "examples", "mnist_spark.py"), "--cluster_size", 2,
                  "--images_labels", tmp_path / "csv", "--epochs", 1,
                  "--batch_size", BATCH, "--export_dir", export, "--model_dir", model_dir)
    assert "args: Namespace(" in text
    exports = glob.glob(str(export / "*" / "saved_model.pb"))
    assert len(exports) == 1, os.listdir(export)       # the chief's; the worker's was discarded
    assert glob.glob(str(model_dir / "weights-0001*"))  # Keras ModelCheckpoint, chief only
    served = tf.saved_model.load(os.path.dirname(exports[0])).signatures["serving_default"]
    images = (pixels[:5].reshape(5, 28, 28, 1) / 255.0).astype(np.float32)
    probs = next(iter(served(tf.constant(images)).values())).numpy()
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
