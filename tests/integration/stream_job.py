"""Run by test_streaming.py through spark-submit and stopped with SIGTERM.

Streaming inference over a text directory (``key,value`` lines) with results
saved by ``saveAsTextFiles``; once the stream runs it writes its pid into PID_FILE
(the Python driver's pid: spark-submit's JVM runs it as a child process). A file,
not a line on stdout, because the JVM's and Python's log lines share that stream.
Usage: ``stream_job.py INPUT_DIR OUTPUT_DIR BUSY_DIR PID_FILE``.
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
    indir, outdir, busy, pid_file = sys.argv[1:5]
    sc = SparkContext(appName="sparktf-stream-job")
    sc.setLogLevel("ERROR")
    ssc = StreamingContext(sc, 1)
    cluster = TFCluster.run(sc, streamfuns.infer_lines, {"marker": busy, "delay": 3}, 1,
                            input_mode=TFCluster.InputMode.SPARK, reservation_timeout=120)
    cluster.inference(ssc.textFileStream(indir)).saveAsTextFiles(os.path.join(outdir, "pred"))
    ssc.start()
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    cluster.shutdown(ssc)
    sc.stop()
