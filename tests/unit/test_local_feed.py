"""The local TFManager harness drives the real DataFeed: end of feed, input_mapping,
batch_results to the output queue, terminate, named queues; and DataFeed refuses
queue names a cluster feed (FeedServer) does not have."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sparktf import TFManager, TFNode
from sparktf.errors import ConfigError, FeedError
from sparktf.feed.receiver import FeedServer

END = None


def feed_of(rows, queues=("input", "output"), qname_in="input", **kwargs):
    mgr = TFManager.start(b"key", list(queues), "local")
    q = mgr.get_queue(qname_in)
    for row in rows:
        q.put(row)
    return mgr, TFNode.DataFeed(mgr, qname_in=qname_in, **kwargs)


def plain(batch):
    """Rows as plain Python values (numpy scalars and arrays compared by value)."""
    out = []
    for row in batch:
        if isinstance(row, tuple):
            out.append(tuple(np.asarray(v).tolist() for v in row))
        elif isinstance(row, dict):
            out.append({k: np.asarray(v).tolist() for k, v in row.items()})
        else:
            out.append(np.asarray(row).tolist())
    return out


@pytest.mark.parametrize("rows, sizes, batches, stops", [
    # TFoS's own sequence: 10 numbers, then asking for more than is left
    ([*range(10), END], [2, 4, 10], [[0, 1], [2, 3, 4, 5], [6, 7, 8, 9]], [False, False, True]),
    # an exact fit leaves the end marker unread until the next call
    ([1, 2, 3, END], [3, 1], [[1, 2, 3], []], [False, True]),
    # an empty feed
    ([END], [5], [[]], [True]),
    # tuples and dicts come back as fed
    ([(1, 2.5), (3, 4.5), END], [5], [[(1, 2.5), (3, 4.5)]], [True]),
    ([{"a": 1, "b": [1, 2]}, {"a": 2, "b": [3, 4]}, END], [1, 1, 1],
     [[{"a": 1, "b": [1, 2]}], [{"a": 2, "b": [3, 4]}], []], [False, False, True]),
    # rows of different shapes (one "partition" in Spark must agree; TFoS takes any)
    ([1, (2, 3), [4, 5], END], [4], [[1, (2, 3), [4, 5]]], [True]),
    # nothing after the end marker is read
    ([1, END, 2], [5, 5], [[1], []], [True, True]),
])
def test_next_batch_reads_to_the_end_of_feed(rows, sizes, batches, stops):
    _, feed = feed_of(rows)
    for size, want, stop in zip(sizes, batches, stops):
        assert plain(feed.next_batch(size)) == want
        assert feed.should_stop() is stop


def test_next_batch_waits_for_rows_put_later():
    mgr, feed = feed_of([])
    got = []
    reader = threading.Thread(target=lambda: got.append(feed.next_batch(3)))
    reader.start()
    for row in (7, 8, 9):
        mgr.get_queue("input").put(row)
    reader.join(10)
    assert not reader.is_alive() and sum(map(len, got)) >= 1
    assert plain(got[0]) == [7, 8, 9][:len(got[0])]


@pytest.mark.parametrize("rows, mapping, want", [
    # tuple rows: field i feeds the tensor of the i-th column in sorted order (TFoS)
    ([([1, 2], 0), ([3, 4], 1)], {"image": "x", "label": "y"},
     {"x": [[1, 2], [3, 4]], "y": [0, 1]}),
    ([(5, "b"), (6, "c")], {"z_col": "second", "a_col": "first"},
     {"first": [5, 6], "second": ["b", "c"]}),
    # dict rows: by name, whatever the order
    ([{"label": 3, "image": [1, 1]}], {"image": "img", "label": "lbl"},
     {"img": [[1, 1]], "lbl": [3]}),
])
def test_input_mapping(rows, mapping, want):
    _, feed = feed_of([*rows, END], input_mapping=mapping)
    got = feed.next_batch(10)
    assert {k: np.asarray(v).tolist() for k, v in got.items()} == want
    assert feed.next_batch(10) == {t: [] for t in mapping.values()}
    assert feed.should_stop()


@pytest.mark.parametrize("rows, mapping, message", [
    ([(1, 2, 3)], {"a": "a", "b": "b"}, "2 columns"),
    ([{"x": 1}], {"y": "y"}, "'y' is not in the fed data"),
])
def test_input_mapping_mismatch_names_the_columns(rows, mapping, message):
    _, feed = feed_of([*rows, END], input_mapping=mapping)
    with pytest.raises(FeedError, match=message):
        feed.next_batch(1)


@pytest.mark.parametrize("rows, sizes, fn", [
    ([*range(7), END], [3, 3, 3], lambda xs: [x * 10 for x in xs]),
    ([(i, i) for i in range(4)] + [END], [4], lambda xs: [a + b for a, b in xs]),
    ([[1.0, 2.0], [3.0, 4.0], END], [1, 1], lambda xs: [np.asarray(x) * 2 for x in xs]),
])
def test_batch_results_go_to_the_output_queue_in_order(rows, sizes, fn):
    mgr, feed = feed_of(rows, train_mode=False)
    expected = []
    for size in sizes:
        batch = feed.next_batch(size)
        results = fn(batch)
        feed.batch_results(results)
        expected += [np.asarray(r).tolist() for r in results]
    out = mgr.get_queue("output")
    assert [np.asarray(out.get(timeout=1)).tolist() for _ in expected] == expected
    assert out.empty()


def test_batch_results_count_mismatch_is_an_error():
    mgr, feed = feed_of([1, 2, 3, END], train_mode=False)
    feed.next_batch(3)
    with pytest.raises(FeedError, match="2 results for 3 rows"):
        feed.batch_results([1, 2])
    assert mgr.get_queue("output").empty()


def test_terminate_sets_state_and_drops_queued_rows():
    mgr, feed = feed_of([*range(20), END])
    with pytest.raises(KeyError, match="state"):
        mgr.get("state")
    assert len(feed.next_batch(5)) == 5
    feed.terminate()
    assert mgr.get("state") == "terminating"
    assert feed.should_stop() and mgr.get_queue("input").empty()
    assert feed.next_batch(5) == []
    # a second DataFeed on the same manager sees the termination too (TFoS: manager state)
    assert TFNode.DataFeed(mgr).should_stop()


@pytest.mark.parametrize("queues, qname_in, qname_out", [
    (["input", "output"], "input", "output"),
    (["train", "predictions"], "train", "predictions"),
    (["input", "output", "eval", "eval_out"], "eval", "eval_out"),
])
def test_named_queues(queues, qname_in, qname_out):
    mgr, feed = feed_of([1, 2, END], queues=queues, qname_in=qname_in, train_mode=False,
                        qname_out=qname_out)
    feed.batch_results([-x for x in feed.next_batch(2)])
    assert [mgr.get_queue(qname_out).get(timeout=1) for _ in range(2)] == [-1, -2]
    for other in set(queues) - {qname_in, qname_out}:
        assert mgr.get_queue(other).empty()


def test_manager_values_and_queue_calls():
    mgr = TFManager.start("key", ("input",), "local")
    mgr.set("state", "running")
    assert mgr.get("state") == "running"
    q = mgr.get_queue("input")
    q.put("a")
    assert q.qsize() == 1 and q.get() == "a"
    q.task_done()
    assert q.join(timeout=1)
    with pytest.raises(Exception) as e:
        q.get(timeout=0.01)
    assert type(e.value).__name__ == "Empty"


@pytest.mark.parametrize("call, message", [
    (lambda: TFManager.start(b"k", ["input"], "remote"), "only mode='local'"),
    (lambda: TFManager.start(b"k", "input", "local"), "list of queue names"),
    (lambda: TFManager.start(b"k", ["input"]).get_queue("output"),
     r"no queue 'output'.*\['input'\]"),
    (lambda: TFNode.DataFeed(TFManager.start(b"k", ["input"]), qname_in="x"), "no queue 'x'"),
    (lambda: TFManager.connect(("h", 1), b"k"), "not supported"),
])
def test_bad_manager_use_is_a_clear_error(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_unsupported_row_names_queue_and_row():
    _, feed = feed_of([1, 2, object(), END])
    with pytest.raises(FeedError, match=r"local queue 'input', row 2.*unsupported row type"):
        feed.next_batch(3)


@pytest.fixture
def feed_server():
    server = FeedServer("127.0.0.1", b"s" * 32, control=None)
    yield server
    server.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"qname_in": "train"}, r"DataFeed\(qname_in='train'\).*default qname_in='input'"),
    ({"qname_out": "preds"}, r"DataFeed\(qname_out='preds'\).*default qname_out='output'"),
])
def test_cluster_feed_rejects_named_queues(feed_server, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TFNode.DataFeed(feed_server, **kwargs)
    assert TFNode.DataFeed(feed_server, qname_in="input", qname_out="output").mgr is feed_server


def test_dataset_over_the_local_feed():
    tf = pytest.importorskip("tensorflow")
    rows = [(np.full(3, i, np.float32), i) for i in range(10)]
    _, feed = feed_of([*rows, END])
    ds = feed.dataset(4)
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    assert sum(len(y) for _, y in batches) == 10
    assert np.concatenate([y for _, y in batches]).tolist() == list(range(10))
    assert batches[0][0].shape[1:] == (3,)
    assert ds.options().experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.OFF
    assert list(ds) == [] and feed.should_stop()  # the next epoch: the feed is over
