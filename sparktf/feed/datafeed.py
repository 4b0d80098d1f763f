"""``TFNode.DataFeed``: what ``map_fun`` reads fed data through (SPARK mode).

Two ways to read:

* TensorFlowOnSpark's ``next_batch(n)`` / ``should_stop()`` /
  ``batch_results(results)`` / ``terminate()``, row by row as fed.
* The fast path, :meth:`DataFeed.dataset`: a ``tf.data.Dataset`` whose
  elements are whole batches built from the Arrow columns (numpy views of
  the received buffers), one dataset iteration per fed epoch, so
  ``model.fit(feed.dataset(64), epochs=num_epochs)`` lines up with
  ``cluster.train(data, num_epochs)``; over a cached feed,
  ``dataset(64, epochs=num_epochs)`` spans the epochs in one iteration whose
  steps per epoch :meth:`DataFeed.steps_per_epoch` gives (one iterator for the
  whole ``fit``).

How synchronous workers agree on the end of an epoch: the feeding tasks split
every chunk of every partition across all training nodes (contiguous slices
whose sizes differ by at most one row), so the nodes' row counts for an epoch
differ by at most the number of partitions.  The dataset emits full batches
while it holds more than ``batch_size + partitions`` rows and keeps the rest.
When the epoch's feed is complete the driver sends every node the row counts
of all nodes; each node then knows the common number of steps,
``ceil(min(count) / batch_size)``, and splits the rows it kept into exactly the
batches still missing.  Every worker takes the same number of steps, no row is
dropped, and a batch is at most ``partitions`` rows larger than ``batch_size``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
from typing import Any

import numpy as np
import pyarrow as pa

from ..compat import disable_auto_shard
from ..errors import FeedError
from . import arrowconv, cache
from .receiver import EndOfFeed, EpochEnd, EpochStart, FeedServer, Item

logger = logging.getLogger(__name__)

#: ``dataset()`` groups the batches of the rows already received up to about this many
#: bytes into one tf.data element (see :meth:`DataFeed._epoch_batches`).
GROUP_BYTES = 32 << 20


class EpochBatcher:
    """Cuts one node's rows of an epoch into the batches all nodes agree on (pure logic)."""

    def __init__(self, batch_size: int, partitions: int) -> None:
        self.batch_size = batch_size
        self.holdback = batch_size + max(0, partitions)
        self.kept: collections.deque[pa.RecordBatch] = collections.deque()
        self.rows = 0
        self.bytes = 0  # of the kept rows, about
        self.emitted = 0

    def add(self, batch: pa.RecordBatch, emit: bool = True) -> list[tuple[pa.RecordBatch, int]]:
        """Take rows; return ``(rows, k)`` groups of ``k`` full batches ready now
        (none if not ``emit``: the rows wait for a later call, which cuts the same
        batches in a larger group).

        Full batches leave in groups so that the consumer pays its per-call
        overhead once per group rather than once per batch.
        """
        self.kept.append(batch)
        self.rows += batch.num_rows
        self.bytes += batch.nbytes
        if not emit or self.rows <= self.holdback:
            return []
        k = -(-(self.rows - self.holdback) // self.batch_size)
        self.emitted += k
        return [(self._take(k * self.batch_size), k)]

    def _take(self, n: int) -> pa.RecordBatch:
        """The first ``n`` kept rows: zero-copy slices, concatenated only across chunks."""
        parts = []
        while n > 0:
            head = self.kept[0]
            if head.num_rows <= n:
                parts.append(self.kept.popleft())
            else:
                parts.append(head.slice(0, n))
                self.kept[0] = head.slice(n)
            n -= parts[-1].num_rows
            self.rows -= parts[-1].num_rows
            self.bytes -= parts[-1].nbytes
        return arrowconv.concat(parts)

    def finish(self, counts: list[int]) -> list[tuple[pa.RecordBatch, int]]:
        """The remaining batches, in groups of equal sizes, once every node's row count is
        known."""
        steps = agreed_steps(counts, self.batch_size)
        missing = steps - self.emitted
        if self.rows and missing <= 0:
            raise FeedError(f"cannot split {self.rows} remaining rows into {missing} batches "
                            f"(counts {counts}, batch_size {self.batch_size})")
        if not self.rows:
            return []
        sizes = np.diff(np.linspace(0, self.rows, missing + 1).round().astype(int))
        out = []  # runs of equal sizes as groups
        for size, run in itertools.groupby(int(size) for size in sizes if size > 0):
            k = len(list(run))
            out.append((self._take(size * k), k))
        self.emitted = steps
        return out


def agreed_steps(counts: list[int], batch_size: int) -> int:
    """The steps every node takes in an epoch whose nodes got ``counts`` rows."""
    return math.ceil(min(counts) / batch_size) if counts else 0


def _columns(batch: pa.RecordBatch, names: list[str] | None) -> tuple:
    idx = range(batch.num_columns) if names is None else [batch.schema.get_field_index(n)
                                                           for n in names]
    return tuple(arrowconv.column_to_numpy(batch, i) for i in idx)


class DataFeed:
    """Reads the data fed to this node (TensorFlowOnSpark's ``TFNode.DataFeed``).

    ``mgr`` is ``ctx.mgr`` (the node's :class:`FeedServer`) or, in a unit test,
    a local ``TFManager`` (:mod:`sparktf.feed.local`); either gives, through
    ``mgr.open_feed(qname_in, qname_out)``, a ``buffer`` of fed items, a
    ``terminated`` event and ``terminate()``.
    """

    def __init__(self, mgr: FeedServer, train_mode: bool = True, qname_in: str = "input",
                 qname_out: str = "output", input_mapping: dict | None = None) -> None:
        if mgr is None:
            raise FeedError("DataFeed needs ctx.mgr, which exists only in InputMode.SPARK")
        self.mgr = mgr
        self._feed = mgr.open_feed(qname_in, qname_out)
        self.train_mode = train_mode
        self.qname_in, self.qname_out = qname_in, qname_out
        self.input_mapping = input_mapping
        self.done_feeding = False
        self._current: Item | None = None
        self._offset = 0
        self._last: list[tuple[Item, int]] = []  # (item, rows) handed out by next_batch
        #: The streaming micro-batch id of the epoch being read (Spark Streaming:
        #: the batch time in ms; Structured Streaming: foreachBatch's batch id);
        #: None for a batch feed.
        self.batch_id: int | None = None
        self._bounded = False  # next_batch_id() was called: reads end at a micro-batch's end
        self._in_epoch = False  # an epoch's start was read and its end not yet
        self._partitions = 1  # of the epoch being read
        self._ended: int | None = None  # epoch whose end was read, not yet reported done
        self._steps: int | None = None  # batches per epoch of dataset(epochs=...), if known

    # -- TensorFlowOnSpark API -------------------------------------------------------
    def next_batch(self, batch_size: int) -> Any:
        """Up to ``batch_size`` rows; fewer at the end of the feed (or, in inference
        mode, at the end of a fed chunk); an empty list once the feed is over."""
        slices: list[pa.RecordBatch] = []
        self._last = []
        got = 0
        while got < batch_size:
            item = self._next_item(block=not slices or self.train_mode)
            if item is None:
                break
            take = min(batch_size - got, item.batch.num_rows - self._offset)
            slices.append(item.batch.slice(self._offset, take))
            self._last.append((item, take))
            self._offset += take
            got += take
            if not self.train_mode and self._offset >= item.batch.num_rows:
                break
        if self.input_mapping:
            return self._mapped(slices)
        rows: list = []
        for s in slices:
            rows.extend(arrowconv.decode_rows(s))
        return rows

    def _mapped(self, slices: list[pa.RecordBatch]) -> dict:
        """``{tensor: numpy array of the column}``, built column by column."""
        if not slices:
            return {tensor: [] for tensor in self.input_mapping.values()}
        batch = arrowconv.concat(slices)
        names = batch.schema.names
        kind = (batch.schema.metadata or {}).get(b"sparktf.kind", b"dict")
        if kind != b"dict" and not all(col in names for col in self.input_mapping):
            # Unnamed fields (tuple rows), as TFoS: field i feeds the tensor of the i-th
            # column in sorted column order.
            if len(names) != len(self.input_mapping):
                raise FeedError(f"input_mapping names {len(self.input_mapping)} columns "
                                f"{sorted(self.input_mapping)} but the fed rows have "
                                f"{len(names)} fields")
            return {tensor: arrowconv.column_to_numpy(batch, i)
                    for i, (_, tensor) in enumerate(sorted(self.input_mapping.items()))}
        out = {}
        for col, tensor in self.input_mapping.items():
            i = batch.schema.get_field_index(col)
            if i < 0:
                raise FeedError(f"input_mapping column {col!r} is not in the fed data "
                                f"(columns: {names})")
            out[tensor] = arrowconv.column_to_numpy(batch, i)
        return out

    def _next_item(self, block: bool) -> Item | None:
        """The item holding the next unread row, or None at the end of the feed (after
        :meth:`next_batch_id`, also at the end of the micro-batch)."""
        if self._current is not None and self._offset < self._current.batch.num_rows:
            return self._current
        while not self.done_feeding:
            if self._bounded and not self._in_epoch:
                return None
            if not block and not len(self._feed.buffer):
                return None
            got = self._feed.buffer.get()
            if isinstance(got, EndOfFeed):
                self.done_feeding = True
            elif isinstance(got, EpochStart):
                self._begin(got)
            elif isinstance(got, EpochEnd):
                self._end(got)
            elif isinstance(got, Item) and got.batch.num_rows:
                self._current, self._offset = got, 0
                return got
        return None

    # -- streaming micro-batches -----------------------------------------------------
    def _begin(self, start: EpochStart) -> None:
        self.batch_id, self._partitions, self._in_epoch = start.batch, start.partitions, True

    def _end(self, end: EpochEnd) -> None:
        """The epoch's end was read.  Reading micro-batch by micro-batch
        (:meth:`next_batch_id`), the node is done with it only when it asks for the
        next one (it has trained on it by then); otherwise, now."""
        self._in_epoch = False
        self._ended = end.epoch
        if not self._bounded:
            self._report_done()

    def _report_done(self) -> None:
        """Tell the driver the last ended epoch is done (it then counts it as fed)."""
        if self._ended is not None:
            report = getattr(self._feed, "epoch_done", None)  # a node's FeedServer
            if report is not None:
                report(self._ended)
            self._ended = None

    def next_batch_id(self) -> int | None:
        """Wait for the next fed epoch (a streaming micro-batch) and return its batch id.

        Returns None once the feed has ended.  From the first call on,
        ``next_batch`` stops at the end of the current micro-batch (it returns
        fewer rows, then ``[]``) instead of running on into the next one, so
        a ``map_fun`` can train on exactly one micro-batch, checkpoint, and
        record ``batch_id``; after a restart of the query from its checkpoint
        it calls :meth:`skip_batch` for the ids it already trained on.  Raises
        :class:`FeedError` if rows of the current micro-batch are still unread
        (read them or call :meth:`skip_batch`).
        """
        self._bounded = True
        if self._in_epoch:
            raise FeedError(f"micro-batch {self.batch_id} is not fully read: read it to its end "
                            "or call skip_batch() before next_batch_id()")
        self._current = None
        self._report_done()  # the previous micro-batch: trained on (or skipped)
        while not self.done_feeding:
            got = self._feed.buffer.get()
            if isinstance(got, EndOfFeed):
                self.done_feeding = True
            elif isinstance(got, EpochStart):
                self._begin(got)
                return self.batch_id
            elif isinstance(got, Item) and got.batch.num_rows:
                raise FeedError("data arrived before the start of a micro-batch")
        return None

    def skip_batch(self) -> int:
        """Drop the unread rows of the current micro-batch (e.g. one already trained on
        before a restart); return how many were dropped."""
        dropped = 0
        if self._current is not None:
            dropped = self._current.batch.num_rows - self._offset
            self._current = None
        while self._in_epoch and not self.done_feeding:
            got = self._feed.buffer.get()
            if isinstance(got, EndOfFeed):
                self.done_feeding = True
            elif isinstance(got, EpochEnd):
                self._end(got)
            elif isinstance(got, Item):
                dropped += got.batch.num_rows
        return dropped

    def should_stop(self) -> bool:
        """True once the feed has ended (all epochs fed and shutdown called) or terminate()."""
        return self.done_feeding or self._feed.terminated.is_set()

    def batch_results(self, results: Any) -> None:
        """Return one result per row of the last ``next_batch`` (inference)."""
        expected = sum(n for _, n in self._last)
        count = len(results)
        if count != expected:
            error = (f"map_fun returned {count} results for {expected} rows of partition "
                     f"{self._last[0][0].pending.partition if self._last else '?'}")
            for item, _ in self._last:
                if item.pending is not None:
                    item.pending.fail(error)
            raise FeedError(error)
        batch = arrowconv.results_to_batch(results)
        start = 0
        for item, n in self._last:
            if item.pending is not None:
                item.pending.add(batch.slice(start, n))
            start += n
        self._last = []

    def terminate(self) -> None:
        """Take no more data: the remaining partitions are skipped."""
        self._feed.terminate()
        self.done_feeding = True
        self._current = None  # rows already received are dropped too, as in TFoS

    # -- fast path ---------------------------------------------------------------------
    def dataset(self, batch_size: int, columns: list[str] | None = None,
                epochs: int | None = None):
        """A ``tf.data.Dataset`` of batches for one epoch per iteration.

        Elements are tuples of column tensors (``columns`` picks and orders
        them by name), e.g. ``(images, labels)`` for rows ``(image, label)``.
        Blocks until the first data arrives, to learn the schema.

        ``epochs``: the number of epochs ``model.fit`` will run (``epochs -
        initial_epoch`` when it resumes from a checkpoint).  Over a cached
        feed (``train(..., cache=True)``), whose epochs all replay the first
        one's rows, one iteration of the dataset then spans all ``epochs``
        epochs, and :meth:`steps_per_epoch` gives the steps of each, so that
        Keras keeps one iterator for the whole fit instead of ending every
        epoch on end-of-data and starting a new iterator: about 2x faster
        under MultiWorkerMirroredStrategy for small epochs (README,
        *Performance*)::

            ds = feed.dataset(64, epochs=n)
            model.fit(ds, epochs=n, steps_per_epoch=feed.steps_per_epoch(strategy))

        To learn the steps it waits until the first epoch is queued on this
        node (see :meth:`_steps_of_cached_epochs`).  Over a streamed feed, or a
        first epoch larger than the cache's memory bound, it is the plain
        dataset and :meth:`steps_per_epoch` is None, which ``fit`` takes as
        "until the end of the data", so the same two lines serve both.
        """
        import tensorflow as tf

        if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)
                                   or epochs < 1):
            raise FeedError(f"dataset(epochs={epochs!r}): give the number of epochs model.fit "
                            "runs (an integer >= 1), or None")
        first = self._peek()
        if first is None:
            raise FeedError("the feed ended before any data arrived")
        sample = _columns(first, columns)
        signature = tuple(tf.TensorSpec((None, None, *c.shape[1:]), tf.as_dtype(c.dtype))
                          for c in sample)
        self._steps = self._steps_of_cached_epochs(batch_size) if epochs else None
        spans = epochs if self._steps is not None else 1

        def iteration():
            # Each element is a group of k equal batches, shaped (k, rows, ...);
            # unbatch() below splits the groups in C++.
            for _ in range(spans):
                for batch, k in self._epoch_batches(batch_size):
                    yield tuple(c.reshape(k, -1, *c.shape[1:])
                                for c in _columns(batch, columns))

        ds = tf.data.Dataset.from_generator(iteration, output_signature=signature).unbatch()
        # The feed already gave each node its own rows: a strategy must not shard again.
        options = tf.data.Options()
        disable_auto_shard(options)
        return ds.with_options(options)

    def steps_per_epoch(self, strategy: Any = None) -> int | None:
        """Keras's ``steps_per_epoch`` for :meth:`dataset` ``(..., epochs=n)``; None
        when the steps are not known ahead (a streamed feed: ``fit`` then runs each
        epoch to the end of its data).

        ``strategy``: the ``tf.distribute`` strategy ``fit`` runs under, if any.
        Keras takes each dataset element as a global batch and splits it among
        all replicas, while a worker's own replicas take one piece each per step;
        since every node's elements are its own rows, a worker takes
        ``num_replicas_in_sync / local replicas`` steps per element (2 for a
        2-worker MultiWorkerMirroredStrategy).
        """
        if self._steps is None:
            return None
        if strategy is None or strategy.num_replicas_in_sync == 1:
            return self._steps   # (the default strategy has no worker_devices)
        local = len(strategy.extended.worker_devices)
        return self._steps * strategy.num_replicas_in_sync // max(1, local)

    def _steps_of_cached_epochs(self, batch_size: int) -> int | None:
        """The batches of every epoch of a cached feed (None if not a cached feed or
        its first epoch is larger than the cache's memory bound).

        With ``cluster.train(..., cache=True)`` every epoch replays the first one's
        rows, so all epochs have its batches.  This waits until the first epoch is
        entirely queued on this node (its rows are in the node's cache anyway,
        so the feed buffer's bound is lifted up to the cache's for it) and reads
        the nodes' counts off its end.
        """
        buffer = self._feed.buffer
        head = buffer.head()
        if (self._in_epoch or self._bounded or not isinstance(head, EpochStart)
                or not head.cached or head.batch is not None):
            return None
        end = buffer.hold_until(lambda i: isinstance(i, (EpochEnd, EndOfFeed)),
                                cache.memory_bytes())
        if not isinstance(end, EpochEnd):
            if not buffer.closed and not isinstance(end, EndOfFeed):
                logger.info("dataset(): epoch %d is larger than the cache's memory bound "
                            "(SPARKTF_CACHE_MEMORY_MB): one dataset iteration per epoch",
                            head.epoch + 1)
            return None
        steps = agreed_steps(list(end.counts.values()), batch_size)
        logger.info("dataset(): %d batches in every epoch (cached feed, rows per node %s)",
                    steps, sorted(end.counts.values()))
        return steps

    def _peek(self) -> pa.RecordBatch | None:
        item = self._feed.buffer.peek(lambda i: isinstance(i, (Item, EndOfFeed)))
        return item.batch if isinstance(item, Item) else None

    def _epoch_batches(self, batch_size: int):
        """Batches of one epoch, cut so that all training nodes take the same steps."""
        # After next_batch_id() the epoch's start is already read.
        batcher = EpochBatcher(batch_size, self._partitions) if self._in_epoch else None
        while not self.done_feeding:
            if self._bounded and not self._in_epoch:
                return  # next_batch_id() starts the next micro-batch
            got = self._feed.buffer.get()
            if isinstance(got, EndOfFeed):
                self.done_feeding = True
            elif isinstance(got, EpochStart):
                self._begin(got)
                batcher = EpochBatcher(batch_size, got.partitions)
            elif isinstance(got, Item):
                batcher = batcher or EpochBatcher(batch_size, 1)
                # Rows already queued behind these join the same group: tf.data pays
                # ~1 ms per element from the generator, far more than per row.
                more = len(self._feed.buffer) > 0 and batcher.bytes < GROUP_BYTES
                yield from batcher.add(got.batch, emit=not more)
            elif isinstance(got, EpochEnd):
                self._end(got)
                if batcher is not None:
                    yield from batcher.finish(list(got.counts.values()))
                return
