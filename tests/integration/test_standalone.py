"""A Spark standalone master and three workers on 127.0.0.1, started from pyspark's own scripts."""

import glob
import json
import os
import subprocess
import sys

import pytest

import pyspark
from servers.fixtures import free_port

pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """``spark://127.0.0.1:PORT`` with three 1-core workers; stopped by their PID files.

    Jobs take two cores (``spark.cores.max=2``): the third worker is the spare
    that replaces a lost executor.
    """
    home = os.path.dirname(pyspark.__file__)
    base = tmp_path_factory.mktemp("standalone")
    env = dict(os.environ, SPARK_HOME=home, SPARK_LOG_DIR=str(base / "logs"),
               SPARK_PID_DIR=str(base / "pids"), SPARK_WORKER_DIR=str(base / "work"),
               SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
               SPARK_IDENT_STRING="sparktf-test")
    daemon = os.path.join(home, "sbin", "spark-daemon.sh")
    master = f"spark://127.0.0.1:{free_port()}"
    started = [("org.apache.spark.deploy.master.Master", "1")]
    subprocess.run([daemon, "start", *started[0], "--host", "127.0.0.1", "--port",
                    master.rsplit(":", 1)[1], "--webui-port", str(free_port())],
                   env=env, check=True, capture_output=True)
    for i in ("1", "2", "3"):
        started.append(("org.apache.spark.deploy.worker.Worker", i))
        subprocess.run([daemon, "start", *started[-1], "--host", "127.0.0.1", "--cores", "1",
                        "--memory", "2g", "--webui-port", str(free_port()), master],
                       env=env, check=True, capture_output=True)
    yield master, env
    for cls, i in reversed(started):
        subprocess.run([daemon, "stop", cls, i], env=env, capture_output=True)


def submit(standalone, script, out):
    master, env = standalone
    cmd = [os.path.join(os.path.dirname(sys.executable), "spark-submit"), "--master", master,
           "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
           "--conf", "spark.cores.max=2", os.path.join(HERE, script), str(out)]
    return subprocess.run(cmd, env=dict(env, PYSPARK_DRIVER_PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=600)


def test_both_modes_and_a_lost_executor_on_a_standalone_cluster(standalone, tmp_path,
                                                                no_leftovers):
    proc = submit(standalone, "standalone_job.py", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert f"standalone_job: ok {sum(range(10000))}" in proc.stdout
    reports = [json.load(open(p)) for p in sorted(glob.glob(str(tmp_path / "node-*.json")))]
    assert [r["job"] for r in reports] == ["chief", "worker"]
    # The lost executor: one restart, on the spare worker. (spark-submit merges the Python
    # driver's stderr into its stdout.)
    assert "standalone_job: executor lost, restarts=1" in proc.stdout
    assert "restart 1 of 1 after: TF node worker:1" in proc.stdout
    attempts = [json.load(open(p)) for p in glob.glob(str(tmp_path / "attempt-*.json"))]
    assert sorted(a["attempt"] for a in attempts) == [0, 0, 1, 1]
