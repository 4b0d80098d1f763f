"""Test stand-in for ``tensorflow_estimator``'s ``export_lib.get_timestamped_export_dir``.

TFoS 2.2.5's mnist_spark.py imports it after training. tensorflow_estimator was
discontinued with TensorFlow 2.16, and its last release (2.15.0) fails to import
with TensorFlow 2.21 (``cannot import name 'estimator_training' from
'tensorflow.python.distribute'``), so the example cannot run on TF 2.21 as
written, with or without sparktf. The tfos example test puts this directory on
the nodes' PYTHONPATH; it is not part of sparktf. Same behaviour as the original:
``<export_dir_base>/<unix seconds>`` as bytes, waiting a second if that exists.
"""

import os
import time


def get_timestamped_export_dir(export_dir_base):
    for _ in range(10):
        result = os.path.join(os.fsencode(export_dir_base), str(int(time.time())).encode())
        if not os.path.exists(result):
            return result
        time.sleep(1)
    raise RuntimeError(f"no free timestamped directory under {export_dir_base!r}")
