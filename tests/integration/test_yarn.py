"""sparktf on YARN: Hadoop's MiniYARNCluster and MiniDFSCluster, submitted with spark-submit.

One application in cluster deploy mode (``yarn_faults.py``), with the Python environment
packed by venv-pack and shipped with ``--archives``, runs the SPARK-mode MNIST example
from an HDFS CSV, the TENSORFLOW-mode example (Parquet, checkpoints and export on
``hdfs://``) through a lost executor container, asks for more nodes than YARN gives,
and is then killed through the ResourceManager's REST API.  One application, so the
2 GB archive is localised once per NodeManager for all of it.  Then, in client deploy
mode, the TFParallel variant of ``mnist_inference.py`` scores the HDFS TFRecords with
the SPARK-mode export.

It uses the flags a real cluster needs: a fixed number of executors (dynamic allocation
off, barrier mode), one application attempt, Spark's jars taken locally on the
NodeManagers.  Point ``HADOOP_CONF_DIR`` at a real cluster's configuration to run the
same commands there.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest
from servers import venvpack
from servers.procs import live_processes

from sparktf import fs, local_copy

pytestmark = [pytest.mark.integration, pytest.mark.hadoop]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MNIST = os.path.join(ROOT, "examples", "mnist")


def yarn_command(hadoop, tmp_path, script, *args, deploy_mode="client", archive=None,
                 py_files=("mnist_model.py",), conf=(), num_executors=2, executor_memory="1g"):
    """``(argv, env)`` of a spark-submit of ``script`` to the mini YARN cluster.

    With ``archive`` (a venv-pack archive) the driver (cluster mode) and the
    executors run ``./environment/bin/python`` from it, and nothing of this
    process's ``PYTHONPATH`` goes along (Spark's YARN client would pass it on to
    the containers): sparktf comes from the archive.  Otherwise they run this
    venv's Python.
    """
    import pyspark

    home = os.path.dirname(pyspark.__file__)
    # pip's pyspark has no python/lib/pyspark.zip for spark-submit to ship: the Python
    # that runs on the NodeManagers has pyspark installed, so an empty archive will do.
    empty = tmp_path / "empty-pyspark.zip"
    zipfile.ZipFile(empty, "w").close()
    if archive:
        python = ["--archives", f"{archive}#environment",
                  "--conf", "spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python",
                  "--conf", "spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python"]
    else:
        python = ["--conf", f"spark.pyspark.python={sys.executable}",
                  "--conf", f"spark.pyspark.driver.python={sys.executable}"]
    cmd = [os.path.join(os.path.dirname(sys.executable), "spark-submit"),
           "--master", "yarn", "--deploy-mode", deploy_mode,
           "--num-executors", str(num_executors), "--executor-cores", "1",
           "--executor-memory", executor_memory,
           "--driver-memory", "1g",
           "--conf", "spark.dynamicAllocation.enabled=false",
           "--conf", "spark.yarn.maxAppAttempts=1",
           "--conf", f"spark.yarn.jars=local:{home}/jars/*",
           "--conf", "spark.yarn.am.memory=512m",
           *python,
           "--conf", "spark.ui.enabled=false",
           "--conf", "spark.ui.showConsoleProgress=false",
           "--conf", "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL=2",
           *[c for kv in conf for c in ("--conf", kv)],
           "--py-files", ",".join(os.path.join(MNIST, "keras", f) for f in py_files),
           script, *map(str, args)]
    env = dict(os.environ, **hadoop.env(), PYSPARK_ARCHIVES_PATH=f"local:{empty}",
               SPARK_HOME=home)
    for name in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON") + (("PYTHONPATH",) if archive else ()):
        env.pop(name, None)
    return cmd, env


@pytest.fixture(scope="module")
def hdfs_mnist(sc, hadoop):
    """MNIST as CSV, TFRecords and Parquet on HDFS, written by mnist_data_setup from the
    session Spark."""
    sys.path.insert(0, MNIST)
    import mnist_data_setup
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(mnist_data_setup)
    out = f"{hadoop.namenode}/tmp/yarn-mnist"
    args = mnist_data_setup.parser().parse_args([
        "--output", out, "--formats", "csv,tfr,parquet"])
    mnist_data_setup.run(sc, args)
    return out


def export_accuracy(export: str, test_csv: str) -> float:
    """Accuracy of the exported model on the 1,000 held-out images of the HDFS CSV."""
    import numpy as np

    tf_keras = pytest.importorskip("tf_keras")
    lines = b"".join(fs.open_input(u).read() for u in fs.listdir(test_csv)
                     if os.path.basename(u).startswith("part-")).decode().splitlines()
    values = np.array([line.split(",") for line in lines], dtype=np.float32)
    with local_copy(export) as path:
        model = tf_keras.models.load_model(path)
    probs = model.predict(values[:, 1:].reshape(-1, 28, 28, 1) / 255.0, verbose=0)
    assert len(lines) == 1000
    return float(np.mean(np.argmax(probs, axis=1) == values[:, 0].astype(int)))



def wait_for(url: str, proc: subprocess.Popen, log: str, timeout: float = 300) -> None:
    """Wait until ``url`` exists on HDFS; fail at once if spark-submit ends first."""
    deadline = time.monotonic() + timeout
    while not fs.exists(url):   # written by the driver in a YARN container: nothing to wait on
        assert proc.poll() is None, f"spark-submit ended ({proc.returncode}) before {url}:\n" \
            + open(log, errors="replace").read()[-6000:]
        assert time.monotonic() < deadline, f"no {url} within {timeout:.0f} s"
        time.sleep(0.5)


def read_json(url: str) -> dict:
    return json.loads(fs.open_input(url).read())


def containers_nodes(hadoop) -> dict[int, str]:
    """sparktf node processes (supervisors, TF nodes) in this cluster's YARN containers."""
    found = {}
    for pid, cmd in live_processes(lambda c: "sparktf.node." in c):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/cwd").startswith(hadoop.work_dir):
                found[pid] = cmd
    return found


def wait_for_nodes(hadoop, count: int, timeout: float = 60) -> dict[int, str]:
    """The container nodes once ``count`` supervisors and ``count`` TF nodes run."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = containers_nodes(hadoop)
        kinds = " ".join(nodes.values())
        if (kinds.count("sparktf.node.supervisor") >= count
                and kinds.count("sparktf.node.main") >= count) or time.monotonic() > deadline:
            return nodes
        time.sleep(0.2)


def timeline(log: str) -> list[str]:
    """The first log line of each step of a YARN submission, with its time stamp."""
    steps = {"Uploading resource": "upload", "Submitting application": "submit",
             "state: ACCEPTED": "accepted",
             "state: RUNNING": "running"}
    seen = {}
    for line in log.splitlines():
        for text, name in steps.items():
            if text in line and name not in seen:
                seen[name] = f"{name} {line[9:17]}"   # yy/MM/dd HH:mm:ss ...
    return list(seen.values())


def kill_application(hadoop, app: str) -> None:
    """``yarn application -kill``, through the ResourceManager's REST API."""
    import requests

    r = requests.put(f"http://{hadoop.rm_webapp}/ws/v1/cluster/apps/{app}/state",
                     params={"user.name": getpass.getuser()}, json={"state": "KILLED"},
                     timeout=30)
    assert r.status_code in (200, 202), (r.status_code, r.text)


@pytest.mark.timeout(600)
def test_examples_and_faults_in_cluster_mode_then_client_mode(hadoop, hdfs_mnist, tmp_path,
                                                              no_leftovers):
    """Cluster mode with the environment packed by venv-pack: one application (yarn_faults.py).

    The SPARK-mode example from the HDFS CSV to an HDFS export; the TENSORFLOW-mode
    example (Parquet from hdfs://, checkpoints and export) loses an executor's container
    after epoch 0's checkpoint and completes with max_restarts=1; more TF nodes than YARN
    gives executors -> ReservationTimeout naming the YARN settings; then the application
    is killed through the RM's REST API and no node outlives it.  Executors of 2 GiB
    (2.5 GiB containers) on one NodeManager of 8 GiB, beside the 1.5 GiB
    ApplicationMaster: YARN grants 2 of the 3 asked for, never the third.

    Then client deploy mode (this venv's Python): the TFParallel variant of
    mnist_inference.py reads the HDFS TFRecords and scores them with the SPARK-mode export.
    """
    started = time.monotonic()
    pack = tmp_path / "pack"
    archive, numbers = venvpack.pack(str(pack))
    print("venv-pack: " + ", ".join(f"{k} {v:.1f}" for k, v in numbers.items()))
    base = f"{hadoop.namenode}/tmp/yarn-app"
    report = f"{base}/report"
    cmd, env = yarn_command(
        hadoop, tmp_path, os.path.join(HERE, "yarn_faults.py"),
        "--csv", f"{hdfs_mnist}/csv", "--parquet", f"{hdfs_mnist}/parquet", "--base", base,
        "--epochs", 2, "--steps_per_epoch", 20,
        deploy_mode="cluster", archive=archive, executor_memory="2g",
        py_files=("mnist_model.py", "mnist_spark.py", "mnist_tf.py"), num_executors=3,
        # 2 of 3 executors: start at once instead of waiting 30 s for 80% of them.
        # The staging directory (where --archives goes for the NodeManagers to fetch) is
        # local: they run on this machine, and through the MiniDFSCluster's one JVM the
        # 2 GB archive took 100 s to reach the application master.
        conf=["spark.scheduler.minRegisteredResourcesRatio=0.5",
              f"spark.yarn.stagingDir=file://{tmp_path}/staging"])
    log = str(tmp_path / "spark-submit.log")
    submitted = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(f"{report}/running.json", proc, log)
        app = read_json(f"{report}/running.json")["app"]
        nodes = wait_for_nodes(hadoop, 2)
        assert len(nodes) >= 4, nodes   # each node: a supervisor and its TF process
        kill_application(hadoop, app)
        killed = time.monotonic()
        assert proc.wait(timeout=120) != 0
        while set(nodes) & set(containers_nodes(hadoop)) and time.monotonic() - killed < 30:
            time.sleep(0.2)
        left = set(nodes) & set(containers_nodes(hadoop))
        assert not left, f"node processes alive 30 s after the application was killed: {left}"
        print(f"application killed: its {len(nodes)} node processes gone within "
              f"{time.monotonic() - killed:.1f} s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(pack, ignore_errors=True)   # 2 GB
        shutil.rmtree(tmp_path / "staging", ignore_errors=True)
    text = open(log, errors="replace").read()
    assert "KILLED" in text, text[-3000:]
    print(f"spark-submit: started {time.strftime('%H:%M:%S', time.localtime(submitted))}; "
          + "; ".join(timeline(text)))

    times = {name: read_json(f"{report}/{name}.json")["time"] - submitted
             for name in ("started", "spark", "killed", "restart", "reservation", "running")}
    print("seconds after spark-submit: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    spark = read_json(f"{report}/spark.json")
    assert "/environment/" in spark["sparktf"], spark   # the driver's sparktf: from the archive
    assert "/environment/" in read_json(f"{report}/killed.json")["sparktf"]   # a node's

    reservation = read_json(f"{report}/reservation.json")
    print(reservation.get("message"))
    assert reservation["raised"] == "ReservationTimeout", reservation
    assert reservation["seconds"] < reservation["timeout"] + 5, reservation
    for name in ("needs 3 task slots", "only 2", "spark.executor.memory=2g",
                 "yarn.nodemanager.resource.memory-mb", "yarn.scheduler.maximum-allocation-mb",
                 "yarn.nodemanager.resource.cpu-vcores", "yarn.scheduler.capacity.root.default",
                 f"http://{hadoop.rm_webapp}/cluster/app/{app}"):
        assert name in reservation["message"], (name, reservation["message"])

    # Killed after epoch 0's checkpoint reached HDFS: both workers resumed at epoch 1.
    assert read_json(f"{report}/restart.json")["restarts"] == 1
    workers = [read_json(f"{report}/worker-{rank}.json") for rank in (0, 1)]
    assert [w["initial_epoch"] for w in workers] == [1, 1], workers
    assert fs.exists(f"{base}/model/ckpt-2.index")

    accuracy = {mode: export_accuracy(f"{base}/{mode}-export", f"{hdfs_mnist}/csv/test")
                for mode in ("spark", "tf")}
    print(f"YARN cluster mode, packed env, 2 epochs: test accuracy {accuracy}; "
          f"{time.monotonic() - started:.0f} s in all")
    assert accuracy["spark"] > 0.8, accuracy
    assert accuracy["tf"] > 0.7, accuracy

    # Client deploy mode: the driver runs here, the executors on the NodeManagers (with
    # this venv's Python: they share this machine). TFoS's TFParallel variant of
    # mnist_inference.py scores the HDFS TFRecords with the SPARK-mode export above.
    client = time.monotonic()
    cmd, env = yarn_command(hadoop, tmp_path, os.path.join(MNIST, "keras", "mnist_inference.py"),
                            "--mode", "parallel", "--cluster_size", 2,
                            "--images_labels", f"{hdfs_mnist}/tfr/test",
                            "--export_dir", f"{base}/spark-export", "--output", f"{base}/parallel",
                            deploy_mode="client")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    found = re.search(r"\(TFParallel, 2 instances\): 1000 predictions .* test accuracy "
                      r"([0-9.]+)", proc.stdout)
    assert found, proc.stdout[-3000:]
    print(f"YARN client mode, TFParallel: test accuracy {found.group(1)} in "
          f"{time.monotonic() - client:.0f} s")
    # The same export on the same 1,000 images (TFRecords there, the CSV here).
    assert abs(float(found.group(1)) - accuracy["spark"]) <= 0.003, (found.group(1), accuracy)
    assert sorted(u.rsplit("/", 1)[1] for u in fs.listdir(f"{base}/parallel")) == [
        "part-00000", "part-00001"]
