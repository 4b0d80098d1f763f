"""The supervisor of one node: ``python -m sparktf.node.supervisor SPEC OWNER_PID PORT_FD``.

A small process (it never imports TensorFlow) between the Spark task and the
node process.  It

* starts the node process in a new process group, its stdout and stderr in
  the node's log file, ``TF_CONFIG`` and the reserved TF port passed along;
* stops that group when the driver says ``stop``, when the control
  connection to the driver is lost, or when its owner dies (the Spark task in
  TENSORFLOW mode, the executor JVM in SPARK mode): no orphans;
* with a remote ``log_dir`` (``s3://``, ``hdfs://``...), runs the process
  that mirrors the node's local log directory there
  (:mod:`sparktf.node.logsync`) and lets it make its last, time-bounded
  upload after the node has ended;
* reports how the node ended (exit code, whether it was stopped, the last
  lines of its log) to the driver, which is how a SIGKILLed or OOM-killed
  node still produces a useful error.

In SPARK mode the Spark task must return while the node keeps running, so the
supervisor detaches (double fork) and is adopted by init or a subreaper.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading

from .. import gpus as gpusmod
from .. import protocol, tensorboard
from .. import tls as tlsmod
from ..control import ControlClient
from . import logsync, procs
from .main import PORT_FD_ENV

logger = logging.getLogger("sparktf.node.supervisor")  # runs as __main__

#: Variables of the PySpark worker that must not leak into user code.
_PRIVATE_ENV = ("PYTHON_WORKER_FACTORY_SECRET", "_PYSPARK_DRIVER_CONN_INFO_PATH")


class Supervisor:
    def __init__(self, spec: protocol.NodeSpec, spec_path: str, owner: int,
                 port_fd: int) -> None:
        self.spec = spec
        self._stopping = threading.Event()
        self._reason = ""
        self.proc: subprocess.Popen | None = None
        # The control connection first: TensorBoard may report its URL at once.
        self.control = ControlClient(spec.control, bytes.fromhex(spec.secret), spec.node,
                                     "supervisor", on_message=self._on_message,
                                     on_lost=lambda: self.stop("lost contact with the driver"),
                                     tls=tlsmod.client(spec.tls_cert))
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        env.update(spec.env)
        env["TF_CONFIG"] = spec.tf_config
        env[PORT_FD_ENV] = str(port_fd)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparktf.node.main", spec_path],
            stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr,
            cwd=spec.node_dir, env=env, start_new_session=True, pass_fds=(port_fd,))
        os.close(port_fd)
        if self._stopping.is_set():  # stopped before the node existed
            threading.Thread(target=procs.stop_group, args=(self.proc,), daemon=True).start()
        side_env = {k: v for k, v in env.items() if k not in ("TF_CONFIG", PORT_FD_ENV)}
        self.tensorboard = None
        if spec.tensorboard:
            self.tensorboard = tensorboard.start(
                spec.log_dir, spec.host, sys.stderr.buffer, self._report_tensorboard, side_env)
        self.logsync = None
        if spec.log_url:  # a remote log_dir: mirror the node's local one there
            self.logsync = logsync.start(spec.log_dir, spec.log_url, side_env, sys.stderr)
        self.control.send(protocol.Started(
            pid=self.proc.pid, host=spec.host, executor=spec.executor, log=spec.log_path,
            cluster_spec=spec.cluster_spec, gpus=gpusmod.describe(spec.gpus, spec.gpu_source),
        ).to_dict())
        procs.on_exit(owner, lambda: self.stop(f"owner process {owner} exited"))

    def _report_tensorboard(self, url: str) -> None:
        self.control.send(protocol.TensorBoardUp(url).to_dict())

    def _on_message(self, raw: dict) -> None:
        try:
            msg = protocol.decode(raw)
        except Exception as e:
            sys.stderr.write(f"sparktf supervisor: ignoring a control message: {e}\n")
            return
        if isinstance(msg, protocol.Stop):
            self.stop(msg.reason)
        elif isinstance(msg, protocol.LogsRequest):
            lines = min(msg.lines, 10000)
            self.control.send(protocol.LogsReply(procs.tail(
                self.spec.log_path, max_lines=lines, max_bytes=lines * 400)).to_dict())

    def stop(self, reason: str) -> None:
        if self._stopping.is_set():
            return
        self._reason = reason
        self._stopping.set()
        sys.stderr.write(f"sparktf supervisor: stopping node {self.spec.name}: {reason}\n")
        sys.stderr.flush()
        if self.proc is not None:
            threading.Thread(target=procs.stop_group, args=(self.proc,), daemon=True).start()

    def wait(self) -> int:
        code = self.proc.wait()
        procs.kill_group(self.proc.pid)  # what the node left behind in its group
        if self.logsync is not None:  # the last upload, bounded: before reporting the exit
            logsync.finish(*self.logsync, self.spec.log_url)
        if self.tensorboard is not None:
            procs.stop_group(self.tensorboard, grace=2.0)
        stopped = self._stopping.is_set()
        report = _read_exit_report(self.spec.exit_report_path)
        try:
            self.control.send(protocol.Exited(
                code=code, stopped=stopped, reason=self._reason,
                error=report.get("error", ""), traceback=report.get("traceback", ""),
                log_tail=procs.tail(self.spec.log_path),
                unread=int(report.get("unread", 0))).to_dict())
        except OSError:
            pass
        self.control.close()
        if not self.spec.keep_node_dir:
            # It holds the secret and the pickled map_fun; the log went to the driver.
            shutil.rmtree(self.spec.node_dir, ignore_errors=True)
        if code == 0 or stopped:
            return 0
        return code if code > 0 else 128 - code


def _read_exit_report(path: str) -> dict:
    """What the node wrote before it exited (its exception or its unread rows), if any."""
    try:
        with open(path) as f:
            report = json.load(f)
        return report if isinstance(report, dict) else {}
    except (OSError, ValueError):
        return {}


def main() -> None:
    spec_path, owner, port_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    spec = protocol.NodeSpec.load(spec_path)
    if spec.detach and os.fork() > 0:
        os._exit(0)
    code = Supervisor(spec, spec_path, owner, port_fd).wait()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
