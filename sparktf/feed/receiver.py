"""The node's feed endpoint: authenticated connections in, a bounded buffer out.

Feeding tasks connect to :class:`FeedServer` (one per node, bound to the
node's host) and send Arrow record batches.  Each batch is put into a
:class:`BoundedBuffer`; the acknowledgement is sent only once it is in, so a
slow consumer slows the feeders down (backpressure) and the node holds at most
``capacity`` batches.  In inference mode the reply carries the results of that
batch instead, produced by ``DataFeed.batch_results``.

Markers in the same buffer tell the consumer where an epoch starts (from the
first feeding connection of an epoch) and ends (from the driver, after every
batch of the epoch was acknowledged), and that the feed is over.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa

from .. import protocol
from ..errors import ConfigError, FeedError, ProtocolError
from ..wire import Channel, HandshakeDeadline, close_listener, peername, serve
from . import arrowconv
from .cache import EpochCache

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 8
#: Bytes of fed data a node buffers, at most (one batch is always let in); the node's
#: ``SPARKTF_FEED_BUFFER_MB`` (``TFCluster.run(env=...)``) changes it.
DEFAULT_CAPACITY_BYTES = 256 << 20


def capacity_bytes() -> int:
    return int(float(os.environ.get("SPARKTF_FEED_BUFFER_MB", DEFAULT_CAPACITY_BYTES >> 20))
               * (1 << 20))


@dataclass
class EpochStart:
    epoch: int
    partitions: int
    batch: int | None = None  # the streaming micro-batch id; None for a batch feed
    cached: bool = False  # fed with cache=True: the epochs after it replay its rows


@dataclass
class EpochEnd:
    epoch: int
    counts: dict  # node number (as str) -> rows fed to it this epoch


@dataclass
class EndOfFeed:
    pass


@dataclass
class Pending:
    """Results being collected for one inference batch."""

    rows: int
    partition: int
    results: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""

    def add(self, values: pa.RecordBatch) -> None:
        self.results.append(values)
        if sum(len(r) for r in self.results) >= self.rows:
            self.done.set()

    def fail(self, error: str) -> None:
        self.error = error
        self.done.set()


@dataclass
class Item:
    batch: pa.RecordBatch
    pending: Pending | None = None


class BoundedBuffer:
    """A FIFO of at most ``capacity`` data items and ``max_bytes`` bytes; markers never block.

    One item is always let into an empty buffer, however large.  ``close``
    wakes every waiting producer (they then see ``closed``).
    """

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: collections.deque = collections.deque()
        self._data = 0
        self.bytes = 0
        self._cond = threading.Condition()
        self.closed = False
        self._waiting: list[int] = []  # sizes of the items producers wait to queue

    def _room(self, size: int) -> bool:
        return self._data < self.capacity and (
            self._data == 0 or self.max_bytes is None or self.bytes + size <= self.max_bytes)

    def put(self, item: Any, timeout: float | None = None) -> bool:
        """Queue ``item``; False if the buffer is closed; ``TimeoutError`` if a data item
        found no room within ``timeout`` seconds (None: wait as long as it takes)."""
        with self._cond:
            if isinstance(item, Item):
                size = item.batch.nbytes
                if not (self.closed or self._room(size)):
                    self._waiting.append(size)
                    self._cond.notify_all()  # hold_until() gives up when it cannot fit
                    try:
                        if not self._cond.wait_for(lambda: self.closed or self._room(size),
                                                   timeout):
                            raise TimeoutError(
                                f"no room in the node's feed buffer for {timeout:g}s")
                    finally:
                        self._waiting.remove(size)
                if self.closed:
                    return False
                self._data += 1
                self.bytes += size
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: self._items)
            item = self._items.popleft()
            if isinstance(item, Item):
                self._data -= 1
                self.bytes -= item.batch.nbytes
            self._cond.notify_all()
            return item

    def peek(self, match) -> Any:
        """Wait for the first queued item for which ``match`` is true; leave it queued."""
        with self._cond:
            self._cond.wait_for(lambda: any(match(i) for i in self._items))
            return next(i for i in self._items if match(i))

    def head(self) -> Any:
        """The first queued item (None if the buffer is empty), left queued."""
        with self._cond:
            return self._items[0] if self._items else None

    def hold_until(self, match: Callable[[Any], bool], max_bytes: int) -> Any:
        """Let producers queue up to ``max_bytes`` of data, in any number of items,
        until an item for which ``match`` is true is queued; return it (left queued).

        None if the buffer fills at that bound first (a producer waits for room) or
        closes.  The buffer's own bounds apply again when this returns.  For a
        consumer that must see a whole epoch before it reads any of it
        (:meth:`sparktf.feed.datafeed.DataFeed.dataset` over a cached feed).
        """
        with self._cond:
            bounds = self.capacity, self.max_bytes
            self.capacity, self.max_bytes = sys.maxsize, max(max_bytes, self.max_bytes or 0)
            self._cond.notify_all()  # producers waiting for room may go on
            seen, found = 0, None

            def ready() -> bool:
                nonlocal seen, found
                while found is None and seen < len(self._items):
                    if match(self._items[seen]):
                        found = self._items[seen]
                    seen += 1
                return (found is not None or self.closed
                        or any(not self._room(size) for size in self._waiting))

            try:
                self._cond.wait_for(ready)
            finally:
                self.capacity, self.max_bytes = bounds
            return found

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return self._data

    def unread_rows(self) -> int:
        """Rows of the data items still queued."""
        with self._cond:
            return sum(i.batch.num_rows for i in self._items if isinstance(i, Item))


class FeedServer:
    """The node's feed endpoint; ``ctx.mgr`` in SPARK mode."""

    def __init__(self, host: str, secret: bytes, control: Any,
                 capacity: int = DEFAULT_CAPACITY, tls: Any = None,
                 spill_dir: str | None = None) -> None:
        self._secret = secret
        self._tls = tls  # a sparktf.tls.ServerTLS: every connection in TLS
        self._control = control
        self.buffer = BoundedBuffer(capacity, capacity_bytes())
        self.terminated = threading.Event()
        self._epoch = -1
        self._lock = threading.Lock()
        # Cached feeding (sparktf.feed.cache): the rows of the last cached epoch, and the
        # rows of the replay in progress not yet queued.
        self._spill_dir = spill_dir
        self._cache: EpochCache | None = None
        self._replay_left = 0
        self._sock = socket.create_server((host, 0))
        self.address = (host, self._sock.getsockname()[1])
        serve(self._sock, self._serve, "sparktf-feed")

    # -- driver messages -----------------------------------------------------
    def control_handlers(self) -> dict:
        return {
            protocol.EpochEnd: lambda m: self.buffer.put(EpochEnd(m.epoch, m.counts)),
            protocol.EndFeed: lambda m: self.buffer.put(EndOfFeed()),
            protocol.ReplayEpoch: lambda m: threading.Thread(
                target=self._replay, args=(m,), name="sparktf-replay", daemon=True).start(),
        }

    def _replay(self, msg: protocol.ReplayEpoch) -> None:
        """Queue the cached rows of epoch ``msg.source`` again as epoch ``msg.epoch`` (the
        driver waits for this node's ``Replayed`` before it sends anything further)."""
        cache, status, error, rows = self._cache, "ok", "", 0
        if cache is None or cache.epoch != msg.source:
            self._control.send(protocol.Replayed(
                msg.epoch, 0, "error", f"no rows cached from epoch {msg.source + 1} on this node"
            ).to_dict())
            return
        try:
            with self._lock:
                self._epoch = msg.epoch
                self._replay_left = cache.rows
            self.buffer.put(EpochStart(msg.epoch, cache.partitions))
            for batch in cache.replay():
                if not self.buffer.put(Item(batch), timeout=msg.feed_timeout):
                    status = "closed"  # map_fun returned or called terminate()
                    break
                rows += batch.num_rows
                self._replay_left -= batch.num_rows
            else:
                self.buffer.put(EpochEnd(msg.epoch, msg.counts))
        except TimeoutError:
            status = "timeout"
        except Exception as e:  # reported to the driver, which raises it
            if self.buffer.closed:  # finish() dropped the cache under the replay
                status = "closed"
            else:
                status, error = "error", f"{type(e).__name__}: {e}"
        self._control.send(protocol.Replayed(msg.epoch, rows, status, error).to_dict())

    # -- node side -------------------------------------------------------------
    def open_feed(self, qname_in: str = "input", qname_out: str = "output") -> "FeedServer":
        """What ``DataFeed`` reads: this server (``buffer``, ``terminated``, ``terminate``).

        A cluster node has one feed, which TFoS called the ``'input'`` queue
        (results go back as ``'output'``); other queue names are refused rather
        than silently ignored.
        """
        for arg, name, default in (("qname_in", qname_in, "input"),
                                   ("qname_out", qname_out, "output")):
            if name != default:
                raise ConfigError(
                    f"DataFeed({arg}={name!r}): a sparktf cluster node has one feed, the "
                    f"default {arg}={default!r}; named queues exist only in the local test "
                    "harness (TFManager.start(authkey, queues, 'local'))")
        return self

    def terminate(self) -> None:
        """Take no more data: refuse new batches and wake blocked feeders."""
        if not self.terminated.is_set():
            self.terminated.set()
            self.buffer.close()
            self._control.send(protocol.Terminated().to_dict())

    def epoch_done(self, epoch: int) -> None:
        """Tell the driver that this node is done with fed epoch ``epoch`` (see
        :class:`sparktf.protocol.EpochDone`); a lost driver connection is reported by
        the supervisor, not here."""
        try:
            self._control.send(protocol.EpochDone(epoch).to_dict())
        except OSError as e:
            logger.debug("could not report the end of epoch %d: %s", epoch, e)

    def finish(self) -> int:
        """map_fun returned: nothing more will be consumed; return the rows left unread
        (buffered, or of a cached epoch's replay not yet queued), none after ``terminate()``,
        which drops them on purpose."""
        self.buffer.close()
        unread = 0 if self.terminated.is_set() else (
            self.buffer.unread_rows() + max(0, self._replay_left))
        if self._cache is not None:
            self._cache.close()
        return unread

    def close(self) -> None:
        """Stop accepting feed connections."""
        close_listener(self._sock)

    # -- connections -----------------------------------------------------------
    def _serve(self, sock: socket.socket) -> None:
        peer = peername(sock)
        authenticated = False
        deadline = HandshakeDeadline(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(10)
            chan = Channel.server(sock, self._secret, tls=self._tls)
            hello, _ = chan.recv()
            deadline.met()
            authenticated = True
            sock.settimeout(None)
            if hello.get("type") != "hello":
                raise ProtocolError(f"bad feed hello {hello!r}")
            partition = _int_field(hello, "partition")
            inference = hello.get("mode") == "inference"
            cached = hello.get("cache") is True  # train(..., cache=True)
            epoch, partitions = _int_field(hello, "epoch", 0), _int_field(hello, "partitions", 1)
            batch = hello.get("batch")
            if batch is not None:
                batch = _int_field(hello, "batch")
            with self._lock:
                if not inference and epoch > self._epoch:
                    self._epoch = epoch
                    if self._cache is not None:
                        self._cache.close()
                    self._cache = (EpochCache(epoch, partitions, spill_dir=self._spill_dir)
                                   if cached else None)
                    self.buffer.put(EpochStart(epoch, partitions, batch, cached=cached))
                cache = self._cache if cached else None
            if self.terminated.is_set():
                chan.send({"type": "terminated"})
                return
            chan.send({"type": "ok"})
            while True:
                msg, payload = chan.recv()
                if msg.get("type") == "done":
                    return
                try:
                    batch = arrowconv.from_ipc(payload)
                except Exception as e:  # pyarrow raises OSError, IndexError... for junk too
                    raise ProtocolError(f"feed frame from {peer} is not one Arrow record "
                                        f"batch: {type(e).__name__}: {e}") from e
                pending = Pending(batch.num_rows, partition) if inference else None
                if not self.buffer.put(Item(batch, pending)):
                    chan.send({"type": "terminated"})
                    return
                if pending is None:
                    if cache is not None:
                        cache.add(batch)
                    chan.send({"type": "ack"})
                    continue
                pending.done.wait()
                if pending.error:
                    chan.send({"type": "error", "error": pending.error})
                    return
                result = arrowconv.to_ipc_parts(arrowconv.concat(pending.results))
                chan.send({"type": "results", "rows": pending.rows}, result)
        except (ProtocolError, ValueError, KeyError, socket.timeout, pa.ArrowException,
                FeedError) as e:
            logger.warning("feed connection from %s dropped: %s", peer, deadline.explain(e))
        except (EOFError, OSError) as e:
            if not authenticated:
                logger.warning("feed connection from %s dropped before it authenticated: %s",
                               peer, deadline.explain(e or type(e).__name__))
            else:
                logger.debug("feed connection from %s ended: %s", peer, e or type(e).__name__)
        finally:
            deadline.met()
            sock.close()


def _int_field(hello: dict, name: str, default: int | None = None) -> int:
    """An integer field of a feed hello (a bool, float or string is refused)."""
    value = hello.get(name, default)
    if type(value) is not int:
        raise ProtocolError(f"bad feed hello: {name} must be an integer, not {value!r:.100}")
    return value
