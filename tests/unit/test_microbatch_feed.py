"""DataFeed over streaming micro-batches: batch ids, reads bounded by a micro-batch,
skipping a replayed one, and the dataset fast path one micro-batch per iteration."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from sparktf.errors import FeedError
from sparktf.feed.datafeed import DataFeed
from sparktf.feed.receiver import BoundedBuffer, EndOfFeed, EpochEnd, EpochStart, Item


class FakeFeed:
    """What ``mgr.open_feed()`` gives DataFeed: a buffer of items and markers."""

    def __init__(self, items):
        self.buffer = BoundedBuffer(1000)
        self.terminated = threading.Event()
        self.done = []
        for item in items:
            self.buffer.put(item)

    def open_feed(self, qname_in, qname_out):
        return self

    def terminate(self):
        self.terminated.set()

    def epoch_done(self, epoch):  # the FeedServer's report to the driver
        self.done.append(epoch)


def rows(first, n):
    return Item(pa.RecordBatch.from_pydict({"x": [float(i) for i in range(first, first + n)],
                                            "id": list(range(first, first + n))}))


def stream(*batches):
    """Micro-batches as (batch id, [chunk sizes]); ids of rows count up across them."""
    items, first = [], 0
    for epoch, (batch_id, chunks) in enumerate(batches):
        items.append(EpochStart(epoch, 1, batch_id))
        total = 0
        for n in chunks:
            items.append(rows(first, n))
            first, total = first + n, total + n
        items.append(EpochEnd(epoch, {"0": total}))
    return items + [EndOfFeed()]


def ids(batch):
    return [int(r["id"]) for r in batch]


def test_next_batch_stops_at_the_end_of_a_micro_batch():
    feed = DataFeed(FakeFeed(stream((7, [3, 4]), (9, [5]))))
    assert feed.next_batch_id() == 7 and feed.batch_id == 7
    assert ids(feed.next_batch(5)) == [0, 1, 2, 3, 4]
    assert ids(feed.next_batch(5)) == [5, 6]  # short: the micro-batch ends
    assert feed.next_batch(5) == []
    assert feed.next_batch_id() == 9
    assert ids(feed.next_batch(10)) == [7, 8, 9, 10, 11]
    assert feed.next_batch_id() is None and feed.should_stop()


def test_skip_batch_drops_a_replayed_micro_batch():
    feed = DataFeed(FakeFeed(stream((1, [3]), (1, [2, 2]), (2, [1]))))
    assert feed.next_batch_id() == 1
    assert ids(feed.next_batch(10)) == [0, 1, 2]
    assert feed.next_batch_id() == 1
    assert ids(feed.next_batch(1)) == [3]
    assert feed.skip_batch() == 3
    assert feed.next_batch_id() == 2 and ids(feed.next_batch(10)) == [7]


def test_unread_rows_before_the_next_id_are_an_error():
    feed = DataFeed(FakeFeed(stream((1, [3]), (2, [1]))))
    feed.next_batch_id()
    feed.next_batch(1)
    with pytest.raises(FeedError, match="micro-batch 1 is not fully read"):
        feed.next_batch_id()


def test_without_next_batch_id_reads_run_across_micro_batches():
    feed = DataFeed(FakeFeed(stream((1, [3]), (2, [4]))))
    assert ids(feed.next_batch(5)) == [0, 1, 2, 3, 4] and feed.batch_id == 2
    assert ids(feed.next_batch(5)) == [5, 6]


def test_dataset_iterates_one_micro_batch_after_next_batch_id():
    import tensorflow as tf
    feed = DataFeed(FakeFeed(stream((4, [10, 5]), (5, [3]))))
    ds = feed.dataset(4, columns=["id"])
    seen = {}
    while (batch_id := feed.next_batch_id()) is not None:
        seen[batch_id] = [int(v) for (x,) in ds for v in tf.reshape(x, [-1]).numpy()]
    assert seen == {4: list(range(15)), 5: [15, 16, 17]}


def test_a_micro_batch_is_reported_done_only_when_the_next_one_is_asked_for():
    """The driver counts a micro-batch as fed when the node reports it done: reading
    micro-batch by micro-batch, that is when map_fun asks for the next one (it has
    trained on it), not when it reads its last rows; a skipped replay is done too."""
    fake = FakeFeed(stream((1, [3]), (1, [2]), (2, [1])))
    feed = DataFeed(fake)
    assert feed.next_batch_id() == 1 and fake.done == []
    feed.next_batch(10)
    assert feed.next_batch(10) == [] and fake.done == [], "read to its end, not yet trained"
    assert feed.next_batch_id() == 1 and fake.done == [0]
    feed.skip_batch()
    assert fake.done == [0]
    assert feed.next_batch_id() == 2 and fake.done == [0, 1]
    feed.next_batch(10)
    feed.next_batch(10)
    assert feed.next_batch_id() is None and fake.done == [0, 1, 2]


def test_without_next_batch_id_an_epoch_is_done_when_its_end_is_read():
    fake = FakeFeed(stream((1, [3]), (2, [4])))
    feed = DataFeed(fake)
    feed.next_batch(3)
    assert fake.done == []
    feed.next_batch(3)  # reads past the end of epoch 0 into epoch 1
    assert fake.done == [0]


def test_epoch_busy_names_the_training_nodes_not_done_with_an_epoch():
    from sparktf.driver.attempt import epoch_busy
    from sparktf.driver.state import NodeState, NodeStatus
    from sparktf.roles import Role

    def node(i, job="worker", status=NodeStatus.RUNNING, feed=("h", 1)):
        return NodeState(i, Role(job, i), status=status, feed=feed)

    nodes = [node(0), node(1), node(2), node(3, status=NodeStatus.FINISHED), node(4, "ps"),
             node(5, feed=None)]
    busy = epoch_busy(nodes, {0: 3, 1: 2}, terminated={2}, epoch=3)
    assert [n.node for n in busy] == [1], "done, terminated, ended, ps, feedless: not busy"
    assert [n.node for n in epoch_busy(nodes, {}, set(), 0)] == [0, 1, 2]
