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


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rows", type=int, default=200_000, help="rows of 784 float32 + label")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3, help="runs per variant; the median counts")
    p.add_argument("--skip-tfos", action="store_true", help="do not measure TensorFlowOnSpark")
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


def spark_context(extra_path: str | None = None):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark import SparkConf, SparkContext
    path = [HERE] + ([extra_path] if extra_path else []) + sys.path
    if extra_path:
        sys.path.insert(0, extra_path)
    sys.path.insert(0, HERE)
    conf = (SparkConf().setMaster("local-cluster[2,1,2048]").setAppName("sparktf-benchmark")
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
