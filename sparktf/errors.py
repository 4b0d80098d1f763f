"""The exceptions sparktf raises.

Every error sparktf raises on purpose derives from :class:`SparkTFError`, so an
application can catch them all with one ``except`` clause.  Messages name what
went wrong and where (node, executor, host, partition, row) and list likely
causes, because the person reading them is usually looking at a failed job.
"""

from __future__ import annotations


class SparkTFError(Exception):
    """Base class of all sparktf errors."""


class ConfigError(SparkTFError, ValueError):
    """An argument or a combination of arguments cannot work."""


class ReservationTimeout(SparkTFError, TimeoutError):
    """The TF nodes did not all start within ``reservation_timeout``."""


class NodeError(SparkTFError):
    """A TF node failed: its ``map_fun`` raised or its process died.

    ``node`` is the node's name (``job:task``), ``detail`` the traceback or the
    last lines of the node's log.
    """

    def __init__(self, message: str, node: str = "", detail: str = "") -> None:
        full = message if not detail else f"{message}\n--- node {node} ---\n{detail.rstrip()}"
        super().__init__(full)
        self.node = node
        self.detail = detail


class ShutdownTimeout(SparkTFError, TimeoutError):
    """``shutdown(timeout=...)`` expired while nodes were still running."""


class ProtocolError(SparkTFError):
    """A peer sent a frame that is malformed, too large or fails authentication."""


class FeedError(SparkTFError):
    """Feeding data to the nodes failed (bad input, dead node, count mismatch)."""


class FeedTimeout(FeedError, TimeoutError):
    """A node is alive but took no data for ``feed_timeout`` seconds."""


class DataError(SparkTFError, ValueError):
    """Data read by a reader does not fit what was asked (a missing column, nulls, a shape)."""


class CorruptRecordError(SparkTFError, IOError):
    """A TFRecord file is truncated or damaged; the message names the file and offset."""


class GpuError(SparkTFError):
    """A node's GPUs cannot be decided: too few assigned or free, or nvidia-smi unusable.

    The message names the numbers (asked, assigned, present, free) and the Spark
    settings to change.
    """


class StorageError(SparkTFError):
    """A file system cannot be used: unreachable, misconfigured, unsupported or refused.

    The message names the URL and what to check (endpoint, credentials, variables).
    """


class PredictInputError(SparkTFError, ValueError):
    """A DataFrame column does not fit the model's signature input it is mapped to.

    Raised before the model is called; the message names the column, the
    signature input, the dtype and shape expected and what was found.
    """


class ModelLoadError(SparkTFError):
    """An exported model cannot be read or loaded; the message names the URL and the reason."""
