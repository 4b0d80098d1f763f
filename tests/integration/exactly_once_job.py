"""Run by test_streaming.py: checkpointed streaming inference to Parquet, killed and restarted.

One driver, one TF cluster (2 nodes), one query per source, all sharing the
cluster: ``kafka`` (a topic) and ``file`` (Parquet files, one phase per
subdirectory), each ``cluster.inference(stream, schema="pred long")`` written
to ``WORK/out-<source>`` with its checkpoint in ``WORK/ckpt-<source>``.
Prints ``STREAMING <pid>`` once the queries run, then obeys stdin lines:
``sync`` (process everything available, then print ``SYNCED``) and ``stop``
(a graceful ``shutdown`` of every query and the nodes, then ``STOPPED``).
Usage: ``exactly_once_job.py CONFIG.json`` (``work``, ``jars``, ``sources``,
``args`` for the nodes).
"""

import json
import logging
import os
import sys

from pyspark import cloudpickle
from pyspark.sql import SparkSession

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import streamfuns  # noqa: E402

from sparktf import TFCluster  # noqa: E402


def stream(spark, kind, opts):
    if kind == "kafka":
        return (spark.readStream.format("kafka")
                .option("kafka.bootstrap.servers", opts["bootstrap"])
                .option("subscribe", opts["topic"]).option("startingOffsets", "earliest").load()
                .selectExpr("CAST(CAST(value AS STRING) AS BIGINT) AS id"))
    return spark.readStream.schema("id long").parquet(os.path.join(opts["dir"], "*"))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sparktf").setLevel(logging.INFO)
    cloudpickle.register_pickle_by_value(streamfuns)
    with open(sys.argv[1]) as f:
        config = json.load(f)
    work = config["work"]
    spark = (SparkSession.builder.master("local[4]").appName("sparktf-exactly-once")
             .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.jars", ",".join(config["jars"]))
             # the test finds this JVM by its command line
             .config("spark.driver.extraJavaOptions", f"-Dsparktf.test.work={work}")
             # one partition per file: a micro-batch of two files has two tasks
             .config("spark.sql.files.openCostInBytes", str(128 << 20))
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    logging.getLogger("sparktf").info("exactly_once_job: Spark is up")
    cluster = TFCluster.run(spark.sparkContext, streamfuns.predict_ids, config["args"], 2,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120)
    queries = [cluster.inference(stream(spark, kind, opts), schema="pred long",
                                 keep_columns=["id"])
               .writeStream.format("parquet").queryName(kind)
               .option("checkpointLocation", os.path.join(work, f"ckpt-{kind}"))
               .option("path", os.path.join(work, f"out-{kind}"))
               .trigger(processingTime="0.5 seconds").start()
               for kind, opts in config["sources"].items()]
    print("STREAMING", os.getpid(), flush=True)
    for line in sys.stdin:
        if line.strip() == "sync":
            for query in queries:
                query.processAllAvailable()
            print("SYNCED", flush=True)
        elif line.strip() == "stop":
            cluster.request_stop("the test says stop")
            cluster.shutdown(queries)
            print("STOPPED", flush=True)
            break
    spark.stop()
