"""One attempt of a TF cluster: its control server, monitor, barrier job and teardown.

An attempt is started once and replaced as a whole when the cluster restarts
(:mod:`sparktf.cluster`).  Its phases:

1. **start**: wait for task slots, start the control server and a Spark
   *barrier* job with one task per node (each starts its node, see
   :mod:`sparktf.node.launcher`), start ps nodes on the driver if asked, and
   wait until every node runs ``map_fun``.
2. **monitor**: a thread turns control messages into node states
   (:func:`sparktf.driver.state.transition`); the first failure stops every
   node and cancels the attempt's Spark jobs.
3. **teardown**: wait for the node processes to end, close the server.

One lock (a condition) guards the node states and the attempt's outcome;
every method takes it itself.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import protocol
from ..control import ControlServer
from ..errors import FeedError, ProtocolError, ReservationTimeout, SparkTFError
from ..node import launcher, procs
from ..roles import TRAINING_JOBS, Role
from .sparkjobs import Spark
from .state import LOST_GRACE, NodeState, not_started, transition

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterConfig:
    """What every attempt of one cluster shares; fixed by ``TFCluster.run``."""

    spark: Spark  # the SparkContext or (Connect) session, behind one interface
    cluster_id: str
    roles: list[Role]
    input_mode: protocol.InputMode
    secret: bytes
    host: str  # the driver's address, where the control server listens
    payload: bytes  # cloudpickle of (map_fun, tf_args)
    env: dict[str, str]
    node_dir: str | None
    log_dir: str | None
    release_port: bool
    driver_ps_nodes: bool
    reservation_timeout: float
    tensorboard_node: int | None
    keep_node_dirs: bool
    tls: Any = None  # a sparktf.tls.Identity when the cluster encrypts its channels
    num_gpus: int | None = None  # GPUs (sparktf.gpus): run(num_gpus=...)
    strict_feed: bool = False  # run(strict_feed=True): unread fed rows fail the cluster


def task_error(text: str) -> str:
    """The sparktf error a barrier task raised (e.g. a GpuError), from Spark's job failure text.

    Spark wraps it in a Java exception whose first line says nothing; the task's Python
    traceback inside ends with ``sparktf.errors.<Name>: <message>``.
    """
    found = re.findall(r"^(?:sparktf\.errors\.)(\w+Error|\w+Timeout): (.+)$", text, re.M)
    return f"{found[-1][0]}: {found[-1][1]}" if found else ""


def epoch_busy(nodes: list[NodeState], epochs_done: dict[int, int], terminated: set[int],
               epoch: int) -> list[NodeState]:
    """The training nodes that take data and are not yet done with fed epoch ``epoch``
    (pure logic: a node that ended or called terminate() takes no more of it)."""
    return [n for n in nodes if n.role.job in TRAINING_JOBS and n.feed and not n.done
            and n.node not in terminated and epochs_done.get(n.node, -1) < epoch]


class Attempt:
    """Attempt ``number`` (0 first, n after the n-th restart) of a cluster."""

    def __init__(self, config: ClusterConfig, number: int) -> None:
        self.config = config
        self.number = number
        self.label = f"sparktf cluster {config.cluster_id}"
        #: Spark job tag of every job of this attempt (cancelled when it fails).
        self.tag = f"sparktf-{config.cluster_id}-{number}"
        self.nodes = [NodeState(i, r, since=time.monotonic())
                      for i, r in enumerate(config.roles)]
        self.error: SparkTFError | None = None
        self.terminated: set[int] = set()  # nodes that called DataFeed.terminate()
        self.epochs_done: dict[int, int] = {}  # node -> the last fed epoch it is done with
        self.replayed: dict[int, protocol.Replayed] = {}  # each node's last replay report
        self.unread: dict[int, int] = {}  # node -> fed rows its map_fun returned without reading
        self.tensorboard_url: str | None = None
        self._cond = threading.Condition()
        self._stopping = False  # nodes are being stopped on purpose
        self._job_done = False
        self._cluster_spec: dict | None = None
        self._logs: dict[int, str] = {}
        self._closed = threading.Event()
        self._driver_procs: list = []
        self.control = ControlServer(config.host, config.secret, len(config.roles),
                                     status=self.status,
                                     tls=config.tls.server() if config.tls else None)
        self._monitor = threading.Thread(target=self._run_monitor, name="sparktf-monitor",
                                         daemon=True)

    # -- start -----------------------------------------------------------------
    def start(self) -> None:
        """Start every node and return once all run ``map_fun``; raise if they do not."""
        cfg = self.config
        timeout = cfg.reservation_timeout
        deadline = time.monotonic() + timeout
        ps_on_driver = sum(1 for r in cfg.roles if r.job == "ps") if cfg.driver_ps_nodes else 0
        num_tasks = len(cfg.roles) - ps_on_driver
        logger.info("%s: starting %d nodes (%s)", self.label, len(cfg.roles),
                    ", ".join(r.name for r in cfg.roles))
        try:
            cfg.spark.wait_for_slots(num_tasks, timeout, self._closed, self.label)
        except ReservationTimeout:
            self.control.close()
            raise
        ps_socks = [launcher.reserve_port(cfg.host) for _ in range(ps_on_driver)]
        plan = self._plan(ps_socks)
        self._monitor.start()
        threading.Thread(target=self._run_barrier_job, args=(plan, num_tasks),
                         name="sparktf-job", daemon=True).start()
        if ps_socks:
            self._start_driver_ps(plan, ps_socks, deadline)
        self._wait_running(deadline, timeout)
        logger.info("%s: all %d nodes running", self.label, len(cfg.roles))

    def _plan(self, ps_socks: list) -> protocol.LaunchPlan:
        cfg = self.config
        return protocol.LaunchPlan(
            cluster_id=cfg.cluster_id + (f".{self.number}" if self.number else ""),
            attempt=self.number, roles=[tuple(r) for r in cfg.roles],
            input_mode=int(cfg.input_mode), control=self.control.address,
            secret=cfg.secret.hex(), env=cfg.env, base_dir=cfg.node_dir,
            default_fs=cfg.spark.default_fs(), working_dir=os.getcwd(),
            release_port=cfg.release_port, tensorboard=cfg.tensorboard_node,
            log_dir=cfg.log_dir, keep_node_dirs=cfg.keep_node_dirs,
            tls_cert=cfg.tls.cert_pem if cfg.tls else None,
            tls_key=cfg.tls.key_pem if cfg.tls else None,
            ps_addresses=[f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in ps_socks],
            num_gpus=cfg.num_gpus)

    def _run_barrier_job(self, plan: protocol.LaunchPlan, num_tasks: int) -> None:
        spark, error = self.config.spark, ""
        try:
            spark.run_barrier(num_tasks, launcher.barrier_task(plan, self.config.payload),
                              lambda: spark.job_scope(self.tag, f"{self.label}: {num_tasks} TF "
                                                      "nodes", self.tag))
        except Exception as e:  # reported through the monitor
            error = task_error(str(e)) or (str(e).strip().splitlines()[0] if str(e).strip()
                                           else repr(e))
        self.control.events.put((-1, "job", {"error": error}))

    def _start_driver_ps(self, plan: protocol.LaunchPlan, socks: list, deadline: float) -> None:
        """Start the ps nodes on the driver once the executors' addresses are known."""
        with self._cond:
            self._cond.wait_for(lambda: self.error or self._cluster_spec is not None,
                                timeout=max(0.0, deadline - time.monotonic()))
            spec = self._cluster_spec
        if spec is not None:  # else the wait for running nodes reports why
            self._driver_procs = launcher.start_driver_ps(plan, self.config.payload, socks,
                                                          spec)

    def _wait_running(self, deadline: float, timeout: float) -> None:
        tb = self.config.tensorboard_node
        with self._cond:
            self._cond.wait_for(
                lambda: self.error is not None or not not_started(self.nodes, tb,
                                                                  self.tensorboard_url),
                timeout=max(0.0, deadline - time.monotonic()))
            waiting = not_started(self.nodes, tb, self.tensorboard_url)
        if self.error is None and waiting:
            self.fail(ReservationTimeout(
                f"{len(waiting)} of {len(self.nodes)} TF nodes did not start within "
                f"reservation_timeout={timeout:g}s: "
                + "; ".join(f"{n.describe()} is {n.state}" for n in waiting)
                + ". Likely causes: an executor too busy or too slow to start Python and import "
                "the node's modules, or a firewall between executors and the driver "
                f"(control server {self.control.address[0]}:{self.control.address[1]})."))
        if self.error is not None:
            self.teardown(5.0)
            raise self.error

    # -- monitor ---------------------------------------------------------------
    def _run_monitor(self) -> None:
        """Turn control events into node states until the control server closes.

        Checks that must happen later (a node that went silent, a Spark job
        error waiting for the nodes' own reports) are kept in a heap and run
        when due: no timer threads outlive the attempt.
        """
        due: list[tuple[float, int, int, str, dict]] = []  # (when, seq, node, kind, msg)
        seq = 0
        while True:
            wait = max(0.0, due[0][0] - time.monotonic()) if due else None
            try:
                node, kind, msg = self.control.events.get(timeout=wait)
            except queue.Empty:
                _, _, node, kind, msg = heapq.heappop(due)
            if kind == "closed":
                return
            with self._cond:
                later = self._on_event(node, kind, msg)
                self._cond.notify_all()
            if later is not None:
                seq += 1
                heapq.heappush(due, (time.monotonic() + LOST_GRACE, seq, *later))

    def _on_event(self, node: int, kind: str, raw: dict) -> tuple[int, str, dict] | None:
        """Apply one event (lock held); return an event to deliver again later, if any."""
        if kind == "job":
            self._job_done = True
            if raw.get("error") and self.error is None:
                # Give the nodes' own reports a moment: they explain more than Spark's.
                return (-1, "job_failed", raw)
            return None
        if kind == "job_failed":
            self._fail_locked(SparkTFError(f"the Spark job hosting {self.label} failed: "
                                           f"{raw['error']}"))
            return None
        try:
            msg = (protocol.Disconnected(kind) if raw.get("type") == "disconnected"
                   else protocol.Silent() if kind == "silent" else protocol.decode(raw))
        except ProtocolError as e:
            # Authenticated but malformed: a version mismatch, never a reason to
            # lose the monitor.
            logger.warning("sparktf: ignoring a control message from node %s (%s): %s",
                           node, kind, e)
            return None
        if isinstance(msg, protocol.TensorBoardUp):
            self.tensorboard_url = msg.url
            logger.info("sparktf TensorBoard for cluster %s: %s", self.config.cluster_id,
                        msg.url)
        elif isinstance(msg, protocol.LogsReply):
            self._logs[node] = msg.text
        elif isinstance(msg, protocol.EpochDone):
            self.epochs_done[node] = max(msg.epoch, self.epochs_done.get(node, -1))
        elif isinstance(msg, protocol.Replayed):
            self.replayed[node] = msg
        elif isinstance(msg, protocol.Terminated):
            self.terminated.add(node)
            logger.info("sparktf node %s called terminate(): it takes no more data",
                        self.nodes[node].describe())
        else:
            if isinstance(msg, protocol.Started) and self._cluster_spec is None:
                self._cluster_spec = msg.cluster_spec
            # Finished and the supervisor's Exited both carry the count, in either order.
            unread = (msg.unread if isinstance(msg, (protocol.Finished, protocol.Exited))
                      and node not in self.unread else 0)
            if unread:
                self.unread[node] = unread
            if unread and not self.config.strict_feed:
                logger.warning("sparktf node %s: map_fun returned with %d fed rows unread (they "
                               "were delivered to it, not trained on); read the DataFeed until "
                               "should_stop(), or call terminate() to stop the feed",
                               self.nodes[node].describe(), msg.unread)
            outcome = transition(self.nodes[node], msg, stopping=self._stopping,
                                 now=time.monotonic())
            self.nodes[node] = outcome.state
            if outcome.failure is not None:
                logger.error("sparktf node %s %s", outcome.state.describe(), outcome.log)
                self._fail_locked(outcome.failure)
            elif outcome.log:
                logger.info("sparktf node %s %s", outcome.state.describe(), outcome.log)
            if unread and self.config.strict_feed:
                self._fail_locked(FeedError(
                    f"sparktf node {outcome.state.describe()}: map_fun returned with {unread} "
                    "fed rows unread (strict_feed=True); read the DataFeed until "
                    "should_stop(), or call terminate() to stop the feed"))
            if outcome.check_silence:
                return (node, "silent", {})
        return None

    # -- failing and stopping --------------------------------------------------
    def fail(self, error: SparkTFError) -> None:
        """Record the first error, stop every node and cancel the attempt's jobs."""
        with self._cond:
            self._fail_locked(error)
            self._cond.notify_all()

    def _fail_locked(self, error: SparkTFError) -> None:
        if self.error is not None:
            return
        self.error = error
        self._stop_nodes(f"cluster failed: {error}".splitlines()[0][:200])
        self.config.spark.cancel(self.tag)

    def stop_nodes(self, reason: str) -> None:
        """Stop every node still running, on purpose (it ends as ``stopped``)."""
        with self._cond:
            self._stopping = True
            self._stop_nodes(reason)

    def _stop_nodes(self, reason: str) -> None:
        for n in self.nodes:
            if not n.done:
                self.control.send(n.node, "supervisor", protocol.Stop(reason).to_dict())

    def wait(self, nodes: list[int], timeout: float) -> bool:
        """Wait until ``nodes`` have ended or the attempt failed; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self.error is not None or all(self.nodes[i].done for i in nodes),
                timeout=max(0.0, timeout))

    def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` (called with the lock held) is true, for the
        streaming watcher (:mod:`sparktf.driver.streaming`); :meth:`wake` re-checks."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout=timeout)

    def wait_epoch_done(self, epoch: int, timeout: float) -> list[NodeState]:
        """Wait until every training node that takes data is done with fed epoch ``epoch``
        (:class:`sparktf.protocol.EpochDone`), has ended or terminated; raise the
        attempt's error if it fails first.  Returns the nodes still busy on timeout."""
        with self._cond:
            def busy() -> list[NodeState]:
                return epoch_busy(self.nodes, self.epochs_done, self.terminated, epoch)

            self._cond.wait_for(lambda: self.error is not None or not busy(), timeout=timeout)
            if self.error is not None:
                raise self.error
            return busy()

    def wake(self) -> None:
        """Make every :meth:`wait_until` check its predicate again."""
        with self._cond:
            self._cond.notify_all()

    def teardown(self, wait: float) -> None:
        """Wait up to ``wait`` s for every node process and the job to end, then close."""
        with self._cond:
            self._stopping = True
            ended = self._cond.wait_for(
                lambda: all(n.done for n in self.nodes) and (
                    self._job_done or self.config.input_mode == protocol.InputMode.SPARK),
                timeout=wait)
            if not ended:
                logger.warning("%s: nodes still running at teardown: %s", self.label,
                               ", ".join(n.describe() for n in self.nodes if not n.done))
        for proc in self._driver_procs:
            procs.stop_group(proc, grace=2.0)
        self._closed.set()
        self.control.close()
        self.control.events.put((-1, "closed", {}))
        if self._monitor.is_alive():
            self._monitor.join(timeout=10)

    # -- requests from feeders and users ----------------------------------------
    def status(self) -> dict:
        """For feeding tasks that lost their node: the first error, the terminated nodes."""
        with self._cond:
            if self.error is None and not self.terminated:
                self._cond.wait_for(lambda: self.error is not None or self.terminated,
                                    timeout=LOST_GRACE)
            return {"error": str(self.error) if self.error is not None else "",
                    "terminated": sorted(self.terminated)}

    def wait_for_error(self, timeout: float) -> SparkTFError | None:
        """The attempt's error, waiting up to ``timeout`` s for one to arrive."""
        with self._cond:
            self._cond.wait_for(lambda: self.error is not None, timeout=timeout)
            return self.error

    def data_nodes(self) -> list[NodeState]:
        """The training nodes that still take data (SPARK mode); raises the attempt's error."""
        with self._cond:
            if self.error is not None:
                raise self.error
            return [n for n in self.nodes if n.role.job in TRAINING_JOBS and n.feed
                    and not n.done and n.node not in self.terminated]

    def send_nodes(self, nodes: list[NodeState], msg: protocol.Message) -> None:
        for n in nodes:
            self.control.send(n.node, "node", msg.to_dict())

    def end_feed(self) -> None:
        """Tell SPARK-mode nodes that no more data will come (``should_stop()``)."""
        self.send_nodes([n for n in self.nodes if n.feed and not n.done], protocol.EndFeed())

    def logs(self, n: NodeState, lines: int, timeout: float) -> str:
        with self._cond:
            self._logs.pop(n.node, None)
            request = protocol.LogsRequest(lines).to_dict()
            if not self.control.send(n.node, "supervisor", request):
                return self.nodes[n.node].log_tail
            self._cond.wait_for(lambda: n.node in self._logs, timeout=timeout)
            return self._logs.pop(n.node, self.nodes[n.node].log_tail)

    def find(self, match: Callable[[NodeState], bool]) -> NodeState | None:
        return next((n for n in self.nodes if match(n)), None)
