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
import subprocess
import sys
import threading

from .. import tensorboard
from ..control import ControlClient
from . import logsync, procs
from .main import PORT_FD_ENV

logger = logging.getLogger("sparktf.node.supervisor")  # runs as __main__

#: Variables of the PySpark worker that must not leak into user code.
_PRIVATE_ENV = ("PYTHON_WORKER_FACTORY_SECRET", "_PYSPARK_DRIVER_CONN_INFO_PATH")


class Supervisor:
    def __init__(self, spec: dict, spec_path: str, owner: int, port_fd: int) -> None:
        self.spec = spec
        self.name = f"{spec['job']}:{spec['index']}"
        self._stopping = threading.Event()
        self._reason = ""
        env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        env.update(spec["env"])
        env["TF_CONFIG"] = spec["tf_config"]
        env[PORT_FD_ENV] = str(port_fd)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparktf.node.main", spec_path],
            stdin=subprocess.DEVNULL, stdout=sys.stdout, stderr=sys.stderr,
            cwd=spec["node_dir"], env=env, start_new_session=True, pass_fds=(port_fd,))
        os.close(port_fd)
        self.tensorboard = None
        if spec.get("tensorboard"):
            self.tensorboard = tensorboard.start(
                spec["log_dir"], spec["host"], sys.stderr.buffer,
                lambda url: self.control.send({"type": "tensorboard", "url": url}))
        self.logsync = None
        if spec.get("log_url"):  # a remote log_dir: mirror the node's local one there
            sync_env = {k: v for k, v in env.items() if k not in ("TF_CONFIG", PORT_FD_ENV)}
            self.logsync = logsync.start(spec["log_dir"], spec["log_url"], sync_env,
                                         sys.stderr)
        self.control = ControlClient(spec["control"], bytes.fromhex(spec["secret"]),
                                     spec["node"], "supervisor",
                                     on_message=self._on_message,
                                     on_lost=lambda: self.stop("lost contact with the driver"))
        self.control.send({"type": "started", "pid": self.proc.pid, "host": spec["host"],
                           "executor": spec["executor"], "log": spec["log_path"],
                           "cluster_spec": spec["cluster_spec"]})
        procs.on_exit(owner, lambda: self.stop(f"owner process {owner} exited"))

    def _on_message(self, msg: dict) -> None:
        if msg.get("type") == "stop":
            self.stop(msg.get("reason", "stopped by the driver"))
        elif msg.get("type") == "logs":
            lines = min(int(msg.get("lines", 50)), 10000)
            self.control.send({"type": "logs", "text": procs.tail(
                self.spec["log_path"], max_lines=lines, max_bytes=lines * 400)})

    def stop(self, reason: str) -> None:
        if self._stopping.is_set():
            return
        self._reason = reason
        self._stopping.set()
        sys.stderr.write(f"sparktf supervisor: stopping node {self.name}: {reason}\n")
        sys.stderr.flush()
        threading.Thread(target=procs.stop_group, args=(self.proc,), daemon=True).start()

    def wait(self) -> int:
        code = self.proc.wait()
        procs.kill_group(self.proc.pid)  # what the node left behind in its group
        if self.logsync is not None:  # the last upload, bounded: before reporting the exit
            logsync.finish(*self.logsync, self.spec["log_url"])
        if self.tensorboard is not None:
            procs.stop_group(self.tensorboard, grace=2.0)
        stopped = self._stopping.is_set()
        try:
            self.control.send({"type": "exit", "code": code, "stopped": stopped,
                               "reason": self._reason,
                               "log_tail": procs.tail(self.spec["log_path"])})
        except OSError:
            pass
        self.control.close()
        if code == 0 or stopped:
            return 0
        return code if code > 0 else 128 - code


def main() -> None:
    spec_path, owner, port_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(spec_path) as f:
        spec = json.load(f)
    if spec["detach"] and os.fork() > 0:
        os._exit(0)
    code = Supervisor(spec, spec_path, owner, port_fd).wait()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
