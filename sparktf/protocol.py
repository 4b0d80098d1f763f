"""What the driver, the barrier tasks, the supervisors and the nodes tell each other.

One module holds every shape that crosses a process boundary, so that a
newcomer reads the protocol in one place:

* :class:`LaunchPlan`: what the driver hands each barrier task (pickled by
  Spark with the task, like any closure).
* :class:`NodeSpec`: what a barrier task writes for its node's supervisor and
  node process (a private JSON file in the node's directory).
* The control messages: small typed records sent as JSON over the
  authenticated control channel (:mod:`sparktf.control`), never pickled.
  :func:`decode` turns a received dict back into its type and refuses a
  message whose fields have the wrong types.

The feed channel's messages (Arrow record batches and their acknowledgements)
are described in :mod:`sparktf.feed.sender` and :mod:`sparktf.feed.receiver`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import ProtocolError


class InputMode(enum.IntEnum):
    """How data reaches the TF nodes (TensorFlowOnSpark's values)."""

    #: ``map_fun`` reads its own data; Spark only hosts the TF cluster.
    TENSORFLOW = 0
    #: Spark feeds RDD or DataFrame partitions into the nodes.
    SPARK = 1


@dataclass(frozen=True)
class LaunchPlan:
    """One attempt of a cluster, as every barrier task needs to know it."""

    cluster_id: str  # with ".<attempt>" after a restart, so node directories differ
    attempt: int
    roles: list[tuple[str, int]]  # (job, index) per node number
    input_mode: int
    control: tuple[str, int]  # the driver's control server
    secret: str = field(repr=False)  # hex; travels inside the Spark task, never logged
    env: dict[str, str]
    base_dir: str | None  # where node directories go; None: the executor's cwd
    default_fs: str
    working_dir: str
    release_port: bool
    tensorboard: int | None  # the node that runs TensorBoard
    log_dir: str | None
    ps_addresses: list[str] = field(default_factory=list)  # ps nodes on the driver
    keep_node_dirs: bool = False
    # TLS (sparktf.tls): the cluster's certificate and key (PEM) when it encrypts; they
    # travel like the secret.
    tls_cert: str | None = None
    tls_key: str | None = field(default=None, repr=False)
    num_gpus: int | None = None  # GPUs (sparktf.gpus): TFCluster.run's nvidia-smi fallback


@dataclass(frozen=True)
class NodeSpec:
    """Everything a node's supervisor and process need, written by the barrier task."""

    node: int
    job: str
    index: int
    host: str
    tf_port: int
    executor: str
    cluster_spec: dict[str, list[str]]
    tf_config: str
    num_workers: int
    input_mode: int
    release_port: bool
    control: tuple[str, int]
    secret: str = field(repr=False)  # hex; never shown in a repr or a log
    env: dict[str, str]
    default_fs: str
    working_dir: str
    node_dir: str
    detach: bool
    attempt: int
    tensorboard: bool
    log_dir: str
    log_url: str | None
    keep_node_dir: bool = False
    tls_cert: str | None = None  # PEM, when the cluster encrypts (sparktf.tls)
    tls_key: str | None = field(default=None, repr=False)
    # GPUs (sparktf.gpus): the node's CUDA_VISIBLE_DEVICES ids, None when not managed, and
    # where they came from ("spark", "nvidia-smi", "none" for ps nodes).
    gpus: list[str] | None = None
    gpu_source: str = ""

    @property
    def name(self) -> str:
        return f"{self.job}:{self.index}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.node_dir, "node.log")

    @property
    def payload_path(self) -> str:
        """The pickled ``(map_fun, tf_args)``; written by our own launcher, mode 0600."""
        return os.path.join(self.node_dir, "payload.pkl")

    @property
    def exit_report_path(self) -> str:
        """Where the node writes, before it exits, what the supervisor's exit report
        carries: the exception ``map_fun`` raised, or the fed rows it left unread."""
        return os.path.join(self.node_dir, "exit.json")

    def write(self, path: str) -> None:
        """Write the spec readable by its owner only: it holds the cluster secret."""
        write_private(path, json.dumps(dataclasses.asdict(self)).encode())

    @classmethod
    def load(cls, path: str) -> "NodeSpec":
        with open(path) as f:
            data = json.load(f)
        data["control"] = tuple(data["control"])
        return cls(**data)


def write_private(path: str, data: bytes) -> None:
    """Write ``data`` to a new file that only its owner can read (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


# -- control messages ----------------------------------------------------------

@dataclass(frozen=True)
class Message:
    """A control message; ``TYPE`` is its ``type`` field on the wire."""

    TYPE: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **dataclasses.asdict(self)}


# Supervisor -> driver.
@dataclass(frozen=True)
class Started(Message):
    """The node process started (sent by its supervisor)."""

    TYPE: ClassVar[str] = "started"
    pid: int
    host: str
    executor: str
    log: str
    cluster_spec: dict
    gpus: str = ""  # GPUs (sparktf.gpus): what the node got, for the driver's log


@dataclass(frozen=True)
class Exited(Message):
    """The node process ended: its exit code (None if unknown), and why.

    ``error`` and ``traceback`` are the exception ``map_fun`` raised, if any,
    and ``unread`` the fed rows it left unread (the node writes them to a file
    before it exits; the supervisor reads it), so the report that ends a node
    always carries its cause and its count, even when it overtakes the
    node's own ``Finished``.
    """

    TYPE: ClassVar[str] = "exit"
    code: int | None
    stopped: bool = False  # the supervisor stopped it (driver's stop, owner gone)
    reason: str = ""
    error: str = ""
    traceback: str = ""
    log_tail: str = ""
    unread: int = 0  # as in Finished: this report may reach the driver before Finished


@dataclass(frozen=True)
class LogsReply(Message):
    TYPE: ClassVar[str] = "logs"
    text: str


@dataclass(frozen=True)
class TensorBoardUp(Message):
    TYPE: ClassVar[str] = "tensorboard"
    url: str


# Node -> driver.
@dataclass(frozen=True)
class Ready(Message):
    """``map_fun`` is about to run; ``feed`` is the node's feed address in SPARK mode."""

    TYPE: ClassVar[str] = "ready"
    pid: int
    feed: list | None = None


@dataclass(frozen=True)
class Finished(Message):
    """``map_fun`` returned; ``unread``: fed rows it left in its buffer (SPARK mode)."""

    TYPE: ClassVar[str] = "finished"
    unread: int = 0


@dataclass(frozen=True)
class Replayed(Message):
    """Cached feeding: how the node's replay of ``epoch`` ended: ``status`` "ok" (``rows``
    queued), "closed" (``map_fun`` returned or called ``terminate()`` first), "timeout"
    (no data taken for ``feed_timeout``) or "error" (``error`` says what)."""

    TYPE: ClassVar[str] = "replayed"
    epoch: int
    rows: int = 0
    status: str = "ok"
    error: str = ""


@dataclass(frozen=True)
class Terminated(Message):
    """The node called ``DataFeed.terminate()``: it takes no more data."""

    TYPE: ClassVar[str] = "terminate"


@dataclass(frozen=True)
class EpochDone(Message):
    """The node is done with fed epoch ``epoch`` (a streaming micro-batch): after
    ``DataFeed.next_batch_id()``, when it asks for the next micro-batch (so it has
    trained on this one); otherwise when it reads the epoch's end.  The driver
    counts a micro-batch as fed only then (:mod:`sparktf.driver.streaming`)."""

    TYPE: ClassVar[str] = "epoch_done"
    epoch: int


# Driver -> supervisor.
@dataclass(frozen=True)
class Stop(Message):
    TYPE: ClassVar[str] = "stop"
    reason: str = "stopped by the driver"


@dataclass(frozen=True)
class LogsRequest(Message):
    TYPE: ClassVar[str] = "logs_request"
    lines: int = 50


# Driver -> node.
@dataclass(frozen=True)
class EpochEnd(Message):
    """Every node's row count for a fed epoch (see :mod:`sparktf.feed.datafeed`)."""

    TYPE: ClassVar[str] = "epoch_end"
    epoch: int
    counts: dict


@dataclass(frozen=True)
class ReplayEpoch(Message):
    """Cached feeding: replay the rows cached in fed epoch ``source`` as epoch ``epoch``,
    ending it with ``counts`` (the fed epoch's); see :mod:`sparktf.feed.cache`."""

    TYPE: ClassVar[str] = "replay_epoch"
    epoch: int
    source: int
    counts: dict
    feed_timeout: float


@dataclass(frozen=True)
class EndFeed(Message):
    TYPE: ClassVar[str] = "end_feed"


# A feeding task -> the driver's control server, on a connection of its own (one request,
# one reply), as the ``status`` request of a task that lost its node.
@dataclass(frozen=True)
class FeedFailed(Message):
    """Why a feeding task failed: bad rows, a feed timeout, the user's code in the fed
    RDD's lineage, or a lost node (``node_lost``).  ``job`` is the epoch's Spark job group
    (training) or ``<inference key>/<stage>/<partition>`` (inference).

    Spark retries the task (``spark.task.maxFailures``) and ends the job with the error of
    the last retry; sparktf's training tasks refuse a retry at once, a retried inference
    task raises this (:class:`FeedFailureQuery`), and the driver raises this, the first
    error, instead.
    """

    TYPE: ClassVar[str] = "feed_failed"
    job: str
    error_class: str   # "FeedError" or "FeedTimeout"
    error: str
    node_lost: bool = False   # the task lost its node: the node's own report explains more


@dataclass(frozen=True)
class FeedFailureQuery(Message):
    """A retried inference task asks for the first error its task reported under ``job``
    (the reply is that :class:`FeedFailed`, or an ``ok`` when there is none)."""

    TYPE: ClassVar[str] = "feed_failure_query"
    job: str


# ``python -m sparktf stop`` -> the driver's stop server (:mod:`sparktf.stop`),
# authenticated with the stop token of the driver's private stop file.
@dataclass(frozen=True)
class StopRequest(Message):
    """Stop the running stream gracefully (the micro-batch in flight completes)."""

    TYPE: ClassVar[str] = "stop_request"
    reason: str = ""


@dataclass(frozen=True)
class StopReply(Message):
    TYPE: ClassVar[str] = "stop_reply"
    accepted: bool
    detail: str = ""


# Made on the driver itself, never received.
@dataclass(frozen=True)
class Disconnected(Message):
    """A node's (``kind="node"``) or supervisor's connection ended."""

    TYPE: ClassVar[str] = "disconnected"
    kind: str


@dataclass(frozen=True)
class Silent(Message):
    """The node's connection ended a while ago and no exit report followed."""

    TYPE: ClassVar[str] = "silent"


_TYPES: dict[str, type[Message]] = {cls.TYPE: cls for cls in (
    Started, Exited, LogsReply, TensorBoardUp, Ready, Finished, Terminated, EpochDone, Stop,
    LogsRequest, EpochEnd, EndFeed, StopRequest, StopReply, ReplayEpoch, Replayed, FeedFailed,
    FeedFailureQuery)}


def decode(msg: dict) -> Message:
    """The typed message for a received dict; :class:`ProtocolError` if it does not fit."""
    if not isinstance(msg, dict):
        raise ProtocolError(f"a control message must be an object, not {type(msg).__name__}")
    cls = _TYPES.get(msg.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise ProtocolError(f"unknown control message type {msg.get('type')!r:.60}")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in msg:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"control message {cls.TYPE!r} lacks field {f.name!r}")
            continue
        value = msg[f.name]
        if not _fits(value, hints[f.name]):
            raise ProtocolError(f"control message {cls.TYPE!r}: field {f.name!r} has the wrong "
                                f"type ({type(value).__name__})")
        values[f.name] = value
    return cls(**values)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type (a bool is not an int here)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return type(value) is int
    origin = typing.get_origin(hint) or hint
    return isinstance(value, origin)
