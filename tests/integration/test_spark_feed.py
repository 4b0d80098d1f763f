"""InputMode.SPARK against real Spark: counts, balance, DataFrames, inference, errors."""

import glob
import json
import math
import os
import re
import time

import numpy as np
import pytest

import feedfuns
from sparktf import TFCluster
from sparktf.errors import ConfigError, FeedError, NodeError, ShutdownTimeout, SparkTFError

pytestmark = pytest.mark.integration

SIZES = [5, 1000, 0, 333, 7, 2000]


def uneven_rdd(sc):
    """Partitions of SIZES rows (features float32[4], id) with globally unique ids."""
    def part(p, _):
        start = sum(SIZES[:p])
        rng = np.random.default_rng(p)
        return [(rng.normal(size=4).astype("float32"), start + i) for i in range(SIZES[p])]
    return sc.parallelize(range(len(SIZES)), len(SIZES)).mapPartitionsWithIndex(part)


def results(out, name):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{name}-*.json")))]


def start(sc, fn, out, n=2, **kw):
    return TFCluster.run(sc, fn, {"out": str(out), **kw}, n, input_mode=TFCluster.InputMode.SPARK,
                         reservation_timeout=120)


def test_uneven_partitions_every_row_once_per_epoch(sc, tmp_path, no_leftovers):
    cluster = start(sc, feedfuns.count_rows, tmp_path)
    with pytest.raises(ConfigError, match="qname='other'"):
        cluster.train(uneven_rdd(sc), qname="other")
    # The caller's job group survives train(): its later jobs are not sparktf's to cancel.
    sc.setJobGroup("mine", "the user's jobs")
    cluster.train(dataRDD=uneven_rdd(sc), num_epochs=2)  # TFoS's keyword
    assert sc.getLocalProperty("spark.jobGroup.id") == "mine"
    assert sc.getLocalProperty("spark.job.description") == "the user's jobs"
    assert not any(t.startswith("sparktf") for t in sc.getJobTags())
    sc.parallelize(range(3), 3).count()
    assert len(sc.statusTracker().getJobIdsForGroup("mine")) == 1
    sc.setLocalProperty("spark.jobGroup.id", None)
    sc.setLocalProperty("spark.job.description", None)
    cluster.shutdown(timeout=60)
    got = results(tmp_path, "count")
    total = sum(SIZES)
    assert sum(r["rows"] for r in got) == 2 * total
    assert sum(r["ids"] for r in got) == 2 * (total * (total - 1) // 2)
    assert abs(got[0]["rows"] - got[1]["rows"]) <= 2 * len(SIZES), "balanced per node"


def test_dataframe_input(sc, tmp_path, no_leftovers):
    from pyspark.sql import SparkSession
    spark = SparkSession(sc)
    df = spark.createDataFrame([(float(i), i) for i in range(1000)], "x double, id long")
    cluster = start(sc, feedfuns.count_rows, tmp_path)
    cluster.train(df.repartition(3), num_epochs=1)
    cluster.shutdown(timeout=60)
    got = results(tmp_path, "count")
    assert sum(r["rows"] for r in got) == 1000 and sum(r["ids"] for r in got) == 499500


def epoch_counts(caplog, epochs):
    """Rows per node of each fed epoch, from the driver's epoch summaries."""
    out = {}
    for r in caplog.records:
        m = re.match(rf"sparktf train epoch (\d+)/{epochs}: \d+ rows in", r.getMessage())
        if m:
            out[int(m.group(1))] = [int(c) for c in re.findall(r"\w+:\d+ (\d+)", r.getMessage())]
    return out


def test_split_by_segments_balances_nodes_within_a_row(sc, tmp_path, no_leftovers, caplog):
    from pyspark.sql import SparkSession
    caplog.set_level("INFO", logger="sparktf")
    rdd = uneven_rdd(sc).cache()
    cluster = start(sc, feedfuns.count_rows, tmp_path, n=3)
    with pytest.raises(ConfigError, match="split='some'"):
        cluster.train(rdd, split="some")
    cluster.train(rdd, num_epochs=3, split="segments")
    counts = epoch_counts(caplog, 3)
    segmented = [r for r in caplog.records if "holding its share" in r.getMessage()]
    assert len(segmented) == 2, "epochs 2 and 3 are routed by segments"
    for epoch in (2, 3):
        assert len(counts[epoch]) == 3 and max(counts[epoch]) - min(counts[epoch]) <= 1
    # A DataFrame (mapInArrow) too; cached, with 3 nodes the default split="auto" picks
    # segments, and for data that is not cached, the all-nodes split.
    caplog.clear()
    df = SparkSession(sc).createDataFrame([(float(i), i) for i in range(1000)],
                                          "x double, id long").repartition(4).cache()
    cluster.train(df, num_epochs=2)
    assert "split='auto', 3 nodes" in caplog.text
    assert max(epoch_counts(caplog, 2)[2]) - min(epoch_counts(caplog, 2)[2]) <= 1
    caplog.clear()
    cluster.train(uneven_rdd(sc), num_epochs=2)
    assert "holding its share" not in caplog.text
    cluster.shutdown(timeout=60)
    got = results(tmp_path, "count")
    total = sum(SIZES)
    assert sum(r["rows"] for r in got) == 5 * total + 2 * 1000
    assert sum(r["ids"] for r in got) == 5 * (total * (total - 1) // 2) + 2 * 499500


def test_split_by_segments_refuses_data_that_changed(sc, tmp_path, no_leftovers):
    marks = str(tmp_path / "evaluations")
    os.makedirs(marks)

    def growing(p, _):  # one row more every time the partition is computed
        n = len(os.listdir(marks))
        open(os.path.join(marks, f"{p}-{n}-{time.time_ns()}"), "w").close()
        return [(np.zeros(4, "float32"), i) for i in range(10 + n)]

    data = sc.parallelize(range(1), 1).mapPartitionsWithIndex(growing)
    cluster = start(sc, feedfuns.count_rows, tmp_path, n=2)
    with pytest.raises(FeedError, match=r"partition 0 has more than 10 rows this epoch, but the "
                                        r"epoch .* had 10: the data changed between epochs"):
        cluster.train(data, num_epochs=2, split="segments")
    cluster.shutdown(timeout=60)


def test_mwms_fit_on_dataset_fast_path_with_uneven_partitions(sc, tmp_path, no_leftovers,
                                                              caplog):
    # Two fed epochs, then three cached ones (fed once, replayed by the nodes) in one fit.
    # A cache bound of 20 KB makes each node spill part of its ~40 KB (encrypted).
    cluster = TFCluster.run(sc, feedfuns.fit_dataset,
                            {"out": str(tmp_path), "epochs": 5, "batch_size": 64}, 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120,
                            env={"SPARKTF_CACHE_MEMORY_MB": "0.02"})
    cluster.train(uneven_rdd(sc), num_epochs=2)
    computed = sc.accumulator(0)

    def tally(row):
        computed.add(1)
        return row
    cluster.train(uneven_rdd(sc).map(tally), num_epochs=3, cache=True)
    assert computed.value == sum(SIZES), "Spark fed the cached epochs' data once"
    assert caplog.text.count("replayed by the nodes from their cache") == 2
    cluster.shutdown(timeout=300)
    got = results(tmp_path, "fit")
    assert [r["epochs"] for r in got] == [5, 5]
    assert got[0]["steps"] == got[1]["steps"], "synchronous workers take the same steps"
    assert sum(r["rows"] for r in got) == 5 * sum(SIZES), "every fed row is trained on"
    seen = np.bincount(np.concatenate([r["ids"] for r in got]), minlength=sum(SIZES))
    assert (seen == 5).all(), "every row once per epoch, fed or replayed"
    np.testing.assert_allclose(np.array(got[0]["weights"][0]), np.array(got[1]["weights"][0]))


def test_a_cached_feed_spans_the_epochs_with_steps_known_ahead(sc, tmp_path, no_leftovers):
    # dataset(epochs=3) over a feed cached from its first epoch: one iterator for the fit,
    # steps_per_epoch(strategy) = 2 steps of 32 rows (MWMS, 2 workers) per 64-row batch.
    cluster = TFCluster.run(sc, feedfuns.fit_dataset,
                            {"out": str(tmp_path), "epochs": 3, "batch_size": 64, "span": True},
                            2, input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120)
    cluster.train(uneven_rdd(sc), num_epochs=3, cache=True)
    cluster.shutdown(timeout=300)
    got = results(tmp_path, "fit")
    half = sum(SIZES) / 2   # each node's rows, give or take a row per partition
    steps = got[0]["steps_per_epoch"]
    assert 2 * math.ceil((half - len(SIZES)) / 64) <= steps <= 2 * math.ceil(half / 64), steps
    assert [r["steps"] for r in got] == [[steps] * 3] * 2, "fit ran the steps it was given"
    assert sum(r["rows"] for r in got) == 3 * sum(SIZES)
    seen = np.bincount(np.concatenate([r["ids"] for r in got]), minlength=sum(SIZES))
    assert (seen == 3).all(), "every row once per epoch, fed or replayed"
    np.testing.assert_allclose(np.array(got[0]["weights"][0]), np.array(got[1]["weights"][0]))


def test_strict_feed_names_the_node_and_its_unread_rows(sc, tmp_path, no_leftovers):
    cluster = TFCluster.run(sc, feedfuns.read_ten_then_return, {"out": str(tmp_path)}, 1,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120,
                            strict_feed=True)
    cluster.train(uneven_rdd(sc), num_epochs=1)  # every chunk is in the node's buffer now
    (tmp_path / "go").write_text("")
    with pytest.raises(FeedError, match=r"node worker:0 .*map_fun returned with \d+ fed rows "
                                        r"unread \(strict_feed=True\)"):
        cluster.shutdown(timeout=60)


def test_inference_one_result_per_row_in_order(sc, tmp_path, no_leftovers):
    cluster = start(sc, feedfuns.infer_double, tmp_path)
    rdd = uneven_rdd(sc)
    out = cluster.inference(rdd).collect()
    assert [int(v) for v in out] == [2 * i for i in range(sum(SIZES))]
    # The user's code in the RDD's lineage fails: its error, raised once. Spark's retries
    # of the task raise the first attempt's error without running the lineage again.
    marks = tmp_path / "bad-rows"
    marks.mkdir()

    def parse(s):
        if s == "x":
            open(marks / str(time.time_ns()), "w").close()
        return np.zeros(4, "float32"), int(s)

    t0 = time.monotonic()
    with pytest.raises(FeedError, match=r"partition 0: ValueError: invalid literal for int"):
        cluster.inference(sc.parallelize(["1", "x"], 1).map(parse)).collect()
    assert time.monotonic() - t0 < 10
    assert len(os.listdir(marks)) == 1, "Spark's retries ran the failing lineage again"
    cluster.shutdown(timeout=60)


def test_lists_of_pixel_ints_arrive_as_the_int64_values_fed(sc, tmp_path, no_leftovers):
    # CSV lines parsed as TFoS's examples do: lists of Python ints. The feed sends lists of
    # ints in 0..255 as uint8 and the node widens them back; a partition holding a 300 goes
    # as int64.
    lines = [",".join(map(str, [i % 10] + [(i * 7 + j) % 256 for j in range(6)]))
             for i in range(500)]
    lines[321] = "1,300,0,0,0,0,7"

    def parse(line):
        values = [int(x) for x in line.split(",")]
        return values[1:], values[0]

    cluster = start(sc, feedfuns.infer_pixels, tmp_path, n=1)
    out = cluster.inference(sc.parallelize(lines, 3).map(parse)).collect()
    cluster.shutdown(timeout=60)
    pixels = [parse(line)[0] for line in lines]
    assert out == [f"int64 {sum(p)} {p[-1]}" for p in pixels]


def test_dataframe_inference_returns_a_dataframe(sc, tmp_path, no_leftovers):
    from pyspark.sql import SparkSession
    spark = SparkSession(sc)
    df = spark.createDataFrame([(i, [float(i)] * 3) for i in range(1000)],
                               "id long, x array<float>").repartition(3)
    cluster = start(sc, feedfuns.infer_frame, tmp_path)
    # Output types learnt from one row; only the id kept from the input.
    out = cluster.inference(df, keep_columns=["id"])
    assert out.columns == ["id", "twice", "vec"]
    rows = out.collect()
    assert sorted(r["id"] for r in rows) == list(range(1000))
    assert all(r["twice"] == 2 * r["id"] and r["vec"] == [float(r["id"]), 1.0] for r in rows)
    # Given types, every input column kept, further DataFrame operations on the result.
    typed = cluster.inference(df, schema="twice int, vec array<float>")
    assert typed.schema.simpleString() == \
        "struct<id:bigint,x:array<float>,twice:int,vec:array<float>>"
    assert typed.filter("twice % 4 = 0").count() == 500
    with pytest.raises(Exception, match=r"returned 2 result column\(s\)"):
        cluster.inference(df, schema="twice long").collect()
    with pytest.raises(ConfigError, match=r"keep_columns \['nope'\]"):
        cluster.inference(df, keep_columns=["nope"])
    cluster.shutdown(timeout=60)


def test_inference_count_mismatch_names_partition_and_counts(sc, tmp_path, no_leftovers):
    cluster = start(sc, feedfuns.infer_short, tmp_path)
    # Whichever partition a node takes first (Spark decides) fails on its first batch.
    with pytest.raises(SparkTFError) as info:  # not Spark's PythonException
        cluster.inference(dataRDD=uneven_rdd(sc)).collect()
    found = re.search(r"returned (\d+) results for (\d+) rows of partition (\d+)",
                      str(info.value))
    assert found, info.value
    results, rows, partition = map(int, found.groups())
    assert rows == min(SIZES[partition], 10) and results == rows - 1, info.value
    with pytest.raises(NodeError):
        cluster.shutdown(timeout=60)


def test_terminate_skips_the_rest_quickly(sc, tmp_path, no_leftovers):
    cluster = start(sc, feedfuns.terminate_early, tmp_path)
    t0 = time.monotonic()
    cluster.train(uneven_rdd(sc), num_epochs=3)
    assert time.monotonic() - t0 < 30
    cluster.shutdown(timeout=60)
    assert len(results(tmp_path, "terminated")) == 2


def test_node_crash_mid_feed_raises_on_driver(sc, tmp_path, no_leftovers):
    cluster = start(sc, feedfuns.crash_after_first_batch, tmp_path)
    # Far more data than the nodes buffer, so the crash happens while feeding.
    big = sc.parallelize(range(200000), 4).map(lambda i: (np.zeros(4, "float32"), i))
    t0 = time.monotonic()
    with pytest.raises(NodeError, match="node exploded mid-feed") as err:
        cluster.train(big, num_epochs=1)
    # The headline names the node, then its exception (as in TENSORFLOW mode).
    assert str(err.value).splitlines()[0].endswith("failed: RuntimeError: node exploded mid-feed")
    assert time.monotonic() - t0 < 10
    with pytest.raises(NodeError):
        cluster.shutdown(timeout=60)


def test_bad_rows_are_reported_with_partition_and_index(sc, tmp_path, no_leftovers):
    cluster = start(sc, feedfuns.count_rows, tmp_path)
    rows = [(np.zeros(4, "float32"), i) for i in range(10)]
    bad = sc.parallelize([rows, rows[:3] + [None] + rows[4:]], 2).flatMap(lambda x: x)
    with pytest.raises(FeedError, match=r"partition 1, row 3: the row is None"):
        cluster.train(bad, num_epochs=1)
    mixed = sc.parallelize([rows[:5] + [(np.zeros(3, "float32"), 5)]], 1).flatMap(lambda x: x)
    with pytest.raises(FeedError, match=r"partition 0, row 5: field '_0'"):
        cluster.train(mixed, num_epochs=1)
    with pytest.raises(Exception):
        cluster.train(uneven_rdd(sc), num_epochs=0)
    # The user's own code in the fed RDD's lineage: its exception, named, from the first
    # attempt of the task (Spark's retries of a feeding task fail at once).
    t0 = time.monotonic()
    parsed = sc.parallelize(["1", "2", "x"], 1).map(lambda s: (np.zeros(4, "float32"), int(s)))
    with pytest.raises(FeedError, match=r"partition 0: ValueError: invalid literal for int"):
        cluster.train(parsed, num_epochs=1)
    assert time.monotonic() - t0 < 10
    cluster.shutdown(timeout=60)


def test_feed_timeout_names_the_node(sc, tmp_path, no_leftovers):
    from sparktf.errors import FeedTimeout
    cluster = start(sc, feedfuns.stall, tmp_path)
    # 80 MB: more than the nodes' buffers and sockets hold.
    big = sc.parallelize(range(20000), 1).map(lambda i: (np.zeros(1024, "float32"), i))
    t0 = time.monotonic()
    with pytest.raises(FeedTimeout, match=r"TF node worker:\d is alive but took no data for 2s"):
        cluster.train(big, num_epochs=1, feed_timeout=2)
    print(f"FeedTimeout after {time.monotonic() - t0:.1f}s")
    with pytest.raises(ShutdownTimeout):  # the stalled nodes are stopped
        cluster.shutdown(timeout=3)


def test_mwms_training_through_next_batch(sc, tmp_path, no_leftovers):
    rdd = sc.parallelize(range(2), 2).flatMap(
        lambda p: [(np.full(4, i % 7, "float32"), i) for i in range(p * 1000, p * 1000 + 1000)])
    cluster = start(sc, feedfuns.mwms_next_batch, tmp_path, batch_size=50)
    cluster.train(rdd, num_epochs=1)
    cluster.shutdown(timeout=300)
    got = results(tmp_path, "nb")
    assert [r["steps"] for r in got] == [20, 20] and sum(r["rows"] for r in got) == 2000
    np.testing.assert_allclose(np.array(got[0]["weights"][0]), np.array(got[1]["weights"][0]))


def test_large_rows_are_bounded_in_bytes(sc, tmp_path, no_leftovers):
    # 400 KB rows (100,000 float32): 240 MB in all, 120 MB a partition. A 4,096-row chunk
    # would be a whole partition; chunks of ~4 MB and 8 of them buffered bound the node.
    big = sc.parallelize(range(2), 2).flatMap(
        lambda p: ((np.zeros(100_000, "float32"), i) for i in range(300)))
    cluster = start(sc, feedfuns.stall_then_read, tmp_path, n=1, stall=8)
    cluster.train(big, num_epochs=1)
    cluster.shutdown(timeout=120)
    got = results(tmp_path, "stall")
    assert got[0]["rows"] == 600
    assert got[0]["growth_mb"] < 64, got


def test_backpressure_bounds_node_memory(sc, tmp_path, no_leftovers, caplog):
    # About 500 MB of rows, ten times what the nodes' buffers hold.
    big = sc.parallelize(range(4), 4).flatMap(
        lambda p: ((np.zeros(784, "float32"), i) for i in range(40000)))
    cluster = start(sc, feedfuns.slow_reader_memory, tmp_path)
    cluster.train(big, num_epochs=1)
    cluster.shutdown(timeout=120)
    got = results(tmp_path, "mem")
    assert sum(r["rows"] for r in got) == 160000
    # Progress while feeding (every 5 s), and the epoch summary with rows per node.
    assert "sparktf train epoch 1/1: " in caplog.text and "partitions fed in" in caplog.text
    assert "sparktf train epoch 1/1: 160000 rows in" in caplog.text
    # Progress counts this feed job's 4 partitions, not the barrier job's tasks too.
    assert "of 4 partitions fed in" in caplog.text, caplog.text
    for r in got:
        assert r["growth_mb"] < 150, r
