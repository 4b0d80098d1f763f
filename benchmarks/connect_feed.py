"""Spark Connect vs classic: the same DataFrame feed through both kinds of session, one run.

    .venv/bin/python benchmarks/connect_feed.py [--rows 200000] [--repeat 3]

First a classic SparkContext on local-cluster[2,1,2048] measures Spark's
``mapInArrow`` ceiling (warm) and sparktf's DataFrame feed (``image
array<float>, label``) to 2 nodes whose consumers count rows; it is stopped.
Then a Spark Connect server from pyspark's own ``sbin/start-connect-server.sh``
over the same local-cluster on 127.0.0.1 runs the same two measurements
through ``sc://`` (it is stopped by the PID in its PID file).  Prints rows/s
and Connect/classic (target >= 0.8x).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import common
import consumers


def start_connect_server(base: str, pythonpath: str) -> tuple[str, int]:
    """``(sc:// URL, PID)`` of a Connect server over local-cluster[2,1,2048]."""
    import pyspark
    home = os.path.dirname(pyspark.__file__)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, SPARK_HOME=home, SPARK_LOG_DIR=os.path.join(base, "logs"),
               SPARK_PID_DIR=os.path.join(base, "pids"), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, SPARK_IDENT_STRING="sparktf-bench",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    subprocess.run([os.path.join(home, "sbin", "start-connect-server.sh"),
                    "--master", "local-cluster[2,1,2048]",
                    "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
                    "--conf", f"spark.executorEnv.PYTHONPATH={pythonpath}",
                    "--conf", f"spark.connect.grpc.binding.port={port}",
                    "--conf", "spark.connect.grpc.binding.address=127.0.0.1"],
                   env=env, check=True, capture_output=True, cwd=base)
    pids = os.path.join(base, "pids")
    pid = int(open(os.path.join(pids, os.listdir(pids)[0])).read())
    deadline = time.monotonic() + 180
    while True:  # the gRPC port opens once the server (and its SparkContext) is up
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"sc://127.0.0.1:{port}", pid
        except OSError:
            if time.monotonic() > deadline:
                stop(pid)
                raise SystemExit("the Spark Connect server did not start")
            time.sleep(0.5)


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def measure(spark, session, args, rates) -> None:
    from sparktf import TFCluster

    def count_batches(batches):
        import pyarrow as pa
        n = sum(b.num_rows for b in batches)
        yield pa.RecordBatch.from_pydict({"n": [n]})

    df = common.image_df(spark, args.rows, args.partitions)
    warm = common.image_df(spark, 20_000, 2)
    name = f"{session}: Spark mapInArrow ceiling"
    rates[name] = common.median_rate(
        name, args.rows, lambda: df.mapInArrow(count_batches, "n long").collect(), args.repeat)
    name = f"{session}: sparktf DataFrame feed"
    rates[name] = common.epoch_rates(spark, TFCluster.run, consumers.sparktf_count,
                                     {"batch_size": 256, "column": "image"}, df, warm,
                                     args.rows, args.repeat, name)
    df.unpersist()
    warm.unpersist()


def _extra(p) -> None:
    p.add_argument("--session", choices=["classic", "connect"], default=None,
                   help="measure one kind of session only (run by the parent process)")


def measure_session(args) -> dict[str, float]:
    """The rates of one kind of session, in this process (pyspark refuses a Connect session
    in a process that ran a classic one, so each kind runs in a process of its own)."""
    from pyspark import cloudpickle
    from pyspark.sql import SparkSession
    cloudpickle.register_pickle_by_value(consumers)
    logging.basicConfig(level=logging.WARNING)
    rates: dict[str, float] = {}
    if args.session == "classic":
        sc = common.spark_context()
        measure(SparkSession(sc), "classic", args, rates)
        sc.stop()
        return rates
    pythonpath = os.pathsep.join([common.HERE] + sys.path)  # as common.spark_context sets it
    with tempfile.TemporaryDirectory(prefix="sparktf-connect-bench-") as base:
        url, pid = start_connect_server(base, pythonpath)
        try:
            spark = SparkSession.builder.remote(url).getOrCreate()
            measure(spark, "Connect", args, rates)
            spark.stop()
        finally:
            stop(pid)
    return rates


def main() -> None:
    args = common.parse_args(__doc__, _extra)
    if args.session:
        print("RATES " + json.dumps(measure_session(args)), flush=True)
        return
    rates: dict[str, float] = {}
    for session in ("classic", "connect"):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--session", session,
                              "--rows", str(args.rows), "--partitions", str(args.partitions),
                              "--repeat", str(args.repeat)], stdout=subprocess.PIPE, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RATES ")]
        print(out.stdout.replace("RATES ", "  rates: "), end="", flush=True)
        if out.returncode or not lines:
            raise SystemExit(f"the {session} measurement failed (exit {out.returncode})")
        rates.update(json.loads(lines[-1][len("RATES "):]))
    common.report_rates("DataFrame feed, Spark Connect vs classic", rates, [
        ("Connect: sparktf DataFrame feed", "classic: sparktf DataFrame feed", 0.8),
        ("classic: sparktf DataFrame feed", "classic: Spark mapInArrow ceiling", 0.9),
        ("Connect: sparktf DataFrame feed", "Connect: Spark mapInArrow ceiling", 0.9)])


if __name__ == "__main__":
    main()
