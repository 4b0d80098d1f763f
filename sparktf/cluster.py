"""The driver's front door: ``TFCluster.run`` and the ``TFCluster`` it returns.

Exposed as ``sparktf.TFCluster``, so ``TFCluster.run(...)`` and
``TFCluster.InputMode`` read as in TensorFlowOnSpark.  A cluster's life:

1. **run**: validate the arguments, then start an attempt
   (:class:`sparktf.driver.attempt.Attempt`): task slots, control server,
   a barrier job with one task per node, and the wait until every node runs
   ``map_fun``.
2. **train / inference** (SPARK mode): feed data through Spark jobs
   (:mod:`sparktf.driver.feeding`).
3. **shutdown**: wait for the training nodes, stop ps and evaluator nodes,
   tear the attempt down, raise the first node error.
4. **restart** (``max_restarts``): when a node fails, the failed attempt is
   torn down and a new one started in its place; SPARK mode feeds the
   interrupted epoch again.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable

from pyspark import cloudpickle

from . import fs, paths
from . import roles as rolemod
from . import tls as tlsmod
from .driver import sparkjobs
from .driver.attempt import Attempt, ClusterConfig
from .driver.feeding import Feeder, is_dataframe
from .driver.state import NodeState
from .driver.streaming import StreamControl, is_stream
from .feed import cache as cachemod
from .feed import routing
from .errors import ConfigError, ShutdownTimeout, SparkTFError
from .protocol import InputMode
from .wire import new_secret

logger = logging.getLogger(__name__)

__all__ = ["run", "TFCluster", "InputMode"]

#: TensorFlowOnSpark's queue names; sparktf feeds one input and one output stream.
_QUEUES = {"input", "output", "error"}


class TFCluster:
    """A running TF cluster; create it with :func:`run`."""

    def __init__(self, config: ClusterConfig, max_restarts: int) -> None:
        self.config = config
        self.cluster_id = config.cluster_id
        self.input_mode = config.input_mode
        self.max_restarts = max_restarts
        self.restarts = 0  # restarts so far
        self._attempt = Attempt(config, 0)
        self._feeder = Feeder(config.spark)
        self._streams = StreamControl(self)  # DStreams and Structured Streaming
        self._shut_down = False

    # -- what users read -----------------------------------------------------------
    @property
    def nodes(self) -> list[NodeState]:
        """Every node's current state (role, status, host, executor, log path)."""
        return list(self._attempt.nodes)

    @property
    def control_address(self) -> tuple[str, int]:
        """The driver's control server (``host``, ``port``) of the current attempt."""
        return self._attempt.control.address

    def tensorboard_url(self) -> str | None:
        """``http://host:port`` of the TensorBoard server, or None."""
        return self._attempt.tensorboard_url

    def logs(self, node: int | str, lines: int = 50, timeout: float = 10) -> str:
        """The last ``lines`` lines of a node's log, read on its executor.

        ``node`` is a node number or a name such as ``"worker:0"``.  A node that
        has ended returns the tail it reported when it ended.
        """
        n = self._attempt.find(lambda x: node in (x.node, x.role.name))
        if n is None:
            raise ConfigError(f"no node {node!r}; nodes: {[x.role.name for x in self.nodes]}")
        return self._attempt.logs(n, lines, timeout)

    # -- start and restart -----------------------------------------------------------
    def _start(self) -> None:
        """Start the current attempt; on failure, restart while restarts are left."""
        while True:
            try:
                self._attempt.start()
                return
            except SparkTFError:
                if not self._may_restart():
                    raise
                self._replace_attempt()

    def _may_restart(self) -> bool:
        """Whether the current failure should restart the cluster (a node failed, restarts left)."""
        error = self._attempt.error
        return (error is not None and self.restarts < self.max_restarts
                and not isinstance(error, (ConfigError, ShutdownTimeout)))

    def _restart(self) -> None:
        """Tear the failed attempt down and start every node again.

        The nodes run ``map_fun`` from the start, with ``ctx.attempt`` one
        higher; it resumes from its latest checkpoint (see
        :class:`sparktf.CheckpointManager`).  The new nodes may land on other
        executors: the attempt waits for free slots as the first one did.
        """
        self._replace_attempt()
        self._start()

    def _replace_attempt(self) -> None:
        cause = self._attempt.error
        self._attempt.teardown(60.0)
        self.restarts += 1
        logger.warning("sparktf cluster %s: restart %d of %d after: %s", self.cluster_id,
                       self.restarts, self.max_restarts, str(cause).splitlines()[0])
        self._attempt = Attempt(self.config, self.restarts)

    # -- SPARK mode: feeding -----------------------------------------------------------
    def _check_feed(self, what: str, qname: str) -> None:
        if self.input_mode != InputMode.SPARK:
            raise ConfigError(f"cluster.{what}() needs TFCluster.run(..., "
                              "input_mode=InputMode.SPARK)")
        if qname != "input":
            raise ConfigError(f"cluster.{what}(qname={qname!r}): sparktf feeds one input "
                              "stream; leave qname at its default 'input'")

    def train(self, dataRDD: Any, num_epochs: int = 1, feed_timeout: float = 600,  # noqa: N803
              qname: str = "input", *, checkpoint_location: str | None = None,
              trigger: dict | None = None, cache: bool = False, split: str = "auto") -> Any:
        """Feed an RDD or a DataFrame to the training nodes ``num_epochs`` times.

        Each row reaches exactly one node once per epoch; nodes end each epoch
        knowing every node's row count, which the ``DataFeed.dataset`` fast path
        uses to give all synchronous workers the same number of steps.  Returns
        early if every node called ``terminate()``.  (TensorFlowOnSpark turned
        ``num_epochs=0`` into 10; here it is an error.)

        A DStream or a streaming DataFrame is fed micro-batch by micro-batch
        (each ``num_epochs`` times) while it runs; a streaming DataFrame's
        query (with ``checkpoint_location`` and ``trigger``, e.g.
        ``{"processingTime": "5 seconds"}``) is started and returned.  See
        :mod:`sparktf.driver.streaming` and ``shutdown(ssc)``.

        ``cache=True``: Spark feeds the data once; the nodes keep the rows they
        received (in memory up to ``SPARKTF_CACHE_MEMORY_MB``, by default sized
        to the executor's memory settings, past it in an encrypted private
        spill file) and replay epochs 2..N themselves,
        shuffled within each node, with the same epoch agreement
        (:mod:`sparktf.feed.cache`).

        ``split``: how an epoch's rows are shared among the training nodes.
        ``"all"``: every chunk of every partition is cut into one slice per node
        (each feeding task talks to every node). ``"segments"``: from the second
        epoch on, when the first has given every partition's size, the rows are
        laid end to end and cut into one segment per node, so a partition goes
        whole to one node (or two, where a segment ends inside it) in whole
        chunks; the data must then be the same every epoch (a cached RDD or
        DataFrame), else the feed fails naming the partition. ``"auto"`` (the
        default): segments with more than 2 training nodes when ``dataRDD`` is
        cached (``cache()``/``persist()``), with more than 8 whatever it is, where
        the all-nodes split's many small messages cost (README, *Scale*).  Either way
        nodes end an epoch with row counts that let them all take the same steps.
        """
        self._check_feed("train", qname)
        if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
            raise ConfigError(f"num_epochs must be an integer >= 1, got {num_epochs!r}")
        if split not in routing.SPLITS:
            raise ConfigError(f"train(split={split!r}): give one of {', '.join(routing.SPLITS)}")
        if is_stream(dataRDD):  # streaming hook
            if cache:
                raise ConfigError("train(cache=True) needs a batch RDD or DataFrame, not a "
                                  "stream: a micro-batch is fed num_epochs times")
            return self._streams.train(dataRDD, num_epochs, feed_timeout, checkpoint_location,
                                       trigger)
        cached = None  # cache=True: (fed epoch, its counts) that the nodes hold
        sizes = None  # rows per partition of the last fed epoch, for split="segments"
        if cache:
            bound = self.config.env.get("SPARKTF_CACHE_MEMORY_MB", "(spark.executorEnv)")
            logger.info("sparktf train: Spark feeds epoch 1; nodes keep its rows (up to %s MiB "
                        "in memory, then an encrypted spill file: SPARKTF_CACHE_MEMORY_MB) and "
                        "replay epochs 2..%d", bound, num_epochs)
        for epoch in range(num_epochs):
            description = f"sparktf train epoch {epoch + 1}/{num_epochs}"
            while True:
                try:
                    if cached is None:
                        source = self._feeder.epochs_fed
                        counts = self._feeder.train_epoch(
                            self._attempt, dataRDD, description, feed_timeout,
                            cache=cache and epoch < num_epochs - 1, split=split,
                            sizes=sizes)
                        sizes = self._feeder.partition_sizes
                        if cache and counts and sum(counts.values()):
                            cached = (source, counts)
                    else:
                        counts = self._feeder.replay_epoch(self._attempt, *cached,
                                                           description, feed_timeout)
                    break
                except SparkTFError:
                    if not self._may_restart():
                        raise
                    self._restart()  # then feed this epoch again from its start
                    cached = None  # the new nodes hold no cache: Spark feeds it
            if counts is None:
                logger.info("sparktf train: every node called terminate(); stopping the feed")
                return

    def inference(self, dataRDD: Any, feed_timeout: float = 600, qname: str = "input",  # noqa: N803
                  *, schema: Any = None, keep_columns: list[str] | None = None) -> Any:
        """Run the nodes' inference on every row: one result per row, in input order.

        An RDD gives a lazy RDD of results (TensorFlowOnSpark's API): partition
        ``p`` goes to training node ``p mod k``, and its actions raise
        :class:`sparktf.NodeError` or :class:`sparktf.FeedError`.

        A DataFrame gives a DataFrame, computed with ``mapInArrow`` (no Python
        rows): its ``keep_columns`` (default: all) followed by the outputs,
        typed by ``schema`` (a DDL string such as ``"prediction long"`` or a
        ``StructType``); without ``schema`` the first row is run through the
        nodes once to learn the output types.
        """
        self._check_feed("inference", qname)
        if is_stream(dataRDD):  # streaming hook: a DStream or a streaming DataFrame
            return self._streams.inference(dataRDD, feed_timeout, schema, keep_columns)
        if is_dataframe(dataRDD):
            return self._feeder.inference_frame(self._attempt, dataRDD, feed_timeout, schema,
                                                keep_columns)
        return self._feeder.inference(self._attempt, dataRDD, feed_timeout,
                                      lambda: self._attempt)

    # -- shutdown --------------------------------------------------------------------
    def shutdown(self, ssc: Any = None, grace_secs: float = 0, timeout: float = 259200) -> None:
        """Wait for the training nodes, stop ps and evaluator nodes, raise the first error.

        ``grace_secs`` is waited after the training nodes finish, before the
        serving nodes are stopped.  With a StreamingContext ``ssc`` (or running
        streaming queries) it first waits while the stream runs and stops it
        gracefully on ``request_stop()``, SIGTERM/SIGINT, ``python -m sparktf
        stop`` or when every training node is done; a failure stops it at once.
        ``ssc`` may also be a ``StreamingQuery`` or a list of them (e.g. several
        queries over ``inference`` frames sharing the cluster).
        ``timeout`` bounds the whole wait (after the stream); when it expires
        the remaining nodes are stopped and :class:`ShutdownTimeout` names them.
        """
        if self._shut_down:
            return
        # streaming hook: ssc is a StreamingContext or a StreamingQuery to wait for
        if ssc is not None or self._streams.active:
            self._streams.wait_and_stop(ssc)
        deadline = time.monotonic() + timeout
        if self.input_mode == InputMode.SPARK:
            self._attempt.end_feed()
        self._await_training(deadline, timeout)
        attempt = self._attempt
        if attempt.error is None and grace_secs:
            attempt.wait_for_error(grace_secs)  # the serving nodes' last moments; ends on error
        attempt.stop_nodes("cluster shutdown")
        attempt.teardown(max(10.0, min(60.0, deadline - time.monotonic())))
        self._shut_down = True
        if attempt.error is not None:
            raise attempt.error
        logger.info("sparktf cluster %s: shut down", self.cluster_id)

    def request_stop(self, reason: str = "request_stop()") -> None:
        """Stop the running stream gracefully: ``shutdown(ssc)`` stops it (the micro-batch
        in flight completes) and then the cluster.  Callable from any driver thread."""
        self._streams.request_stop(reason)

    def stop_command(self, directory: str | None = None) -> str:
        """The stop file for ``python -m sparktf stop PATH`` (see :mod:`sparktf.stop`),
        written in ``directory`` (default ``$SPARKTF_STOP_DIR`` or ``~/.sparktf/stop``)
        when the first stream is registered, or now if called before."""
        return self._streams.stop_command(directory)

    def _await_training(self, deadline: float, timeout: float) -> None:
        """Wait for the awaited nodes; in TENSORFLOW mode, restart a failed attempt."""
        awaited = rolemod.awaited_nodes(self.config.roles)
        while True:
            attempt = self._attempt
            if not attempt.wait(awaited, deadline - time.monotonic()):
                attempt.fail(ShutdownTimeout(
                    f"shutdown(timeout={timeout:g}) expired with nodes still running: "
                    + "; ".join(f"{n.describe()} {n.state} for "
                                f"{time.monotonic() - n.since:.0f}s"
                                for n in (attempt.nodes[i] for i in awaited) if not n.done)))
            # In SPARK mode train() restarts (it must feed the new nodes).
            if self.input_mode != InputMode.TENSORFLOW or not self._may_restart():
                return
            self._restart()


def run(sc: Any, map_fun: Callable[[Any, Any], Any], tf_args: Any, num_executors: int,
        num_ps: int = 0, tensorboard: bool = False, input_mode: int = InputMode.TENSORFLOW,
        log_dir: str | None = None, driver_ps_nodes: bool = False, master_node: str | None = None,
        reservation_timeout: float = 600, queues: tuple = ("input", "output", "error"),
        eval_node: bool = False, release_port: bool = True, *, max_restarts: int = 0,
        legacy_keras: bool = True, env: dict[str, str] | None = None,
        node_dir: str | None = None, keep_node_dirs: bool = False,
        encrypt: bool | None = None, num_gpus: int | None = None,
        strict_feed: bool = False) -> TFCluster:
    """Start ``num_executors`` TF nodes on the Spark executors and run ``map_fun`` on each.

    Arguments as in TensorFlowOnSpark's ``TFCluster.run`` (``tf_args`` given as
    a list becomes the nodes' ``sys.argv``, as there); in addition:

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
    * ``env``: extra environment variables for the node processes (and their
      TensorBoard, e.g. ``TENSORBOARD_PORT``).
    * ``node_dir``: where nodes keep their logs and scratch files on the
      executors (default: ``sparktf-nodes/`` under the executor's working
      directory).  Node directories hold the cluster secret and the pickled
      ``map_fun``: they are private to the user and removed when the node
      ends, unless ``keep_node_dirs=True``.
    * ``encrypt``: TLS 1.3 on the control and feed channels (:mod:`sparktf.tls`).
      None (default): on when the application encrypts its Spark traffic
      (``spark.network.crypto.enabled``, ``spark.ssl.enabled``,
      ``spark.io.encryption.enabled``...); False with one of those on logs a warning.
    * ``num_gpus``: GPUs per node (see :mod:`sparktf.gpus`; ``ctx.gpus`` says
      which). Spark's GPU scheduling decides when configured
      (``spark.task.resource.gpu.amount``); without it, the free GPUs that
      ``nvidia-smi`` lists on each host are split among its nodes. ps nodes and
      TensorBoard never get a GPU.
    * ``strict_feed``: a node whose ``map_fun`` returns while fed rows it never
      read are still buffered (or still to be replayed from its cache) fails
      the cluster with :class:`FeedError` naming the node and the count,
      instead of the default warning.

    Returns once every node runs ``map_fun``; raises :class:`ReservationTimeout`
    if that does not happen within ``reservation_timeout`` seconds.
    """
    roles = _validate(num_executors, num_ps, input_mode, driver_ps_nodes, master_node,
                      eval_node, queues, max_restarts)
    if num_gpus is not None and (isinstance(num_gpus, bool) or not isinstance(num_gpus, int)
                                 or num_gpus < 1):  # GPUs (sparktf.gpus)
        raise ConfigError(f"num_gpus must be an integer >= 1 or None, got {num_gpus!r}")
    spark = sparkjobs.connect(sc)
    if (spark.conf("spark.dynamicAllocation.enabled") or "false").lower() == "true":
        raise ConfigError("sparktf runs its nodes as a Spark barrier stage, which does not "
                          "support dynamic allocation: set spark.dynamicAllocation.enabled=false "
                          "and a fixed spark.executor.instances")
    node_env = {"PYTHONUNBUFFERED": "1"}
    if legacy_keras:
        node_env["TF_USE_LEGACY_KERAS"] = "1"
    node_env.update(env or {})
    _default_cache_bound(spark, node_env)
    try:
        payload = cloudpickle.dumps((map_fun, tf_args))
    except Exception as e:
        raise ConfigError(f"map_fun or tf_args cannot be pickled for the executors: {e}") from e
    config = ClusterConfig(
        spark=spark, cluster_id=uuid.uuid4().hex[:8], roles=roles,
        input_mode=InputMode(input_mode), secret=new_secret(), host=spark.driver_host(),
        payload=payload, env=node_env, node_dir=node_dir,
        log_dir=log_dir and _log_dir(log_dir), release_port=release_port,
        driver_ps_nodes=driver_ps_nodes, reservation_timeout=reservation_timeout,
        tensorboard_node=rolemod.tensorboard_node(roles) if tensorboard else None,
        keep_node_dirs=keep_node_dirs, tls=tlsmod.for_cluster(encrypt, spark),
        num_gpus=num_gpus, strict_feed=bool(strict_feed))
    cluster = TFCluster(config, max_restarts)
    cluster._start()
    return cluster


def _validate(num_executors: int, num_ps: int, input_mode: int, driver_ps_nodes: bool,
              master_node: str | None, eval_node: bool, queues: Any,
              max_restarts: int) -> list[rolemod.Role]:
    """Check ``run``'s arguments; return the nodes' roles."""
    if input_mode not in (InputMode.TENSORFLOW, InputMode.SPARK):
        raise ConfigError(f"input_mode must be InputMode.TENSORFLOW (0) or InputMode.SPARK (1), "
                          f"got {input_mode!r}")
    if driver_ps_nodes and input_mode == InputMode.SPARK:
        raise ConfigError("driver_ps_nodes=True works only with InputMode.TENSORFLOW")
    if driver_ps_nodes and num_ps == 0:
        raise ConfigError("driver_ps_nodes=True needs num_ps >= 1")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ConfigError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
    if isinstance(queues, str) or not set(queues) <= _QUEUES or "input" not in queues:
        raise ConfigError(f"queues={queues!r}: sparktf feeds one input and one output stream; "
                          "leave queues at its default ('input', 'output', 'error')")
    return rolemod.assign_roles(num_executors, num_ps, master_node, eval_node)


def _default_cache_bound(spark: sparkjobs.Spark, node_env: dict[str, str]) -> None:
    """Give the nodes a cache bound (``train(cache=True)``) that fits their executor's
    memory, unless the user set ``SPARKTF_CACHE_MEMORY_MB`` (``env`` or
    ``spark.executorEnv``)."""
    if ("SPARKTF_CACHE_MEMORY_MB" in node_env
            or spark.conf("spark.executorEnv.SPARKTF_CACHE_MEMORY_MB")):
        return
    mb, why = cachemod.default_memory_mb(spark.conf)
    node_env["SPARKTF_CACHE_MEMORY_MB"] = str(mb)
    logger.debug("sparktf: node cache bound %d MiB (%s)", mb, why)


def _log_dir(log_dir: str) -> str:
    """``log_dir`` as the nodes get it: an absolute local path, or a remote URL unchanged."""
    return paths.local_path(log_dir) if fs.is_local(log_dir) else log_dir
