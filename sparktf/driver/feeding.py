"""SPARK mode on the driver: one epoch's feed job, the inference RDD, and their errors.

The data path itself runs in the Spark tasks (:mod:`sparktf.feed.sender`);
this module starts those jobs, logs their progress, tells the nodes where each
epoch ends, and turns a failed Spark task into the sparktf exception that
explains it (a node's own error when there is one, else the feeding task's).
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import threading
import time
from typing import Any, Callable, Iterator

from pyspark.core.rdd import PipelinedRDD

from .. import errors, protocol
from ..errors import FeedError, FeedTimeout, SparkTFError
from ..feed import arrowconv, routing, sender
from .sparkjobs import Spark
from .attempt import Attempt
from .state import LOST_GRACE, NodeState

logger = logging.getLogger(__name__)

_SPARKTF_ERROR = re.compile(r"sparktf\.errors\.(\w+): ([^\n]*)")


def is_dataframe(data: Any) -> bool:
    return hasattr(data, "mapInArrow") and hasattr(data, "schema")


def translate(e: BaseException, attempt: Attempt, description: str,
              job: str = "") -> SparkTFError:
    """The sparktf error behind a failed feed job.

    A feeding task of job group (or inference key) ``job`` reports why it failed to the
    driver (Spark's text holds only its last retry, which sparktf cuts short): a failure
    of its own (bad rows, a feed timeout, the user's code in the RDD's lineage) is raised
    at once.  A node's own report (its exception, or how it died) explains more than the
    lost connection it caused, so wait briefly for one.  Otherwise the sparktf error
    in Spark's text (a count mismatch in inference) is raised as its class.
    """
    if isinstance(e, SparkTFError):
        return e
    reported = attempt.control.feed_failure(job) if job else None
    if reported is None or reported.node_lost:
        error = attempt.wait_for_error(LOST_GRACE)
        if error is not None:
            return error
    if reported is not None:
        cls = FeedTimeout if reported.error_class == "FeedTimeout" else FeedError
        return cls(f"{description}: {reported.error}")
    found = _SPARKTF_ERROR.findall(str(e))
    if found:
        cls = getattr(errors, found[-1][0], FeedError)
        if not (isinstance(cls, type) and issubclass(cls, SparkTFError)):
            cls = FeedError
        return cls(f"{description}: {found[-1][1]}")
    text = str(e).strip()
    return FeedError(f"{description} failed: {text.splitlines()[0] if text else repr(e)}")


def _unread_summary(attempt: Attempt) -> str:
    """The epoch summary's note of fed rows that nodes' ``map_fun`` returned without reading."""
    if not attempt.unread:
        return ""
    return "; left unread by map_fun: " + ", ".join(
        f"{attempt.nodes[n].role.name} {k}" for n, k in sorted(attempt.unread.items()))


class Feeder:
    """Feeds one cluster's nodes; epochs are numbered across ``train()`` calls."""

    def __init__(self, spark: Spark) -> None:
        self.spark = spark
        self.epochs_fed = 0
        #: Rows of each partition in the last fed epoch (None if a node terminated in it, so
        #: that some rows were not delivered): what ``split`` plans the next epoch from.
        self.partition_sizes: list[int] | None = None
        self._jobs = 0

    def new_group(self, attempt: Attempt) -> str:
        """A new Spark job group name for one of the attempt's jobs."""
        self._jobs += 1
        return f"{attempt.tag}-feed-{self._jobs}"

    def run_job(self, attempt: Attempt, description: str, job: Callable[[], Any],
                group: str = "") -> Any:
        """Run ``job`` (Spark actions) in job group ``group`` (a new one by default),
        logging its progress."""
        group = group or self.new_group(attempt)
        done = threading.Event()
        threading.Thread(target=self.spark.log_progress, args=(group, description, done),
                         name="sparktf-progress", daemon=True).start()
        try:
            with self.spark.job_scope(group, description, attempt.tag):
                return job()
        except Exception as e:
            raise translate(e, attempt, description, group) from None
        finally:
            done.set()

    def train_epoch(self, attempt: Attempt, data: Any, description: str,
                    feed_timeout: float, batch_id: int | None = None,
                    cache: bool = False, split: str = "all",
                    sizes: list[int] | None = None) -> dict[int, int] | None:
        """Feed ``data`` once; return rows per node, or None if every node terminated.

        ``batch_id``: the streaming micro-batch this epoch is (``DataFeed.batch_id``).
        ``cache``: the nodes keep the rows to replay them (:meth:`replay_epoch`).
        ``split`` and ``sizes`` (the partition sizes of an earlier epoch of the same
        data): whether the epoch is routed by segments (:mod:`sparktf.feed.routing`).
        """
        nodes = attempt.data_nodes()
        if not nodes:
            return None
        arrow = is_dataframe(data)
        source = data
        data, partitions = self.spark.partitions(data)
        plan = None
        known = sizes is not None and len(sizes) == partitions
        persisted = split == "auto" and known and self.spark.is_cached(source)
        if routing.use_segments(split, len(nodes), known, cached=persisted):
            plan = routing.segments(sizes, len(nodes))
            logger.info("%s: each partition to the node(s) holding its share of the epoch's "
                        "%d rows (split=%r, %d nodes)", description, sum(sizes), split,
                        len(nodes))
        group = self.new_group(attempt)
        task = functools.partial(
            sender.feed_train, nodes=_feed_targets(attempt, nodes),
            secret=attempt.config.secret, epoch=self.epochs_fed, partitions=partitions,
            feed_timeout=feed_timeout, arrow=arrow, batch=batch_id, cache=cache, job=group,
            plan=plan)
        started = time.monotonic()
        counts, part_sizes = self.run_job(
            attempt, description, lambda: _train_job(data, task, arrow, partitions), group)
        elapsed = time.monotonic() - started
        # Sizes count delivered rows: they are the partitions' only if no node terminated.
        terminated = any(n.node in attempt.terminated for n in nodes)
        self.partition_sizes = None if terminated else part_sizes
        attempt.send_nodes(nodes, protocol.EpochEnd(
            self.epochs_fed, {str(n.node): counts.get(n.node, 0) for n in nodes}))
        self.epochs_fed += 1
        total = sum(counts.values())
        logger.info("%s: %d rows in %.1fs (%.0f rows/s); %s%s", description, total, elapsed,
                    total / max(elapsed, 1e-9),
                    ", ".join(f"{n.role.name} {counts.get(n.node, 0)}" for n in nodes),
                    _unread_summary(attempt))
        return counts

    def replay_epoch(self, attempt: Attempt, source: int, counts: dict[int, int],
                     description: str, feed_timeout: float) -> dict[int, int] | None:
        """Have every node replay the rows it cached in fed epoch ``source`` as the next
        epoch (no Spark job); return rows per node as :meth:`train_epoch` does.

        Returns once every node has queued its rows (as a fed epoch returns once its rows
        are in the nodes' buffers); a node that takes nothing for ``feed_timeout``
        raises :class:`FeedTimeout` naming it.
        """
        nodes = attempt.data_nodes()
        if not nodes:
            return None
        epoch = self.epochs_fed
        started = time.monotonic()
        attempt.send_nodes(nodes, protocol.ReplayEpoch(
            epoch, source, {str(n): c for n, c in counts.items()}, float(feed_timeout)))

        def settled() -> bool:  # called with the attempt's lock held
            return attempt.error is not None or all(
                (n.node in attempt.replayed and attempt.replayed[n.node].epoch == epoch)
                or attempt.nodes[n.node].done or n.node in attempt.terminated for n in nodes)

        attempt.wait_until(settled)
        if attempt.error is not None:
            raise attempt.error
        for n in nodes:
            report = attempt.replayed.get(n.node)
            if report is None or report.epoch != epoch or report.status in ("ok", "closed"):
                continue
            if report.status == "timeout":
                raise errors.FeedTimeout(
                    f"TF node {n.role.name} is alive but took no data for {feed_timeout:g}s "
                    f"(feed_timeout) while it replayed cached {description}; is map_fun "
                    "reading its DataFeed?")
            raise FeedError(f"TF node {n.role.name} could not replay {description}: "
                            f"{report.error}")
        self.epochs_fed += 1
        elapsed = time.monotonic() - started
        total = sum(counts.values())
        logger.info("%s (replayed by the nodes from their cache): %d rows queued in %.1fs "
                    "(%.0f rows/s)%s", description, total, elapsed, total / max(elapsed, 1e-9),
                    _unread_summary(attempt))
        return counts

    def inference(self, attempt: Attempt, data: Any, feed_timeout: float,
                  current: Callable[[], Attempt]) -> Any:
        """A lazy RDD with one result per input row (see ``TFCluster.inference``)."""
        if self.spark.is_connect:
            raise errors.ConfigError("Spark Connect has no RDDs: pass a DataFrame to "
                                     "inference() (it returns a DataFrame)")
        nodes = attempt.data_nodes()
        if not nodes:
            raise errors.ConfigError("no TF node takes inference data (all finished or "
                                     "terminated)")
        rdd = data.rdd if is_dataframe(data) else data
        targets, secret = _feed_targets(attempt, nodes), attempt.config.secret
        key = self.new_group(attempt)   # its tasks report their errors under it

        def infer(partition: int, rows: Any) -> Any:
            node = targets[partition % len(targets)]
            for result in sender.feed_inference(partition, rows, node, secret, feed_timeout,
                                                arrow=False, job=key):
                yield from arrowconv.decode_rows(result)

        return InferenceRDD(rdd, infer,
                            lambda e: translate(e, current(), "sparktf inference", key))


    def inference_frame(self, attempt: Attempt, df: Any, feed_timeout: float,
                        schema: Any = None, keep_columns: list[str] | None = None) -> Any:
        """A DataFrame: the ``keep_columns`` of ``df`` (default: all) followed by the outputs.

        Computed with ``mapInArrow``: Arrow record batches go to the nodes and
        come back, with no Python rows on either side.  ``schema`` (a DDL
        string or ``StructType``) types the outputs; without it one row is run
        through the model first to learn them.
        """
        from pyspark.sql.types import StructType
        nodes = attempt.data_nodes()
        if not nodes:
            raise errors.ConfigError("no TF node takes inference data (all finished or "
                                     "terminated)")
        keep = list(df.columns) if keep_columns is None else list(keep_columns)
        unknown = [c for c in keep if c not in df.columns]
        if unknown:
            raise errors.ConfigError(f"keep_columns {unknown} are not columns of the DataFrame "
                                     f"(columns: {df.columns})")
        targets, secret = _feed_targets(attempt, nodes), attempt.config.secret
        if schema is None:
            schema = self._probe_schema(attempt, df, targets, feed_timeout)
        elif isinstance(schema, str):
            schema = StructType.fromDDL(schema)
        clash = [f.name for f in schema.fields if f.name in keep]
        if clash:
            raise errors.ConfigError(f"output columns {clash} clash with kept input columns; "
                                     "rename them in schema= or leave them out of keep_columns")
        kept = [df.schema[c] for c in keep]
        out = StructType(kept + list(schema.fields))
        key = self.new_group(attempt)

        def infer(batches: Iterator) -> Iterator:
            from pyspark import TaskContext
            from pyspark.sql.pandas.types import to_arrow_schema
            arrow_out = to_arrow_schema(out)
            partition = TaskContext.get().partitionId()
            sent: collections.deque = collections.deque()

            def remember(it: Iterator) -> Iterator:
                for batch in sender.chunks(it, partition, arrow=True):
                    sent.append(batch)
                    yield batch

            for result in sender.feed_inference(partition, remember(batches),
                                                targets[partition % len(targets)], secret,
                                                feed_timeout, arrow=True, chunked=True,
                                                job=key):
                yield arrowconv.with_results(sent.popleft(), keep, result, arrow_out, partition)

        return df.mapInArrow(infer, out)

    def _probe_schema(self, attempt: Attempt, df: Any, targets: list[dict],
                      feed_timeout: float) -> Any:
        """The output types, from running the first row of ``df`` through a node."""
        from pyspark.sql.pandas.types import from_arrow_schema
        secret = attempt.config.secret
        group = self.new_group(attempt)

        def probe(batches: Iterator) -> Iterator:
            import pyarrow as pa
            for result in sender.feed_inference(0, batches, targets[0], secret, feed_timeout,
                                                arrow=True, job=group):
                ipc = arrowconv.to_ipc(arrowconv.plain_lists(result).slice(0, 0))
                yield pa.RecordBatch.from_pydict({"schema": [ipc.to_pybytes()]})
                return

        rows = self.run_job(attempt, "sparktf inference: output schema",
                            lambda: df.limit(1).mapInArrow(probe, "schema binary").collect(),
                            group)
        if not rows:
            raise errors.ConfigError("cannot learn inference's output columns from an empty "
                                     "DataFrame: pass schema= (e.g. 'prediction long')")
        return from_arrow_schema(arrowconv.from_ipc(rows[0]["schema"]).schema)


def _feed_targets(attempt: Attempt, nodes: list[NodeState]) -> list[dict]:
    """What a feeding task needs to reach each node (plain data: it travels with the task);
    ``tls``: the certificate the node's feed server and the driver present, if encrypted."""
    tls = attempt.config.tls.cert_pem if attempt.config.tls else None
    return [{"node": n.node, "name": n.role.name, "feed": list(n.feed),
             "control": list(attempt.control.address), "tls": tls} for n in nodes]


def _train_job(data: Any, task: Callable, arrow: bool,
               partitions: int) -> tuple[dict[int, int], list[int]]:
    """Run one epoch's feeding job; return the rows delivered per node and per partition
    (of at most ``partitions``)."""
    per_task: list[tuple[int, dict[int, int]]]
    if arrow:
        def feed_batches(batches: Any) -> Any:
            import pyarrow as pa
            from pyspark import TaskContext
            p = TaskContext.get().partitionId()
            sent = task(p, batches)
            yield pa.RecordBatch.from_pydict({"partition": [p] * len(sent), "node": list(sent),
                                              "rows": list(sent.values())})

        rows = data.mapInArrow(feed_batches, "partition long, node long, rows long").collect()
        per_task = [(r["partition"], {r["node"]: r["rows"]}) for r in rows]
    else:
        per_task = data.mapPartitionsWithIndex(lambda p, it: [(p, task(p, it))]).collect()
    counts: dict[int, int] = {}
    sizes = [0] * partitions
    for partition, sent in per_task:
        for node, rows in sent.items():
            counts[node] = counts.get(node, 0) + rows
            sizes[partition] += rows
    return counts, sizes


class InferenceRDD(PipelinedRDD):
    """The RDD ``inference()`` returns: its actions raise sparktf errors.

    A node that fails, or a ``map_fun`` that returns more or fewer results than
    rows, fails a Spark task; the actions of this RDD turn that into the
    :class:`sparktf.NodeError` or :class:`sparktf.FeedError` that explains it.
    (Actions on RDDs or DataFrames derived from it raise Spark's own exception,
    whose text holds the same message.)
    """

    def __init__(self, prev: Any, func: Callable[[int, Any], Any],
                 translate: Callable[[BaseException], SparkTFError]) -> None:
        super().__init__(prev, func, preservesPartitioning=True)
        self._translate = translate

    def toLocalIterator(self, prefetchPartitions: bool = False) -> Iterator:  # noqa: N802,N803
        try:
            yield from super().toLocalIterator(prefetchPartitions)
        except SparkTFError:
            raise
        except Exception as e:
            raise self._translate(e) from None


def _translating(method: Callable) -> Callable:
    @functools.wraps(method)
    def action(self: InferenceRDD, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except SparkTFError:
            raise
        except Exception as e:
            raise self._translate(e) from None
    return action


#: The actions of ``InferenceRDD`` that raise sparktf errors.
_ACTIONS = ("collect", "count", "take", "first", "reduce", "fold", "aggregate", "sum", "foreach",
            "foreachPartition", "saveAsTextFile", "saveAsPickleFile", "countByValue",
            "collectAsMap", "top", "takeOrdered", "isEmpty", "max", "min", "mean", "stats")
for _action in _ACTIONS:
    setattr(InferenceRDD, _action, _translating(getattr(PipelinedRDD, _action)))
del _action
