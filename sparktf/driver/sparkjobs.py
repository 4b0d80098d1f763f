"""The Spark side of the driver: task slots, job properties, progress.

Everything here talks to the ``SparkContext`` and nothing else, so the
driver's other modules never reach into Spark's Java objects.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Iterator

from ..errors import ReservationTimeout

logger = logging.getLogger(__name__)

#: The thread-local Spark properties a job scope sets, and restores afterwards.
_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


def wait_for_slots(sc: Any, needed: int, timeout: float, closed: threading.Event,
                   label: str) -> None:
    """Return once the cluster offers ``needed`` task slots at once.

    Raises :class:`ReservationTimeout` after ``timeout`` seconds with the numbers
    and the settings to change; returns early if ``closed`` is set.
    """
    jsc = sc._jsc.sc()
    profile = jsc.resourceProfileManager().defaultResourceProfile()
    deadline = time.monotonic() + timeout
    last_log = 0.0
    while not closed.is_set():
        slots = jsc.maxNumConcurrentTasks(profile)
        if slots >= needed:
            return
        now = time.monotonic()
        if now >= deadline:
            raise ReservationTimeout(slots_message(sc, needed, slots, timeout))
        if now - last_log >= 10:
            logger.info("%s: waiting for executors: %d of %d task slots available", label,
                        slots, needed)
            last_log = now
        # Executors register with the scheduler asynchronously and Spark has
        # no Python-side event for it: re-check twice a second.
        closed.wait(min(0.5, max(0.0, deadline - now)))


def slots_message(sc: Any, needed: int, slots: int, timeout: float) -> str:
    conf = sc.getConf()
    settings = ", ".join(f"{k}={conf.get(k, '(unset)')}" for k in (
        "spark.master", "spark.executor.instances", "spark.executor.cores", "spark.cores.max",
        "spark.task.cpus", "spark.dynamicAllocation.enabled"))
    return (f"TFCluster.run needs {needed} task slots at once (one per TF node, gang-scheduled "
            f"in Spark barrier mode) but the cluster offered only {slots} within "
            f"reservation_timeout={timeout:g}s.\nLikely causes: too few executors or cores. "
            "Slots = executors x (spark.executor.cores / spark.task.cpus). Raise "
            "spark.executor.instances (--num-executors on YARN) or spark.cores.max "
            "(--total-executor-cores on standalone), lower spark.task.cpus, or lower "
            "num_executors; dynamic allocation must be off "
            "(spark.dynamicAllocation.enabled=false); executors may also have failed to start "
            f"(see the Spark UI).\nCurrent settings: {settings}")


def hadoop_default_fs(sc: Any) -> str:
    """Hadoop's ``fs.defaultFS`` as the driver sees it (``ctx.defaultFS`` on the nodes)."""
    return sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"


@contextlib.contextmanager
def job_scope(sc: Any, group: str, description: str, tag: str) -> Iterator[None]:
    """Run the jobs started inside in ``group`` with ``tag``, on the caller's thread.

    Spark keeps job groups, descriptions and tags per thread; this puts back
    whatever the caller had, so the caller's later jobs never join sparktf's
    group (where a failing cluster would cancel them).
    """
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


def cancel(sc: Any, tag: str) -> None:
    """Cancel every running job with ``tag`` (the SparkContext may be stopping)."""
    try:
        sc.cancelJobsWithTag(tag)
    except Exception:
        logger.debug("could not cancel the jobs tagged %s", tag, exc_info=True)


def log_progress(sc: Any, group: str, description: str, done: threading.Event,
                 every: float = 5.0) -> None:
    """Log how many partitions of the job group ``group`` are done, every ``every`` s.

    ``group`` holds one feed job and nothing else, so the counts are that job's.
    """
    tracker, started = sc.statusTracker(), time.monotonic()
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
