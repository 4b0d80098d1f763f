"""Cached feeding (sparktf.feed.cache): replay, shuffling, the encrypted spill, equal steps."""

import math
import os
import threading

import numpy as np
import pyarrow as pa
import pytest

from sparktf import TFNode, protocol
from sparktf.feed import sender
from sparktf.feed.cache import EpochCache
from sparktf.feed.datafeed import EpochBatcher
from sparktf.feed.receiver import BoundedBuffer, FeedServer, Item

SECRET = b"c" * 32
PATTERN = 0x5A17C0DE  # a value no AES-GCM output holds by chance at this size


def batch(start, n):
    ids = np.arange(start, start + n, dtype="int64")
    return pa.RecordBatch.from_pydict({"x": np.full(n, PATTERN, "int64"), "id": ids})


def ids(batches):
    return [i for b in batches for i in b.column("id").to_pylist()]


@pytest.mark.parametrize("memory_limit, window", [
    (1 << 30, 1 << 30),   # all in memory, permuted as a whole
    (0, 1 << 30),         # all spilled
    (3000, 2000),         # some spilled; windows of a few chunks
])
def test_replay_gives_every_row_once_shuffled(tmp_path, memory_limit, window):
    cache = EpochCache(0, 3, memory_limit=memory_limit, spill_dir=str(tmp_path),
                       window_bytes=window)
    for start in range(0, 1000, 100):
        cache.add(batch(start, 100))
    assert cache.rows == 1000 and (cache.spilled > 0) == (memory_limit < 1 << 30)
    first = ids(cache.replay(np.random.default_rng(1)))
    second = ids(cache.replay(np.random.default_rng(2)))
    assert sorted(first) == sorted(second) == list(range(1000))
    assert first != list(range(1000)) and first != second, "shuffled, differently each epoch"
    # Rows mix across chunks, not only the chunk order.
    assert len({i // 100 for i in first[:100]}) > 1
    cache.close()


def test_the_spill_is_encrypted_and_never_visible(tmp_path):
    cache = EpochCache(0, 1, memory_limit=0, spill_dir=str(tmp_path))
    cache.add(batch(0, 5000))
    assert os.listdir(tmp_path) == [], "the spill file is unlinked from the start"
    fd = cache._file.fileno()
    assert os.fstat(fd).st_mode & 0o077 == 0
    raw = os.pread(fd, cache.spilled, 0)
    assert len(raw) > 5000 * 16
    assert PATTERN.to_bytes(8, "little") not in raw, "fed values are not in clear on disk"
    assert sorted(ids(cache.replay())) == list(range(5000))
    cache.close()


@pytest.mark.parametrize("sizes, k, bs, chunk_rows", [
    ([5, 1000, 0, 333, 7, 2000], 2, 64, 4096),
    ([1] * 50, 3, 8, 1),
    ([997], 4, 10, 7),
])
def test_replayed_epochs_keep_the_epoch_agreement(sizes, k, bs, chunk_rows):
    """Fed once as the sender splits it; each node caches its rows and replays them."""
    caches = [EpochCache(0, len(sizes)) for _ in range(k)]
    next_id = 0
    for p, size in enumerate(sizes):
        rotate = p % k
        for start in range(0, size, chunk_rows):
            b = batch(next_id, min(chunk_rows, size - start))
            next_id += b.num_rows
            for cache, part in zip(caches, sender._split(b, k, rotate % k)):
                cache.add(part)
            rotate += b.num_rows % k
    counts = [c.rows for c in caches]
    for _ in range(3):  # replayed epochs
        steps, seen = set(), []
        for cache in caches:
            batcher = EpochBatcher(bs, cache.partitions)
            groups = [g for b in cache.replay() for g in batcher.add(b)] + batcher.finish(counts)
            steps.add(sum(g for _, g in groups))
            seen += ids(b for b, _ in groups)
        assert steps == {math.ceil(min(counts) / bs)}
        assert sorted(seen) == list(range(sum(sizes)))


def test_a_full_buffer_times_out():
    buf = BoundedBuffer(1)
    assert buf.put(Item(batch(0, 1)))
    with pytest.raises(TimeoutError):
        buf.put(Item(batch(1, 1)), timeout=0.1)


class Control:
    """The node's control connection: keeps the Replayed reports (EpochDone etc. pass by)."""

    def __init__(self):
        self.sent = []
        self.event = threading.Event()

    def send(self, msg):
        if msg.get("type") == protocol.Replayed.TYPE:
            self.sent.append(msg)
            self.event.set()


def test_a_node_replays_its_cache_and_counts_unread_rows(tmp_path, monkeypatch):
    """The node side over real sockets: a cached epoch fed once, replayed twice."""
    monkeypatch.setattr(sender, "CHUNK_ROWS", 100)
    control = Control()
    server = FeedServer("127.0.0.1", SECRET, control, capacity=1, spill_dir=str(tmp_path))
    node = {"node": 0, "name": "worker:0", "feed": list(server.address),
            "control": ["127.0.0.1", 1], "tls": None}
    handlers = server.control_handlers()
    try:
        rows = [(np.float32(i), i) for i in range(300)]
        sent = {}
        feeding = threading.Thread(target=lambda: sent.update(sender.feed_train(
            0, iter(rows), [node], SECRET, epoch=0, partitions=1, feed_timeout=10,
            arrow=False, cache=True)))
        feeding.start()
        feed = TFNode.DataFeed(server)
        read = [r[1] for r in feed.next_batch(300)]
        feeding.join(10)
        assert sent == {0: 300}
        handlers[protocol.EpochEnd](protocol.EpochEnd(0, {"0": 300}))
        for epoch in (1, 2):
            control.event.clear()
            handlers[protocol.ReplayEpoch](protocol.ReplayEpoch(epoch, 0, {"0": 300}, 10.0))
            read += [r[1] for r in feed.next_batch(300)]
            assert control.event.wait(10)
            assert protocol.decode(control.sent[-1]) == protocol.Replayed(epoch, 300, "ok")
        assert sorted(read) == sorted(list(range(300)) * 3)
        assert read[300:600] != read[:300], "replayed shuffled"
        # A replay nobody reads (one chunk buffered, two still to come), then map_fun
        # returns: all its rows count as unread.
        control.event.clear()
        handlers[protocol.ReplayEpoch](protocol.ReplayEpoch(3, 0, {"0": 300}, 10.0))
        while server.buffer.unread_rows() < 1:
            threading.Event().wait(0.01)
        assert server.finish() == 300
        assert control.event.wait(10)
        assert protocol.decode(control.sent[-1]).status == "closed"
        # Replaying an epoch the node did not cache is an error reported to the driver.
        control.event.clear()
        handlers[protocol.ReplayEpoch](protocol.ReplayEpoch(4, 7, {"0": 1}, 10.0))
        assert control.event.wait(10)
        report = protocol.decode(control.sent[-1])
        assert report.status == "error" and "no rows cached from epoch 8" in report.error
    finally:
        server.close()



def test_rows_dropped_by_terminate_are_not_unread():
    server = FeedServer("127.0.0.1", SECRET, Control())
    try:
        server.buffer.put(Item(batch(0, 10)))
        server.terminate()
        assert server.finish() == 0
    finally:
        server.close()


@pytest.mark.parametrize("settings, mb, why", [
    ({}, 1024, "the default"),
    ({"spark.master": "spark://h:7077", "spark.executor.memory": "8g"}, 1024, "the default"),
    ({"spark.executor.pyspark.memory": "2g"}, 512, "pyspark.memory"),
    ({"spark.master": "yarn", "spark.executor.pyspark.memory": "1000m"}, 250, "pyspark.memory"),
    ({"spark.master": "yarn"}, 96, "memoryOverhead"),  # max(384m, 10% of 1g)
    ({"spark.master": "yarn", "spark.executor.memory": "10g"}, 256, "memoryOverhead"),
    ({"spark.master": "k8s://https://api:6443", "spark.executor.memoryOverhead": "4g"},
     1024, "memoryOverhead"),
    ({"spark.master": "yarn", "spark.executor.memory": "4096",
      "spark.executor.memoryOverheadFactor": "0.25"}, 256, "memoryOverhead"),
])
def test_the_default_cache_bound_follows_the_executor_memory(settings, mb, why):
    from sparktf.feed.cache import default_memory_mb
    got, reason = default_memory_mb(settings.get)
    assert got == mb and why in reason


def test_a_malformed_memory_setting_is_named():
    from sparktf.feed.cache import default_memory_mb
    from sparktf.errors import ConfigError
    with pytest.raises(ConfigError, match="spark.executor.pyspark.memory='lots'"):
        default_memory_mb({"spark.executor.pyspark.memory": "lots"}.get)


def test_the_epoch_summary_names_rows_left_unread():
    from types import SimpleNamespace

    from sparktf.driver.feeding import _unread_summary
    from sparktf.driver.state import NodeState
    from sparktf.roles import assign_roles
    nodes = [NodeState(i, r, since=0.0) for i, r in enumerate(assign_roles(3, 0, None, False))]
    assert _unread_summary(SimpleNamespace(nodes=nodes, unread={})) == ""
    text = _unread_summary(SimpleNamespace(nodes=nodes, unread={2: 40, 0: 7}))
    assert text == "; left unread by map_fun: worker:0 7, worker:2 40"
