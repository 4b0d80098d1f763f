"""Write the tiny SavedModels the serving tests use, in the three export formats.

    python make_exports.py OUT_DIR      (or make_exports.main(out) in-process)

Keras 3 (``import keras``) writes ``model.export``; tf-keras (``import
tf_keras``, whatever ``TF_USE_LEGACY_KERAS`` says) writes a SavedModel with
``model.save``.  Every model has fixed weights, so the tests compute the
expected predictions with numpy (:data:`K3_KERNEL` ...).

* ``k3``: Keras 3 ``model.export``; input ``x`` float32 (None, 4) -> ``output_0`` (None, 3),
  ``x @ K3_KERNEL + K3_BIAS``.
* ``tfk``: tf-keras ``model.save``; ``dense_input`` (None, 2) -> ``dense`` (None, 1),
  ``x @ [[3.14], [1.618]]`` (TensorFlowOnSpark's pipeline test model).
* ``raw/1`` and ``raw/2`` (TensorFlow Serving's numbered layout): ``tf.saved_model.save`` of
  a module with two signatures: ``serving_default`` ``a`` (None, 4) float32 and ``b`` (None,)
  int64 -> ``y = a @ (VERSION * ones(4, 2))``, ``z = b * 2``, ``s = str(b)``; and ``pixels``:
  ``x`` (None, 2, 2, 1) float32 -> ``total`` = sum of the pixels.
"""

from __future__ import annotations

import os
import sys

import numpy as np

K3_KERNEL = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
K3_BIAS = np.array([1, 2, 3], dtype=np.float32)
TFK_KERNEL = np.array([[3.14], [1.618]], dtype=np.float32)


def main(out: str) -> None:
    import keras
    import tensorflow as tf
    import tf_keras

    k3 = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3)])
    k3.layers[-1].set_weights([K3_KERNEL, K3_BIAS])
    k3.export(os.path.join(out, "k3"), verbose=False)

    tfk = tf_keras.Sequential([
        # Named: tf-keras numbers unnamed layers per process (dense_1 after another model).
        tf_keras.layers.Dense(1, use_bias=False, input_shape=[2], name="dense")])
    tfk.layers[0].set_weights([TFK_KERNEL])
    tfk.save(os.path.join(out, "tfk"))

    class Raw(tf.Module):
        def __init__(self, version: int) -> None:
            super().__init__()
            self.w = tf.Variable(version * tf.ones((4, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.int64, name="b")])
        def serve(self, a, b):
            return {"y": tf.matmul(a, self.w), "z": b * 2, "s": tf.strings.as_string(b)}

        @tf.function(input_signature=[tf.TensorSpec([None, 2, 2, 1], tf.float32, name="x")])
        def pixels(self, x):
            return {"total": tf.reduce_sum(x, axis=[1, 2, 3])}

    for version in (1, 2):
        raw = Raw(version)
        tf.saved_model.save(raw, os.path.join(out, "raw", str(version)),
                            signatures={"serving_default": raw.serve, "pixels": raw.pixels})


if __name__ == "__main__":
    main(sys.argv[1])
