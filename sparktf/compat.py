"""TensorFlowOnSpark's ``compat`` helpers, for TFoS 2.x applications that use them.

TFoS's own examples do ``from tensorflowonspark import compat, TFNode`` and call
``compat.export_saved_model(model, export_dir, ctx.job_name == 'chief')`` and
``compat.disable_auto_shard(options)``; after the import swap to sparktf they
run unchanged.  ``export_saved_model`` is :func:`sparktf.export_model` underneath,
so the export works at any URL sparktf supports and appears whole or not at all.

TensorFlow is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from .checkpoint import export_model

logger = logging.getLogger(__name__)

__all__ = ["export_saved_model", "disable_auto_shard", "is_gpu_available"]


class _Role:
    """The one fact ``export_model`` needs when the caller gives no ``ctx``."""

    def __init__(self, is_chief: bool) -> None:
        self.is_chief = bool(is_chief)

    @staticmethod
    def absolute_path(path: str) -> str:
        return path  # as TFoS: the path is used as given (relative to the cwd)


def _saved_model_writer(model: Any) -> Callable[[str], Any]:
    """``save(path)`` writing ``model`` as a SavedModel, whatever kind of model it is."""
    if type(model).__module__.startswith("keras.") and hasattr(model, "export"):
        return model.export            # Keras 3: model.save() writes only .keras files
    if hasattr(model, "save"):         # tf-keras (tf.keras with TF_USE_LEGACY_KERAS=1)
        return lambda path: model.save(path, save_format="tf")
    import tensorflow as tf
    return lambda path: tf.saved_model.save(model, path)


def export_saved_model(model: Any, export_dir: str | bytes | os.PathLike, is_chief: bool = False
                       ) -> str | None:
    """Export ``model`` as a SavedModel at ``export_dir`` on the chief.

    Every node must call it: under MultiWorkerMirroredStrategy saving is
    collective, so the other nodes save too, into a throw-away local directory
    that is removed at once.  ``export_dir`` may be a local path or any URL
    sparktf writes (``hdfs://``, ``webhdfs://``, ``s3://``).  Returns
    ``export_dir`` (as a str) on the chief, None elsewhere.
    """
    # TFoS's examples pass export_lib.get_timestamped_export_dir(...), which is bytes.
    url = os.fsdecode(os.fspath(export_dir))
    return export_model(url, _saved_model_writer(model), _Role(is_chief))


def disable_auto_shard(options: Any) -> None:
    """Turn off tf.data auto-sharding on a ``tf.data.Options`` (``AutoShardPolicy.OFF``).

    Data fed by Spark is already split among the nodes; a strategy that
    sharded it again would drop rows (or starve a worker).
    """
    import tensorflow as tf
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF


def is_gpu_available() -> bool:
    """True if TensorFlow sees at least one GPU."""
    import tensorflow as tf
    return len(tf.config.list_physical_devices("GPU")) > 0
