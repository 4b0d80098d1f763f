"""sparktf: distributed TensorFlow on Apache Spark.

``from sparktf import TFCluster, TFNode`` gives TensorFlowOnSpark's driver and
executor APIs: ``TFCluster.run / train / inference / shutdown`` and
``TFNode.DataFeed / hdfs_path``.
"""

import importlib
from typing import Any

from ._version import __version__  # noqa: F401 (the version, written once in _version.py)
from .errors import (ConfigError, FeedError, FeedTimeout, NodeError, ProtocolError,
                     ReservationTimeout, ShutdownTimeout, SparkTFError, StorageError)
from .errors import ModelLoadError, PredictInputError

#: The rest of the public names, imported on first use (PEP 562): a Spark task that only
#: feeds data (``sparktf.feed.sender``) then loads neither the driver nor serving, ~0.3 s
#: of CPU less in every fresh Python worker.  Name -> (module, attribute or None: the module).
_LAZY = {
    "TFCluster": ("cluster", None),       # TensorFlowOnSpark's module names
    "TFManager": ("tfmanager", None),
    "TFNode": ("tfnode", None),
    "TFParallel": ("tfparallel", None),
    "compat": ("compat", None),
    "InputMode": ("cluster", "InputMode"),
    "CheckpointManager": ("checkpoint", "CheckpointManager"),
    "export_model": ("checkpoint", "export_model"),
    "local_copy": ("checkpoint", "local_copy"),
    "PredictUDF": ("serving", "PredictUDF"),
    "predict_udf": ("serving", "predict_udf"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _LAZY[name]
    found = importlib.import_module(f".{module}", __name__)
    return found if attribute is None else getattr(found, attribute)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["TFCluster", "TFNode", "TFParallel", "TFManager", "compat", "InputMode", "SparkTFError",
           "ConfigError", "NodeError",
           "ReservationTimeout", "ShutdownTimeout", "ProtocolError", "FeedError", "FeedTimeout",
           "StorageError", "CheckpointManager", "export_model", "local_copy",
           "ModelLoadError", "PredictInputError", "PredictUDF", "predict_udf"]
