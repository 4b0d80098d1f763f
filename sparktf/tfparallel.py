"""``TFParallel.run``: independent single-node TensorFlow instances on the executors.

TensorFlowOnSpark's API for embarrassingly parallel work, typically inference
over file shards: ``map_fn(tf_args, ctx)`` runs ``num_executors`` times, once
per Spark task, with no TF cluster and no feed.  ``ctx`` has TensorFlowOnSpark's
``executor_id`` / ``worker_num`` (0..N-1), ``num_workers``, ``defaultFS``,
``job_name`` (``'worker'``), ``task_index``, plus ``working_dir``, ``gpus``
and ``absolute_path()``.

Unlike TensorFlowOnSpark, each instance runs in a fresh Python process started
by its task (``python -m sparktf.parallel_main``), as a TF node does: TensorFlow
state never leaks between runs in a reused PySpark worker, and a process that
outlives its task is impossible (it exits when the task's Python worker does,
and the task stops its process group when it ends or is killed).  An exception
in ``map_fn`` fails the task with the instance's traceback, which the driver
raises as :class:`sparktf.NodeError` naming the instance and host.

With ``use_barrier=True`` (the default) the instances are gang-scheduled: when
the cluster has fewer task slots than instances, ``run`` raises
:class:`sparktf.ReservationTimeout` within ``reservation_timeout`` seconds (the
check ``TFCluster.run`` makes).  ``use_barrier=False`` runs a plain job.  GPUs:
an instance gets the GPUs Spark assigned to its task, or with ``num_gpus`` its
share of a host's free GPUs (instances on one host take disjoint sets).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Callable

from pyspark import cloudpickle

from . import gpus as gpumod
from .driver import sparkjobs
from .errors import ConfigError, NodeError, ReservationTimeout
from .node import procs

logger = logging.getLogger(__name__)

#: The first line of a failed instance's task error, which the driver looks for.
_FAILED = re.compile(r"sparktf TFParallel instance (\d+) on (\S+) failed: ([^\n]*)\n")
_END = "--- end of instance output ---"


def run(sc: Any, map_fn: Callable[[Any, Any], Any], tf_args: Any, num_executors: int,
        use_barrier: bool = True, *, num_gpus: int | None = None,
        env: dict[str, str] | None = None, legacy_keras: bool = True,
        reservation_timeout: float = 30) -> None:
    """Run ``map_fn(tf_args, ctx)`` as ``num_executors`` independent TF instances; returns None.

    ``tf_args`` given as a list becomes each instance's ``sys.argv``.  ``env``
    adds variables to the instances' environment; ``legacy_keras`` sets
    ``TF_USE_LEGACY_KERAS=1`` (``tf.keras`` is tf-keras), as ``TFCluster.run``
    does.  Raises :class:`NodeError` for the first instance that failed.
    """
    if isinstance(num_executors, bool) or not isinstance(num_executors, int) \
            or num_executors < 1:
        raise ConfigError(f"num_executors must be an integer >= 1, got {num_executors!r}")
    spark = sparkjobs.connect(sc)
    if spark.is_connect:
        raise ConfigError("TFParallel.run needs a SparkContext or a classic SparkSession, "
                          "not Spark Connect")
    context = spark.sc
    try:
        payload = cloudpickle.dumps((map_fn, tf_args))
    except Exception as e:
        raise ConfigError(f"map_fn or tf_args cannot be pickled for the executors: {e}") from e
    if use_barrier:
        _check_slots(spark, num_executors, reservation_timeout)
    instance_env = {"PYTHONUNBUFFERED": "1", **({"TF_USE_LEGACY_KERAS": "1"}
                                                 if legacy_keras else {}), **(env or {})}
    settings = {"num_workers": num_executors, "defaultFS": spark.default_fs().rstrip("/")
                if spark.default_fs() != "file:///" else "file://",
                "working_dir": os.getcwd(), "num_gpus": num_gpus, "barrier": use_barrier}

    def task(index: int, _rows) -> list[int]:
        return [_run_instance(index, payload, settings, instance_env)]

    rdd = context.parallelize(range(num_executors), num_executors)
    context.setJobDescription(f"sparktf TFParallel {num_executors} instances")
    try:
        if use_barrier:
            rdd.barrier().mapPartitionsWithIndex(task).collect()
        else:
            rdd.mapPartitionsWithIndex(task).collect()
    except Exception as e:  # noqa: BLE001 - a failed instance arrives inside Spark's error
        raise _instance_error(e) from e
    finally:
        context.setJobDescription(None)
    logger.info("TFParallel: %d instances finished", num_executors)


def _check_slots(spark: Any, needed: int, timeout: float) -> None:
    """TFCluster.run's slot check: at once when the settings fix the slots, else bounded."""
    configured = sparkjobs.configured_slots(spark.conf)
    try:
        if configured is not None and configured < needed:
            raise ReservationTimeout(spark.slots_message(needed, configured, 0).replace(
                " within reservation_timeout=0s", " (as its settings fix them)", 1))
        spark.wait_for_slots(needed, timeout, threading.Event(), "TFParallel.run")
    except ReservationTimeout as e:
        raise ReservationTimeout(str(e).replace("TFCluster.run", "TFParallel.run", 1)
                                 .replace("per TF node", "per instance", 1)) from None


def _instance_error(e: BaseException) -> NodeError:
    """The :class:`NodeError` of the first failed instance in Spark's job error ``e``."""
    text = str(e)
    match = _FAILED.search(text)
    if not match:
        return NodeError(f"TFParallel job failed: {text.strip().splitlines()[0] if text else e!r}",
                         "", text)
    index, host, what = match.groups()
    detail = text[match.end():]
    detail = detail[:detail.find(_END)] if _END in detail else detail
    return NodeError(f"TFParallel instance {index} on {host} failed: {what}",
                     f"instance:{index}", detail)


# ----------------------------------------------------------------------------- in the task


def _run_instance(index: int, payload: bytes, settings: dict, env: dict[str, str]) -> int:
    """Start instance ``index`` in a fresh Python process, wait for it, raise if it failed."""
    from pyspark import BarrierTaskContext, TaskContext

    host = _host()
    task_ctx = TaskContext.get()
    hosts = None
    if settings["barrier"]:
        hosts = [info.address.rsplit(":", 1)[0] for info in
                 BarrierTaskContext.get().getTaskInfos()]
    slot, slots = gpumod.host_slot(hosts, ["worker"] * len(hosts), index) if hosts else (0, 1)
    assignment = gpumod.assign("worker", task_ctx.resources() if task_ctx else None,
                               settings["num_gpus"], slot=slot, slots=slots, where=host)
    directory = tempfile.mkdtemp(prefix=f"sparktf-parallel-{index}-")   # 0700
    try:
        spec = {"executor_id": index, "num_workers": settings["num_workers"],
                "defaultFS": settings["defaultFS"], "working_dir": settings["working_dir"],
                "gpus": list(assignment.gpus) if assignment.source else None}
        for name, data in (("spec.json", json.dumps(spec).encode()), ("payload.pkl", payload)):
            fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        log = os.path.join(directory, "instance.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "sparktf.parallel_main", directory],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **env, **assignment.env})
        try:
            code = proc.wait()
        finally:
            procs.stop_group(proc, grace=2)    # also what the instance started
        if code != 0:
            failure = _read_failure(os.path.join(directory, "failure.json"))
            what = failure.get("error") or f"its process exited with code {code}"
            raise RuntimeError(f"sparktf TFParallel instance {index} on {host} failed: {what}\n"
                               f"{failure.get('traceback', '')}\n--- instance output ---\n"
                               f"{procs.tail(log)}\n{_END}")
        return code
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _host() -> str:
    import socket
    return socket.gethostname()


def _read_failure(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
