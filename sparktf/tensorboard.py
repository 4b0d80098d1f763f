"""A TensorBoard server beside one node (the chief, else the first worker).

The node's supervisor starts it with ``--port 0`` (the operating system picks a
free port, so there is no race between choosing and binding), or with
``TENSORBOARD_PORT`` when that is set, bound to the executor's address.  The
URL TensorBoard prints is reported to the driver, which logs it and returns it
from ``cluster.tensorboard_url()``.  The server is stopped with the node; it
also dies with the supervisor (parent-death signal), so it is never left behind.

It always reads a local directory, the node's ``ctx.log_dir``: with a remote
``log_dir`` (``s3://``, ``hdfs://``...), which neither TensorFlow nor
TensorBoard can use here, that is the node's own ``<node_dir>/tensorboard``,
mirrored to the URL by :mod:`sparktf.node.logsync`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from typing import BinaryIO, Callable, Mapping

from . import gpus

logger = logging.getLogger(__name__)

_URL = re.compile(r"TensorBoard \S+ at (http://\S+?)/? ")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start(log_dir: str, host: str, log: BinaryIO, on_url: Callable[[str], None],
          env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start TensorBoard on ``log_dir``; call ``on_url`` once it serves.

    ``env`` is its environment (the node's: ``TENSORBOARD_PORT`` there is
    honoured); default: this process's.  Its output is copied to ``log`` (the
    node's log file).  Call from the thread that lives as long as the server
    should (the parent-death signal follows the creating thread).
    """
    os.makedirs(log_dir, exist_ok=True)
    env = dict(os.environ if env is None else env)
    port = env.get("TENSORBOARD_PORT", "0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", log_dir, "--host", host,
         "--port", port, "--reload_interval", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_die_with_parent,
        env=dict(env, TF_CPP_MIN_LOG_LEVEL="2", **gpus.NO_GPU_ENV))  # GPUs: none for TensorBoard

    def pump() -> None:
        reported = False
        for line in proc.stdout:
            log.write(b"[tensorboard] " + line)
            log.flush()
            m = _URL.search(line.decode(errors="replace"))
            if m and not reported:
                reported = True
                on_url(m.group(1))

    threading.Thread(target=pump, name="sparktf-tensorboard", daemon=True).start()
    return proc
