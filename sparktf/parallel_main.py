"""The process of one ``TFParallel`` instance: ``python -m sparktf.parallel_main DIR``.

``DIR`` (private to the user) holds ``spec.json`` (what ``ctx`` carries) and
``payload.pkl`` (``map_fn`` and ``tf_args``, written by the instance's own
Spark task).  An exception in ``map_fn`` is written to ``failure.json`` and the
process exits 1.  The process exits as soon as its parent, the task's Python
worker, does.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from . import paths
from .node import procs


class ParallelContext:
    """``ctx`` of a TFParallel instance, with TensorFlowOnSpark's attributes.

    ``executor_id`` / ``worker_num`` / ``task_index`` (0..N-1), ``num_workers``
    (N), ``job_name`` (``'worker'``), ``defaultFS``, ``working_dir`` (the
    driver's), ``gpus`` (this instance's GPU ids; None when sparktf did not
    manage GPUs).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.executor_id: int = spec["executor_id"]
        self.worker_num: int = spec["executor_id"]
        self.task_index: int = spec["executor_id"]
        self.job_name = "worker"
        self.num_workers: int = spec["num_workers"]
        self.defaultFS: str = spec["defaultFS"]
        self.working_dir: str = spec["working_dir"]
        self.gpus: list[str] | None = spec.get("gpus")

    def absolute_path(self, path: str) -> str:
        """A fully qualified URL for ``path`` (see :func:`sparktf.TFNode.hdfs_path`)."""
        return paths.absolute_path(path, self.defaultFS, self.working_dir)

    def __repr__(self) -> str:
        return (f"ParallelContext(executor_id={self.executor_id}, "
                f"num_workers={self.num_workers})")


def main() -> None:
    directory = sys.argv[1]
    procs.on_exit(os.getppid(), lambda: os._exit(1), name="sparktf-parent-watch")
    from pyspark import cloudpickle

    with open(os.path.join(directory, "spec.json")) as f:
        spec = json.load(f)
    with open(os.path.join(directory, "payload.pkl"), "rb") as f:
        map_fn, tf_args = cloudpickle.loads(f.read())
    if isinstance(tf_args, list):
        sys.argv = [str(a) for a in tf_args]   # as TensorFlowOnSpark and TF nodes
    try:
        map_fn(tf_args, ParallelContext(spec))
    except BaseException as e:  # noqa: BLE001 - reported to the task, then to the driver
        failure = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:500],
                   "traceback": traceback.format_exc()}
        with open(os.path.join(directory, "failure.json"), "w") as f:
            json.dump(failure, f)
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
