"""The MNIST examples and YARN faults in one application, spark-submitted by test_yarn.py.

Cluster deploy mode, with the environment packed by venv-pack: the application
master localises the archive once per NodeManager, so every phase shares that cost.
The driver's output is in the ApplicationMaster's container log, so each phase writes
what it saw as JSON under ``--base``/report (on HDFS) for the test to read:

1. ``spark.json``: the SPARK-mode example (``mnist_spark.run``) from the HDFS CSV,
   exporting to HDFS.
2. ``restart.json``: the TENSORFLOW-mode example (``mnist_tf.run``: Parquet from
   ``hdfs://``, checkpoints and export on ``hdfs://``) with ``max_restarts=1``.  On the
   first attempt worker 1 kills its executor's JVM (SIGKILL: YARN sees the container
   exit) at a fixed point: in its checkpoint callback after epoch 0's save, once the
   chief's ``ckpt-1`` is on HDFS, and then takes no further step.  The run completes
   on the containers YARN gives back, resuming at epoch 1 (``worker-RANK.json`` tells).
3. ``reservation.json``: 3 nodes while YARN grants only 2 of the 3 executors asked for
   (the test sizes them so the third container never fits): ``ReservationTimeout``
   within ``reservation_timeout``, and its message.
4. ``running.json``: 2 idle nodes that run until the test kills the whole application
   through the ResourceManager's REST API.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

import mnist_spark
import mnist_tf
from pyspark import SparkContext

import sparktf
from sparktf import TFCluster, fs
from sparktf.errors import ReservationTimeout

#: Phase 3's wait for task slots, in seconds.
RESERVATION_TIMEOUT = 5


def write(report: str, name: str, **fields) -> None:
    """Write the report ``name`` whole, then rename it into place: the test waits for the
    name to exist and reads it at once (an HDFS file exists from its create, empty)."""
    partial = fs.join(report, f".{name}.partial")
    with fs.open_output(partial) as f:
        f.write(json.dumps(dict(fields, time=time.time())).encode())
    fs.rename(partial, fs.join(report, name))


def idle(args, ctx):
    """A node that waits until it is stopped."""
    threading.Event().wait(3600)


def lose_executor_then_train(args, ctx):
    """mnist_tf's main_fun; on attempt 0, worker 1 kills its executor after epoch 0's save."""
    if ctx.attempt == 0 and ctx.rank == 1:
        from sparktf.node import procs

        callback = sparktf.CheckpointManager.keras_callback

        def keras_callback(manager, *a, **kw):
            saver = callback(manager, *a, **kw)
            on_epoch_end = saver.on_epoch_end

            def kill_after_first_save(epoch, logs=None):
                on_epoch_end(epoch, logs)
                if epoch != 0:
                    return
                # The chief uploads ckpt-1 after this collective save: the chief is now
                # blocked in epoch 1's first step, waiting for this worker.
                deadline = time.monotonic() + 60
                while (manager.latest_checkpoint or "").rsplit("-", 1)[-1] != "1":
                    if time.monotonic() > deadline:
                        raise RuntimeError("ckpt-1 not on HDFS within 60 s")
                    time.sleep(0.2)   # another process writes it: nothing to wait on
                write(args.report_dir, "killed.json", executor=ctx.executor_id,
                      sparktf=sparktf.__file__, python=sys.executable)
                os.kill(procs.executor_jvm_pid(), signal.SIGKILL)
                # As if the node had gone with its container: no step of epoch 1 from here
                # (the node process outlives the JVM until its supervisor stops it).
                threading.Event().wait()

            saver.on_epoch_end = kill_after_first_save
            return saver

        sparktf.CheckpointManager.keras_callback = keras_callback
    mnist_tf.main_fun(args, ctx)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--csv", required=True, help="mnist_data_setup's csv/ directory")
    p.add_argument("--parquet", required=True, help="mnist_data_setup's parquet/ directory")
    p.add_argument("--base", required=True, help="where outputs and reports go")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps_per_epoch", type=int, default=20)
    a = p.parse_args()
    report = fs.join(a.base, "report")
    sc = SparkContext.getOrCreate()
    write(report, "started.json")

    args = mnist_spark.parser().parse_args([
        "--cluster_size", "2", "--images_labels", fs.join(a.csv, "train"),
        "--epochs", str(a.epochs), "--export_dir", fs.join(a.base, "spark-export")])
    mnist_spark.run(sc, args)
    write(report, "spark.json", sparktf=sparktf.__file__, python=sys.executable)

    args = mnist_tf.parser().parse_args([
        "--cluster_size", "2", "--images_labels", fs.join(a.parquet, "train"),
        "--format", "parquet",
        "--epochs", str(a.epochs), "--steps_per_epoch", str(a.steps_per_epoch),
        "--max_restarts", "1", "--model_dir", fs.join(a.base, "model"),
        "--export_dir", fs.join(a.base, "tf-export"), "--report_dir", report])
    cluster = mnist_tf.run(sc, args, main=lose_executor_then_train)
    write(report, "restart.json", restarts=cluster.restarts)

    # Both executors are up now (the restart needed them); the third is still pending.
    started = time.monotonic()
    try:
        TFCluster.run(sc, idle, args, 3, reservation_timeout=RESERVATION_TIMEOUT)
        write(report, "reservation.json", raised=None)
    except ReservationTimeout as e:
        write(report, "reservation.json", raised=type(e).__name__, message=str(e),
              seconds=time.monotonic() - started, timeout=RESERVATION_TIMEOUT)

    cluster = TFCluster.run(sc, idle, args, 2, reservation_timeout=120)
    write(report, "running.json", app=sc.applicationId)
    cluster.shutdown()   # returns only if the application is not killed
    write(report, "not-killed.json")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
