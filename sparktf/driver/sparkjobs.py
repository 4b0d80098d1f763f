"""The Spark side of the driver: sessions, task slots, job properties, progress.

Everything the driver asks of Spark goes through a :class:`Spark`: a classic
``SparkContext`` (:class:`ClassicSpark`) or a Spark Connect session
(:class:`ConnectSpark`), where RDDs, ``SparkContext`` and the status tracker
do not exist.  The driver's other modules never reach into Spark's objects.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

from ..errors import ConfigError, ReservationTimeout

logger = logging.getLogger(__name__)

#: The thread-local Spark properties a job scope sets, and restores afterwards.
_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")

#: The settings that decide how many task slots a cluster has.
SLOT_SETTINGS = ("spark.master", "spark.executor.instances", "spark.executor.cores",
                 "spark.cores.max", "spark.task.cpus", "spark.dynamicAllocation.enabled")


def connect(spark_or_sc: Any) -> "Spark":
    """The :class:`Spark` for a ``SparkContext``, a classic ``SparkSession`` or a Connect one."""
    if hasattr(spark_or_sc, "_jsc") and hasattr(spark_or_sc, "parallelize"):
        return ClassicSpark(spark_or_sc)
    if hasattr(spark_or_sc, "sparkContext") and not _is_connect(spark_or_sc):
        return ClassicSpark(spark_or_sc.sparkContext)
    if _is_connect(spark_or_sc):
        return ConnectSpark(spark_or_sc)
    raise ConfigError(f"TFCluster.run needs a SparkContext or a SparkSession, got "
                      f"{type(spark_or_sc).__name__}")


def _is_connect(spark: Any) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


class Spark:
    """What the driver needs of Spark; see the two implementations."""

    is_connect = False

    def conf(self, key: str, default: str | None = None) -> str | None:
        raise NotImplementedError

    def get(self, key: str, default: str | None = None) -> str | None:
        """``conf`` under ``SparkConf.get``'s name, for code that reads settings either way."""
        return self.conf(key, default)

    def driver_host(self) -> str:
        """The address the executors reach this process at (the control server's)."""
        return self.conf("spark.driver.host") or "127.0.0.1"

    def default_fs(self) -> str:
        """Hadoop's ``fs.defaultFS`` (``ctx.defaultFS`` on the nodes)."""
        return self.conf("spark.hadoop.fs.defaultFS") or "file:///"

    def slots(self) -> int | None:
        """Task slots the cluster offers now (None: it cannot be told)."""
        raise NotImplementedError

    def wait_for_slots(self, needed: int, timeout: float, closed: threading.Event,
                       label: str) -> None:
        """Return once the cluster offers ``needed`` task slots at once.

        Raises :class:`ReservationTimeout` after ``timeout`` seconds with the
        numbers and the settings to change; returns early if ``closed`` is set.
        """
        deadline = time.monotonic() + timeout
        last_log = 0.0
        while not closed.is_set():
            slots = self.slots()
            if slots is None or slots >= needed:
                return
            now = time.monotonic()
            if now >= deadline:
                raise ReservationTimeout(self.slots_message(needed, slots, timeout))
            if now - last_log >= 10:
                logger.info("%s: waiting for executors: %d of %d task slots available", label,
                            slots, needed)
                last_log = now
            # Executors register with the scheduler asynchronously and Spark has
            # no Python-side event for it: re-check twice a second.
            closed.wait(min(0.5, max(0.0, deadline - now)))

    def slots_message(self, needed: int, slots: int | None, timeout: float) -> str:
        settings = ", ".join(f"{k}={self.conf(k) or '(unset)'}" for k in SLOT_SETTINGS)
        offered = f"only {slots}" if slots is not None else "fewer"
        return (f"TFCluster.run needs {needed} task slots at once (one per TF node, "
                f"gang-scheduled in Spark barrier mode) but the cluster offered {offered} within "
                f"reservation_timeout={timeout:g}s.\nLikely causes: too few executors or cores. "
                "Slots = executors x (spark.executor.cores / spark.task.cpus). Raise "
                "spark.executor.instances (--num-executors on YARN) or spark.cores.max "
                "(--total-executor-cores on standalone), lower spark.task.cpus, or lower "
                "num_executors; dynamic allocation must be off "
                "(spark.dynamicAllocation.enabled=false); executors may also have failed to "
                f"start (see the Spark UI).\nCurrent settings: {settings}{self._gpu_slots()}"
                f"{self._yarn_slots()}")

    def _yarn_slots(self) -> str:
        """On YARN, executors can be asked for and never granted: what YARN must allow."""
        if (self.conf("spark.master") or "") != "yarn":
            return ""
        queue, url = self.conf("spark.yarn.queue") or "default", self.yarn_app_url()
        return ("\nOn YARN, executors asked for may never be granted: each needs "
                f"spark.executor.memory={self.conf('spark.executor.memory') or '(unset)'} + "
                "spark.executor.memoryOverhead="
                f"{self.conf('spark.executor.memoryOverhead') or '(unset: max(384m, 10%))'} within "
                "yarn.scheduler.maximum-allocation-mb and a NodeManager's "
                "yarn.nodemanager.resource.memory-mb, and spark.executor.cores within "
                "yarn.scheduler.maximum-allocation-vcores and "
                "yarn.nodemanager.resource.cpu-vcores, in a queue with capacity to spare "
                f"(spark.yarn.queue={queue}: yarn.scheduler.capacity.root.{queue}.capacity "
                f"and .maximum-capacity); the ResourceManager UI shows pending containers"
                f"{' at ' + url if url else ''}.")

    def yarn_app_url(self) -> str | None:
        """This application's page in the YARN ResourceManager UI, where it can be told."""
        return None

    def _gpu_slots(self) -> str:
        """GPUs (sparktf.gpus): what limits the slots when tasks ask for GPUs."""
        keys = ("spark.task.resource.gpu.amount", "spark.executor.resource.gpu.amount",
                "spark.worker.resource.gpu.amount")
        if not self.conf(keys[0]):
            return ""
        return ("\nTasks ask for GPUs: slots are also limited to executors x "
                "(spark.executor.resource.gpu.amount / spark.task.resource.gpu.amount) and by "
                "the GPUs each worker's discovery script finds: "
                + ", ".join(f"{k}={self.conf(k) or '(unset)'}" for k in keys))

    def run_barrier(self, num_tasks: int, task: Callable[[Iterator], Iterator[int]],
                    scope: Callable[[], Any]) -> None:
        """Run ``task`` as a barrier stage of ``num_tasks`` tasks, inside ``scope()``."""
        raise NotImplementedError

    def job_scope(self, group: str, description: str, tag: str) -> Any:
        raise NotImplementedError

    def cancel(self, tag: str) -> None:
        raise NotImplementedError

    def log_progress(self, group: str, description: str, done: threading.Event) -> None:
        """Log a feed job's progress until ``done`` is set (where Spark can tell it)."""

    def partitions(self, data: Any) -> tuple[Any, int]:
        """``data`` to feed, and an upper bound on its number of partitions."""
        raise NotImplementedError

    def is_cached(self, data: Any) -> bool:
        """Whether the RDD or DataFrame ``data`` was persisted (``cache()``/``persist()``):
        its partitions then keep their sizes from one epoch to the next."""
        try:
            return bool(data.is_cached)  # on Connect, a round trip to the server
        except Exception as e:  # a Connect server that cannot tell: assume not
            logger.debug("cannot tell whether the fed data is cached: %s", e)
            return False


class ClassicSpark(Spark):
    """A ``SparkContext`` in this process."""

    def __init__(self, sc: Any) -> None:
        self.sc = sc

    def conf(self, key: str, default: str | None = None) -> str | None:
        return self.sc.getConf().get(key, default)

    def default_fs(self) -> str:
        return self.sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"

    def yarn_app_url(self) -> str | None:
        address = self.sc._jsc.hadoopConfiguration().get("yarn.resourcemanager.webapp.address")
        if not address or address.startswith("0.0.0.0:"):   # unset, or HA (one per RM id)
            return None
        return f"http://{address}/cluster/app/{self.sc.applicationId}"

    def slots(self) -> int:
        jsc = self.sc._jsc.sc()
        return jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile())

    def run_barrier(self, num_tasks: int, task: Callable[[Iterator], Iterator[int]],
                    scope: Callable[[], Any]) -> None:
        with scope():
            self.sc.parallelize(range(num_tasks), num_tasks).barrier().mapPartitions(task) \
                .collect()

    @contextlib.contextmanager
    def job_scope(self, group: str, description: str, tag: str) -> Iterator[None]:
        """Run the jobs started inside in ``group`` with ``tag``, on the caller's thread.

        Spark keeps job groups, descriptions and tags per thread; this puts back
        whatever the caller had, so the caller's later jobs never join sparktf's
        group (where a failing cluster would cancel them).
        """
        sc = self.sc
        saved = {key: sc.getLocalProperty(key) for key in _PROPERTIES}
        had_tag = tag in sc.getJobTags()
        sc.setJobGroup(group, description, interruptOnCancel=True)
        sc.addJobTag(tag)
        try:
            yield
        finally:
            for key, value in saved.items():
                sc.setLocalProperty(key, value)
            if not had_tag:
                sc.removeJobTag(tag)

    def cancel(self, tag: str) -> None:
        try:
            self.sc.cancelJobsWithTag(tag)
        except Exception:  # the SparkContext may be stopping
            logger.debug("could not cancel the jobs tagged %s", tag, exc_info=True)

    def log_progress(self, group: str, description: str, done: threading.Event,
                     every: float = 5.0) -> None:
        """Log how many partitions of ``group`` (one feed job) are done, every ``every`` s."""
        tracker, started = self.sc.statusTracker(), time.monotonic()
        while not done.wait(every):
            total = finished = 0
            for job_id in tracker.getJobIdsForGroup(group):
                job = tracker.getJobInfo(job_id)
                for stage in (tracker.getStageInfo(s) for s in (job.stageIds if job else ())):
                    if stage is not None:
                        total += stage.numTasks
                        finished += stage.numCompletedTasks
            if total and not done.is_set():
                elapsed = time.monotonic() - started
                left = f", about {elapsed * (total - finished) / finished:.0f}s left" \
                    if finished else ""
                logger.info("%s: %d of %d partitions fed in %.0fs%s", description, finished,
                            total, elapsed, left)

    def partitions(self, data: Any) -> tuple[Any, int]:
        rdd = data.rdd if hasattr(data, "mapInArrow") else data
        return data, rdd.getNumPartitions()


class ConnectSpark(Spark):
    """A Spark Connect session: no SparkContext, no RDDs, no status tracker.

    The barrier stage runs through ``DataFrame.mapInArrow(..., barrier=True)``
    and a ``collect()`` (SPARK-53606: only collect-style actions run barrier
    stages on Connect); jobs are tagged with session tags and interrupted by
    tag; task slots are worked out from the settings where they tell.
    """

    is_connect = True
    #: Feeding on Connect coalesces a DataFrame to at most this many partitions, because
    #: a Connect DataFrame cannot tell its partition count (the epoch agreement needs a bound).
    MAX_FEED_PARTITIONS = 256

    def __init__(self, spark: Any) -> None:
        self.spark = spark

    def conf(self, key: str, default: str | None = None) -> str | None:
        try:
            return self.spark.conf.get(key, default)
        except Exception:  # an unset key without a default
            return default

    def driver_host(self) -> str:
        """This client's address on the route to the Connect server."""
        url = urlparse(self.spark.client._builder.url.geturl()
                       if hasattr(self.spark, "client") else "sc://127.0.0.1")
        host = url.hostname or "127.0.0.1"
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                           socket.SOCK_DGRAM) as s:
            s.connect((host, url.port or 15002))  # no packet is sent for a UDP connect
            return s.getsockname()[0]

    def slots(self) -> int | None:
        return configured_slots(self.conf)

    def wait_for_slots(self, needed: int, timeout: float, closed: threading.Event,
                       label: str) -> None:
        """Fail at once when the settings give too few slots: they do not change here."""
        slots = self.slots()
        if slots is not None and slots < needed:
            raise ReservationTimeout(self.slots_message(needed, slots, timeout))

    def run_barrier(self, num_tasks: int, task: Callable[[Iterator], Iterator[int]],
                    scope: Callable[[], Any]) -> None:
        def arrow_task(batches: Iterator) -> Iterator:
            import pyarrow as pa
            nodes = list(task(iter(batches)))
            yield pa.RecordBatch.from_pydict({"node": nodes}, pa.schema([("node", pa.int64())]))

        with scope():
            self.spark.range(0, num_tasks, 1, num_tasks) \
                .mapInArrow(arrow_task, "node long", barrier=True).collect()

    @contextlib.contextmanager
    def job_scope(self, group: str, description: str, tag: str) -> Iterator[None]:
        """Tag the operations started inside (Connect tags are per thread, like job groups)."""
        had = tag in self.spark.getTags()
        self.spark.addTag(tag)
        try:
            yield
        finally:
            if not had:
                self.spark.removeTag(tag)

    def cancel(self, tag: str) -> None:
        try:
            self.spark.interruptTag(tag)
        except Exception:
            logger.debug("could not interrupt the operations tagged %s", tag, exc_info=True)

    def partitions(self, data: Any) -> tuple[Any, int]:
        if not hasattr(data, "mapInArrow"):
            raise ConfigError("Spark Connect has no RDDs: feed a DataFrame")
        bound = self.MAX_FEED_PARTITIONS
        return data.coalesce(bound), bound


def configured_slots(conf: Callable[[str], str | None]) -> int | None:
    """Task slots as the settings give them, or None where they do not tell (pure logic).

    ``local[N]`` and ``local-cluster[n,c,m]`` fix them; elsewhere
    ``spark.executor.instances`` x cores per executor does (YARN, Kubernetes),
    or ``spark.cores.max`` (standalone).
    """
    master = conf("spark.master") or ""
    task_cpus = int(conf("spark.task.cpus") or 1)
    if master == "local":
        return 1 // task_cpus
    m = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master)
    if m:
        return None if m.group(1) == "*" else int(m.group(1)) // task_cpus
    m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master)
    if m:
        return int(m.group(1)) * (int(m.group(2)) // task_cpus)
    if (conf("spark.dynamicAllocation.enabled") or "false").lower() == "true":
        return None
    cores = conf("spark.executor.cores")
    if conf("spark.executor.instances") and cores:
        return int(conf("spark.executor.instances")) * (int(cores) // task_cpus)
    if conf("spark.cores.max"):
        return int(conf("spark.cores.max")) // task_cpus
    return None
