"""Run by test_gpus.py in its own process (its own SparkContext): GPUs from Spark's resource
scheduling on ``local-cluster``, with a discovery script that prints fake addresses, as Spark's
TorchDistributor tests do.  One worker with 3 cores and 3 "GPUs"; every task takes one.

``gpu_job.py OUT DISCOVERY_SCRIPT``: a cluster of ps:0, chief:0 and worker:0 with TensorBoard;
each node writes what it got (``CUDA_VISIBLE_DEVICES``, ``ctx.gpus``) and the chief also what
its TensorBoard process got.  Then a 4-node cluster that the 3 GPUs cannot hold must raise
ReservationTimeout within its reservation_timeout, and num_gpus=2 where Spark gives each task
one GPU must fail naming both numbers.  Prints one JSON line at the end.
"""

import json
import logging
import os
import sys
import time

from pyspark import SparkConf, SparkContext

from sparktf import ReservationTimeout, TFCluster


def tensorboard_env(log_dir: str, timeout: float = 90.0) -> dict:
    """The environment of the TensorBoard process serving ``log_dir`` (it starts beside us)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                if b"tensorboard.main" in cmd and log_dir.encode() in cmd:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        pairs = f.read().split(b"\0")
                    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
            except OSError:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no TensorBoard process for {log_dir} within {timeout} s")


def report(out, ctx):
    got = {"job": ctx.job_name, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "ctx_gpus": ctx.gpus}
    if ctx.job_name == "chief":
        got["tensorboard_visible"] = tensorboard_env(ctx.log_dir).get("CUDA_VISIBLE_DEVICES")
    with open(os.path.join(out, f"{ctx.job_name}-{ctx.task_index}.json"), "w") as f:
        json.dump(got, f)
    if ctx.job_name == "ps":
        time.sleep(600)  # a ps node serves until shutdown stops it
    # Return only after run() returned (it waits for every node and TensorBoard to be up).
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(out, "go")) and time.monotonic() < deadline:
        time.sleep(0.2)


def main() -> None:
    out, script = sys.argv[1], sys.argv[2]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(name)s %(levelname)s %(message)s")
    logging.getLogger("sparktf").setLevel(logging.INFO)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    conf = (SparkConf().setMaster("local-cluster[1,3,1536]").setAppName("sparktf-gpus")
            .set("spark.driver.host", "127.0.0.1").set("spark.ui.enabled", "false")
            .set("spark.executorEnv.PYTHONPATH", os.pathsep.join(sys.path))
            .set("spark.worker.resource.gpu.discoveryScript", script)
            .set("spark.worker.resource.gpu.amount", "3")
            .set("spark.executor.resource.gpu.amount", "3")
            .set("spark.task.resource.gpu.amount", "1"))
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    result = {}
    try:
        cluster = TFCluster.run(sc, report, out, num_executors=3, num_ps=1, master_node="chief",
                                tensorboard=True, reservation_timeout=120)
        open(os.path.join(out, "go"), "w").close()
        cluster.shutdown(timeout=120)
        t0 = time.monotonic()
        try:
            TFCluster.run(sc, report, out, num_executors=4, reservation_timeout=5)
            result["too_many"] = "no error"
        except ReservationTimeout as e:
            result["too_many"] = str(e)
        result["too_many_seconds"] = time.monotonic() - t0
        t0 = time.monotonic()
        try:  # each task holds 1 GPU: asking for 2 per node fails in the barrier task
            TFCluster.run(sc, report, out, num_executors=2, num_gpus=2, reservation_timeout=60)
            result["num_gpus"] = "no error"
        except Exception as e:
            result["num_gpus"] = f"{type(e).__name__}: {e}"
        result["num_gpus_seconds"] = time.monotonic() - t0
    finally:
        sc.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
