"""What each barrier task of ``TFCluster.run`` does on its executor.

1. Reserve a TF port by binding a socket on the executor's address (port 0:
   the kernel picks a free one, so nodes on one host never collide, and the
   bound socket keeps it ours until the node releases it).
2. ``allGather`` the ``host:port`` of every node: Spark's barrier mode has
   gang-scheduled all tasks, so this returns promptly and in partition order.
3. Work out the roles, the cluster spec and ``TF_CONFIG`` (pure functions in
   :mod:`sparktf.roles`), write the node's spec, and start its supervisor.
4. TENSORFLOW mode: wait for the node and fail the task if it failed.
   SPARK mode: return at once; the detached supervisor keeps the node running
   so that the feeding tasks can use the executor's slots.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import traceback
from typing import Iterator

from .. import gpus, protocol
from .. import roles as rolemod
from ..errors import ProtocolError
from . import procs

logger = logging.getLogger(__name__)


def reserve_port(host: str) -> socket.socket:
    """A free port for a TF server on ``host``, held by a bound socket until the node
    releases it.

    The socket is bound to the wildcard address (it never listens): TensorFlow's gRPC
    server binds the port on every interface, so a port held on ``host`` alone stays free
    on the host's other addresses, where another process may take it meanwhile (TF then
    fails with "Could not start gRPC server").
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    return sock


def executor_id() -> str:
    """The Spark executor id of this Python worker, as well as it can be told."""
    m = re.search(r"executorId=([^&]+)", os.environ.get("SPARK_LOG_URL_STDERR", ""))
    if m:
        return m.group(1)
    return os.environ.get("SPARK_EXECUTOR_ID") or os.path.basename(os.getcwd())


def _node_env(env: dict) -> dict:
    """The node's extra environment: the plan's, plus this worker's ``sys.path``.

    The node is a fresh Python; handing it the PySpark worker's path makes
    ``--py-files``, ``sc.addPyFile`` and ``--archives`` modules importable there too.
    """
    path = [p for p in sys.path if p]
    if env.get("PYTHONPATH"):
        path.insert(0, env["PYTHONPATH"])
    return {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path))}


def node_directory(plan: protocol.LaunchPlan, node: int) -> str:
    """Create node ``node``'s private directory (0700: it will hold the cluster secret)."""
    base = plan.base_dir or os.path.join(os.getcwd(), "sparktf-nodes")
    cluster_dir = os.path.join(base, plan.cluster_id)
    os.makedirs(cluster_dir, mode=0o700, exist_ok=True)
    node_dir = os.path.join(cluster_dir, f"node-{node}")
    os.makedirs(node_dir, mode=0o700, exist_ok=True)
    os.chmod(node_dir, 0o700)  # makedirs' mode is filtered by the umask
    return node_dir


def start_node(plan: protocol.LaunchPlan, payload: bytes, node: int, host: str,
               port_sock: socket.socket, cluster_spec: dict, owner: int,
               detach: bool, gpu: gpus.Assignment | None = None) -> subprocess.Popen:
    """Write node ``node``'s spec and start its supervisor; return the supervisor process.

    Used by the barrier tasks and, for ``driver_ps_nodes``, by the driver.
    ``gpu``: the node's GPUs (:func:`sparktf.gpus.assign`); default: none for
    ps nodes, not managed for others.
    """
    roles = [rolemod.Role(*r) for r in plan.roles]
    role = roles[node]
    # GPUs (sparktf.gpus): CUDA_VISIBLE_DEVICES for the node; run(env=...) can override it.
    gpu = gpu if gpu is not None else gpus.assign(role.job, None)
    node_dir = node_directory(plan, node)
    # With a remote log_dir the node writes to a local directory, mirrored to log_url.
    # (Imported here: `python -m sparktf.node.logsync` must not find it imported by sparktf.)
    from . import logsync
    log_dir, log_url = plan.log_dir or os.path.join(node_dir, "tensorboard"), None
    if logsync.is_remote(plan.log_dir):
        log_dir = os.path.join(node_dir, "tensorboard")
        log_url = logsync.node_url(plan.log_dir, role.job, role.index, cluster_spec)
    spec = protocol.NodeSpec(
        node=node, job=role.job, index=role.index, host=host,
        tf_port=port_sock.getsockname()[1], executor=executor_id(), cluster_spec=cluster_spec,
        tf_config=rolemod.tf_config(cluster_spec, role), num_workers=rolemod.num_workers(roles),
        input_mode=plan.input_mode, release_port=plan.release_port, control=plan.control,
        secret=plan.secret, env=_node_env({**gpu.env, **plan.env}), default_fs=plan.default_fs,
        working_dir=plan.working_dir, node_dir=node_dir, detach=detach, attempt=plan.attempt,
        tensorboard=plan.tensorboard == node, log_dir=log_dir, log_url=log_url,
        keep_node_dir=plan.keep_node_dirs, tls_cert=plan.tls_cert, tls_key=plan.tls_key,
        gpus=list(gpu.gpus) if gpu.source else None, gpu_source=gpu.source)
    protocol.write_private(spec.payload_path, payload)
    spec_path = os.path.join(node_dir, "spec.json")
    spec.write(spec_path)
    fd = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparktf.node.supervisor", spec_path, str(owner),
             str(port_sock.fileno())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=node_dir,
            start_new_session=True, pass_fds=(port_sock.fileno(),))
    port_sock.close()
    return proc


def start_driver_ps(plan: protocol.LaunchPlan, payload: bytes, socks: list[socket.socket],
                    cluster_spec: dict) -> list[subprocess.Popen]:
    """Start the ps nodes on the driver (``driver_ps_nodes=True``), owned by the driver."""
    # On the driver, node files go to the temp dir, not the application's cwd.
    local = os.path.join(tempfile.gettempdir(), "sparktf-nodes")
    plan = dataclasses.replace(plan, base_dir=plan.base_dir or local)
    host = plan.control[0]
    return [start_node(plan, payload, i, host, sock, cluster_spec, os.getpid(), detach=False)
            for i, sock in enumerate(socks)]


def report_failure(plan: protocol.LaunchPlan, node: int, error: Exception) -> None:
    """Tell the driver, as the node's supervisor would, that ``node`` failed in its barrier
    task before its process started (e.g. a ``GpuError``): the driver raises at once, not
    when Spark has given up retrying the barrier stage (about 10 s later)."""
    from .. import tls as tlsmod
    from ..control import ControlClient

    try:
        client = ControlClient(plan.control, bytes.fromhex(plan.secret), node, "supervisor",
                               on_message=lambda _: None, on_lost=lambda: None,
                               tls=tlsmod.client(plan.tls_cert))
        exited = protocol.Exited(code=None, error=f"{type(error).__name__}: {error}",
                                 traceback="".join(traceback.format_exception(error)))
        client.send(exited.to_dict())
        client.close()
    except (OSError, EOFError, ProtocolError) as e:   # the task's error still fails the job
        logger.warning("cannot report node %d's failure to the driver: %s", node, e)


def barrier_task(plan: protocol.LaunchPlan, payload: bytes):
    """The function that ``mapPartitions`` runs in each barrier task."""

    def launch(_: Iterator) -> Iterator[int]:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        node = ctx.partitionId()
        host = ctx.getTaskInfos()[node].address.rsplit(":", 1)[0]
        port_sock = reserve_port(host)
        mine = f"{host}:{port_sock.getsockname()[1]}"
        addresses = plan.ps_addresses + ctx.allGather(mine)
        node += len(plan.ps_addresses)
        spec = rolemod.cluster_spec([rolemod.Role(*r) for r in plan.roles], addresses)
        # GPUs (sparktf.gpus): this task's Spark GPUs, or nvidia-smi for run(num_gpus=...).
        jobs = [job for job, _ in plan.roles]
        slot, slots = gpus.host_slot([a.rsplit(":", 1)[0] for a in addresses], jobs, node)
        spark_mode = plan.input_mode == protocol.InputMode.SPARK
        try:
            gpu = gpus.assign(jobs[node], ctx.resources(), plan.num_gpus, slot=slot,
                              slots=slots, where=f"host {host} (executor {executor_id()})")
            owner = procs.executor_jvm_pid() if spark_mode else os.getpid()
            proc = start_node(plan, payload, node, host, port_sock, spec, owner,
                              detach=spark_mode, gpu=gpu)
        except Exception as e:
            report_failure(plan, node, e)
            raise
        code = proc.wait()
        if code != 0:
            role = rolemod.Role(*plan.roles[node])
            raise RuntimeError(f"sparktf node {role.name} (node {node}) failed with exit code "
                               f"{code}; see the driver's error for its log")
        yield node

    return launch
