"""sparktf: distributed TensorFlow on Apache Spark.

``from sparktf import TFCluster, TFNode`` gives TensorFlowOnSpark's driver and
executor APIs: ``TFCluster.run / train / inference / shutdown`` and
``TFNode.DataFeed / hdfs_path``.
"""

from ._version import __version__  # noqa: F401 (the version, written once in _version.py)
from . import cluster as TFCluster  # noqa: N812 (TensorFlowOnSpark's module name)
from . import tfmanager as TFManager  # noqa: N812
from . import tfnode as TFNode  # noqa: N812
from . import tfparallel as TFParallel  # noqa: N812
from . import compat
from .checkpoint import CheckpointManager, export_model, local_copy
from .cluster import InputMode
from .errors import (ConfigError, FeedError, FeedTimeout, NodeError, ProtocolError,
                     ReservationTimeout, ShutdownTimeout, SparkTFError, StorageError)
from .errors import ModelLoadError, PredictInputError
from .serving import PredictUDF, predict_udf

__all__ = ["TFCluster", "TFNode", "TFParallel", "TFManager", "compat", "InputMode", "SparkTFError",
           "ConfigError", "NodeError",
           "ReservationTimeout", "ShutdownTimeout", "ProtocolError", "FeedError", "FeedTimeout",
           "StorageError", "CheckpointManager", "export_model", "local_copy",
           "ModelLoadError", "PredictInputError", "PredictUDF", "predict_udf"]
