"""A real Apache Kafka broker (KRaft mode, one JVM) and Spark's Kafka source, for the tests.

Both sets of jars come from Maven into a cache outside the source tree
(``SPARKTF_KAFKA_CACHE``, by default ``~/.cache/sparktf-kafka``; ``make kafka``
fills it ahead of time), each from its pom in ``tests/kafka/``:

* ``broker.xml``: Kafka's own broker (``kafka_2.13``), started with ``java -cp``
  on 127.0.0.1 as combined broker and controller, after formatting its storage
  with ``kafka.tools.StorageTool``.  :class:`KafkaBroker` stops it by PID.
* ``spark-kafka.xml``: ``spark-sql-kafka-0-10`` and what it needs beyond
  pyspark's jars (:func:`spark_jars`, for ``spark.jars``).

Topics are created and messages produced with the ``kafka-python`` client.
``python tests/servers/kafka.py WORK_DIR`` runs a broker by hand.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import signal
import subprocess
import sys
import time
import uuid

try:
    from servers import maven
    from servers.fixtures import free_port, wait_listening
    from servers.procs import live_processes
except ImportError:  # run as a script: python tests/servers/kafka.py WORK_DIR
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from servers import maven
    from servers.fixtures import free_port, wait_listening
    from servers.procs import live_processes

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kafka")
BROKER_POM = os.path.join(SOURCE, "broker.xml")
SPARK_POM = os.path.join(SOURCE, "spark-kafka.xml")
CACHE_ENV, CACHE_DEFAULT = "SPARKTF_KAFKA_CACHE", "~/.cache/sparktf-kafka"
#: The broker JVM: small heap, quick start (C1 only, serial GC); a few threads per pool.
JVM = ["-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
       "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"]


def _jars(pom: str, prop: str, *mvn_args: str) -> str:
    base = maven.cache_dir(pom, CACHE_ENV, CACHE_DEFAULT, maven.pom_property(pom, prop))
    with maven.locked(base):
        return maven.copy_dependencies(pom, os.path.join(base, "jars"), *mvn_args,
                                       what="the Kafka tests")


def broker_jars() -> str:
    """The directory of the broker's jars (fetched once)."""
    return _jars(BROKER_POM, "kafka.version")


def spark_jars() -> list[str]:
    """Spark's Kafka source and its own dependencies, for ``spark.jars`` (fetched once).

    The pom's Spark version must have pyspark's major version and not be newer.
    """
    import pyspark

    wanted = maven.pom_property(SPARK_POM, "spark.version")
    have = pyspark.__version__
    if wanted.split(".")[0] != have.split(".")[0] or _version(wanted) > _version(have):
        raise RuntimeError(f"{SPARK_POM} fetches spark-sql-kafka {wanted} for pyspark {have}: "
                           "set <spark.version> to pyspark's version")
    return sorted(glob.glob(os.path.join(_jars(SPARK_POM, "spark.version"), "*.jar")))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


class KafkaBroker:
    """One KRaft broker+controller on 127.0.0.1; ``bootstrap`` is ``127.0.0.1:PORT``."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = os.path.abspath(work_dir)
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0

    def start(self, timeout: float = 60.0) -> "KafkaBroker":
        started = time.monotonic()
        jars = os.path.join(broker_jars(), "*")
        os.makedirs(self.work_dir, exist_ok=True)
        port, controller = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        self.log_path = os.path.join(self.work_dir, "broker.log")
        props = os.path.join(self.work_dir, "server.properties")
        with open(props, "w") as f:
            f.write("\n".join([
                "process.roles=broker,controller", "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={os.path.join(self.work_dir, 'data')}",
                # One broker: every internal topic with one replica and one partition.
                "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0", "num.partitions=1",
                "num.network.threads=2", "num.io.threads=2", "background.threads=2",
                "auto.create.topics.enable=false", ""]))
        env = maven.java_env()
        # Base64url of 16 random bytes, like Kafka's Uuid; one in 64 starts with "-", which
        # the tool's parser would take for an option unless given as --cluster-id=...
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        with open(self.log_path, "ab") as log:
            subprocess.run(["java", *JVM, "-cp", jars, "kafka.tools.StorageTool", "format",
                            f"--cluster-id={cluster_id}", "-c", props],
                           stdout=log, stderr=log, env=env, check=True, timeout=timeout)
            self.proc = subprocess.Popen(["java", *JVM, "-cp", jars, "kafka.Kafka", props],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=self.work_dir, env=env, start_new_session=True)
        try:
            wait_listening(port, self.proc, timeout, name="the Kafka broker")
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def create_topic(self, name: str, partitions: int = 1) -> str:
        """Create topic ``name`` and wait until every partition has its leader."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="sparktf-tests")
        try:
            admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()
        return name

    def produce(self, topic: str, values: list, partition_of=None) -> None:
        """Send ``values`` (str or bytes; ``partition_of(i, value)`` picks the partition)
        and wait until the broker has them all."""
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        try:
            for i, value in enumerate(values):
                data = value.encode() if isinstance(value, str) else value
                producer.send(topic, value=data,
                              partition=None if partition_of is None else partition_of(i, value))
            producer.flush(60)
        finally:
            producer.close(10)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker by PID: SIGTERM (a controlled shutdown), SIGKILL if it lingers."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def leftovers(self) -> list[tuple[int, str]]:
        """Live processes whose command line names the work directory."""
        return [(pid, cmd[:200]) for pid, cmd in live_processes(lambda c: self.work_dir in c)]

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
        return ""


if __name__ == "__main__":
    broker = KafkaBroker(sys.argv[1]).start()
    print(broker.bootstrap, f"pid {broker.pid}", f"started in {broker.start_seconds:.1f} s",
          flush=True)
    try:
        sys.stdin.read()
    finally:
        broker.stop()
