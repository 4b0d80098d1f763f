"""Session fixtures starting real servers: WebHDFS (a thread), S3 (moto), Hadoop, Kafka.

``tests/conftest.py`` imports them, so any test can ask for ``webhdfs_server``,
``s3_server``, ``hadoop`` or ``kafka``; each starts with the first test that asks.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import pytest

from servers.webhdfs import WebHdfsServer

#: Dummy credentials and region the S3 fixture puts in the environment.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0,
                   name: str = "moto_server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout} s")


@pytest.fixture(scope="session")
def webhdfs_server(tmp_path_factory):
    """A WebHDFS server over a temporary directory, in a thread of this process.

    Yields the :class:`~servers.webhdfs.WebHdfsServer`: ``.url`` is
    ``webhdfs://127.0.0.1:PORT``, ``.root`` the directory served, ``.opened`` and
    ``.bytes_sent`` count OPEN requests and bytes per HDFS path (``GET /_stats``
    gives them as JSON to other processes).
    """
    server = WebHdfsServer(str(tmp_path_factory.mktemp("webhdfs"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto S3 server in a subprocess (reachable by Spark executors and TF nodes).

    Puts AWS_ENDPOINT_URL, dummy credentials and AWS_REGION in ``os.environ``
    for the rest of the session (restored at its end) and creates a bucket.
    Yields a dict: ``endpoint`` (``http://127.0.0.1:PORT``), ``bucket``,
    ``url`` (``s3://BUCKET``), ``env`` (the variables, for other processes),
    ``pid``.
    """
    import pyarrow.fs as pafs

    port = free_port()
    # Its request log goes to a file: a pipe nobody reads fills up and blocks the server.
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=log, stderr=log)
    try:
        wait_listening(port, proc)
        endpoint = f"http://127.0.0.1:{port}"
        env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
        bucket = f"sparktf-{uuid.uuid4().hex[:8]}"
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
            patch.delenv("AWS_SESSION_TOKEN", raising=False)
            patch.delenv("AWS_PROFILE", raising=False)
            pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                              allow_bucket_creation=True).create_dir(bucket)
            yield {"endpoint": endpoint, "bucket": bucket, "url": f"s3://{bucket}",
                   "env": env, "pid": proc.pid}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def hadoop(tmp_path_factory):
    """Hadoop's own MiniDFSCluster and MiniYARNCluster in one JVM (see servers/hadoop.py).

    Started by the first test that asks for it, stopped by PID at the end of the
    session, after which no process of it (or of its YARN containers) may be left.
    Yields the :class:`~servers.hadoop.MiniHadoop`: ``namenode``
    (``hdfs://127.0.0.1:PORT``), ``webhdfs``, ``conf_dir`` (a ``HADOOP_CONF_DIR``),
    ``audit()`` (the NameNode's audit events), ``kill_application(id)``.
    """
    from servers.hadoop import MiniHadoop

    cluster = MiniHadoop(str(tmp_path_factory.mktemp("hadoop"))).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        deadline = time.monotonic() + 20
        while cluster.leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = cluster.leftovers()
        assert not left, f"Hadoop mini cluster processes left behind: {left}"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """A real Kafka broker (KRaft, one JVM on 127.0.0.1; see servers/kafka.py).

    Started by the first test that asks for it, stopped by PID at the end of the
    session, after which no process of it may be left. Yields the
    :class:`~servers.kafka.KafkaBroker`: ``bootstrap`` (``127.0.0.1:PORT``),
    ``create_topic(name, partitions)``, ``produce(topic, values, partition_of)``.
    A session that collects a test using this fixture also gives the ``sc``
    fixture's Spark the Kafka source (``spark.jars``, tests/conftest.py).
    """
    from servers.kafka import KafkaBroker

    broker = KafkaBroker(str(tmp_path_factory.mktemp("kafka"))).start()
    print(f"Kafka broker {broker.bootstrap} started in {broker.start_seconds:.1f} s")
    try:
        yield broker
    finally:
        broker.stop()
        left = broker.leftovers()
        assert not left, f"Kafka broker processes left behind: {left}"
