"""``ctx``: what ``map_fun(tf_args, ctx)`` learns about its node and cluster."""

from __future__ import annotations

import socket
from typing import Any

from .. import paths, roles
from ..protocol import NodeSpec


class NodeContext:
    """The second argument of ``map_fun``, with TensorFlowOnSpark's attributes.

    Attributes: ``executor_id`` / ``worker_num`` (node number 0..N-1),
    ``job_name``, ``task_index``, ``rank`` and ``is_chief`` (rank 0 among the
    training nodes), ``attempt`` (restarts so far), ``cluster_spec``,
    ``num_workers`` (chief, master and workers), ``defaultFS``,
    ``working_dir`` (the driver's working directory), ``node_dir`` (this
    node's local scratch directory, which holds its log), ``log_dir`` (where
    TensorBoard, with ``tensorboard=True``, reads event files: write summaries
    there; always a local directory), ``log_url`` (with a remote ``log_dir``
    such as ``s3://...``: the URL that ``log_dir`` is mirrored to, see
    :mod:`sparktf.node.logsync`; None otherwise), ``mgr`` (the handle
    :class:`sparktf.TFNode.DataFeed` takes; None in TENSORFLOW mode) and
    ``tmp_socket`` (the socket holding the TF port while ``release_port=False``).
    """

    def __init__(self, spec: NodeSpec, mgr: Any = None,
                 tmp_socket: socket.socket | None = None) -> None:
        self.executor_id: int = spec.node
        self.worker_num: int = spec.node
        self.job_name: str = spec.job
        self.task_index: int = spec.index
        self.cluster_spec: dict[str, list[str]] = spec.cluster_spec
        self.num_workers: int = spec.num_workers
        self.defaultFS: str = spec.default_fs
        self.working_dir: str = spec.working_dir
        self.node_dir: str = spec.node_dir
        self.log_dir: str = spec.log_dir
        self.log_url: str | None = spec.log_url
        self.host: str = spec.host
        self.tf_port: int = spec.tf_port
        #: 0 on the first start; n after the n-th restart (``max_restarts``).
        self.attempt: int = spec.attempt
        #: GPUs (sparktf.gpus): the physical GPU ids in this node's CUDA_VISIBLE_DEVICES
        #: (TensorFlow numbers them /GPU:0, /GPU:1, ...); [] for none (ps nodes), None
        #: when sparktf did not manage GPUs (no Spark GPU resources, no num_gpus).
        self.gpus: list[str] | None = spec.gpus
        #: This node's rank among the ``num_workers`` training nodes (chief or
        #: master first, then the workers); None for ps and evaluator nodes.
        self.rank: int | None = roles.rank(self.job_name, self.task_index, self.cluster_spec)
        self.mgr = mgr
        self.tmp_socket = tmp_socket

    @property
    def is_chief(self) -> bool:
        """True on the node that writes checkpoints, exports and summaries (rank 0)."""
        return self.rank == 0

    def __repr__(self) -> str:
        return (f"NodeContext(executor_id={self.executor_id}, job_name={self.job_name!r}, "
                f"task_index={self.task_index}, num_workers={self.num_workers})")

    def absolute_path(self, path: str) -> str:
        """A fully qualified URL for ``path`` (see :func:`sparktf.TFNode.hdfs_path`)."""
        return paths.absolute_path(path, self.defaultFS, self.working_dir)

    def release_port(self) -> None:
        """Release the reserved TF port (needed only with ``release_port=False``)."""
        if self.tmp_socket is not None:
            self.tmp_socket.close()
            self.tmp_socket = None

    def get_data_feed(self, train_mode: bool = True, qname_in: str = "input",
                      qname_out: str = "output", input_mapping: dict | None = None):
        """A :class:`sparktf.TFNode.DataFeed` over this node's fed data (SPARK mode)."""
        from ..tfnode import DataFeed
        return DataFeed(self.mgr, train_mode, qname_in, qname_out, input_mapping)

    def start_cluster_server(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "ctx.start_cluster_server() is TensorFlow 1.x only. In TF2, TF_CONFIG is already set: "
            "create a tf.distribute strategy (MultiWorkerMirroredStrategy or "
            "ParameterServerStrategy), or tf.distribute.Server for a ps node.")

    def export_saved_model(self, *args: Any, **kwargs: Any):
        raise NotImplementedError(
            "ctx.export_saved_model(sess, ...) is TensorFlow 1.x only. Use model.save(path) or "
            "tf.saved_model.save(obj, path) on the chief.")

