"""TensorFlowOnSpark's local test harness: a ``map_fun``'s DataFeed without Spark.

TFoS users unit-test the data side of a ``map_fun`` like this (TFoS's own
``tests/test_TFNode.py`` does exactly this)::

    mgr = TFManager.start(b"key", ["input", "output"], "local")
    q = mgr.get_queue("input")
    for row in rows:
        q.put(row)
    q.put(None)                          # end of feed
    feed = TFNode.DataFeed(mgr)          # the same DataFeed map_fun gets in SPARK mode

:class:`LocalManager` is an in-process object (no process, no socket, the
``authkey`` is not needed).  It offers the small interface ``DataFeed`` reads a
node's feed through, :meth:`LocalManager.open_feed`, so rows put on a queue go
through the real ``DataFeed`` code: they are encoded into Arrow record batches
as the feeding tasks do, ``next_batch`` / ``dataset`` / ``input_mapping`` decode
them, ``batch_results`` puts one result per row on the output queue, and
``terminate`` sets ``mgr.get('state')`` to ``'terminating'`` and drops what is
still queued, as in TFoS.  Rows read before a ``None`` form one epoch (what
``dataset()`` iterates once) and one "partition": they must share one shape,
as the rows of a Spark partition must.
"""

from __future__ import annotations

import collections
import logging
import queue as queue_errors
import threading
from typing import Any, Callable, Iterable

import pyarrow as pa

from ..errors import ConfigError, FeedError
from . import arrowconv
from .receiver import EndOfFeed, EpochEnd, Item

logger = logging.getLogger(__name__)


class LocalQueue:
    """An in-process FIFO with the calls of TFoS's (``multiprocessing``) queue."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: collections.deque = collections.deque()
        self._unfinished = 0
        self._cond = threading.Condition()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Append ``item`` (never blocks: the queue is unbounded)."""
        with self._cond:
            self._items.append(item)
            self._unfinished += 1
            self._cond.notify_all()

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The oldest item; raises ``queue.Empty`` if none arrives (non-blocking or timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout if block else 0):
                raise queue_errors.Empty
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def task_done(self) -> None:
        with self._cond:
            if self._unfinished <= 0:
                raise ValueError(f"task_done() called too many times on queue {self.name!r}")
            self._unfinished -= 1
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put was marked ``task_done``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished == 0, timeout)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    # -- for the feed -----------------------------------------------------------------
    def take_run(self, timeout: float | None = None) -> list:
        """Wait for an item; return ``[None]`` if it is the end-of-feed marker, else
        every item queued now up to (not including) the next ``None``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout):
                raise queue_errors.Empty
            if self._items[0] is None:
                self._items.popleft()
                self._unfinished -= 1
                return [None]
            run = []
            while self._items and self._items[0] is not None:
                run.append(self._items.popleft())
            self._unfinished -= len(run)
            self._cond.notify_all()
            return run

    def drain(self) -> int:
        """Drop every queued item; return how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._unfinished = max(0, self._unfinished - n)
            self._cond.notify_all()
            return n


class _ResultSink:
    """Where ``DataFeed.batch_results`` delivers one fed chunk's results: the output queue."""

    def __init__(self, out: LocalQueue, rows: int) -> None:
        self.out = out
        self.rows = rows
        self.partition = f"(local queue {out.name!r})"

    def add(self, values: pa.RecordBatch) -> None:
        for value in arrowconv.decode_rows(values):
            self.out.put(value)

    def fail(self, error: str) -> None:
        logger.debug("local feed: results not delivered: %s", error)


class _QueueBuffer:
    """The input queue seen as a node's feed buffer (``get``, ``peek``, ``head``, ``len``).

    Raw rows become ``Item``s of Arrow record batches here; a ``None`` becomes
    the end of an epoch (with this node's row count, the only node) and the
    end of the feed.
    """

    def __init__(self, inq: LocalQueue, outq: LocalQueue) -> None:
        self.inq, self.outq = inq, outq
        self._ready: collections.deque = collections.deque()
        self._index = 0         # rows encoded so far, for error messages
        self._epoch_rows = 0    # rows handed out in this epoch

    def _convert(self) -> None:
        """Move the next run of queued rows (or the end marker) into ``_ready``."""
        run = self.inq.take_run()
        if run == [None]:
            self._ready.append(EpochEnd(0, {"0": self._epoch_rows}))
            self._ready.append(EndOfFeed())
            return
        for batch in self._encode(run):
            self._ready.append(Item(batch, _ResultSink(self.outq, batch.num_rows)))

    def _encode(self, rows: list) -> list[pa.RecordBatch]:
        first = self._index
        self._index += len(rows)
        try:
            return list(arrowconv.encode_rows(rows, 0, len(rows)))
        except FeedError:
            pass  # rows of different shapes: encode them one by one (TFoS takes any rows)
        out = []
        for i, row in enumerate(rows):
            try:
                out.extend(arrowconv.encode_rows([row], 0, 1))
            except FeedError as e:
                raise FeedError(f"local queue {self.inq.name!r}, row {first + i} "
                                f"(counting from the first row put): {e}") from e
        return out

    def drop_ready(self) -> int:
        """Drop the rows already taken from the queue but not read; return how many."""
        rows = sum(i.batch.num_rows for i in self._ready if isinstance(i, Item))
        self._ready.clear()
        return rows

    def get(self) -> Any:
        if not self._ready:
            self._convert()
        item = self._ready.popleft()
        if isinstance(item, Item):
            self._epoch_rows += item.batch.num_rows
        elif isinstance(item, EpochEnd):
            self._epoch_rows = 0
        return item

    def head(self) -> Any:
        """The first item ready (None if none): never an epoch's start, as the local
        harness has no epoch markers before its rows."""
        return self._ready[0] if self._ready else None

    def peek(self, match: Callable[[Any], bool]) -> Any:
        while True:
            for item in self._ready:
                if match(item):
                    return item
            self._convert()

    def __len__(self) -> int:
        return sum(isinstance(i, Item) for i in self._ready) + self.inq.qsize()


class LocalFeed:
    """One DataFeed's view of a :class:`LocalManager`: the interface ``DataFeed`` uses."""

    def __init__(self, mgr: "LocalManager", qname_in: str, qname_out: str) -> None:
        self._mgr = mgr
        self.buffer = _QueueBuffer(mgr.get_queue(qname_in), mgr.get_queue(qname_out))
        self.terminated = mgr.terminated

    def terminate(self) -> None:
        """As TFoS: state ``'terminating'``, and the rows still queued are dropped."""
        self._mgr.set("state", "terminating")
        self.terminated.set()
        dropped = self.buffer.inq.drain() + self.buffer.drop_ready()
        logger.info("terminate(): dropped %d queued items from %r", dropped,
                    self.buffer.inq.name)


class LocalManager:
    """The in-process manager ``TFManager.start(authkey, queues, 'local')`` returns."""

    def __init__(self, queues: Iterable[str]) -> None:
        names = [] if isinstance(queues, (str, bytes)) else list(queues)
        if not names or not all(isinstance(q, str) for q in names):
            raise ConfigError(f"TFManager.start(queues=...) takes a list of queue names such "
                              f"as ['input', 'output'], not {queues!r:.100}")
        self._queues = {name: LocalQueue(name) for name in names}
        self._values: dict[str, Any] = {}
        self._feeds: dict[tuple[str, str], LocalFeed] = {}
        self._lock = threading.Lock()
        self.terminated = threading.Event()

    def get_queue(self, name: str) -> LocalQueue:
        """The queue called ``name`` (one of the names given to ``start``)."""
        try:
            return self._queues[name]
        except KeyError:
            raise ConfigError(f"no queue {name!r} in this TFManager; its queues are "
                              f"{sorted(self._queues)} (the names given to TFManager.start)"
                              ) from None

    def get(self, key: str) -> Any:
        """The value last ``set`` for ``key`` (KeyError if none, as in TFoS)."""
        with self._lock:
            if key not in self._values:
                raise KeyError(f"TFManager has no value for {key!r} (set: "
                               f"{sorted(self._values)})")
            return self._values[key]

    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._values[key] = value

    def open_feed(self, qname_in: str = "input", qname_out: str = "output") -> LocalFeed:
        """The feed ``DataFeed`` reads: rows from ``qname_in``, results to ``qname_out``."""
        with self._lock:
            key = (qname_in, qname_out)
            if key not in self._feeds:  # DataFeeds on the same queues share what is read
                self._feeds[key] = LocalFeed(self, qname_in, qname_out)
            return self._feeds[key]

    def shutdown(self) -> None:
        """Nothing to stop (in-process); kept because TFoS's manager has it."""
