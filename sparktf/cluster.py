"""The driver side: ``TFCluster.run`` starts a TF cluster on Spark executors.

Exposed as ``sparktf.TFCluster``, so ``TFCluster.run(...)`` and
``TFCluster.InputMode`` read as in TensorFlowOnSpark.

How a cluster comes up (see also :mod:`sparktf.node.launcher`):

1. The driver checks that the cluster offers one task slot per node, waiting
   up to ``reservation_timeout`` for executors to register, and otherwise
   raises with the numbers and the settings to change.
2. It starts an authenticated control server on the driver's address and a
   *barrier* Spark job with one task per node, in a background thread.
3. Every node reports over the control channel: its supervisor when the
   process starts and when it ends; the node itself when ``map_fun`` starts,
   finishes or raises.  A monitor thread turns these messages into node
   states; the first failure stops every node and cancels the Spark job.
4. ``shutdown`` waits for the training nodes, stops ps and evaluator nodes,
   and raises the first node error.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from pyspark import cloudpickle

from . import errors, paths
from . import roles as rolemod
from .control import ControlServer
from .errors import (ConfigError, FeedError, NodeError, ReservationTimeout, ShutdownTimeout,
                     SparkTFError)
from .feed import arrowconv, sender
from .node import launcher, procs
from .wire import new_secret

logger = logging.getLogger(__name__)

#: How long the driver waits for a node's supervisor to report after the node
#: itself went silent, before it declares the node lost.
_LOST_GRACE = 3.0


class InputMode:
    """How data reaches the TF nodes."""

    #: ``map_fun`` reads its own data; Spark only hosts the TF cluster.
    TENSORFLOW = 0
    #: Spark feeds RDD or DataFrame partitions into the nodes.
    SPARK = 1


_DONE = ("finished", "failed", "stopped", "lost")


@dataclass
class NodeState:
    """What the driver knows about one node."""

    node: int
    role: rolemod.Role
    state: str = "pending"  # pending, started, running, then one of _DONE
    host: str = ""
    executor: str = ""
    pid: int = 0
    log: str = ""
    feed: tuple | None = None
    error: str = ""
    traceback: str = ""
    log_tail: str = ""
    since: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> bool:
        return self.state in _DONE

    def describe(self) -> str:
        where = f"node {self.node}"
        if self.executor:
            where += f", executor {self.executor}"
        if self.host:
            where += f", host {self.host}"
        return f"{self.role.name} ({where})"


class TFCluster:
    """A running TF cluster; create it with :func:`run`."""

    def __init__(self, sc: Any, roles: list[rolemod.Role], input_mode: int,
                 driver_ps_nodes: bool, release_port: bool, max_restarts: int = 0) -> None:
        self.sc = sc
        self.input_mode = input_mode
        self.cluster_id = uuid.uuid4().hex[:8]
        self.driver_ps_nodes = driver_ps_nodes
        self.max_restarts = max_restarts
        self.restarts = 0  # restarts so far
        self._roles = roles
        self._release_port = release_port
        self._epochs_fed = 0  # epochs fed so far, over all train() calls
        self._secret = new_secret()
        self._cond = threading.Condition()
        self._shut_down = False
        self._launch: tuple = ()  # _start's arguments, kept for restarts
        self._tensorboard_node: int | None = None  # the node that runs TensorBoard
        self._host = sc.getConf().get("spark.driver.host", None) or "127.0.0.1"
        self._new_attempt()

    def _new_attempt(self) -> None:
        """Fresh per-attempt state: nodes, control server, job group (first start and restarts)."""
        self.nodes = [NodeState(i, r) for i, r in enumerate(self._roles)]
        self._group = f"sparktf-{self.cluster_id}-{self.restarts}"
        self._spec: dict | None = None  # the cluster spec, once a node reported it
        self._stopping = False  # True once shutdown began stopping nodes on purpose
        self._terminated: set[int] = set()  # nodes that called DataFeed.terminate()
        self._error: SparkTFError | None = None
        self._job_done = False
        self._closed = threading.Event()  # this attempt's nodes and control server are gone
        self._driver_procs: list = []
        self._tensorboard_url: str | None = None
        self._logs: dict[int, str] = {}  # replies to logs() requests
        self.control = ControlServer(self._host, self._secret, len(self._roles),
                                     status=self._status)
        self._monitor_thread = threading.Thread(target=self._monitor, args=(self.control,),
                                                name="sparktf-monitor", daemon=True)

    # -- start -------------------------------------------------------------
    def _start(self, payload: bytes, reservation_timeout: float, env: dict,
               base_dir: str | None, log_dir: str | None) -> None:
        """Start one attempt: all nodes, and wait until they run ``map_fun``."""
        self._launch = (payload, reservation_timeout, env, base_dir, log_dir)
        deadline = time.monotonic() + reservation_timeout
        num_ps_on_driver = sum(1 for n in self.nodes if n.role.job == "ps") \
            if self.driver_ps_nodes else 0
        num_tasks = len(self.nodes) - num_ps_on_driver
        logger.info("sparktf cluster %s: starting %d nodes (%s)", self.cluster_id, len(self.nodes),
                    ", ".join(n.role.name for n in self.nodes))
        self._wait_for_slots(num_tasks, deadline, reservation_timeout)
        ps_socks = [launcher.reserve_port(self.control.address[0]) for _ in range(num_ps_on_driver)]
        hadoop = self.sc._jsc.hadoopConfiguration()
        plan = {
            "cluster_id": self.cluster_id + (f".{self.restarts}" if self.restarts else ""),
            "attempt": self.restarts, "roles": [tuple(n.role) for n in self.nodes],
            "input_mode": self.input_mode, "control": list(self.control.address),
            "secret": self._secret.hex(), "env": env, "base_dir": base_dir,
            "default_fs": hadoop.get("fs.defaultFS") or "file:///", "working_dir": os.getcwd(),
            "release_port": self._release_port,
            "tensorboard": self._tensorboard_node, "log_dir": log_dir,
            "ps_addresses": [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in ps_socks],
        }
        self._monitor_thread.start()
        threading.Thread(target=self._run_job, args=(plan, payload, num_tasks, self.control),
                         name="sparktf-job", daemon=True).start()
        if ps_socks:
            self._start_driver_ps(plan, payload, ps_socks, deadline)
        self._wait_running(deadline, reservation_timeout)
        logger.info("sparktf cluster %s: all %d nodes running", self.cluster_id, len(self.nodes))

    def _wait_for_slots(self, needed: int, deadline: float, timeout: float) -> None:
        jsc = self.sc._jsc.sc()
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        last_log = 0.0
        while True:
            slots = jsc.maxNumConcurrentTasks(profile)
            if slots >= needed:
                return
            now = time.monotonic()
            if now >= deadline:
                self.control.close()
                raise ReservationTimeout(self._slots_message(needed, slots, timeout))
            if now - last_log >= 10:
                logger.info("sparktf cluster %s: waiting for executors: %d of %d task slots "
                            "available", self.cluster_id, slots, needed)
                last_log = now
            # Executors register with the scheduler asynchronously and Spark has
            # no Python-side event for it: re-check twice a second.
            self._closed.wait(min(0.5, max(0.0, deadline - now)))

    def _slots_message(self, needed: int, slots: int, timeout: float) -> str:
        conf = self.sc.getConf()
        settings = ", ".join(f"{k}={conf.get(k, '(unset)')}" for k in (
            "spark.master", "spark.executor.instances", "spark.executor.cores", "spark.cores.max",
            "spark.task.cpus", "spark.dynamicAllocation.enabled"))
        return (f"TFCluster.run needs {needed} task slots at once (one per TF node, gang-scheduled "
                f"in Spark barrier mode) but the cluster offered only {slots} within "
                f"reservation_timeout={timeout:g}s.\nLikely causes: too few executors or cores. "
                "Slots = executors x (spark.executor.cores / spark.task.cpus). Raise "
                "spark.executor.instances (--num-executors on YARN) or spark.cores.max "
                "(--total-executor-cores on standalone), lower spark.task.cpus, or lower "
                "num_executors; dynamic allocation must be off "
                "(spark.dynamicAllocation.enabled=false); executors may also have failed to start "
                f"(see the Spark UI).\nCurrent settings: {settings}")

    def _run_job(self, plan: dict, payload: bytes, num_tasks: int,
                 control: ControlServer) -> None:
        self.sc.setJobGroup(self._group, f"sparktf cluster {self.cluster_id}: {num_tasks} TF nodes",
                            interruptOnCancel=True)
        error = ""
        try:
            rdd = self.sc.parallelize(range(num_tasks), num_tasks)
            rdd.barrier().mapPartitions(launcher.barrier_task(plan, payload)).collect()
        except Exception as e:  # reported through the monitor
            error = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        control.events.put((-1, "job", {"type": "job_done", "error": error}))

    def _start_driver_ps(self, plan: dict, payload: bytes, socks: list, deadline: float) -> None:
        """Start the ps nodes on the driver once the executors' addresses are known."""
        with self._cond:
            self._cond.wait_for(lambda: self._error or all(
                n.state != "pending" for n in self.nodes[len(socks):]),
                timeout=max(0.0, deadline - time.monotonic()))
            spec = self._spec
        if spec is None:
            return  # the reservation wait below reports why
        # On the driver, node files go to the temp dir, not the application's cwd.
        local = os.path.join(tempfile.gettempdir(), "sparktf-nodes")
        plan = dict(plan, base_dir=plan["base_dir"] or local)
        for i, sock in enumerate(socks):
            self._driver_procs.append(launcher.start_node(
                plan, payload, i, self.control.address[0], sock, spec, os.getpid(),
                detach=False))

    def _wait_running(self, deadline: float, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._error is not None or (all(
                n.state != "pending" and n.state != "started" for n in self.nodes) and (
                self._tensorboard_node is None or self._tensorboard_url is not None)),
                timeout=max(0.0, deadline - time.monotonic()))
            error = self._error
            waiting = [n for n in self.nodes if n.state in ("pending", "started")]
            if not waiting and self._tensorboard_url is None and self._tensorboard_node is not None:
                waiting = [self.nodes[self._tensorboard_node]]  # its TensorBoard never came up
        if error is not None:
            self._teardown(5.0)
            raise error
        if waiting:
            self._fail(ReservationTimeout(
                f"{len(waiting)} of {len(self.nodes)} TF nodes did not start within "
                f"reservation_timeout={timeout:g}s: "
                + "; ".join(f"{n.describe()} is {n.state}" for n in waiting)
                + ". Likely causes: an executor too busy or too slow to start Python and import "
                "the node's modules, or a firewall between executors and the driver "
                f"(control server {self.control.address[0]}:{self.control.address[1]})."))
            self._teardown(5.0)
            raise self._error

    # -- monitor -----------------------------------------------------------
    def _monitor(self, control: ControlServer) -> None:
        """Turn one attempt's control events into node states, until its server closes."""
        while True:
            node, kind, msg = control.events.get()
            if kind == "closed":
                return
            with self._cond:
                try:
                    if kind == "job":
                        self._on_job_done(msg.get("error", ""))
                    else:
                        self._on_node_message(self.nodes[node], kind, msg)
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    # Authenticated but malformed: a version mismatch, never a reason
                    # to lose the monitor.
                    logger.warning("sparktf: ignoring a malformed control message from node %s "
                                   "(%s): %r (%s)", node, kind, msg, e)
                self._cond.notify_all()

    def _on_node_message(self, n: NodeState, kind: str, msg: dict) -> None:
        mtype = msg.get("type")
        if kind == "supervisor" and mtype == "started":
            n.host, n.executor, n.pid, n.log = msg["host"], msg["executor"], msg["pid"], msg["log"]
            n.state = "started"
            if msg.get("cluster_spec") and self._spec is None:
                self._spec = msg["cluster_spec"]
            logger.info("sparktf node %s started (pid %s, log %s)", n.describe(), n.pid, n.log)
        elif kind == "node" and mtype == "ready":
            n.state, n.feed = "running", tuple(msg["feed"]) if msg.get("feed") else None
            logger.info("sparktf node %s running map_fun", n.describe())
        elif kind == "node" and mtype == "finished":
            n.state = "finished"
            logger.info("sparktf node %s finished", n.describe())
        elif kind == "node" and mtype == "failed":
            n.error, n.traceback = msg.get("error", ""), msg.get("traceback", "")
        elif kind == "supervisor" and mtype == "exit":
            self._on_exit(n, msg)
        elif mtype == "disconnected" and not n.done:
            if kind == "supervisor":
                self._node_failed(n, "lost", "lost contact with the node's supervisor (its "
                                  "executor died, was killed or lost its network)")
            else:
                # The node process closed its connection; its supervisor's exit
                # report (with the exit code) normally follows at once.
                threading.Timer(_LOST_GRACE, self.control.events.put,
                                args=((n.node, "supervisor", {"type": "silent"}),)).start()
        elif mtype == "silent" and not n.done:
            self._node_failed(n, "lost", "the node process went away without a report")
        elif kind == "supervisor" and mtype == "logs":
            self._logs[n.node] = msg.get("text", "")
        elif kind == "supervisor" and mtype == "tensorboard":
            self._tensorboard_url = msg["url"]
            logger.info("sparktf TensorBoard for cluster %s: %s", self.cluster_id, msg["url"])
        elif kind == "node" and mtype == "terminate":
            self._terminated.add(n.node)
            logger.info("sparktf node %s called terminate(): it takes no more data", n.describe())

    def _on_exit(self, n: NodeState, msg: dict) -> None:
        code, n.log_tail = msg.get("code"), msg.get("log_tail", "")
        if n.state == "finished" or (code == 0 and not n.error):
            n.state = "finished"
        elif msg.get("stopped") and (self._error is not None or self._stopping):
            n.state = "stopped"
            logger.info("sparktf node %s stopped", n.describe())
        else:
            what = n.error or (f"process exited with code {code}" if code is not None and code >= 0
                               else f"process killed by signal {-code}")
            if msg.get("stopped"):
                what += f" ({msg.get('reason')})"
            self._node_failed(n, "failed", what)

    def _node_failed(self, n: NodeState, state: str, what: str) -> None:
        n.state = state
        detail = n.traceback or ""
        if n.log_tail:
            detail += ("\n" if detail else "") + "last lines of the node's log:\n" + n.log_tail
        logger.error("sparktf node %s failed: %s", n.describe(), what)
        self._fail(NodeError(f"TF node {n.describe()} failed: {what}", n.role.name, detail))

    def _on_job_done(self, error: str) -> None:
        self._job_done = True
        if error and self._error is None:
            # Give the nodes' own reports (tracebacks, exit codes) a moment to arrive:
            # they explain the failure better than Spark's task error.
            threading.Timer(_LOST_GRACE, self._job_failed, args=(error, self._group)).start()

    def _job_failed(self, error: str, group: str) -> None:
        with self._cond:
            if self._error is None and group == self._group:
                self._fail(SparkTFError(f"the Spark job hosting sparktf cluster {self.cluster_id} "
                                        f"failed: {error}"))
                self._cond.notify_all()

    def _fail(self, error: SparkTFError) -> None:
        """Record the first error and stop everything (called with ``_cond`` held)."""
        if self._error is not None:
            return
        self._error = error
        self._stop_nodes(self.nodes, f"cluster failed: {error}".splitlines()[0][:200])
        try:
            self.sc.cancelJobGroup(self._group)
        except Exception:  # the SparkContext may be stopping
            logger.debug("could not cancel job group %s", self._group, exc_info=True)

    def _stop_nodes(self, nodes: list[NodeState], reason: str) -> None:
        for n in nodes:
            if not n.done:
                self.control.send(n.node, "supervisor", {"type": "stop", "reason": reason})

    def _status(self) -> dict:
        """For feeding tasks that lost their node: the first error, the terminated nodes."""
        with self._cond:
            if self._error is None and not self._terminated:
                self._cond.wait_for(lambda: self._error is not None or self._terminated,
                                    timeout=_LOST_GRACE)
            return {"error": str(self._error) if self._error is not None else "",
                    "terminated": sorted(self._terminated)}

    # -- SPARK mode: feeding ------------------------------------------------
    def _data_nodes(self, what: str) -> list[dict]:
        if self.input_mode != InputMode.SPARK:
            raise ConfigError(f"cluster.{what}() needs TFCluster.run(..., "
                              "input_mode=InputMode.SPARK)")
        with self._cond:
            if self._error is not None:
                raise self._error
            return [{"node": n.node, "name": n.role.name, "feed": list(n.feed),
                     "control": list(self.control.address)}
                    for n in self.nodes
                    if n.role.job in rolemod.TRAINING_JOBS and n.feed and not n.done
                    and n.node not in self._terminated]

    def train(self, data: Any, num_epochs: int = 1, feed_timeout: float = 600,
              qname: str = "input") -> None:
        """Feed an RDD or a DataFrame to the training nodes ``num_epochs`` times.

        Each row reaches exactly one node once per epoch; nodes end each epoch
        knowing every node's row count, which the ``DataFeed.dataset`` fast path
        uses to give all synchronous workers the same number of steps.  Returns
        early if every node called ``terminate()``.
        """
        if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
            raise ConfigError(f"num_epochs must be an integer >= 1, got {num_epochs!r}")
        arrow = _is_dataframe(data)
        partitions = (data.rdd if arrow else data).getNumPartitions()
        for epoch in range(num_epochs):
            description = f"sparktf train epoch {epoch + 1}/{num_epochs}"
            while True:
                try:
                    nodes = self._data_nodes("train")
                    if not nodes:
                        logger.info("sparktf train: every node called terminate(); "
                                    "stopping the feed")
                        return
                    # Epochs are numbered across train() calls: a node starts a new
                    # epoch when it sees a higher number.
                    task = functools.partial(
                        sender.feed_train, nodes=nodes, secret=self._secret,
                        epoch=self._epochs_fed, partitions=partitions, feed_timeout=feed_timeout,
                        arrow=arrow)
                    started = time.monotonic()
                    counts = self._run_feed_job(description, lambda: _train_job(data, task, arrow))
                    break
                except SparkTFError:
                    if not self._may_restart():
                        raise
                    self._restart()  # then feed this epoch again from its start
            elapsed = time.monotonic() - started
            total = sum(counts.values())
            end = {"type": "epoch_end", "epoch": self._epochs_fed,
                   "counts": {str(n["node"]): counts.get(n["node"], 0) for n in nodes}}
            for n in nodes:
                self.control.send(n["node"], "node", end)
            self._epochs_fed += 1
            logger.info("sparktf train epoch %d/%d: %d rows in %.1fs (%.0f rows/s); %s",
                        epoch + 1, num_epochs, total, elapsed, total / max(elapsed, 1e-9),
                        ", ".join(f"{n['name']} {counts.get(n['node'], 0)}" for n in nodes))

    def inference(self, data: Any, feed_timeout: float = 600, qname: str = "input") -> Any:
        """A lazy RDD with one result per input row, in input order within each partition.

        Partition ``p`` is fed to training node ``p mod k``.  For a DataFrame
        the results follow the order of ``data.rdd``, so
        ``data.rdd.zip(cluster.inference(data))`` pairs rows with results.
        """
        nodes = self._data_nodes("inference")
        if not nodes:
            raise ConfigError("no TF node takes inference data (all finished or terminated)")
        rdd = data.rdd if _is_dataframe(data) else data
        secret = self._secret

        def infer(partition: int, rows: Any) -> Any:
            node = nodes[partition % len(nodes)]
            for result in sender.feed_inference(partition, rows, node, secret, feed_timeout,
                                                arrow=False):
                yield from arrowconv.decode_rows(result)

        return rdd.mapPartitionsWithIndex(infer, preservesPartitioning=True)

    def _run_feed_job(self, description: str, job: Callable[[], Any]) -> Any:
        self.sc.setJobGroup(self._group, description, interruptOnCancel=True)
        done = threading.Event()
        threading.Thread(target=self._log_progress, args=(description, done),
                         name="sparktf-progress", daemon=True).start()
        try:
            return job()
        except Exception as e:
            with self._cond:  # a node's own report explains more than the task error
                self._cond.wait_for(lambda: self._error is not None, timeout=_LOST_GRACE)
                if self._error is not None:
                    raise self._error from None
            found = re.findall(r"sparktf\.errors\.(\w+): ([^\n]*)", str(e))
            if found:
                cls = getattr(errors, found[-1][0], FeedError)
                raise cls(f"{description}: {found[-1][1]}") from None
            raise FeedError(f"{description} failed: {str(e).strip().splitlines()[0]}") from e
        finally:
            done.set()

    def _log_progress(self, description: str, done: threading.Event,
                      every: float = 5.0) -> None:
        """Log how many partitions of the running feed job are done, every few seconds."""
        tracker, started = self.sc.statusTracker(), time.monotonic()
        while not done.wait(every):
            total = finished = 0
            for job_id in tracker.getJobIdsForGroup(self._group):
                job = tracker.getJobInfo(job_id)
                for stage in (tracker.getStageInfo(s) for s in (job.stageIds if job else ())):
                    if stage is not None:
                        total += stage.numTasks
                        finished += stage.numCompletedTasks
            if total and not done.is_set():
                elapsed = time.monotonic() - started
                left = f", about {elapsed * (total - finished) / finished:.0f}s left" \
                    if finished else ""
                logger.info("%s: %d of %d partitions fed in %.0fs%s", description, finished,
                            total, elapsed, left)

    # -- public API --------------------------------------------------------
    def logs(self, node: int | str, lines: int = 50, timeout: float = 10) -> str:
        """The last ``lines`` lines of a node's log, read on its executor.

        ``node`` is a node number or a name such as ``"worker:0"``.  A node that
        has ended returns the tail it reported when it ended.
        """
        n = next((x for x in self.nodes if node in (x.node, x.role.name)), None)
        if n is None:
            raise ConfigError(f"no node {node!r}; nodes: {[x.role.name for x in self.nodes]}")
        with self._cond:
            self._logs.pop(n.node, None)
            if not self.control.send(n.node, "supervisor", {"type": "logs", "lines": lines}):
                return n.log_tail
            self._cond.wait_for(lambda: n.node in self._logs, timeout=timeout)
            return self._logs.pop(n.node, n.log_tail)

    def tensorboard_url(self) -> str | None:
        """``http://host:port`` of the TensorBoard server, or None."""
        return self._tensorboard_url

    def shutdown(self, ssc: Any = None, grace_secs: float = 0, timeout: float = 259200) -> None:
        """Wait for the training nodes, stop ps and evaluator nodes, raise the first error.

        ``grace_secs`` is waited after the training nodes finish, before the
        serving nodes are stopped.  ``timeout`` bounds the whole wait; when it
        expires the remaining nodes are stopped and :class:`ShutdownTimeout`
        names them.
        """
        if self._shut_down:
            return
        if ssc is not None:
            raise ConfigError("shutdown(ssc=...) (Spark Streaming) is not supported yet")
        deadline = time.monotonic() + timeout
        self._end_feed()
        while True:
            training = self._awaited_nodes()
            with self._cond:
                self._cond.wait_for(
                    lambda: self._error is not None or all(n.done for n in training),
                    timeout=max(0.0, deadline - time.monotonic()))
                if self._error is None and not all(n.done for n in training):
                    self._fail(ShutdownTimeout(
                        f"shutdown(timeout={timeout:g}) expired with nodes still running: "
                        + "; ".join(f"{n.describe()} {n.state} for "
                                    f"{time.monotonic() - n.since:.0f}s"
                                    for n in training if not n.done)))
            # In SPARK mode train() restarts (it must feed the new nodes).
            if self.input_mode != InputMode.TENSORFLOW or not self._may_restart():
                break
            self._restart()
        if self._error is None and grace_secs:
            self._closed.wait(grace_secs)
        with self._cond:
            self._stopping = True
            self._stop_nodes(self.nodes, "cluster shutdown")
        self._teardown(max(10.0, min(60.0, deadline - time.monotonic())))
        self._shut_down = True
        if self._error is not None:
            raise self._error
        logger.info("sparktf cluster %s: shut down", self.cluster_id)

    # -- restarts ----------------------------------------------------------
    def _may_restart(self) -> bool:
        """Whether the current failure should restart the cluster (a node failed, restarts left)."""
        with self._cond:
            return (self._error is not None and self.restarts < self.max_restarts
                    and not isinstance(self._error, (ConfigError, ShutdownTimeout)))

    def _restart(self) -> None:
        """Tear the failed attempt down and start every node again.

        The nodes run ``map_fun`` from the start, with ``ctx.attempt`` one
        higher; it resumes from its latest checkpoint (see
        :class:`sparktf.CheckpointManager`).  The new nodes may land on other
        executors: the attempt waits for free slots as the first one did.
        """
        cause = self._error
        self._teardown(60.0)
        self._monitor_thread.join(timeout=10)
        self.restarts += 1
        logger.warning("sparktf cluster %s: restart %d of %d after: %s", self.cluster_id,
                       self.restarts, self.max_restarts, str(cause).splitlines()[0])
        self._new_attempt()
        try:
            self._start(*self._launch)
        except SparkTFError:
            if not self._may_restart():
                raise
            self._restart()

    def _awaited_nodes(self) -> list[NodeState]:
        """The nodes whose end means training is over.

        With ps nodes (ParameterServerStrategy) the chief drives training and
        the workers only serve, so the chief alone is awaited; otherwise every
        chief, master and worker node.
        """
        chief = [n for n in self.nodes if n.role.job in ("chief", "master")]
        if chief and any(n.role.job == "ps" for n in self.nodes):
            return chief
        return [n for n in self.nodes if n.role.job in rolemod.TRAINING_JOBS]

    def _end_feed(self) -> None:
        """Tell SPARK-mode nodes that no more data will come (``should_stop()``)."""
        if self.input_mode == InputMode.SPARK:
            for n in self.nodes:
                if n.feed and not n.done:
                    self.control.send(n.node, "node", {"type": "end_feed"})

    def _teardown(self, wait: float) -> None:
        """Wait up to ``wait`` s for every node process and the job to end, then close."""
        with self._cond:
            self._stopping = True
            done = self._cond.wait_for(
                lambda: all(n.done for n in self.nodes) and (
                    self._job_done or self.input_mode == InputMode.SPARK), timeout=wait)
            if not done:
                logger.warning("sparktf cluster %s: nodes still running at teardown: %s",
                               self.cluster_id,
                               ", ".join(n.describe() for n in self.nodes if not n.done))
        for proc in self._driver_procs:
            procs.stop_group(proc, grace=2.0)
        self._closed.set()
        self.control.close()
        self.control.events.put((-1, "closed", {}))


def run(sc: Any, map_fun: Callable[[Any, Any], Any], tf_args: Any, num_executors: int,
        num_ps: int = 0, tensorboard: bool = False, input_mode: int = InputMode.TENSORFLOW,
        log_dir: str | None = None, driver_ps_nodes: bool = False, master_node: str | None = None,
        reservation_timeout: float = 600, queues: tuple = ("input", "output", "error"),
        eval_node: bool = False, release_port: bool = True, *, max_restarts: int = 0,
        legacy_keras: bool = True, env: dict[str, str] | None = None,
        node_dir: str | None = None) -> TFCluster:
    """Start ``num_executors`` TF nodes on the Spark executors and run ``map_fun`` on each.

    Arguments as in TensorFlowOnSpark's ``TFCluster.run``; in addition:

    * ``max_restarts``: when a node fails (an exception, a killed process, a
      lost executor), stop the whole TF cluster and start it again, up to
      this many times; ``map_fun`` runs again with ``ctx.attempt`` one higher
      and should resume from its latest checkpoint
      (:class:`sparktf.CheckpointManager`).  In SPARK mode ``train()`` then
      feeds the interrupted epoch again from its start.  Off (0) by default.
    * ``legacy_keras``: set ``TF_USE_LEGACY_KERAS=1`` in the nodes before
      TensorFlow loads, so ``tf.keras`` is tf-keras 2.21, whose ``model.fit``
      works under MultiWorkerMirroredStrategy (Keras 3's does not,
      keras-team/keras#20585).  ``import keras`` is Keras 3 either way.
    * ``env``: extra environment variables for the node processes.
    * ``node_dir``: where nodes keep their logs and scratch files on the
      executors (default: ``sparktf/`` under the executor's working directory).

    Returns once every node runs ``map_fun``; raises :class:`ReservationTimeout`
    if that does not happen within ``reservation_timeout`` seconds.
    """
    if input_mode not in (InputMode.TENSORFLOW, InputMode.SPARK):
        raise ConfigError(f"input_mode must be InputMode.TENSORFLOW (0) or InputMode.SPARK (1), "
                          f"got {input_mode!r}")
    if driver_ps_nodes and input_mode == InputMode.SPARK:
        raise ConfigError("driver_ps_nodes=True works only with InputMode.TENSORFLOW")
    if driver_ps_nodes and num_ps == 0:
        raise ConfigError("driver_ps_nodes=True needs num_ps >= 1")
    if sc.getConf().get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        raise ConfigError("sparktf runs its nodes as a Spark barrier stage, which does not "
                          "support dynamic allocation: set spark.dynamicAllocation.enabled=false "
                          "and a fixed spark.executor.instances")
    roles = rolemod.assign_roles(num_executors, num_ps, master_node, eval_node)
    node_env = {"PYTHONUNBUFFERED": "1"}
    if legacy_keras:
        node_env["TF_USE_LEGACY_KERAS"] = "1"
    node_env.update(env or {})
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ConfigError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
    try:
        payload = cloudpickle.dumps((map_fun, tf_args))
    except Exception as e:
        raise ConfigError(f"map_fun or tf_args cannot be pickled for the executors: {e}") from e
    cluster = TFCluster(sc, roles, input_mode, driver_ps_nodes, release_port, max_restarts)
    if tensorboard:
        chief = [i for i, r in enumerate(roles) if r.job in ("chief", "master")]
        cluster._tensorboard_node = (chief or rolemod.data_nodes(roles))[0]
    try:
        cluster._start(payload, reservation_timeout, node_env, node_dir,
                       log_dir and _log_dir(log_dir))
    except SparkTFError:
        if not cluster._may_restart():
            raise
        cluster._restart()
    return cluster


def _log_dir(log_dir: str) -> str:
    """``log_dir`` as the nodes get it: an absolute local path, or a remote URL unchanged."""
    from . import fs
    return paths.local_path(log_dir) if fs.is_local(log_dir) else log_dir


def _is_dataframe(data: Any) -> bool:
    return hasattr(data, "mapInArrow") and hasattr(data, "schema")


def _train_job(data: Any, task: Callable, arrow: bool) -> dict[int, int]:
    """Run one epoch's feeding job; return the rows delivered per node."""
    if arrow:
        def feed_batches(batches: Any) -> Any:
            import pyarrow as pa
            from pyspark import TaskContext
            sent = task(TaskContext.get().partitionId(), batches)
            yield pa.RecordBatch.from_pydict({"node": list(sent), "rows": list(sent.values())})

        rows = data.mapInArrow(feed_batches, "node long, rows long").collect()
        per_task = [{r["node"]: r["rows"]} for r in rows]
    else:
        per_task = data.mapPartitionsWithIndex(lambda p, it: [task(p, it)]).collect()
    counts: dict[int, int] = {}
    for sent in per_task:
        for node, rows in sent.items():
            counts[node] = counts.get(node, 0) + rows
    return counts
