"""Entry point of a node process: ``python -m sparktf.node.main SPEC_FILE``.

A fresh Python process per node and cluster, so that TensorFlow's
process-wide state (collective ops, the gRPC server) never leaks from one
cluster into the next.  It reports to the driver over the control channel
(``ready`` with its feed address, then ``finished``; an exception goes to a
private file that its supervisor reports with the exit code, so the driver
gets one report that names the cause first) and runs ``map_fun(tf_args, ctx)``
in its main thread.  Its supervisor (:mod:`sparktf.node.supervisor`) started
it with stdout and stderr going to the node's log file, and kills it when it
is told to stop or when its owner dies.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import traceback
from typing import Any, Callable

from pyspark import cloudpickle

from .. import protocol
from .. import tls as tlsmod
from ..control import ControlClient
from ..errors import ProtocolError
from ..protocol import InputMode, NodeSpec
from . import procs
from .context import NodeContext

logger = logging.getLogger("sparktf.node.main")  # not __name__: this runs as __main__

#: Passed by the supervisor: the inherited socket holding the reserved TF port.
PORT_FD_ENV = "SPARKTF_PORT_FD"


def _lost_supervisor() -> None:
    sys.stderr.write("sparktf: the node's supervisor is gone; exiting\n")
    sys.stderr.flush()
    os._exit(71)


def _lost_driver() -> None:
    # The driver is gone (killed, or the cluster was torn down): a node that
    # outlives its driver is an orphan, so end the process at once.
    sys.stderr.write("sparktf: lost the control connection to the driver; exiting\n")
    sys.stderr.flush()
    os._exit(70)


def run(spec_path: str) -> int:
    spec = NodeSpec.load(spec_path)
    with open(spec.payload_path, "rb") as f:  # written by our own launcher, mode 0600
        map_fun, tf_args = cloudpickle.load(f)
    secret = bytes.fromhex(spec.secret)
    procs.on_exit(os.getppid(), _lost_supervisor)
    port_sock = None
    if PORT_FD_ENV in os.environ:
        port_sock = socket.socket(fileno=int(os.environ.pop(PORT_FD_ENV)))

    handlers: dict[type, Callable[[Any], None]] = {}
    tls = tlsmod.identity(spec.tls_cert, spec.tls_key)  # None: clear channels
    control = ControlClient(spec.control, secret, spec.node, "node",
                            on_message=lambda raw: _dispatch(handlers, raw),
                            on_lost=_lost_driver, tls=tls and tls.client())
    mgr = None
    feed = None
    if spec.input_mode == InputMode.SPARK:
        from ..feed.receiver import FeedServer
        mgr = FeedServer(spec.host, secret, control, tls=tls and tls.server(),
                         spill_dir=spec.node_dir)
        handlers.update(mgr.control_handlers())
        feed = list(mgr.address)

    if isinstance(tf_args, list):
        sys.argv = [str(a) for a in tf_args]  # as TensorFlowOnSpark: users pass sys.argv
    if spec.release_port and port_sock is not None:
        port_sock.close()
        port_sock = None
    ctx = NodeContext(spec, mgr=mgr, tmp_socket=port_sock)
    logger.info("node %s (executor %d) starting map_fun; TF_CONFIG=%s", spec.name, spec.node,
                os.environ.get("TF_CONFIG"))
    control.send(protocol.Ready(pid=os.getpid(), feed=feed).to_dict())
    try:
        map_fun(tf_args, ctx)
    except BaseException as e:  # report everything, including SystemExit
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        sys.stderr.flush()
        code = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
        if code == 0:
            control.send(protocol.Finished().to_dict())
            return 0
        # The supervisor reports it with the exit code: one report, cause first.
        protocol.write_private(spec.exit_report_path, json.dumps(
            {"error": f"{type(e).__name__}: {e}", "traceback": tb}).encode())
        return code
    unread = mgr.finish() if mgr is not None else 0
    logger.info("node %s: map_fun returned", spec.name)
    if unread:   # for the supervisor's exit report too (see protocol.Exited)
        protocol.write_private(spec.exit_report_path, json.dumps({"unread": unread}).encode())
    control.send(protocol.Finished(unread=unread).to_dict())
    return 0


def _dispatch(handlers: dict[type, Callable[[Any], None]], raw: dict) -> None:
    try:
        msg = protocol.decode(raw)
    except ProtocolError as e:
        logger.warning("ignoring a control message from the driver: %s", e)
        return
    handler = handlers.get(type(msg))
    if handler is None:
        logger.debug("ignoring control message %r", msg.TYPE)
    else:
        handler(msg)


def main() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sparktf")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    code = run(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: do not wait for TensorFlow's or the user's non-daemon threads;
    # the process is ours and its work is done.
    os._exit(code)


if __name__ == "__main__":
    main()
