"""A sparktf application on a Spark Connect client: ``connect_job.py URL OUT MODE``.

MODE ``all`` runs every scenario and writes ``OUT/connect.json``; MODE ``orphan``
starts a cluster, prints ``RUNNING`` and waits to be killed.
"""

import json
import logging
import os
import sys
import time

import numpy as np
from pyspark import cloudpickle
from pyspark.sql import SparkSession

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import feedfuns  # noqa: E402
import nodefuns  # noqa: E402
from sparktf import TFCluster  # noqa: E402
from sparktf.errors import NodeError, ReservationTimeout  # noqa: E402


def main(url, out, mode):
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("sparktf").setLevel(logging.INFO)
    cloudpickle.register_pickle_by_value(nodefuns)
    cloudpickle.register_pickle_by_value(feedfuns)
    spark = SparkSession.builder.remote(url).getOrCreate()
    report = {"session": type(spark).__module__}
    if mode == "orphan":
        TFCluster.run(spark, nodefuns.sleep_forever, {"out": out}, 2, reservation_timeout=120)
        print("RUNNING", flush=True)
        time.sleep(3600)

    # Too few slots (the settings say 2): refused at once, naming the settings.
    started = time.monotonic()
    try:
        TFCluster.run(spark, nodefuns.report, {"out": out}, 5, reservation_timeout=60)
    except ReservationTimeout as e:
        report["slots"] = [str(e), time.monotonic() - started]

    # TENSORFLOW mode: MultiWorkerMirroredStrategy training.
    cluster = TFCluster.run(spark, nodefuns.mwms_keras_fit, {"out": out}, 2,
                            reservation_timeout=180)
    cluster.shutdown(timeout=300)
    report["tf_mode"] = "ok"

    # SPARK mode: a DataFrame fed for 2 epochs to MWMS workers (the epoch agreement).
    rng = np.random.default_rng(0)
    rows = [(rng.normal(size=4).astype("float32").tolist(), i) for i in range(3000)]
    df = spark.createDataFrame(rows, "x array<float>, id long").repartition(5)
    cluster = TFCluster.run(spark, feedfuns.fit_dataset, {"out": out, "epochs": 2,
                                                          "batch_size": 64}, 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=180)
    cluster.train(df, num_epochs=2)
    cluster.shutdown(timeout=300)
    report["fit"] = [json.load(open(os.path.join(out, f"fit-{i}.json"))) for i in (0, 1)]

    # Inference returns a DataFrame.
    frame = spark.createDataFrame([(i,) for i in range(500)], "id long").repartition(3)
    cluster = TFCluster.run(spark, feedfuns.infer_frame, {"out": out}, 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=180)
    scored = cluster.inference(frame, schema="twice long, vec array<double>")
    report["inference"] = sorted((r["id"], r["twice"]) for r in scored.collect())
    cluster.shutdown(timeout=60)

    # A node failure raises NodeError on the client within seconds.
    started = time.monotonic()
    try:
        cluster = TFCluster.run(spark, nodefuns.fail_on_worker, None, 2, master_node="chief",
                                reservation_timeout=180)
        started = time.monotonic()
        cluster.shutdown(timeout=120)
        report["failure"] = "no error"
    except NodeError as e:
        report["failure"] = str(e).splitlines()[0]
        report["failure_seconds"] = time.monotonic() - started

    # RDDs do not exist on Connect: a clear error, not an AttributeError.
    cluster = TFCluster.run(spark, feedfuns.count_rows, {"out": out}, 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=180)
    try:
        cluster.train([1, 2, 3])
    except Exception as e:
        report["rdd_error"] = f"{type(e).__name__}: {e}"
    cluster.shutdown(timeout=60)
    with open(os.path.join(out, "connect.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
