"""dataset(epochs=n) over a cached feed: one iteration spans the epochs and
steps_per_epoch() is known ahead (it waits for the first epoch to be queued);
BoundedBuffer.hold_until."""

import threading

import numpy as np
import pyarrow as pa
import pytest

from sparktf.errors import FeedError
from sparktf.feed.datafeed import DataFeed, agreed_steps
from sparktf.feed.receiver import BoundedBuffer, EndOfFeed, EpochEnd, EpochStart, Item


def rows(first, n):
    return Item(pa.RecordBatch.from_pydict({"id": np.arange(first, first + n, dtype="int64")}))


class FakeFeed:
    """What ``mgr.open_feed()`` gives DataFeed; ``items`` are queued by a producer thread,
    as the node's feed connections do, into a buffer of ``max_bytes``."""

    def __init__(self, items, max_bytes=1 << 20):
        self.buffer = BoundedBuffer(1000, max_bytes)
        self.terminated = threading.Event()
        self.producer = threading.Thread(target=lambda: [self.buffer.put(i) for i in items],
                                         daemon=True)
        self.producer.start()

    def open_feed(self, qname_in, qname_out):
        return self

    def epoch_done(self, epoch):
        pass


def epochs(counts, chunk, cached=True, epochs=2):
    """Items of ``epochs`` epochs with ``counts`` rows per node (this node: the first),
    in chunks of ``chunk`` rows; ids count up across epochs."""
    items, first = [], 0
    for epoch in range(epochs):
        items.append(EpochStart(epoch, 1, cached=cached and epoch == 0))
        left = counts[0]
        while left:
            n = min(chunk, left)
            items.append(rows(first, n))
            first, left = first + n, left - n
        items.append(EpochEnd(epoch, {str(i): c for i, c in enumerate(counts)}))
    return items + [EndOfFeed()]


@pytest.mark.parametrize("counts, batch_size, steps", [
    ([100, 100], 10, 10),
    ([101, 100], 10, 10),   # the agreement: the fewest rows decide
    ([95, 100], 10, 10),    # ceil(95 / 10)
    ([7], 10, 1),
    ([], 10, 0),
])
def test_agreed_steps(counts, batch_size, steps):
    assert agreed_steps(counts, batch_size) == steps


@pytest.mark.parametrize("counts, chunk, cached, max_mb, want", [
    ([100, 98], 7, True, 64, 10),       # cached: the first epoch's steps, ahead
    ([100, 98], 7, False, 64, None),    # fed every epoch: epochs may differ
    ([3000, 3000], 100, True, 0.01, None),  # larger than the cache's memory bound
])
def test_over_a_cached_feed_one_iteration_spans_the_epochs(monkeypatch, counts, chunk, cached,
                                                           max_mb, want):
    monkeypatch.setenv("SPARKTF_CACHE_MEMORY_MB", str(max_mb))
    feed = DataFeed(FakeFeed(epochs(counts, chunk, cached), max_bytes=1000))
    ds = feed.dataset(10, epochs=2)
    assert feed.steps_per_epoch() == want
    iterations = [[b[0].numpy().tolist() for b in ds] for _ in range(1 if want else 2)]
    steps = agreed_steps(counts, 10)
    assert [len(batches) for batches in iterations] == ([2 * steps] if want else [steps] * 2)
    ids = sum(sum(iterations, []), [])
    assert ids == list(range(2 * counts[0])), "every row of both epochs once, in order"


def test_without_epochs_one_iteration_per_epoch_and_no_steps():
    feed = DataFeed(FakeFeed(epochs([30], 10)))
    ds = feed.dataset(10)
    assert feed.steps_per_epoch() is None
    assert [len(list(ds)) for _ in range(2)] == [3, 3]


class Strategy:
    """The two numbers of a tf.distribute strategy that steps_per_epoch reads (local=None:
    the default strategy, whose ``extended.worker_devices`` raises)."""

    def __init__(self, replicas, local):
        self.num_replicas_in_sync = replicas
        self.extended = type("Extended", (), {"worker_devices": ["/cpu:0"] * local}
                             if local else {})()


@pytest.mark.parametrize("replicas, local, steps", [
    (1, None, 10),  # the default strategy
    (1, 1, 10),    # one worker, one device
    (2, 1, 20),    # MultiWorkerMirroredStrategy, 2 workers: each element is 2 pieces
    (4, 2, 20),    # 2 workers of 2 GPUs
    (2, 2, 10),    # MirroredStrategy on 2 local GPUs
])
def test_steps_per_epoch_counts_a_workers_steps_per_element(replicas, local, steps):
    feed = DataFeed(FakeFeed(epochs([100, 100], 50)))
    feed.dataset(10, epochs=2)
    assert feed.steps_per_epoch(Strategy(replicas, local)) == steps


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_epochs_is_named(bad):
    feed = DataFeed(FakeFeed(epochs([10], 10)))
    with pytest.raises(FeedError, match=r"dataset\(epochs="):
        feed.dataset(10, epochs=bad)


def test_hold_until_lifts_the_bound_until_the_marker_and_restores_it():
    buf = BoundedBuffer(2, 100)
    items = [Item(pa.RecordBatch.from_pydict({"x": np.zeros(8)})) for _ in range(5)]
    producer = threading.Thread(target=lambda: [buf.put(i) for i in [*items, EpochEnd(0, {})]])
    producer.start()
    assert isinstance(buf.hold_until(lambda i: isinstance(i, EpochEnd), 1 << 20), EpochEnd)
    producer.join(5)
    assert len(buf) == 5 and (buf.capacity, buf.max_bytes) == (2, 100)
    blocked = threading.Thread(target=buf.put, args=(items[0],), daemon=True)
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive(), "the buffer's own bound applies again"


def test_hold_until_gives_up_when_the_bound_is_reached_or_the_buffer_closes():
    buf = BoundedBuffer(1000, 100)
    chunk = Item(pa.RecordBatch.from_pydict({"x": np.zeros(8)}))   # 64 bytes
    producer = threading.Thread(target=lambda: [buf.put(chunk) for _ in range(10)],
                                daemon=True)
    producer.start()
    assert buf.hold_until(lambda i: isinstance(i, EpochEnd), 300) is None
    assert len(buf) == 4   # 4 x 64 bytes fit in 300, the 5th waits
    buf.close()
    empty = BoundedBuffer(10)
    threading.Timer(0.2, empty.close).start()
    assert empty.hold_until(lambda i: False, 100) is None
