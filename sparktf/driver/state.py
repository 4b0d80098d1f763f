"""What the driver knows about each node, and how a control message changes it.

Pure logic, no sockets and no Spark: :func:`transition` takes a node's state
and one message from its supervisor or process and returns the new state plus
what the driver must do about it (fail the cluster, or check again later
whether a node that closed its connection ever reported its exit).  The
attempt (:mod:`sparktf.driver.attempt`) applies it under its lock.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from .. import protocol
from ..errors import NodeError
from ..roles import Role

#: How long the driver waits for a node's supervisor to report after the node
#: process itself went silent, before it declares the node lost.
LOST_GRACE = 3.0


class NodeStatus(str, enum.Enum):
    PENDING = "pending"    # its barrier task has not started it yet
    STARTED = "started"    # the process runs; map_fun not yet
    RUNNING = "running"    # map_fun runs
    FINISHED = "finished"  # map_fun returned
    FAILED = "failed"      # map_fun raised, or the process died
    STOPPED = "stopped"    # stopped on purpose (shutdown, or another node failed)
    LOST = "lost"          # no report: its executor or supervisor went away

    @property
    def done(self) -> bool:
        return self in _DONE


_DONE = {NodeStatus.FINISHED, NodeStatus.FAILED, NodeStatus.STOPPED, NodeStatus.LOST}


@dataclass(frozen=True)
class NodeState:
    """One node as the driver sees it; replaced, never mutated."""

    node: int
    role: Role
    status: NodeStatus = NodeStatus.PENDING
    host: str = ""
    executor: str = ""
    pid: int = 0
    log: str = ""
    feed: tuple[str, int] | None = None
    log_tail: str = ""
    since: float = 0.0  # monotonic time of the last status change

    @property
    def state(self) -> str:
        """The status as a plain string (``"running"``, ``"finished"``...)."""
        return self.status.value

    @property
    def done(self) -> bool:
        return self.status.done

    def describe(self) -> str:
        where = f"node {self.node}"
        if self.executor:
            where += f", executor {self.executor}"
        if self.host:
            where += f", host {self.host}"
        return f"{self.role.name} ({where})"


@dataclass(frozen=True)
class Outcome:
    """The result of one message: the new state and what the driver does next."""

    state: NodeState
    failure: NodeError | None = None  # the node failed: fail the cluster with this
    check_silence: bool = False  # ask again in LOST_GRACE s whether the node reported its exit
    log: str = ""  # a line for the driver's log (INFO), if any


def transition(n: NodeState, msg: protocol.Message, *, stopping: bool,
               now: float) -> Outcome:
    """Apply one message to one node.

    ``stopping`` is True once the driver stops nodes on purpose (shutdown, or
    after another node failed): a node stopped then ends as ``stopped``, not
    as a failure.
    """
    def moved(status: NodeStatus, **changes) -> NodeState:
        return dataclasses.replace(n, status=status, since=now, **changes)

    if isinstance(msg, protocol.Started):
        if n.status != NodeStatus.PENDING:
            return Outcome(n)  # a duplicate; the control server refuses second registrations
        state = moved(NodeStatus.STARTED, host=msg.host, executor=msg.executor, pid=msg.pid,
                      log=msg.log)
        gpus = f", {msg.gpus}" if msg.gpus else ""  # GPUs (sparktf.gpus)
        return Outcome(state, log=f"started (pid {msg.pid}, log {msg.log}{gpus})")
    if isinstance(msg, protocol.Exited):
        return _exited(n, msg, stopping, moved)
    if n.done:
        return Outcome(n)  # nothing changes a node that has ended
    if isinstance(msg, protocol.Ready):
        feed = (msg.feed[0], msg.feed[1]) if msg.feed else None
        return Outcome(moved(NodeStatus.RUNNING, feed=feed), log="running map_fun")
    if isinstance(msg, protocol.Finished):
        return Outcome(moved(NodeStatus.FINISHED), log="finished")
    if isinstance(msg, protocol.Disconnected) and msg.kind == "supervisor":
        return _failed(moved(NodeStatus.LOST), "lost contact with the node's supervisor (its "
                       "executor died, was killed or lost its network)")
    if isinstance(msg, protocol.Disconnected):
        # The node process closed its connection; its supervisor's exit report
        # (with the exit code and the exception) normally follows at once.
        return Outcome(n, check_silence=True)
    if isinstance(msg, protocol.Silent):
        return _failed(moved(NodeStatus.LOST), "the node process went away without a report")
    return Outcome(n)


def _exited(n: NodeState, msg: protocol.Exited, stopping: bool, moved) -> Outcome:
    if n.status == NodeStatus.FINISHED or (msg.code == 0 and not msg.error):
        if n.status == NodeStatus.FINISHED:
            return Outcome(dataclasses.replace(n, log_tail=msg.log_tail))
        return Outcome(moved(NodeStatus.FINISHED, log_tail=msg.log_tail), log="finished")
    if n.done:
        return Outcome(dataclasses.replace(n, log_tail=msg.log_tail))
    if msg.stopped and stopping:
        return Outcome(moved(NodeStatus.STOPPED, log_tail=msg.log_tail), log="stopped")
    what = msg.error or exit_description(msg.code)
    if msg.stopped:
        what += f" ({msg.reason})"
    return _failed(moved(NodeStatus.FAILED, log_tail=msg.log_tail), what, msg.traceback)


def exit_description(code: int | None) -> str:
    """How a process ended, from its exit status (negative: the signal that killed it)."""
    if code is None:
        return "process ended without an exit status"
    if code >= 0:
        return f"process exited with code {code}"
    return f"process killed by signal {-code}"


def _failed(n: NodeState, what: str, traceback: str = "") -> Outcome:
    """The node failed: the error names the node first, then its exception or exit."""
    detail = traceback
    if n.log_tail:
        detail += ("\n" if detail else "") + "last lines of the node's log:\n" + n.log_tail
    error = NodeError(f"TF node {n.describe()} failed: {what}", n.role.name, detail)
    return Outcome(n, failure=error, log=f"failed: {what}")


def not_started(nodes: list[NodeState], tensorboard_node: int | None,
                tensorboard_url: str | None) -> list[NodeState]:
    """The nodes ``run()`` still waits for: not yet running ``map_fun``, or the node whose
    TensorBoard has not reported its URL while that node is still alive (a node that
    already ended will not start TensorBoard any more: waiting for it would hang)."""
    waiting = [n for n in nodes if n.status in (NodeStatus.PENDING, NodeStatus.STARTED)]
    if (not waiting and tensorboard_node is not None and tensorboard_url is None
            and not nodes[tensorboard_node].done):
        waiting = [nodes[tensorboard_node]]
    return waiting
