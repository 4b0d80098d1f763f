"""The epoch agreement of the tf.data fast path, as pure logic."""

import math
import random
import threading

import pyarrow as pa
import pytest

from sparktf.feed.datafeed import EpochBatcher
from sparktf.feed.receiver import BoundedBuffer, Item
from sparktf.feed.sender import _split


def chunk(n, start=0):
    return pa.RecordBatch.from_pydict({"id": list(range(start, start + n))})


def simulate(partition_sizes, k, batch_size, chunk_rows):
    """Feed partitions as the sender does and cut batches as each node does."""
    nodes = [[] for _ in range(k)]
    next_id = 0
    for p, size in enumerate(partition_sizes):
        rotate = p % k
        for start in range(0, size, chunk_rows):
            b = chunk(min(chunk_rows, size - start), next_id)
            next_id += b.num_rows
            for node, part in zip(nodes, _split(b, k, rotate % k)):
                if part.num_rows:
                    node.append(part)
            rotate += b.num_rows % k
    counts = [sum(b.num_rows for b in n) for n in nodes]
    out = []
    for n in nodes:
        batcher = EpochBatcher(batch_size, len(partition_sizes))
        groups = [x for b in n for x in batcher.add(b)] + batcher.finish(counts)
        batches = []
        for group, k in groups:
            assert group.num_rows % k == 0
            size = group.num_rows // k
            batches += [group.slice(i * size, size) for i in range(k)]
        out.append(batches)
    return counts, out


@pytest.mark.parametrize("sizes,k,bs,chunk_rows", [
    ([5, 1000, 0, 333, 7, 2000], 2, 64, 4096),
    ([5, 1000, 0, 333, 7, 2000], 3, 32, 100),
    ([1] * 50, 2, 8, 1),
    ([997], 4, 10, 7),
])
def test_all_nodes_take_the_same_steps_and_every_row_once(sizes, k, bs, chunk_rows):
    counts, out = simulate(sizes, k, bs, chunk_rows)
    assert max(counts) - min(counts) <= len(sizes)
    steps = {len(b) for b in out}
    assert steps == {math.ceil(min(counts) / bs)}
    ids = sorted(i for batches in out for b in batches for i in b.column(0).to_pylist())
    assert ids == list(range(sum(sizes)))
    assert all(b.num_rows >= 1 for batches in out for b in batches)


def test_random_layouts():
    rng = random.Random(7)
    for _ in range(50):
        sizes = [rng.choice([0, 1, 3, 50, 400]) for _ in range(rng.randint(1, 8))]
        k = rng.randint(1, 4)
        if sum(sizes) < k * (1 + len(sizes)):
            continue
        counts, out = simulate(sizes, k, rng.choice([1, 4, 32]), rng.choice([1, 16, 4096]))
        assert len({len(b) for b in out}) == 1
        assert sum(b.num_rows for bs in out for b in bs) == sum(sizes)


def test_split_sizes_differ_by_at_most_one_and_rotate():
    parts = _split(chunk(10), 3, 1)
    assert [p.num_rows for p in parts] == [3, 4, 3]
    assert sum(p.num_rows for p in _split(chunk(2), 4, 3)) == 2


def test_bounded_buffer_blocks_producers_until_consumed_and_close_wakes_them():
    buf = BoundedBuffer(2)
    assert buf.put(Item(chunk(1))) and buf.put(Item(chunk(1)))
    done = []
    t = threading.Thread(target=lambda: done.append(buf.put(Item(chunk(1)))))
    t.start()
    t.join(0.2)
    assert t.is_alive() and len(buf) == 2, "a full buffer holds producers back"
    buf.get()
    t.join(5)
    assert done == [True]
    t = threading.Thread(target=lambda: done.append(buf.put(Item(chunk(1)))))
    t.start()
    buf.close()
    t.join(5)
    assert done == [True, False]


def test_deferred_rows_give_the_same_batches_in_larger_groups():
    """dataset() defers emitting while more rows are queued: the same steps and rows in
    fewer groups (only the split of the last rows by finish() may differ)."""
    rng = random.Random(3)
    pieces = [chunk(rng.choice([1, 7, 64, 300]), 1000 * i) for i in range(40)]
    counts = [sum(p.num_rows for p in pieces)] * 2

    def batches(emit):
        batcher = EpochBatcher(32, 5)
        groups = [g for i, p in enumerate(pieces) for g in batcher.add(p, emit=emit(i))]
        groups += batcher.finish(counts)
        out = []
        for group, k in groups:
            size = group.num_rows // k
            out += [group.slice(i * size, size).column(0).to_pylist() for i in range(k)]
        return out, len(groups)

    eager, n_eager = batches(lambda i: True)
    deferred, n_deferred = batches(lambda i: rng.random() < 0.3)
    assert len(deferred) == len(eager) == math.ceil(counts[0] / 32) and n_deferred < n_eager
    assert sum(deferred, []) == sum(eager, [])  # every row once, in order
    assert all(1 <= len(b) <= 32 + 5 for b in deferred)
