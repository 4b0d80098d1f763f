"""Shared fixtures: a real multi-executor Spark and a check that no node process is left."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # tests/ on sys.path: `servers` is importable here and in the tests
    sys.path.insert(0, HERE)
from servers.procs import live_processes  # noqa: E402


def sparktf_processes() -> list[tuple[int, str]]:
    """Live (non-zombie) sparktf node, supervisor and TensorBoard processes."""
    return live_processes(lambda cmd: "sparktf.node." in cmd or "tensorboard.main" in cmd)


def module_rank(items) -> dict[str, int]:
    """Where each test module runs: the unit tests first (quick feedback), then the package
    and integration tests, then the modules using the Kafka broker, the Hadoop ones last.
    The broker and the Hadoop mini cluster are session fixtures, started by their first test
    and idling (heartbeats: ~2 CPU s a minute for Hadoop) until the session ends, so they
    start as late as possible."""
    rank: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        if item.get_closest_marker("hadoop"):
            here = 4
        elif "kafka" in item.fixturenames or item.get_closest_marker("kafka"):
            here = 3
        else:
            here = 0 if module.startswith("tests/unit/") else 2
        rank[module] = max(rank.get(module, 0), here)
    return rank


def pytest_collection_modifyitems(config, items):
    """Orders the modules (:func:`module_rank`)."""
    rank = module_rank(items)
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])   # stable: file order kept


def wait_no_sparktf_processes(timeout: float = 20.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while True:
        left = sparktf_processes()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="session", autouse=True)
def spark_work_dirs(tmp_path_factory):
    """Moves the application directories that this session's ``local-cluster`` workers wrote
    into pyspark's own ``work/`` (executor logs, nodes' directories: Spark has no setting for
    it) to the session's temporary directory, where pytest keeps the last three sessions."""
    import pyspark

    work = os.path.join(os.path.dirname(pyspark.__file__), "work")
    before = set(os.listdir(work)) if os.path.isdir(work) else set()
    yield
    if os.path.isdir(work):
        target = tmp_path_factory.getbasetemp() / "spark-work"
        for name in sorted(set(os.listdir(work)) - before):
            target.mkdir(exist_ok=True)
            shutil.move(os.path.join(work, name), target / name)


@pytest.fixture(scope="session", autouse=True)
def wheel_build(request, tmp_path_factory):
    """When the session holds test_wheel.py, starts building and installing the wheel with
    the session's first test, beside the unit tests (package/wheel_build.py): about 70 s of one
    busy core that would otherwise be waited for alone."""
    from package.wheel_build import STASH_KEY, WheelBuild

    if not any(item.path.name == "test_wheel.py" for item in request.session.items):
        yield None
        return
    build = WheelBuild(tmp_path_factory.mktemp("wheel")).start()
    request.config.stash[STASH_KEY] = build
    yield build
    build.stop()


@pytest.fixture(scope="session")
def sc(request):
    """A real ``local-cluster[3,1,1024]`` Spark: 3 executors with one slot each.

    With Spark's Kafka source (``spark.jars``) when the session runs a test that
    uses the ``kafka`` broker fixture or is marked ``kafka``, and with hadoop-aws
    (Spark's ``s3a://``) when it runs one that uses the ``s3a`` fixture.
    """
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    sys.path.insert(0, os.path.join(HERE, "integration"))
    from pyspark import SparkConf, SparkContext, cloudpickle

    import feedfuns
    import nodefuns
    cloudpickle.register_pickle_by_value(nodefuns)
    cloudpickle.register_pickle_by_value(feedfuns)
    conf = (SparkConf().setMaster("local-cluster[3,1,1024]").setAppName("sparktf-tests")
            .set("spark.driver.host", "127.0.0.1").set("spark.ui.enabled", "false")
            .set("spark.executorEnv.PYTHONPATH", os.pathsep.join(sys.path)))
    jars = []
    if any("kafka" in item.fixturenames or item.get_closest_marker("kafka")
           for item in request.session.items):
        from servers.kafka import spark_jars
        jars += spark_jars()
    if any("s3a" in item.fixturenames for item in request.session.items):
        from servers import s3a
        jars += s3a.spark_jars()
    if jars:
        conf.set("spark.jars", ",".join(jars))
    # A test that needs other Spark settings (e.g. test_encryption.py turning Spark's RPC
    # encryption on) runs its module in a pytest process of its own with this variable set.
    conf.setAll(json.loads(os.environ.get("SPARKTF_TEST_SPARK_CONF", "{}")).items())
    context = SparkContext(conf=conf)
    context.setLogLevel("ERROR")
    logging.getLogger("sparktf").setLevel(logging.INFO)
    yield context
    context.stop()


@pytest.fixture
def no_leftovers():
    """Fail the test if a sparktf process, monitor thread or timer outlives it."""
    yield
    left = wait_no_sparktf_processes()
    for pid, _ in left:   # so that one test's leftovers fail that test only, not every later one
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"sparktf processes left behind: {left}"
    threads = [t.name for t in threading.enumerate()
               if t.name == "sparktf-monitor" or isinstance(t, threading.Timer)]
    assert not threads, f"driver threads left behind: {threads}"


# Storage servers (WebHDFS, moto S3) as session fixtures; tests/ on sys.path makes
# `servers` importable here and in the tests.
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from servers.fixtures import hadoop, kafka, s3_server, webhdfs_server  # noqa: E402,F401
