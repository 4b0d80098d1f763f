"""Executor-side helpers, exposed as ``sparktf.TFNode`` (TensorFlowOnSpark's names)."""

from __future__ import annotations

from typing import Any

from . import paths
from .feed.datafeed import DataFeed

__all__ = ["hdfs_path", "DataFeed", "start_cluster_server", "export_saved_model",
           "next_batch", "batch_results", "terminate"]


def hdfs_path(ctx: Any, path: str) -> str:
    """A fully qualified URL for ``path`` on the cluster's default file system.

    A path with a scheme is returned unchanged; ``/abs/path`` becomes
    ``ctx.defaultFS + path``; a relative path goes under ``/user/<user>`` on
    HDFS-like file systems and under ``ctx.working_dir`` locally.
    """
    return paths.absolute_path(path, ctx.defaultFS, ctx.working_dir)


def _tf1(name: str, instead: str):
    def removed(*args: Any, **kwargs: Any):
        raise NotImplementedError(f"TFNode.{name}() is TensorFlow 1.x only; {instead}")
    removed.__name__ = name
    return removed


start_cluster_server = _tf1("start_cluster_server", "in TF2 TF_CONFIG is already set: create a "
                            "tf.distribute strategy, or tf.distribute.Server for a ps node")
export_saved_model = _tf1("export_saved_model", "use model.save(path) or tf.saved_model.save()")
next_batch = _tf1("next_batch", "use TFNode.DataFeed(ctx.mgr).next_batch(n)")
batch_results = _tf1("batch_results", "use TFNode.DataFeed(ctx.mgr).batch_results(results)")
terminate = _tf1("terminate", "use TFNode.DataFeed(ctx.mgr).terminate()")
