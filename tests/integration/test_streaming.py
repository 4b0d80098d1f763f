"""Streaming against real Spark: DStreams, Structured Streaming, the graceful stop.

Every test checks that each row reaches the nodes exactly once (or that each
result is written exactly once), and ``no_leftovers`` that no process is left.
"""

import contextlib
import glob
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from pyspark import cloudpickle

from conftest import sparktf_processes, wait_no_sparktf_processes
from servers.procs import live_processes

import streamfuns
from exactly_once_job import stream as source_stream
from sparktf import TFCluster
from sparktf.errors import FeedError, NodeError

cloudpickle.register_pickle_by_value(streamfuns)
pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))
#: Partition sizes of the five micro-batches of the queueStream tests (uneven, some empty).
BATCHES = [[3, 50, 0], [120], [7, 0, 7, 7], [0, 1], [200, 5]]


@pytest.fixture(autouse=True)
def stop_dir(tmp_path, monkeypatch):
    """Stop files go to the test's directory, not the home directory."""
    path = tmp_path / "stop"
    monkeypatch.setenv("SPARKTF_STOP_DIR", str(path))
    return path


def start(sc, fn, out, n=2, **kw):
    max_restarts = kw.pop("max_restarts", 0)
    return TFCluster.run(sc, fn, {"out": str(out), **kw}, n,
                         input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120,
                         max_restarts=max_restarts)


def queue_rdds(sc):
    """The BATCHES as RDDs of (features, id) rows with globally unique ids."""
    rdds, first = [], 0
    for sizes in BATCHES:
        def part(p, _, sizes=sizes, first=first):
            start = first + sum(sizes[:p])
            return [(np.full(2, p, dtype="float32"), start + i) for i in range(sizes[p])]
        rdds.append(sc.parallelize(range(len(sizes)), len(sizes)).mapPartitionsWithIndex(part))
        first += sum(sizes)
    return rdds, first


def checkpoints(out):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "ckpt-*.json")))]


def when(event, action):
    """Run ``action`` in a thread once ``event`` is set (or after 120 s)."""
    def run():
        event.wait(120)
        action()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_dstream_training_every_row_once_and_request_stop(sc, tmp_path, no_leftovers):
    from pyspark.streaming import StreamingContext
    ssc = StreamingContext(sc, 0.5)
    rdds, total = queue_rdds(sc)
    stream = ssc.queueStream(rdds, oneAtATime=True, default=sc.emptyRDD())
    cluster = start(sc, streamfuns.train_batches, tmp_path)
    assert cluster.train(stream) is None
    fed, done = [], threading.Event()

    def seen(rdd):  # runs after sparktf's feed of the same micro-batch
        if rdd.getNumPartitions():
            fed.append(1)
            if len(fed) == len(BATCHES):
                done.set()

    stream.foreachRDD(seen)
    stopped = []
    when(done, lambda: (stopped.append(time.monotonic()), cluster.request_stop("test")))
    ssc.start()
    cluster.shutdown(ssc)
    assert done.is_set() and time.monotonic() - stopped[0] < 10, "shutdown(ssc) < 10 s"
    got = checkpoints(tmp_path)
    ids = sorted(i for c in got for i in c["ids"])
    assert ids == list(range(total)), "every row reaches exactly one node once"
    for c in got:
        batch_ids = [b for b, _ in c["batches"]]
        assert len(batch_ids) == len(BATCHES) and batch_ids == sorted(set(batch_ids))
    assert got[0]["batches"][0][0] == got[1]["batches"][0][0], "nodes share the batch ids"
    assert not os.listdir(tmp_path / "stop"), "the stop file is removed"


def test_dstream_stops_when_every_node_terminates(sc, tmp_path, no_leftovers):
    from pyspark.streaming import StreamingContext
    ssc = StreamingContext(sc, 0.5)
    rdds, _ = queue_rdds(sc)
    stream = ssc.queueStream(rdds, oneAtATime=True, default=sc.emptyRDD())
    cluster = start(sc, streamfuns.count_and_stop, tmp_path, stop_after=20)
    cluster.train(stream)
    ssc.start()
    started = time.monotonic()
    cluster.shutdown(ssc)  # no stop request: the nodes' terminate() ends the stream
    assert time.monotonic() - started < 30


def test_dstream_node_failures_restart_then_raise(sc, tmp_path, no_leftovers):
    """max_restarts=1.  A node fails mid-stream (in the second micro-batch, after the
    feed job of that micro-batch ended: its rows were buffered, not trained on): the cluster
    restarts, the interrupted micro-batch is fed again and the stream goes on, every row
    trained on exactly once.  A second failure (a poisoned row in a last micro-batch)
    finds no restart left: shutdown(ssc) raises the node's error within seconds and the
    StreamingContext is stopped."""
    from pyspark.streaming import StreamingContext
    ssc = StreamingContext(sc, 0.5)
    rdds, total = queue_rdds(sc)
    poison = sc.parallelize([(np.zeros(2, "float32"), -1)], 1)
    stream = ssc.queueStream(rdds + [poison], oneAtATime=True, default=sc.emptyRDD())
    cluster = start(sc, streamfuns.train_batches, tmp_path, fail_after=60, batch_size=10,
                    fail_delay=1, max_restarts=1)
    cluster.train(stream)
    ssc.start()
    with pytest.raises(NodeError, match="ValueError: boom mid-stream"):
        cluster.shutdown(ssc)
    assert time.time() - json.load(open(tmp_path / "poisoned")) < 10, "raised within 10 s"
    assert ssc._jssc.getState().toString() == "STOPPED"
    assert cluster.restarts == 1
    got = checkpoints(tmp_path)
    assert sorted(i for c in got for i in c["ids"]) == list(range(total)), \
        "every row of the five micro-batches trained on exactly once across the restart"
    assert [c["attempts"] for c in got] == [[0, 1], [0, 1]]


def _write_lines(directory, name, lines):
    """Write a file where textFileStream sees it complete (rename into place)."""
    tmp = directory.parent / f".{name}"
    tmp.write_text("".join(f"{line}\n" for line in lines))
    os.replace(tmp, directory / name)


def _saved(prefix):
    out = []
    for path in glob.glob(f"{prefix}-*/part-*"):
        out += open(path).read().splitlines()
    return out


def test_dstream_inference_text_files_restart_and_the_stop_command(sc, tmp_path, stop_dir,
                                                                   caplog, no_leftovers):
    """textFileStream inference, 3 files x 200 lines.  A node fails in the middle of the
    second file's micro-batch (max_restarts=1): the cluster restarts and that micro-batch is
    scored again; a wrong-token stop command is refused, the real one stops the stream:
    the saved results hold each of the 600 lines' results exactly once."""
    from pyspark.streaming import StreamingContext
    indir = tmp_path / "in"
    indir.mkdir()
    ssc = StreamingContext(sc, 1)
    lines = ssc.textFileStream(str(indir))
    persisted = len(sc._jsc.getPersistentRDDs())
    cluster = start(sc, streamfuns.infer_lines, tmp_path, fail_on="b150", max_restarts=1)
    results = cluster.inference(lines)
    results.saveAsTextFiles(str(tmp_path / "out" / "pred"))
    counted, first, done = [0], threading.Event(), threading.Event()

    def count(rdd):  # runs after the save of the same micro-batch
        counted[0] += rdd.count()
        if counted[0] >= 200:
            first.set()
        if counted[0] >= 600:
            done.set()

    lines.foreachRDD(count)
    stop_file = cluster.stop_command()
    assert stop_file.startswith(str(stop_dir)) and os.stat(stop_file).st_mode & 0o777 == 0o600
    bad = tmp_path / "bad.stop"
    info = json.load(open(stop_file))
    bad.write_text(json.dumps({**info, "token": "00" * 32}))
    bad.chmod(0o600)
    cli = [sys.executable, "-m", "sparktf", "stop"]
    outcome = {}

    def producer():
        _write_lines(indir, "f0.txt", [f"a{i},{i}" for i in range(200)])
        first.wait(60)
        # A wrong token is refused and logged; the stream goes on.
        outcome["bad"] = subprocess.run(cli + [str(bad)], capture_output=True, text=True)
        _write_lines(indir, "f1.txt", [f"b{i},{i}" for i in range(200)])
        time.sleep(1.5)
        _write_lines(indir, "f2.txt", [f"c{i},{i}" for i in range(200)])
        done.wait(60)
        outcome["time"] = time.monotonic()
        outcome["good"] = subprocess.run(cli + [stop_file, "--reason", "test"],
                                         capture_output=True, text=True)

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    ssc.start()
    cluster.shutdown(ssc)
    thread.join(10)
    assert time.monotonic() - outcome["time"] < 10
    assert outcome["bad"].returncode == 1 and "refused" in outcome["bad"].stderr
    assert outcome["good"].returncode == 0, outcome["good"].stderr
    assert "rejected a stop request" in caplog.text
    assert info["token"] not in caplog.text
    assert cluster.restarts == 1 and "scoring it again on the restarted cluster" in caplog.text
    assert len(sc._jsc.getPersistentRDDs()) == persisted, "the results are unpersisted"
    expected = sorted(f"{k}{i}={2 * i}" for k in "abc" for i in range(200))
    assert sorted(_saved(tmp_path / "out" / "pred")) == expected
    assert not os.path.exists(stop_file)


@pytest.mark.parametrize("source", ["file", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_structured_training_batch_ids_and_replay_skip(sc, tmp_path, no_leftovers, source,
                                                       request):
    """A checkpointed query; its last commit is lost (as when a driver dies between the
    sink and the commit), so the restarted query replays that micro-batch with the same
    id: the nodes skip it, and every row is trained on exactly once. From Parquet files
    (one per micro-batch) or a Kafka topic of two partitions."""
    from pyspark.sql import SparkSession
    spark = SparkSession(sc)
    indir, ckpt = tmp_path / "in", str(tmp_path / "query-ckpt")
    indir.mkdir()
    if source == "kafka":
        broker = request.getfixturevalue("kafka")
        topic = broker.create_topic("train-replay", 2)
        stream = source_stream(spark, "kafka", {"bootstrap": broker.bootstrap, "topic": topic}) \
            .selectExpr("CAST(id AS DOUBLE) AS x", "id")

        def add_rows(n, first):
            broker.produce(topic, [str(i) for i in range(first, first + n)],
                           lambda i, value: int(value) % 2)
    else:
        stream = spark.readStream.schema("x double, id long").option("maxFilesPerTrigger", 1) \
            .parquet(str(indir))

        def add_rows(n, first):
            spark.createDataFrame([(float(i), i) for i in range(first, first + n)],
                                  "x double, id long").coalesce(1).write.mode("append") \
                .parquet(str(indir))

    add_rows(100, 0)
    cluster = start(sc, streamfuns.train_batches, tmp_path)
    query = cluster.train(stream, checkpoint_location=ckpt, trigger={"availableNow": True})
    query.awaitTermination(120)
    add_rows(50, 100)
    query = cluster.train(stream, checkpoint_location=ckpt, trigger={"availableNow": True})
    query.awaitTermination(120)
    # Lose the last commit: the next query replays micro-batch 1.
    for name in ("1", ".1.crc"):  # the commit and its checksum file
        os.remove(os.path.join(ckpt, "commits", name))
    add_rows(30, 150)
    query = cluster.train(stream, checkpoint_location=ckpt, trigger={"availableNow": True})
    query.awaitTermination(120)
    cluster.shutdown(timeout=60)
    got = checkpoints(tmp_path)
    assert sorted(i for c in got for i in c["ids"]) == list(range(180))
    for c in got:
        assert [b for b, _ in c["batches"]] == [0, 1, 2]
        assert [b for b, _ in c["skipped"]] == [1]


def test_structured_inference_to_checkpointed_parquet_exactly_once(sc, tmp_path, no_leftovers):
    """Streaming DataFrame in, streaming DataFrame out: two availableNow runs of the same
    checkpointed query, then a running one stopped by shutdown(query)."""
    import feedfuns
    from pyspark.sql import SparkSession
    spark = SparkSession(sc)
    indir, out, ckpt = tmp_path / "in", str(tmp_path / "out"), str(tmp_path / "ckpt")

    def add(first, n):
        spark.createDataFrame([(i,) for i in range(first, first + n)], "id long") \
            .coalesce(1).write.mode("append").parquet(str(indir))

    add(0, 100)
    stream = spark.readStream.schema("id long").parquet(str(indir))
    cluster = start(sc, feedfuns.infer_frame, tmp_path)
    preds = cluster.inference(stream, schema="twice long, vec array<double>",
                              keep_columns=["id"])
    assert preds.isStreaming and preds.columns == ["id", "twice", "vec"]

    def query(**trigger):
        return preds.writeStream.format("parquet").option("checkpointLocation", ckpt) \
            .option("path", out).trigger(**trigger).start()

    query(availableNow=True).awaitTermination(120)
    add(100, 50)
    query(availableNow=True).awaitTermination(120)  # restarts from the checkpoint
    add(150, 25)
    running = query(processingTime="1 second")
    when_done = threading.Event()
    threading.Thread(target=lambda: (running.processAllAvailable(), when_done.set()),
                     daemon=True).start()
    when(when_done, cluster.request_stop)
    cluster.shutdown(running)
    assert not running.isActive
    rows = spark.read.parquet(out).collect()
    assert sorted(r["id"] for r in rows) == list(range(175)), "every row exactly once"
    assert all(r["twice"] == 2 * r["id"] and r["vec"] == [float(r["id"]), 1.0] for r in rows)


#: Ids of the three phases of the exactly-once test (file-source ids are FILE_IDS + these).
PHASES = [range(0, 40), range(40, 100), range(100, 140)]
FILE_IDS = 10000
#: The Kafka message the node stalls on (phase 2): the driver is killed meanwhile.
STALL = 40


def _committed(out):
    """Names of the files a Parquet sink committed (listed in its ``_spark_metadata`` log)."""
    names = set()
    for path in glob.glob(os.path.join(out, "_spark_metadata", "[0-9]*")):
        with open(path) as f:
            for line in f.read().splitlines()[1:]:  # first line: the log's version
                entry = json.loads(line)
                if entry["action"] == "add":
                    names.add(entry["path"].rsplit("/", 1)[-1])
    return names


def _uncommitted(out):
    """Parquet files in the sink's directory that no committed micro-batch lists."""
    return sorted({os.path.basename(p) for p in glob.glob(os.path.join(out, "part-*"))}
                  - _committed(out))


def _wait_for(condition, what, timeout=90):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class _Driver:
    """exactly_once_job.py in its own process (session), spoken to line by line."""

    def __init__(self, config, log):
        env = dict(os.environ, PYSPARK_PYTHON=sys.executable,
                   PYSPARK_DRIVER_PYTHON=sys.executable,
                   SPARKTF_STOP_DIR=os.path.join(os.path.dirname(config), "stop"))
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "exactly_once_job.py"), config],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                env=env, start_new_session=True, cwd=os.path.dirname(config))
        self.pid = int(self.expect("STREAMING").split()[1])

    def expect(self, word, timeout=120):
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while sel.select(max(0.0, deadline - time.monotonic())):
                line = self.proc.stdout.readline()
                if not line:
                    break
                if line.startswith(word):
                    return line
        with open(self.log, errors="replace") as f:
            tail = f.read()[-3000:]
        raise AssertionError(f"the driver did not print {word}; its log ends:\n{tail}")

    def say(self, command, answer):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(answer)

    def kill_group(self):
        """Cleanup only: SIGKILL whatever is left of the driver's process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture(scope="module")
def killed_and_restarted(kafka, sc, tmp_path_factory):
    """One driver process streams a Kafka topic and a file directory through one TF
    cluster into Parquet (checkpointed); it is killed with SIGKILL while a micro-batch of
    each source is in flight (one of its two tasks written, the other stalled in a node),
    then started again on the same checkpoints while more messages arrive.

    Returns the rows of each source's output (read by Spark, which honours the sink's
    log), the uncommitted files the kill left, and how long the processes took to go.
    """
    from pyspark.sql import SparkSession
    from servers.kafka import spark_jars

    import pyarrow as pa
    import pyarrow.parquet as pq
    work = tmp_path_factory.mktemp("exactly-once")
    indir, markers = work / "in", work / "markers"
    indir.mkdir()
    markers.mkdir()
    topic = kafka.create_topic("exactly-once", 2)
    config = work / "config.json"
    config.write_text(json.dumps({
        "work": str(work), "jars": spark_jars(),
        "sources": {"kafka": {"bootstrap": kafka.bootstrap, "topic": topic},
                    "file": {"dir": str(indir)}},
        "args": {"stall": [STALL], "markers": str(markers), "delay": 600}}))

    def produce(ids):
        kafka.produce(topic, [str(i) for i in ids], lambda i, value: int(value) % 2)

    def write(name, *parts):  # a phase directory with one file per part, renamed into place
        tmp = work / f".{name}"
        tmp.mkdir()
        for k, ids in enumerate(parts):
            pq.write_table(pa.table({"id": pa.array([FILE_IDS + i for i in ids], pa.int64())}),
                           tmp / f"part-{k}.parquet")
        os.replace(tmp, indir / name)

    def ours():  # the driver, its JVM and every sparktf process
        return sparktf_processes() + live_processes(lambda cmd: str(work) in cmd)

    out = {kind: str(work / f"out-{kind}") for kind in ("kafka", "file")}
    began, times = time.monotonic(), {}

    def lap(what):
        times[what] = round(time.monotonic() - began, 1)

    produce(PHASES[0])
    write("p1", PHASES[0])
    first = _Driver(str(config), str(work / "driver-1.log"))
    lap("first driver streaming")
    try:
        first.say("sync", "SYNCED")
        lap("phase 1 committed")
        produce(PHASES[1])  # the node stalls on STALL: that micro-batch is in flight
        _wait_for(lambda: os.path.exists(markers / f"stalled-{STALL}"), "the stall")
        # Two files, two tasks: one waits behind the stalled node, one is written.
        write("p2", PHASES[1][:30], PHASES[1][30:])
        _wait_for(lambda: _uncommitted(out["file"]), "a written, uncommitted file")
        orphans = {kind: _uncommitted(path) for kind, path in out.items()}
        nodes = {pid for pid, _ in ours()}
        os.kill(first.pid, signal.SIGKILL)
        killed = time.monotonic()
        _wait_for(lambda: not {pid for pid, _ in ours()} & nodes,
                  "the nodes, the driver's JVM and its workers to end after kill -9", 30)
        gone = time.monotonic() - killed
        lap("killed, no process left")
    finally:
        first.kill_group()
    second = _Driver(str(config), str(work / "driver-2.log"))
    lap("second driver streaming")
    try:
        produce(PHASES[2])
        write("p3", PHASES[2])
        second.say("sync", "SYNCED")
        lap("replay and phase 3 committed")
        second.say("stop", "STOPPED")
        assert second.proc.wait(60) == 0
        lap("stopped")
    finally:
        second.kill_group()
    left = wait_no_sparktf_processes()
    assert not left, f"sparktf processes left behind: {left}"
    spark = SparkSession(sc)
    rows = {kind: [(r["id"], r["pred"]) for r in spark.read.parquet(path).collect()]
            for kind, path in out.items()}
    print(f"kill -9 to no process left: {gone:.1f} s; uncommitted files left by the "
          f"kill: {orphans}; seconds since the start: {times}")
    return {"rows": rows, "orphans": orphans}


@pytest.mark.parametrize("source", ["kafka", "file"])
def test_structured_inference_exactly_once_across_a_killed_driver(killed_and_restarted,
                                                                  source):
    """Every message exactly once in the Parquet output, with the right prediction, although
    the driver was killed with a micro-batch half written and replayed after the restart."""
    base = 0 if source == "kafka" else FILE_IDS
    rows = killed_and_restarted["rows"][source]
    assert sorted(i for i, _ in rows) == [base + i for p in PHASES for i in p]
    assert all(pred == 3 * i + 1 for i, pred in rows)
    if source == "file":  # written by the killed micro-batch, not in the sink's log
        assert killed_and_restarted["orphans"]["file"]


def test_dstream_bad_row_fails_the_batch_naming_partition_and_row(sc, tmp_path, no_leftovers):
    from pyspark.streaming import StreamingContext
    ssc = StreamingContext(sc, 0.5)
    good = sc.parallelize([(np.zeros(2, "float32"), i) for i in range(10)], 2)
    bad = sc.parallelize([(np.zeros(2, "float32"), i) for i in range(6)] + [None], 2)
    stream = ssc.queueStream([good, bad], oneAtATime=True, default=sc.emptyRDD())
    cluster = start(sc, streamfuns.train_batches, tmp_path)
    cluster.train(stream)
    ssc.start()
    started = time.monotonic()
    with pytest.raises(FeedError, match=r"sparktf stream batch .*partition 1, row 3"):
        cluster.shutdown(ssc)
    assert time.monotonic() - started < 30


def test_sigterm_to_spark_submit_driver_completes_the_batch_in_flight(tmp_path, no_leftovers):
    indir, out, busy = tmp_path / "in", tmp_path / "out", tmp_path / "busy"
    indir.mkdir()
    busy.mkdir()
    pid_file, log = tmp_path / "driver.pid", tmp_path / "driver.log"
    cmd = [os.path.join(os.path.dirname(sys.executable), "spark-submit"), "--master", "local[2]",
           "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
           "--conf", "spark.ui.showConsoleProgress=false",
           os.path.join(HERE, "stream_job.py"), str(indir), str(out), str(busy), str(pid_file)]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable,
               SPARKTF_STOP_DIR=str(tmp_path / "stop"))
    with open(log, "wb") as output:
        driver = subprocess.Popen(cmd, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: pid_file.exists() or driver.poll() is not None,
                  "the driver to start its stream", timeout=120)
        assert pid_file.exists(), log.read_text(errors="replace")[-3000:]
        pid = int(pid_file.read_text())
        _write_lines(indir, "f0.txt", [f"a{i},{i}" for i in range(200)])
        _wait_for(lambda: os.listdir(busy), "the micro-batch to reach the node", timeout=60)
        os.kill(pid, signal.SIGTERM)  # the Python driver (spark-submit's JVM is its parent)
        sent = time.monotonic()
        driver.wait(timeout=60)
        text = log.read_text(errors="replace")
        assert time.monotonic() - sent < 10, text[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, text[-3000:]
    assert "stopping the stream gracefully: signal SIGTERM" in text
    assert sorted(_saved(out / "pred")) == sorted(f"a{i}={2 * i}" for i in range(200))
