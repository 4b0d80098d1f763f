"""Shared set-up for the benchmarks: Spark, MNIST-shaped data, TensorFlowOnSpark 2.2.5.

Every benchmark measures its baseline in the same run and prints ratios, so
the figures compare like with like on whatever machine runs them.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
TFOS_DIR = os.path.join(HERE, ".tfos")


def parse_args(description: str, extra=None) -> argparse.Namespace:
    """The common options; ``extra(parser)`` adds a benchmark's own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rows", type=int, default=200_000, help="rows of 784 float32 + label")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3, help="runs per variant; the median counts")
    p.add_argument("--skip-tfos", action="store_true", help="do not measure TensorFlowOnSpark")
    if extra:
        extra(p)
    return p.parse_args()


def prepare_tfos() -> str | None:
    """Unpack TensorFlowOnSpark 2.2.5 from PyPI into benchmarks/.tfos, patched to run offline.

    Its ``util.get_ip_address`` connects a UDP socket to a public address to
    learn the host's IP, which fails without a network: the copy returns
    127.0.0.1 instead.  Returns the directory to put on PYTHONPATH.
    """
    pkg = os.path.join(TFOS_DIR, "tensorflowonspark")
    if not os.path.isdir(pkg):
        os.makedirs(TFOS_DIR, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                        TFOS_DIR, "tensorflowonspark==2.2.5"], check=True)
        wheel = glob.glob(os.path.join(TFOS_DIR, "tensorflowonspark-2.2.5-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            z.extractall(TFOS_DIR)
        util = os.path.join(pkg, "util.py")
        src = open(util).read()
        patched = "def get_ip_address():\n  return '127.0.0.1'\n\n\ndef _orig_get_ip_address():"
        src = src.replace("def get_ip_address():", patched)
        open(util, "w").write(src)
    return TFOS_DIR


def spark_context(extra_path: str | None = None, master: str = "local-cluster[2,1,2048]"):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark import SparkConf, SparkContext
    path = [HERE] + ([extra_path] if extra_path else []) + sys.path
    if extra_path:
        sys.path.insert(0, extra_path)
    sys.path.insert(0, HERE)
    conf = (SparkConf().setMaster(master).setAppName("sparktf-benchmark")
            .set("spark.driver.host", "127.0.0.1").set("spark.ui.enabled", "false")
            .set("spark.ui.showConsoleProgress", "false")
            .set("spark.executorEnv.PYTHONPATH", os.pathsep.join(path)))
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    return sc


def mnist_like_rdd(sc, rows: int, partitions: int):
    """A cached RDD of (float32[784] image, int label) rows."""
    def make(p, _):
        import numpy as np
        rng = np.random.default_rng(p)
        n = rows // partitions + (1 if p < rows % partitions else 0)
        images = rng.random((n, 784), dtype=np.float32)
        labels = rng.integers(0, 10, n)
        return [(images[i], int(labels[i])) for i in range(n)]
    rdd = sc.parallelize(range(partitions), partitions).mapPartitionsWithIndex(make).cache()
    assert rdd.count() == rows
    return rdd


#: The RDD row kinds TFoS users feed: numpy float32 and uint8 images, and Python lists of
#: ints (what ``parse()`` of a CSV line gives).
ROW_KINDS = ("numpy float32", "numpy uint8", "list of ints")


def rows_rdd(sc, rows: int, partitions: int, kind: str):
    """A cached RDD of (784-value image, int label) rows of the given ``ROW_KINDS`` kind."""
    def make(p, _):
        import numpy as np
        rng = np.random.default_rng(p)
        n = rows // partitions + (1 if p < rows % partitions else 0)
        labels = rng.integers(0, 10, n)
        if kind == "numpy float32":
            images = rng.random((n, 784), dtype=np.float32)
            return [(images[i], int(labels[i])) for i in range(n)]
        images = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        if kind == "numpy uint8":
            return [(images[i], int(labels[i])) for i in range(n)]
        return [(images[i].tolist(), int(labels[i])) for i in range(n)]
    rdd = sc.parallelize(range(partitions), partitions).mapPartitionsWithIndex(make).cache()
    assert rdd.count() == rows
    return rdd


#: The DataFrame image columns: Spark ``array<float>`` and a 784-byte ``binary`` image.
DF_KINDS = ("array<float>", "binary 784 bytes")


def image_df(spark, rows: int, partitions: int, kind: str = "array<float>"):
    """A cached DataFrame with an ``image`` column of the ``DF_KINDS`` kind and ``label long``
    (``spark``: a SparkSession, classic or Connect)."""
    if kind == "array<float>":
        image = ("transform(sequence(1, 784), i -> cast(((id * 31 + i * 17) % 256) / 255.0"
                 " as float))")
    else:
        image = ("unhex(concat_ws('', transform(sequence(1, 784),"
                 " i -> lpad(hex((id * 31 + i * 17) % 256), 2, '0'))))")
    df = spark.range(rows, numPartitions=partitions).selectExpr(
        f"{image} as image", "id % 10 as label").cache()
    assert df.count() == rows
    return df


def mnist_like_df(sc, rows: int, partitions: int):
    """A cached DataFrame with ``image array<float>`` and ``label long`` columns."""
    from pyspark.sql import SparkSession
    spark = SparkSession(sc)
    df = spark.range(rows, numPartitions=partitions).selectExpr(
        "transform(sequence(1, 784), i -> cast(((id * 31 + i * 17) % 256) / 255.0 as float))"
        " as image",
        "id % 10 as label").cache()
    assert df.count() == rows
    return df


def median_time(name: str, rows: int, fn, repeat: int) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs, printed as it is measured."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        print(f"  {name}: {times[-1]:.2f} s ({rows / times[-1]:,.0f} rows/s)", flush=True)
    return statistics.median(times)


def report(title: str, rows: int, results: dict[str, float], ratios: list[tuple[str, str, float]]):
    """Print rows/s per variant and the ratios with their targets."""
    print(f"\n{title} ({rows:,} rows, median of runs)")
    for name, secs in results.items():
        print(f"  {name:<40} {secs:8.2f} s  {rows / secs:12,.0f} rows/s")
    for a, b, target in ratios:
        if a in results and b in results:
            ratio = results[b] / results[a]
            verdict = "meets" if ratio >= target else "MISSES"
            print(f"  {a} / {b}: {ratio:6.2f}x (target >= {target:g}x: {verdict})")


def epoch_rate(sc, run, map_fun, tf_args, data, warmup, rows: int, name: str,
               num_nodes: int = 2, epochs: int = 1, **train_kw) -> float:
    """Rows/s of ``train(data, num_epochs=epochs, **train_kw)`` on a fresh cluster.

    The cluster first takes a warm-up epoch (larger than the nodes' buffers,
    with a partition for every executor) so that the consumers have started
    (imported TensorFlow) and every Python worker has fed before the measured
    epochs; cluster start and shutdown are not timed.
    """
    cluster = run(sc, map_fun, tf_args, num_nodes, 0, input_mode=1)
    try:
        cluster.train(warmup, num_epochs=1)
        t0 = time.perf_counter()
        cluster.train(data, num_epochs=epochs, **train_kw)
        secs = time.perf_counter() - t0
    finally:
        cluster.shutdown()
    print(f"  {name}: {secs:.2f} s ({epochs * rows / secs:,.0f} rows/s)", flush=True)
    return epochs * rows / secs


def epoch_rates(sc, run, map_fun, tf_args, data, warmup, rows: int, repeat: int, name: str,
                num_nodes: int = 2, **kw) -> float:
    """Median rows/s of :func:`epoch_rate` over ``repeat`` clusters."""
    return statistics.median(epoch_rate(sc, run, map_fun, tf_args, data, warmup, rows, name,
                                        num_nodes, **kw) for _ in range(repeat))


def timed_rate(name: str, rows: int, fn) -> float:
    """Rows/s of one run of ``fn()``, printed."""
    t0 = time.perf_counter()
    fn()
    secs = time.perf_counter() - t0
    print(f"  {name}: {secs:.2f} s ({rows / secs:,.0f} rows/s)", flush=True)
    return rows / secs


def take_turns(variants: dict, repeat: int, warm: tuple = ()) -> dict[str, list[float]]:
    """Each variant's rows/s in each of ``repeat`` rounds, the variants taking turns within
    a round, so that a change in the machine's load between rounds moves them alike
    (``variants``: name -> a function returning rows/s; those named in ``warm`` run once,
    untimed, first)."""
    for name in warm:
        variants[name]()
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            runs[name].append(fn())
    return runs


def report_rounds(title: str, runs: dict[str, list[float]],
                  ratios: list[tuple[str, str, float]]) -> None:
    """Print each variant's median rows/s and each ratio ``a / b`` as the median of the
    rounds' ratios (see :func:`take_turns`) against its target."""
    print(f"\n{title} (rows/s, median of {max(map(len, runs.values()))} rounds)")
    for name, rates in runs.items():
        print(f"  {name:<58} {statistics.median(rates):12,.0f} rows/s")
    for a, b, target in ratios:
        if a in runs and b in runs:
            per_round = [x / y for x, y in zip(runs[a], runs[b])]
            ratio = statistics.median(per_round)
            verdict = "meets" if ratio >= target else "MISSES"
            print(f"  {a} / {b}: {ratio:6.2f}x (rounds: "
                  + ", ".join(f"{r:.2f}" for r in per_round) + ")"
                  + (f" (target >= {target:g}x: {verdict})" if target > 0 else ""))


def median_rate(name: str, rows: int, fn, repeat: int, warm: bool = True) -> float:
    """Median rows/s of ``fn()`` over ``repeat`` runs, after one untimed run if ``warm``."""
    if warm:
        fn()
    return rows / median_time(name, rows, fn, repeat)


def report_rates(title: str, rates: dict[str, float],
                 ratios: list[tuple[str, str, float]]) -> list[tuple[str, str, float, float]]:
    """Print rows/s per variant and each ratio ``rate(a) / rate(b)`` against its target;
    return ``(a, b, ratio, target)`` for the ratios measured."""
    print(f"\n{title} (rows/s, median of runs)")
    for name, rate in rates.items():
        print(f"  {name:<58} {rate:12,.0f} rows/s")
    out = []
    for a, b, target in ratios:
        if a in rates and b in rates:
            ratio = rates[a] / rates[b]
            verdict = "meets" if ratio >= target else "MISSES"
            print(f"  {a} / {b}: {ratio:6.2f}x" + (f" (target >= {target:g}x: {verdict})"
                                                   if target > 0 else ""))
            out.append((a, b, ratio, target))
    return out


#: The kinds of processes :func:`cpu_seconds` reports, each with a fragment of the command
#: lines of its processes (the first that matches decides).
PROCESS_KINDS = (("executor JVMs", "CoarseGrainedExecutorBackend"),
                 ("driver JVM", "org.apache.spark.deploy.SparkSubmit"),
                 ("Python workers", "pyspark.daemon"),
                 ("Python workers", "pyspark/daemon"),
                 ("sparktf nodes", "sparktf.node.main"),
                 ("sinks", "sink.py"),
                 ("Flight nodes", "flight_node.py"))


def stat_fields(path: str) -> list[str] | None:
    """The fields of a ``/proc/<pid>[/task/<tid>]/stat`` file after the name (None if the
    process or thread is gone)."""
    try:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_of(fields: list[str], reaped: bool = False) -> float:
    """CPU seconds (user + system) in :func:`stat_fields` ``fields``; with ``reaped``, those
    of the exited children the process waited for too."""
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, str, list[str]]]:
    """pid -> (parent pid, command line, the /proc stat fields after the name)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(f"/proc/{entry}/stat")
        if fields is None:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(entry)] = (int(fields[1]), cmd, fields)
    return out


def _below(procs: dict[int, tuple[int, str, list[str]]], root: int) -> set[int]:
    """The pids of every process below ``root``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _kind(cmd: str) -> str | None:
    return next((k for k, fragment in PROCESS_KINDS if fragment in cmd), None)


def processes_of(kind: str) -> list[int]:
    """The pids of the running processes of :data:`PROCESS_KINDS` kind ``kind``."""
    return [pid for pid, (_, cmd, _) in _processes().items() if _kind(cmd) == kind]


def cpu_seconds(kinds: tuple[str, ...] | None = None) -> dict[str, float]:
    """CPU seconds so far (user + system) per :data:`PROCESS_KINDS` kind (those in ``kinds``,
    default all) of the processes below this one, and of every sparktf node (a node may
    outlive the Python worker that started it: run on an otherwise idle machine).

    A Python worker that exited has its time in its daemon's (reaped children's time).
    """
    wanted = kinds or tuple(dict(PROCESS_KINDS))
    total = dict.fromkeys(wanted, 0.0)
    procs = _processes()
    below = _below(procs, os.getpid())
    for pid, (_, cmd, fields) in procs.items():
        kind = _kind(cmd)
        if kind not in total or (pid not in below and kind != "sparktf nodes"):
            continue
        total[kind] += cpu_of(fields, reaped=kind == "Python workers")
    return total


class Sinks:
    """``n`` processes standing in for the nodes (``script``, by default ``sink.py``, with
    ``args``; each prints its port first); ``ports``; stopped by PID."""

    def __init__(self, n: int = 2, script: str = "sink.py", args: tuple = ()) -> None:
        self.procs = [subprocess.Popen([sys.executable, os.path.join(HERE, script), *args],
                                       stdout=subprocess.PIPE, text=True) for _ in range(n)]
        self.ports = [int(p.stdout.readline()) for p in self.procs]

    def __enter__(self) -> "Sinks":
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def transport_floor(ports: list[int]):
    """A ``foreachPartition`` function doing the least any feed of (image, label) rows to
    ``len(ports)`` nodes must do beyond Spark's ceiling: gather each ~4 MB chunk of rows
    into one contiguous buffer per column (``np.concatenate``; lists of ints through
    ``array.fromlist``) and write an equal share of it to each node's socket, with no
    checks, framing, MAC or acknowledgement."""
    def floor(it):
        import array
        import itertools
        import socket
        import numpy as np
        socks = [socket.create_connection(("127.0.0.1", port)) for port in ports]
        first = next(it, None)
        if first is None:
            return
        row_bytes = (first[0].nbytes if isinstance(first[0], np.ndarray)
                     else 8 * len(first[0])) + 8
        per_chunk = max(1, min(4096, (4 << 20) // row_bytes))
        it = itertools.chain([first], it)
        while True:
            rows = list(itertools.islice(it, per_chunk))
            if not rows:
                break
            if isinstance(rows[0][0], np.ndarray):
                images = np.concatenate([r[0] for r in rows]).reshape(len(rows), -1)
            else:
                flat = array.array("q")
                for r in rows:
                    flat.fromlist(r[0])
                images = np.frombuffer(flat, np.int64).reshape(len(rows), -1)
            labels = np.fromiter((r[1] for r in rows), np.int64, len(rows))
            bounds = np.linspace(0, len(rows), len(socks) + 1).astype(int)
            for sock, a, b in zip(socks, bounds, bounds[1:]):
                sock.sendall(images[a:b])
                sock.sendall(labels[a:b])
        for sock in socks:
            sock.close()
    return floor


def send_shares(batches, open_writers) -> int:
    """Write an equal share of every record batch to each of the writers that
    ``open_writers(schema)`` opens at the first batch (closed at the end); return the rows."""
    writers, n = None, 0
    for batch in batches:
        if writers is None:
            writers = open_writers(batch.schema)
        k = len(writers)
        bounds = [batch.num_rows * i // k for i in range(k + 1)]
        for w, a, b in zip(writers, bounds, bounds[1:]):
            w.write_batch(batch.slice(a, b - a))
        n += batch.num_rows
    for w in writers or ():
        w.close()
    return n


def arrow_transport_floor(ports: list[int]):
    """A ``mapInArrow`` function doing the least a DataFrame feed to ``len(ports)`` nodes
    must beyond Spark's ceiling: write an equal share of every record batch Spark gives
    to each node's socket as an Arrow IPC stream (no framing, MAC or acknowledgement)."""
    def floor(batches):
        import socket
        import pyarrow as pa
        socks = [socket.create_connection(("127.0.0.1", port)) for port in ports]
        files = [s.makefile("wb") for s in socks]
        n = send_shares(batches, lambda schema: [pa.ipc.new_stream(f, schema) for f in files])
        for f, s in zip(files, socks):
            f.close()
            s.close()
        yield pa.RecordBatch.from_pydict({"n": [n]})
    return floor


def flight_feed(ports: list[int]):
    """A ``mapInArrow`` function feeding an equal share of every record batch to each of
    ``len(ports)`` ``flight_node.py`` processes through Arrow Flight's ``do_put``."""
    def feed(batches):
        import pyarrow as pa
        import pyarrow.flight as flight
        clients = [flight.connect(f"grpc://127.0.0.1:{port}") for port in ports]
        n = send_shares(batches, lambda schema: [
            c.do_put(flight.FlightDescriptor.for_path("feed"), schema)[0] for c in clients])
        for c in clients:
            c.close()
        yield pa.RecordBatch.from_pydict({"n": [n]})
    return feed
