"""Routing an epoch's partitions by segments (sparktf.feed.routing), as pure logic."""

import random

import pyarrow as pa
import pytest

from sparktf.feed import routing
from sparktf.feed.datafeed import EpochBatcher


@pytest.mark.parametrize("sizes, nodes, want", [
    # one partition per node, exactly
    ([4, 4], 2, [[(0, 0, 4)], [(1, 0, 4)]]),
    # a segment boundary inside a partition: it goes to two nodes (ranges are its own rows)
    ([3, 5], 2, [[(0, 0, 3)], [(0, 0, 1), (1, 1, 5)]]),
    # empty partitions have no ranges
    ([0, 6, 0], 3, [[], [(0, 0, 2), (1, 2, 4), (2, 4, 6)], []]),
    # more nodes than rows: some nodes get none
    ([1, 1], 4, [[(1, 0, 1)], [(3, 0, 1)]]),
    # nothing to feed
    ([0, 0], 2, [[], []]),
    ([7], 1, [[(0, 0, 7)]]),
])
def test_segments(sizes, nodes, want):
    assert routing.segments(sizes, nodes) == want


@pytest.mark.parametrize("ranges, start, stop, want", [
    ([(0, 0, 3), (1, 3, 8)], 0, 4, [(0, 0, 3), (1, 3, 4)]),
    ([(0, 0, 3), (1, 3, 8)], 4, 8, [(1, 4, 8)]),
    ([(0, 0, 3), (1, 3, 8)], 3, 3, []),
    ([], 0, 5, []),
])
def test_pieces_of_a_chunk(ranges, start, stop, want):
    assert routing.pieces(ranges, start, stop) == want


@pytest.mark.parametrize("split, nodes, known, cached, want", [
    ("all", 100, True, True, False),
    ("segments", 2, True, False, True),
    ("segments", 2, False, True, False),  # the first epoch: sizes not known yet
    ("auto", routing.AUTO_SEGMENTS_ABOVE, True, False, False),
    ("auto", routing.AUTO_SEGMENTS_ABOVE + 1, True, False, True),
    ("auto", 100, False, True, False),
    ("auto", routing.AUTO_SEGMENTS_CACHED_ABOVE, True, True, False),
    ("auto", routing.AUTO_SEGMENTS_CACHED_ABOVE + 1, True, True, True),
    ("auto", routing.AUTO_SEGMENTS_CACHED_ABOVE + 1, True, False, False),
    ("auto", routing.AUTO_SEGMENTS_CACHED_ABOVE + 1, False, True, False),
])
def test_use_segments(split, nodes, known, cached, want):
    assert routing.use_segments(split, nodes, known, cached) is want


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="split must be one of"):
        routing.use_segments("some", 2, True)
    with pytest.raises(ValueError, match="at least one node"):
        routing.segments([3], 0)


def simulate(sizes, k, batch_size, chunk_rows):
    """Route partitions as the sender does by segments; cut batches as each node does."""
    plan = routing.segments(sizes, k)
    nodes = [[] for _ in range(k)]
    first = 0  # global id of the partition's first row
    for p, size in enumerate(sizes):
        for start in range(0, size, chunk_rows):
            stop = min(size, start + chunk_rows)
            for node, a, b in routing.pieces(plan[p], start, stop):
                nodes[node].append(pa.RecordBatch.from_pydict(
                    {"id": list(range(first + a, first + b))}))
        first += size
    counts = [sum(b.num_rows for b in n) for n in nodes]
    steps, seen = set(), []
    for n in nodes:
        batcher = EpochBatcher(batch_size, len(sizes))
        groups = [g for b in n for g in batcher.add(b)] + batcher.finish(counts)
        steps.add(sum(k for _, k in groups))
        seen += [i for group, _ in groups for i in group.column("id").to_pylist()]
    return counts, steps, seen


@pytest.mark.parametrize("sizes, k, bs, chunk_rows", [
    ([5, 1000, 0, 333, 7, 2000], 2, 32, 100),
    ([5, 1000, 0, 333, 7, 2000], 3, 64, 4096),
    ([10] * 50, 8, 4, 3),
    ([1, 2, 3], 5, 1, 1),
    ([1, 2, 3], 6, 2, 1),
])
def test_every_row_once_counts_within_one_and_equal_steps(sizes, k, bs, chunk_rows):
    counts, steps, seen = simulate(sizes, k, bs, chunk_rows)
    assert sorted(seen) == list(range(sum(sizes)))
    assert max(counts) - min(counts) <= 1
    assert len(steps) == 1


def test_random_layouts():
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.choice([0, 1, rng.randint(0, 500)]) for _ in range(rng.randint(1, 12))]
        k = rng.randint(1, 9)
        if sum(sizes) < k:
            continue  # a node without rows takes no step (as with the all-nodes split)
        counts, steps, seen = simulate(sizes, k, rng.randint(1, 40), rng.randint(1, 300))
        assert sorted(seen) == list(range(sum(sizes)))
        assert max(counts) - min(counts) <= 1
        assert len(steps) == 1


class _Control:
    def send(self, msg):
        pass


def test_the_sender_routes_a_partition_by_its_plan_over_real_sockets(monkeypatch):
    """Two in-process feed servers: a partition split at a segment boundary reaches each
    node's buffer as planned, in whole chunks; a partition that grew, or that was empty and
    is not any more, fails naming it before any of its rows is sent; one that shrank, at its
    end."""
    from sparktf.feed import sender
    from sparktf.feed.receiver import FeedServer, Item
    from sparktf.errors import FeedError

    monkeypatch.setattr(sender, "CHUNK_ROWS", 4)
    secret = b"r" * 32
    servers = [FeedServer("127.0.0.1", secret, _Control()) for _ in range(2)]
    nodes = [{"node": i, "name": f"worker:{i}", "feed": list(s.address),
              "control": ["127.0.0.1", 1], "tls": None} for i, s in enumerate(servers)]
    plan = routing.segments([3, 10, 0], 2)  # 13 rows: node 0 takes 0..5, node 1 6..12
    assert plan[1] == [(0, 0, 3), (1, 3, 10)]

    def feed(partition, rows):
        return sender.feed_train(partition, iter([(float(i), i) for i in rows]), nodes,
                                 secret, epoch=1, partitions=3, feed_timeout=10, arrow=False,
                                 plan=plan)

    def queued(server):
        items = [i for i in list(server.buffer._items) if isinstance(i, Item)]
        return [x for i in items for x in i.batch.column(1).to_pylist()], items

    try:
        assert feed(0, range(3)) == {0: 3}
        assert feed(1, range(3, 13)) == {0: 3, 1: 7}
        ids0, (ids1, items1) = queued(servers[0])[0], queued(servers[1])
        assert ids0 == [0, 1, 2, 3, 4, 5] and ids1 == [6, 7, 8, 9, 10, 11, 12]
        assert [i.batch.num_rows for i in items1] == [1, 4, 2], "whole chunks past the boundary"
        with pytest.raises(FeedError, match=r"partition 0 has more than 3 rows this epoch, "
                                            r"but the epoch .* had 3: the data changed"):
            feed(0, range(5))
        with pytest.raises(FeedError, match=r"partition 1 has 9 rows this epoch, but .* had 10"):
            feed(1, range(9))
        with pytest.raises(FeedError, match=r"partition 2 has more than 0 rows"):
            feed(2, range(1))
        with pytest.raises(FeedError, match=r"partition 3 has rows this epoch, but .* had no "
                                            r"partition 3 \(it had 3\)"):
            feed(3, range(1))
        # The grown partitions sent nothing; the shrunk one's 9 rows went as planned.
        assert len(queued(servers[0])[0]) == 6 + 3
    finally:
        for s in servers:
            s.close()
