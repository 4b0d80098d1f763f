"""Run by test_streaming.py through spark-submit and stopped with SIGTERM.

Streaming inference over a text directory (``key,value`` lines) with results
saved by ``saveAsTextFiles``; prints ``STREAMING <pid>`` once the stream runs
(the Python driver's pid: spark-submit's JVM runs it as a child process).
Usage: ``stream_job.py INPUT_DIR OUTPUT_DIR BUSY_DIR``.
"""

import logging
import os
import sys

from pyspark import SparkContext, cloudpickle
from pyspark.streaming import StreamingContext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import streamfuns  # noqa: E402

from sparktf import TFCluster  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    cloudpickle.register_pickle_by_value(streamfuns)
    indir, outdir, busy = sys.argv[1:4]
    sc = SparkContext(appName="sparktf-stream-job")
    sc.setLogLevel("ERROR")
    ssc = StreamingContext(sc, 1)
    cluster = TFCluster.run(sc, streamfuns.infer_lines, {"marker": busy, "delay": 3}, 1,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120)
    cluster.inference(ssc.textFileStream(indir)).saveAsTextFiles(os.path.join(outdir, "pred"))
    ssc.start()
    print("STREAMING", os.getpid(), flush=True)
    cluster.shutdown(ssc)
    sc.stop()
