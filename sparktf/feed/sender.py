"""The feeding side: what each Spark task of ``train`` / ``inference`` runs.

Training: every Arrow chunk of the partition is split into contiguous slices,
one per training node, whose sizes differ by at most one row (the node that
gets the extra row rotates), so nodes end an epoch with nearly equal row
counts however uneven the partitions are (see :mod:`sparktf.feed.datafeed`).
The slices go out to all nodes before the task waits for their
acknowledgements, so the nodes ingest in parallel.  Once an epoch has given
the driver every partition's size, later epochs may be routed by segments
instead (``train(..., split=...)``, :mod:`sparktf.feed.routing`): each row
goes to the one node whose share of the epoch holds it, in whole chunks.

Inference: partition ``p`` goes whole to node ``p mod k``; each chunk's reply
carries its results, so results come back in input order.

Training keeps one chunk in flight: the task sends chunk ``i + 1`` before it
reads the (small) acknowledgements of chunk ``i``, so that reading and
encoding rows in the task overlaps with the nodes taking them in.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import Any, Iterable, Iterator

import pyarrow as pa

from .. import protocol
from .. import tls as tlsmod
from ..errors import FeedError, FeedTimeout
from ..control import cluster_status, first_feed_failure, report_feed_failure
from ..wire import connect
from . import arrowconv, routing

#: Rows per Arrow chunk read from an RDD partition, at most.
CHUNK_ROWS = 4096
#: Bytes per Arrow chunk, about (rows of 400 KB go a few at a time, not 4,096 at once);
#: ``SPARKTF_FEED_CHUNK_MB`` in the feeding tasks' environment changes it.
CHUNK_BYTES = 4 << 20


def chunk_bytes() -> int:
    """The chunk size in bytes for this feeding task."""
    return int(float(os.environ.get("SPARKTF_FEED_CHUNK_MB", CHUNK_BYTES / (1 << 20)))
               * (1 << 20))


def _node_lost(message: str) -> FeedError:
    """A FeedError caused by a node that failed: the node's own report explains it."""
    error = FeedError(message)
    error.node_lost = True
    return error


class NodeLink:
    """One feeding connection to one node (in TLS when ``node["tls"]`` holds a certificate)."""

    def __init__(self, node: dict, secret: bytes, hello: dict, feed_timeout: float) -> None:
        self.name = node["name"]
        self.node = node["node"]
        self.timeout = feed_timeout
        self.control, self.secret = node["control"], secret
        self.tls = tlsmod.client(node.get("tls"))
        self.terminated = False
        self.rows = 0
        try:
            self.chan = connect(tuple(node["feed"]), secret, timeout=30, tls=self.tls)
            self.chan.sock.settimeout(feed_timeout)
            reply, _ = self.chan.request(hello)
        except OSError as e:
            status = cluster_status(node["control"], secret, self.tls)
            if self.node in status.get("terminated", ()):
                self.terminated, self.chan = True, None  # it called terminate() and exited
                return
            why = status.get("error")
            raise _node_lost(f"cannot reach TF node {self.name} at {node['feed'][0]}:"
                             f"{node['feed'][1]} ({e}): "
                             + (why or "the node may have failed; the driver reports its error")
                             ) from None
        self.terminated = reply.get("type") == "terminated"

    def send(self, batch: pa.RecordBatch, partition: int) -> None:
        """Send one batch; a node that has terminated meanwhile is marked, not an error."""
        try:
            self.chan.send({"type": "batch", "rows": batch.num_rows},
                           arrowconv.to_ipc_parts(batch))
        except socket.timeout:
            raise self._timeout(partition) from None
        except OSError as e:
            self._lost(e, partition)

    def _timeout(self, partition: int) -> FeedTimeout:
        return FeedTimeout(f"TF node {self.name} is alive but took no data for "
                           f"{self.timeout:g}s (feed_timeout) while partition {partition} "
                           "was fed; is map_fun reading its DataFeed?")

    def _lost(self, e: BaseException, partition: int) -> None:
        """The connection broke: the node terminated (marked so), else a FeedError."""
        status = cluster_status(self.control, self.secret, self.tls)
        if self.node in status.get("terminated", ()):
            self.terminated = True
            return
        why = status.get("error")
        raise _node_lost(f"TF node {self.name} closed the feed while partition {partition} "
                         f"was fed ({e or 'connection closed'}): "
                         + (why or "its map_fun failed, exited or returned early")) from None

    def receive(self, partition: int) -> tuple[dict, bytearray]:
        if self.terminated:
            return {"type": "terminated"}, bytearray()
        try:
            msg, payload = self.chan.recv()
        except socket.timeout:
            raise self._timeout(partition) from None
        except (EOFError, OSError) as e:
            self._lost(e, partition)
            return {"type": "terminated"}, bytearray()
        if msg.get("type") == "error":
            raise FeedError(f"TF node {self.name}: {msg.get('error')}")
        if msg.get("type") == "terminated":
            self.terminated = True
        return msg, payload

    def close(self) -> None:
        if self.chan is None:
            return
        try:
            if not self.terminated:
                self.chan.send({"type": "done"})
        except OSError:
            pass
        self.chan.close()


def _split(batch: pa.RecordBatch, k: int, start: int) -> list[pa.RecordBatch]:
    """``k`` contiguous slices whose sizes differ by at most one; the extra rows go
    to slices ``start``, ``start+1``, ... (mod k)."""
    base, extra = divmod(batch.num_rows, k)
    sizes = [base + (1 if (i - start) % k < extra else 0) for i in range(k)]
    out, offset = [], 0
    for size in sizes:
        out.append(batch.slice(offset, size))
        offset += size
    return out


def chunks(data: Iterable[Any], partition: int, arrow: bool) -> Iterator[pa.RecordBatch]:
    """The Arrow chunks a partition is sent as: rows encoded, or record batches sliced."""
    limit = chunk_bytes()
    if arrow:
        return (piece for b in data if b.num_rows for piece in arrowconv.split_by_bytes(b, limit))
    return arrowconv.encode_rows(data, partition, CHUNK_ROWS, limit, narrow=True)


def feed_train(partition: int, data: Iterable[Any], nodes: list[dict], secret: bytes,
               epoch: int, partitions: int, feed_timeout: float, arrow: bool,
               batch: int | None = None, cache: bool = False, job: str = "",
               plan: list[list[tuple[int, int, int]]] | None = None) -> dict[int, int]:
    """Feed one partition to the training nodes; return rows delivered per node.

    ``batch`` is the streaming micro-batch id this epoch carries (None for a
    batch feed); the nodes read it as ``DataFeed.batch_id``.  ``cache``: the
    nodes keep this epoch's rows to replay later epochs (:mod:`sparktf.feed.cache`).
    ``job``: the Spark job group feeding the epoch. A failure of the task's own (bad
    rows, a node alive but taking no data) is reported to the driver under it, and a
    retry of the task fails at once: the nodes may hold part of the partition already,
    and each retry of a stalled feed would wait ``feed_timeout`` again (Spark tries a
    task 4 times by default: 40 minutes with the default ``feed_timeout=600``).
    ``plan``: every partition's ``(node index, start, stop)`` row ranges
    (:func:`sparktf.feed.routing.segments`); None: every chunk is split across all nodes.
    """
    retry = _task_attempt()
    if retry:
        # The first attempt failed: some of its rows may be in the nodes already, and its
        # error (reported to the driver) stands. Spark's further retries end here at once.
        raise FeedError(f"partition {partition}: Spark retried its feeding task (attempt "
                        f"{retry + 1}); sparktf feeds a partition once, so the first "
                        "attempt's error ends the epoch")
    hello = {"type": "hello", "mode": "train", "partition": partition, "epoch": epoch,
             "partitions": partitions, "batch": batch, "cache": cache}
    try:
        if plan is None:
            return _feed_train(partition, data, nodes, secret, feed_timeout, arrow, hello)
        if partition >= len(plan):
            raise FeedError(_changed(partition, "rows", f"no partition {partition} (it had "
                                     f"{len(plan)})"))
        return _feed_train(partition, data, nodes, secret, feed_timeout, arrow, hello,
                           plan[partition])
    except Exception as e:
        if job:
            _report(nodes[0], secret, _failure(job, partition, e))
        raise


def _report(node: dict, secret: bytes, failure: protocol.FeedFailed) -> None:
    """Tell the driver, through ``node``'s control address, why this task failed."""
    report_feed_failure(node["control"], secret, tlsmod.client(node.get("tls")), failure)


def _failure(job: str, partition: int, e: BaseException) -> protocol.FeedFailed:
    """What the driver raises for a feeding task's exception ``e``: a sparktf error as it
    is; another (the user's code in the fed RDD's lineage, a storage error) with its type,
    message and the last lines of its traceback."""
    if isinstance(e, FeedError):
        text = str(e)
    else:
        where = "".join(traceback.format_exception(e)[-4:-1]).rstrip()
        text = f"partition {partition}: {type(e).__name__}: {e}\n{where}"
    return protocol.FeedFailed(job, "FeedTimeout" if isinstance(e, FeedTimeout) else "FeedError",
                               text, bool(getattr(e, "node_lost", False)))


def _task_attempt() -> int:
    """Which attempt of its Spark task this is (0: the first, and outside Spark)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return ctx.attemptNumber() if ctx is not None else 0


def _feed_train(partition: int, data: Iterable[Any], nodes: list[dict], secret: bytes,
                feed_timeout: float, arrow: bool, hello: dict,
                ranges: list[tuple[int, int, int]] | None = None) -> dict[int, int]:
    """Feed one partition: every chunk split across all nodes, or, with its planned
    ``ranges`` (split by segments), each row to the node whose segment holds it."""
    if ranges is None:
        links = [NodeLink(n, secret, hello, feed_timeout) for n in nodes]
        route = _split_route(links, partition)
    else:
        by_index = {i: NodeLink(nodes[i], secret, hello, feed_timeout)
                    for i in dict.fromkeys(node for node, _, _ in ranges)}
        links = list(by_index.values())
        route = _segment_route(by_index, ranges, partition)
    try:
        row = 0
        unacked: list[tuple[NodeLink, int]] = []
        for batch in chunks(data, partition, arrow):
            if links and all(link.terminated for link in links):
                break  # rows no node will take
            sent = []
            for link, part in route(batch, row):
                link.send(part, partition)
                sent.append((link, part.num_rows))
            row += batch.num_rows
            # One chunk in flight: the nodes take this one while the task reads (and
            # encodes) the next; the previous one's acknowledgements are awaited now.
            _acknowledged(unacked, partition)
            unacked = sent
        _acknowledged(unacked, partition)
        if ranges and row < ranges[-1][2] and not all(link.terminated for link in links):
            raise FeedError(_changed(partition, f"{row} rows", f"{ranges[-1][2]}"))
    finally:
        for link in links:
            link.close()
    return {link.node: link.rows for link in links}


def _split_route(links: list[NodeLink], partition: int):
    """Routes each chunk as contiguous slices, one per node still taking data, whose sizes
    differ by at most one (the extra rows rotate across chunks and partitions)."""
    rotate = partition % len(links)

    def route(batch: pa.RecordBatch, row: int) -> list[tuple[NodeLink, pa.RecordBatch]]:
        nonlocal rotate
        live = [link for link in links if not link.terminated]
        slices = _split(batch, len(live), rotate % len(live))
        rotate += batch.num_rows % len(live)
        return [(link, part) for link, part in zip(live, slices) if part.num_rows]
    return route


def _segment_route(links: dict[int, NodeLink], ranges: list[tuple[int, int, int]],
                   partition: int):
    """Routes each chunk (the partition's rows from ``row`` on) by the planned ``ranges``;
    a partition with more rows than planned fails before any of the excess is sent."""
    planned = ranges[-1][2] if ranges else 0

    def route(batch: pa.RecordBatch, row: int) -> list[tuple[NodeLink, pa.RecordBatch]]:
        if row + batch.num_rows > planned:
            raise FeedError(_changed(partition, f"more than {planned} rows", f"{planned}"))
        return [(links[node], batch.slice(start - row, stop - start))
                for node, start, stop in routing.pieces(ranges, row, row + batch.num_rows)
                if not links[node].terminated]
    return route


def _changed(partition: int, now: str, before: str) -> str:
    """Why a partition cannot follow its routing plan."""
    return (f"partition {partition} has {now} this epoch, but the epoch this epoch's routing "
            f"was planned from had {before}: the data changed between epochs (a "
            "nondeterministic RDD or DataFrame?); cache it, or train(..., split='all')")


def _acknowledged(sent: list[tuple[NodeLink, int]], partition: int) -> None:
    """Wait for the replies to ``sent`` (link, rows) and count the rows acknowledged."""
    for link, rows in sent:
        msg, _ = link.receive(partition)
        if msg.get("type") == "ack":
            link.rows += rows


def _results(link: NodeLink, batch: pa.RecordBatch, partition: int) -> pa.RecordBatch:
    """The node's results for ``batch``, the batch just sent."""
    msg, payload = link.receive(partition)
    if msg.get("type") != "results":
        raise FeedError(f"TF node {link.name} stopped taking data during inference "
                        f"(partition {partition})")
    result = arrowconv.from_ipc(payload)
    if result.num_rows != batch.num_rows:
        raise FeedError(f"partition {partition}: TF node {link.name} returned "
                        f"{result.num_rows} results for {batch.num_rows} rows")
    return result


def feed_inference(partition: int, data: Iterable[Any], node: dict, secret: bytes,
                   feed_timeout: float, arrow: bool, chunked: bool = False,
                   job: str = "") -> Iterator[pa.RecordBatch]:
    """Feed one partition to one node; yield the result batches in input order.

    ``chunked``: ``data`` are already the chunks to send (see :func:`chunks`).
    ``job``: the ``inference()`` call's key.  A failure of the task is reported to the
    driver under it, and Spark's retry of the task raises that first error at once:
    a stalled node or a bad row would only fail again (after ``feed_timeout`` each
    time, 4 times by default).  A retry with no error reported (its Python worker
    died) runs as a first attempt: inference holds no state between tasks.
    """
    key = _task_key(job, partition)
    retry = _task_attempt()
    if key and retry:
        first = first_feed_failure(node["control"], secret, tlsmod.client(node.get("tls")), key)
        if first is not None:
            cls = FeedTimeout if first.error_class == "FeedTimeout" else FeedError
            raise cls(f"{first.error} (Spark's retry {retry} of this inference task "
                      "raises its first attempt's error instead of repeating it)")
    try:
        yield from _feed_inference(partition, data, node, secret, feed_timeout, arrow, chunked)
    except Exception as e:
        if key:
            _report(node, secret, _failure(key, partition, e))
        raise


def _task_key(job: str, partition: int) -> str:
    """``job/stage/partition``: what an inference task's attempts share (a later action on
    the same RDD runs in a stage of its own)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return f"{job}/{ctx.stageId() if ctx is not None else 0}/{partition}" if job else ""


def _feed_inference(partition: int, data: Iterable[Any], node: dict, secret: bytes,
                    feed_timeout: float, arrow: bool,
                    chunked: bool) -> Iterator[pa.RecordBatch]:
    hello = {"type": "hello", "mode": "inference", "partition": partition}
    link = NodeLink(node, secret, hello, feed_timeout)
    try:
        if link.terminated:
            raise FeedError(f"TF node {link.name} called terminate() and takes no inference "
                            f"data (partition {partition})")
        # One chunk at a time (no chunk in flight): the reply carries results, maybe as
        # large as the chunk, and the node reads the next chunk only once it has sent
        # them, so two large frames crossing could fill both sockets' buffers.
        for batch in (data if chunked else chunks(data, partition, arrow)):
            link.send(batch, partition)
            if link.terminated:
                raise FeedError(f"TF node {link.name} terminated during inference "
                                f"(partition {partition})")
            yield _results(link, batch, partition)
    finally:
        link.close()
