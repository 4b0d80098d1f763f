"""Streaming on the driver: DStreams and Structured Streaming queries feeding the nodes.

``TFCluster.train`` / ``inference`` / ``shutdown`` hand streams to one
:class:`StreamControl` per cluster:

* **DStream training**: ``foreachRDD`` feeds every non-empty micro-batch RDD
  through the batch feed path (:meth:`Feeder.train_epoch`), ``num_epochs``
  times, as an epoch whose ``DataFeed.batch_id`` is the batch time in ms.
* **DStream inference**: ``transform`` turns every micro-batch RDD into the
  inference RDD of the batch path, so the result is a DStream with one result
  per row, in order within each partition.  The micro-batch is scored on the
  driver when its jobs are generated and its results persisted, so that a node
  failure with ``max_restarts`` restarts the cluster and scores it again.
* **Structured Streaming inference**: the DataFrame-out path (``mapInArrow``)
  on a streaming DataFrame; the application starts the query (any sink,
  checkpointed) and passes it to ``shutdown(query)`` to wait for a stop.
* **Structured Streaming training**: ``foreachBatch`` feeds every micro-batch
  DataFrame (as Arrow, through ``mapInArrow``) with ``DataFeed.batch_id`` =
  Spark's batch id; ``train`` returns the running ``StreamingQuery``.
* **The stop** (:meth:`StreamControl.wait_and_stop`, from ``shutdown``):
  wait while the streams run, then stop them gracefully (the micro-batch in
  flight completes) when a stop is requested: ``cluster.request_stop()``,
  every training node finished or called ``terminate()``, SIGTERM/SIGINT to
  the driver while it waits, or ``python -m sparktf stop PATH``
  (:mod:`sparktf.stop`).  A failure (a node's, a bad micro-batch's, the
  stream's) stops the streams at once and is raised.

Every source of a stop puts one event on a ``queue.SimpleQueue``, whose
``put`` is reentrant and so safe in a signal handler; the waiting thread
blocks on its ``get``: no polling.  With ``max_restarts``, a node failure
restarts the cluster while the stream runs (from the watcher thread, or from
the micro-batch that hit it, whichever comes first; one lock makes it
happen once) and the interrupted micro-batch is fed (or, for DStream
inference, scored) again.  A training micro-batch counts as fed only once
every node reported it done (``EpochDone``: it asked for the next one), not
when the feed job ends: the job ends as soon as the nodes have *buffered* the
rows, and a node failing between the two used to lose the micro-batch.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import queue
import signal
import threading
from typing import Any, Iterator

from .. import stop as stopmod
from ..errors import ConfigError, FeedTimeout, SparkTFError
from ..protocol import InputMode
from ..roles import awaited_nodes
from .attempt import Attempt
from .feeding import is_dataframe, translate

logger = logging.getLogger(__name__)


def is_dstream(data: Any) -> bool:
    try:
        from pyspark.streaming import DStream
    except ImportError:  # pragma: no cover - pyspark without streaming
        return False
    return isinstance(data, DStream)


def is_stream(data: Any) -> bool:
    """A DStream or a streaming DataFrame."""
    return is_dstream(data) or (is_dataframe(data) and bool(getattr(data, "isStreaming", False)))


class StreamStopping(SparkTFError):
    """A micro-batch that started after the stop began; it is not fed (a checkpointed
    query replays it when it starts again)."""


class StreamControl:
    """One cluster's streams: their micro-batch feeds, restarts and graceful stop."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # (kind, detail)
        # Held while the cluster restarts; feeds and watchers read the attempt under it.
        self._restart_lock = threading.RLock()
        self._feed_lock = threading.Lock()  # one micro-batch feed at a time
        self._cond = threading.Condition()  # guards _feeding and _stopping
        self._feeding = 0
        self._stopping = False
        self._closed = False
        self._queries: list = []
        self._watching = False
        self._frames = False  # a Structured Streaming inference frame was made
        # DStream inference: batch time (ms) -> the micro-batch's persisted results
        self._scored: dict[int, list] = {}
        self._listening: set[int] = set()  # StreamingContexts unpersisting them
        self._stop_server: stopmod.StopServer | None = None

    # -- what users call ---------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether streams were registered and not yet stopped by ``wait_and_stop``."""
        return self._watching and not self._closed

    def request_stop(self, reason: str = "request_stop()") -> None:
        """Ask the waiting ``shutdown`` to stop the streams gracefully (any thread)."""
        self._events.put(("stop", reason))

    def stop_command(self, directory: str | None = None) -> str:
        """Start the stop server if needed; the stop file's path."""
        if self._stop_server is None:
            config = self.cluster.config
            self._stop_server = stopmod.StopServer(
                config.host, directory or stopmod.default_dir(),
                f"sparktf-{config.cluster_id}.stop", self.request_stop)
            logger.info("sparktf cluster %s: to stop the stream from another process: "
                        "python -m sparktf stop %s", config.cluster_id, self._stop_server.path)
        return self._stop_server.path

    # -- registering streams ---------------------------------------------------------
    def train(self, data: Any, num_epochs: int, feed_timeout: float,
              checkpoint_location: str | None = None, trigger: dict | None = None) -> Any:
        """Feed every micro-batch of ``data``; a StreamingQuery for a streaming DataFrame."""
        self._register()
        if is_dstream(data):
            if checkpoint_location is not None or trigger is not None:
                raise ConfigError("checkpoint_location and trigger are for Structured "
                                  "Streaming; a DStream's come from its StreamingContext")

            def feed_rdd(time: datetime.datetime, rdd: Any) -> None:
                # An empty micro-batch (no new files, an exhausted queue) is not an epoch.
                if rdd.getNumPartitions() and not rdd.isEmpty():
                    self._feed(rdd, int(time.timestamp() * 1000),
                               f"sparktf stream batch {time:%H:%M:%S.%f}", num_epochs,
                               feed_timeout)

            data.foreachRDD(feed_rdd)
            return None

        def feed_frame(frame: Any, batch_id: int) -> None:
            with self._cond:
                if self._stopping:
                    raise StreamStopping(f"micro-batch {batch_id} started while the stream "
                                         "was stopping; it is not fed")
                self._feeding += 1
            try:
                self._feed(frame, batch_id, f"sparktf stream batch {batch_id}", num_epochs,
                           feed_timeout)
            finally:
                with self._cond:
                    self._feeding -= 1
                    self._cond.notify_all()

        writer = data.writeStream.foreachBatch(feed_frame)
        if checkpoint_location is not None:
            writer = writer.option("checkpointLocation", checkpoint_location)
        if trigger is not None:
            writer = writer.trigger(**trigger)
        query = writer.start()
        self._queries.append(query)
        self._watch(query.awaitTermination, "query")
        return query

    def inference(self, data: Any, feed_timeout: float, schema: Any = None,
                  keep_columns: list[str] | None = None) -> Any:
        """A DStream with one result per input row, in order within each partition; or,
        for a streaming DataFrame, a streaming DataFrame (the batch DataFrame path,
        ``mapInArrow``, is a streaming operator too) for any sink and checkpoint."""
        feeder = self.cluster._feeder
        if not is_dstream(data):
            if schema is None:
                raise ConfigError("inference on a streaming DataFrame needs schema= (e.g. "
                                  "'prediction long'): a stream cannot be probed for it")
            self._register()
            self._frames = True
            return feeder.inference_frame(self.attempt(), data, feed_timeout, schema,
                                          keep_columns)
        self._register()
        if id(data._ssc) not in self._listening:
            self._listening.add(id(data._ssc))
            data._ssc.addStreamingListener(_unpersister(self._scored))

        def infer(when: datetime.datetime, rdd: Any) -> Any:
            if rdd is None:
                return None
            if not rdd.getNumPartitions():  # no new data: nothing to score, no job
                return feeder.inference(self.attempt(), rdd, feed_timeout, self.attempt)
            results = self._score(rdd, f"sparktf stream inference {when:%H:%M:%S.%f}",
                                  feed_timeout)
            self._scored.setdefault(round(when.timestamp() * 1000), []).append(results)
            return results

        return data.transform(infer)

    def _score(self, rdd: Any, description: str, feed_timeout: float) -> Any:
        """Score one DStream micro-batch now, on the driver, across restarts.

        ``transform`` calls this on the driver when Spark Streaming generates the
        micro-batch's jobs.  The results are computed here (a ``count`` job) and
        persisted, so the output operations read them instead of running the
        nodes again.  A node failure fails that job and releases its task slots
        before anything waits: with ``max_restarts`` the cluster restarts and
        the micro-batch is scored again from its first row on the new nodes (the
        failed job's partial results are dropped), so no row is lost or scored
        twice in the output.  The results are unpersisted when Spark Streaming
        reports the micro-batch completed (:func:`_unpersister`), or at the stop.
        """
        from pyspark import StorageLevel
        feeder = self.cluster._feeder
        while True:
            attempt = self.attempt()
            results = feeder.inference(attempt, rdd, feed_timeout,
                                       lambda attempt=attempt: attempt)
            results.persist(StorageLevel.MEMORY_AND_DISK)
            try:
                feeder.run_job(attempt, description, results.count)
                return results
            except SparkTFError as e:
                results.unpersist(blocking=False)
                if attempt.error is None or not self._recover(attempt):
                    self._events.put(("error", self.attempt().error or e))
                    raise
                logger.warning("%s: scoring it again on the restarted cluster", description)

    def _register(self) -> None:
        if self._closed:
            raise ConfigError("the cluster's streams were stopped; start a new cluster")
        if not self._watching:
            self._watching = True
            self.stop_command()
            threading.Thread(target=self._watch_nodes, name="sparktf-stream-nodes",
                             daemon=True).start()

    # -- feeding and restarts ---------------------------------------------------------
    def attempt(self) -> Attempt:
        """The current attempt (waits while the cluster restarts)."""
        with self._restart_lock:
            return self.cluster._attempt

    def _recover(self, failed: Attempt) -> bool:
        """Restart the cluster after ``failed`` failed, once; False if it may not."""
        with self._restart_lock:
            if self.cluster._attempt is not failed:
                return True  # another thread restarted it already
            if self._closed or not self.cluster._may_restart():
                return False
            if self._frames:
                # Its mapInArrow tasks were planned with the failed nodes' addresses and no
                # driver code runs per micro-batch: a new cluster could not serve it.
                logger.warning("sparktf cluster %s: not restarted: a Structured Streaming "
                               "inference query runs on the failed nodes; start the "
                               "application again on the query's checkpoint",
                               self.cluster.cluster_id)
                return False
            try:
                self.cluster._restart()
            except SparkTFError:
                return False
            return True

    def _feed(self, data: Any, batch_id: int, description: str, num_epochs: int,
              feed_timeout: float) -> None:
        """Feed one micro-batch ``num_epochs`` times, across restarts; report failures."""
        feeder = self.cluster._feeder
        with self._feed_lock:
            for _ in range(num_epochs):
                while True:
                    attempt = self.attempt()
                    epoch = feeder.epochs_fed
                    try:
                        counts = feeder.train_epoch(attempt, data, description, feed_timeout,
                                                    batch_id=batch_id)
                        if counts is not None:
                            self._await_done(attempt, epoch, description, feed_timeout)
                        break
                    except SparkTFError as e:
                        if attempt.error is None or not self._recover(attempt):
                            self._events.put(("error", self.attempt().error or e))
                            raise
                        logger.warning("%s: feeding it again to the restarted cluster",
                                       description)
                if counts is None:
                    return  # every node terminated; the node watcher stops the stream

    @staticmethod
    def _await_done(attempt: Attempt, epoch: int, description: str,
                    feed_timeout: float) -> None:
        """Return once every training node is done with the micro-batch fed as ``epoch``.

        The feed job ends when the nodes have *buffered* their rows; a node that fails
        after that, before it trained on them, would lose the micro-batch if it counted
        as fed.  So it counts only once each node reported it done (asked for the next
        micro-batch), ended or terminated; a failure first raises the attempt's error,
        and ``_feed`` feeds the micro-batch again to the restarted cluster.
        """
        busy = attempt.wait_epoch_done(epoch, feed_timeout)
        if busy:
            raise FeedTimeout(f"{description}: TF node(s) {', '.join(n.describe() for n in busy)}"
                              f" did not finish the micro-batch within feed_timeout="
                              f"{feed_timeout:g}s after it was fed; is map_fun reading its "
                              "DataFeed to the end of every micro-batch?")

    # -- watching ---------------------------------------------------------------------
    def _watch_nodes(self) -> None:
        """Report a node failure (after restarts) or that no training node takes data."""
        while True:
            attempt = self.attempt()

            def settled() -> bool:
                return self._closed or attempt.error is not None or self._training_over(attempt)

            attempt.wait_until(settled)
            if self._closed:
                return
            if attempt.error is not None:
                if self._recover(attempt):
                    continue
                self._events.put(("error", self.attempt().error or attempt.error))
            else:
                self._events.put(("nodes_done", "every training node finished or called "
                                                "terminate()"))
            return

    def _training_over(self, attempt: Attempt) -> bool:
        """No training node takes data any more (TENSORFLOW mode: all have ended)."""
        if self.cluster.input_mode == InputMode.SPARK:
            return not attempt.data_nodes()
        return all(attempt.nodes[i].done for i in awaited_nodes(self.cluster.config.roles))

    def _watch(self, await_termination: Any, kind: str) -> None:
        """Report when a StreamingContext or query ends, with its error if it failed."""
        def run() -> None:
            try:
                await_termination()
                self._events.put((f"{kind}_ended", None))
            except Exception as e:  # the stream's failure, reported to the waiting thread
                self._events.put((f"{kind}_error", e))

        threading.Thread(target=run, name=f"sparktf-stream-{kind}", daemon=True).start()

    # -- the stop --------------------------------------------------------------------
    def wait_and_stop(self, ssc: Any = None) -> None:
        """Wait while the streams run; stop them gracefully on a stop request, at once
        on a failure, which is then the attempt's error (``shutdown`` raises it)."""
        self._register()
        # StreamingQueries (e.g. of inference frames): one, or a list of them
        queries = list(ssc) if isinstance(ssc, (list, tuple)) else [ssc]
        if ssc is not None and all(hasattr(q, "isActive") for q in queries):
            for query in queries:
                if all(q is not query for q in self._queries):
                    self._queries.append(query)
                    self._watch(query.awaitTermination, "query")
            ssc = None
        if ssc is not None:
            self._watch(ssc.awaitTermination, "ssc")
        with _signals_to(self._events):
            why, error = self._wait(ssc)
        if error is None:
            logger.info("sparktf cluster %s: stopping the stream gracefully: %s",
                        self.cluster.cluster_id, why)
        else:
            logger.error("sparktf cluster %s: stopping the stream: %s", self.cluster.cluster_id,
                         str(error).splitlines()[0] if str(error) else repr(error))
        try:
            self._stop_streams(ssc, graceful=error is None)
        finally:
            with self._restart_lock:  # a restart in progress completes first
                self._closed = True
                attempt = self.cluster._attempt
            attempt.wake()
            for results in [r for batch in self._scored.values() for r in batch]:
                with contextlib.suppress(Exception):  # the SparkContext may be gone
                    results.unpersist(blocking=False)
            self._scored.clear()
            if self._stop_server is not None:
                self._stop_server.close()
        if error is not None:
            attempt.fail(error)

    def _wait(self, ssc: Any) -> tuple[str, SparkTFError | None]:
        while True:
            if ssc is None and not any(q.isActive for q in self._queries):
                return "every streaming query has ended", None
            kind, detail = self._events.get()
            if kind in ("stop", "nodes_done"):
                return detail, None
            if kind == "error":
                return "", detail
            if kind == "ssc_ended":
                return "the StreamingContext was stopped", None
            if kind in ("ssc_error", "query_error"):
                if isinstance(detail, StreamStopping) or "StreamStopping" in str(detail):
                    continue
                return "", translate(detail, self.attempt(), "sparktf stream")
            # query_ended: loop to see whether any query still runs

    def _stop_streams(self, ssc: Any, graceful: bool) -> None:
        with self._cond:
            self._stopping = True
            if graceful:  # the micro-batch in flight completes
                self._cond.wait_for(lambda: self._feeding == 0)
        if ssc is not None:
            ssc.stop(stopSparkContext=False, stopGraceFully=graceful)
        for query in self._queries:
            with contextlib.suppress(Exception):  # it may have failed already
                query.stop()


def _unpersister(scored: dict[int, list]) -> Any:
    """A StreamingListener unpersisting a DStream micro-batch's scored results (``scored``:
    batch time in ms -> results) once Spark Streaming reports the micro-batch completed,
    i.e. all its output operations ran.

    Spark Streaming unpersists the RDDs its DStreams generated itself, but not the
    persisted results under a ``map`` the application chained to ``inference(dstream)``.
    """
    from pyspark.streaming.listener import StreamingListener

    class Unpersist(StreamingListener):
        def onBatchCompleted(self, batchCompleted: Any) -> None:  # noqa: N802,N803
            batch = scored.pop(batchCompleted.batchInfo().batchTime().milliseconds(), [])
            for results in batch:
                results.unpersist(blocking=False)

    return Unpersist()


@contextlib.contextmanager
def _signals_to(events: queue.SimpleQueue) -> Iterator[None]:
    """While waiting, SIGTERM and SIGINT request a graceful stop (handlers restored after).

    Only the main thread may install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        events.put(("stop", f"signal {signal.Signals(signum).name}"))  # reentrant put

    saved = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, old in saved.items():
            signal.signal(s, old)
