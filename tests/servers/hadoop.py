"""Hadoop's own mini clusters (HDFS + YARN) in one JVM, for the integration tests.

The jars come from Maven (``tests/hadoop/pom.xml``, the Hadoop version pyspark
bundles) into a cache outside the source tree (``SPARKTF_HADOOP_CACHE``, by
default ``~/.cache/sparktf-hadoop``; ``make hadoop`` fills it ahead of time), and
``tests/hadoop/MiniHadoop.java`` is compiled there with ``javac``.
:class:`MiniHadoop` starts the launcher, waits for its ``READY`` line and stops it
by PID: closing its stdin stops both clusters; SIGTERM, then SIGKILL, if that
takes too long.  ``python tests/servers/hadoop.py WORK_DIR`` runs one by hand.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time

try:
    from servers import maven
    from servers.procs import live_processes
except ImportError:  # run as a script: python tests/servers/hadoop.py WORK_DIR
    import maven
    from procs import live_processes

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(TESTS, "hadoop")
POM = os.path.join(SOURCE, "pom.xml")
LAUNCHER = os.path.join(SOURCE, "MiniHadoop.java")
LOG4J = os.path.join(SOURCE, "log4j.properties")
#: JVM heap of the one process holding NameNode, DataNodes, ResourceManager and NodeManagers.
HEAP = "1g"


def hadoop_version() -> str:
    """The Hadoop version of the pom (checked against pyspark's bundled client)."""
    return maven.pom_property(POM, "hadoop.version")


def check_pyspark_version() -> None:
    """Fail clearly if pyspark bundles another Hadoop client than the pom fetches."""
    import pyspark

    jars = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars",
                                  "hadoop-client-api-*.jar"))
    bundled = [os.path.basename(j)[len("hadoop-client-api-"):-len(".jar")] for j in jars]
    if bundled and hadoop_version() not in bundled:
        raise RuntimeError(f"pyspark bundles Hadoop {bundled}, {POM} fetches "
                           f"{hadoop_version()}: set <hadoop.version> to match")


def cache_dir() -> str:
    """Where the jars and the compiled launcher live (outside the source tree)."""
    return maven.cache_dir(POM, "SPARKTF_HADOOP_CACHE", "~/.cache/sparktf-hadoop",
                           hadoop_version())


def prepare() -> tuple[str, str]:
    """``(jars dir, classes dir)``: fetch the jars and compile the launcher if needed.

    A lock file makes concurrent test sessions wait for one download.
    """
    base = cache_dir()
    jars, classes = os.path.join(base, "jars"), os.path.join(base, "classes")
    with maven.locked(base):
        maven.copy_dependencies(POM, jars, what="the Hadoop tests")
        with open(LAUNCHER, "rb") as f:
            stamp = os.path.join(classes, hashlib.sha256(f.read()).hexdigest()[:12])
        if not os.path.exists(stamp):
            shutil.rmtree(classes, ignore_errors=True)
            os.makedirs(classes)
            subprocess.run(["javac", "-nowarn", "-cp", os.path.join(jars, "*"), "-d", classes,
                            LAUNCHER], check=True, timeout=300)
            open(stamp, "w").close()
    return jars, classes


class MiniHadoop:
    """One launcher process: HDFS (``datanodes``) and YARN (``nodemanagers``).

    After :meth:`start`: ``namenode`` (``hdfs://127.0.0.1:PORT``), ``webhdfs``
    (``webhdfs://127.0.0.1:PORT``), ``conf_dir`` (a ``HADOOP_CONF_DIR``),
    ``audit_log`` (one line per NameNode audit event: ok/denied, user, ip, cmd,
    src, dst, RPC client id, client port), ``rm_webapp`` (the ResourceManager's web
    address), ``pid``.
    """

    # One NodeManager of 8 GiB: every NodeManager localises (copies, unpacks and sets the
    # modes of) test_yarn's 2 GB archive of ~16,000 files, so a second one only doubled that
    # for the application.
    def __init__(self, work_dir: str, datanodes: int = 1, nodemanagers: int = 1,
                 nm_memory_mb: int = 8192, nm_vcores: int = 4) -> None:
        self.work_dir = os.path.abspath(work_dir)
        self.args = [str(datanodes), str(nodemanagers), str(nm_memory_mb), str(nm_vcores)]
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0

    def start(self, timeout: float = 180.0) -> "MiniHadoop":
        check_pyspark_version()
        jars, classes = prepare()
        os.makedirs(self.work_dir, exist_ok=True)
        self.log_path = os.path.join(self.work_dir, "minihadoop.log")
        self.audit_log = os.path.join(self.work_dir, "audit.log")
        env = maven.java_env()
        for name in ("HADOOP_CONF_DIR", "HADOOP_USER_NAME"):
            env.pop(name, None)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["java", f"-Xmx{HEAP}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                 f"-Dlog4j.configuration=file:{LOG4J}", f"-Dhadoop.log.dir={self.work_dir}",
                 "-cp", f"{jars}/*:{classes}:{SOURCE}", "MiniHadoop", self.work_dir, *self.args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=self.work_dir,
                env=env, start_new_session=True)
        try:
            ready = self._read_line(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        if not ready.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the Hadoop mini cluster failed: {ready.strip()}; see "
                               f"{self.log_path}:\n{self.log_tail()}")
        info = json.loads(ready[len("READY "):])
        self.info = info
        self.namenode = info["namenode"]
        self.webhdfs = "webhdfs://" + info["webhdfs"]
        self.conf_dir = info["conf_dir"]
        self.rm_webapp = info["rm_webapp"]
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_line(self, timeout: float) -> str:
        """The launcher's next stdout line, or an error after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"the Hadoop mini cluster printed nothing within "
                                       f"{timeout:.0f} s; see {self.log_path}:\n"
                                       f"{self.log_tail()}")
                if sel.select(left):
                    line = self.proc.stdout.readline().decode()
                    if not line:
                        code = self.proc.wait()
                        return f"FAILED exited with {code}"
                    return line

    def kill_application(self, app_id: str, timeout: float = 60.0) -> str:
        """Kill YARN application ``app_id`` (as ``yarn application -kill``)."""
        self.proc.stdin.write(f"kill {app_id}\n".encode())
        self.proc.stdin.flush()
        answer = self._read_line(timeout).strip()
        if not answer.startswith("KILLED"):
            raise RuntimeError(f"killing {app_id} failed: {answer}")
        return answer

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
        return ""

    def env(self) -> dict[str, str]:
        """Variables for Spark and other clients of this cluster."""
        return {"HADOOP_CONF_DIR": self.conf_dir, "YARN_CONF_DIR": self.conf_dir}

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the launcher by PID: close its stdin, then SIGTERM, then SIGKILL."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()

    def leftovers(self) -> list[tuple[int, str]]:
        """Live processes whose command line names the work directory (containers too)."""
        return [(pid, cmd[:200]) for pid, cmd in live_processes(lambda c: self.work_dir in c)]

    def audit(self) -> list[list[str]]:
        """The NameNode audit events so far: ``[ok, user, ip, cmd, src, dst, client, port]``.

        ``client`` is the RPC client id: one per HDFS client object, so two
        processes reading never share one.
        """
        with open(self.audit_log) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]


if __name__ == "__main__":
    cluster = MiniHadoop(sys.argv[1]).start()
    print(json.dumps({**cluster.info, "pid": cluster.pid,
                      "start_seconds": round(cluster.start_seconds, 1)}), flush=True)
    try:
        sys.stdin.read()
    finally:
        cluster.stop()
