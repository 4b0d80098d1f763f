"""sparktf on a Spark Connect client: a real Connect server from pyspark's own sbin/."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import pyspark
from conftest import sparktf_processes, wait_no_sparktf_processes
from servers.fixtures import free_port

pytestmark = pytest.mark.integration

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory):
    """``sc://127.0.0.1:PORT``: start-connect-server.sh over local-cluster[2,1,1024]."""
    home = os.path.dirname(pyspark.__file__)
    base = tmp_path_factory.mktemp("connect")
    env = dict(os.environ, SPARK_HOME=home, SPARK_LOG_DIR=str(base / "logs"),
               SPARK_PID_DIR=str(base / "pids"), SPARK_LOCAL_IP="127.0.0.1",
               PYSPARK_PYTHON=sys.executable, SPARK_IDENT_STRING="sparktf-connect",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    port = free_port()
    subprocess.run([os.path.join(home, "sbin", "start-connect-server.sh"),
                    "--master", "local-cluster[2,1,1024]", "--conf", "spark.driver.host=127.0.0.1",
                    "--conf", "spark.ui.enabled=false",
                    "--conf", f"spark.connect.grpc.binding.port={port}",
                    "--conf", "spark.connect.grpc.binding.address=127.0.0.1"],
                   env=env, check=True, capture_output=True, cwd=base)
    pid_files = [os.path.join(base, "pids", f) for f in os.listdir(base / "pids")]
    pid = int(open(pid_files[0]).read())
    try:
        deadline = time.monotonic() + 120
        while True:  # the gRPC port opens once the server (and its SparkContext) is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, open(
                    next(iter((base / "logs").iterdir()))).read()[-3000:]
                time.sleep(0.5)
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)


def client(url, out, mode):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "connect_job.py"), url,
                             str(out), mode], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, cwd=out)


def test_training_inference_and_failures_through_spark_connect(connect_url, tmp_path,
                                                               no_leftovers):
    proc = client(connect_url, tmp_path, "all")
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-6000:]
    report = json.load(open(tmp_path / "connect.json"))
    assert report["session"].startswith("pyspark.sql.connect")
    message, seconds = report["slots"]
    assert "needs 5 task slots" in message and "only 2" in message and seconds < 10
    assert "spark.master=local-cluster[2,1,1024]" in message
    assert report["tf_mode"] == "ok"
    assert len(json.load(open(tmp_path / "weights-0.json"))["weights"]) == 2
    fit = report["fit"]
    assert [r["epochs"] for r in fit] == [2, 2]
    assert fit[0]["steps"] == fit[1]["steps"], "synchronous workers take the same steps"
    assert sum(r["rows"] for r in fit) == 2 * 3000, "every fed row is trained on"
    assert report["inference"] == [[i, 2 * i] for i in range(500)]
    assert "worker:0" in report["failure"] and "ValueError: boom" in report["failure"]
    assert report.get("failure_seconds", 0) < 10
    assert report["rdd_error"].startswith("ConfigError: Spark Connect has no RDDs")


def test_killing_the_connect_client_leaves_no_node(connect_url, tmp_path):
    assert not sparktf_processes(), "sparktf processes from an earlier test are still running"
    proc = client(connect_url, tmp_path, "orphan")
    try:
        for line in proc.stdout:
            if line.startswith("RUNNING"):
                break
        else:
            pytest.fail("the client never ran its cluster")
        assert [p for p in sparktf_processes() if "sparktf.node.main" in p[1]]
        proc.kill()
        killed = time.monotonic()
        left = wait_no_sparktf_processes(timeout=30)
        assert not left, left
        print(f"all node processes gone {time.monotonic() - killed:.1f}s after kill -9")
    finally:
        proc.kill()
        proc.wait()
