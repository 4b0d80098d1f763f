"""Stopping a streaming driver from another process: ``python -m sparktf stop PATH``.

TensorFlowOnSpark's ``stop_streaming.py`` sent an unauthenticated ``STOP`` to
the driver's reservation server; anyone who could reach the port could stop
the job.  Here, while a stream runs, the driver runs a small *stop server*
bound to its own address and writes a **stop file** that only its user can
read (mode 0600, created exclusively, in a 0700 directory): the server's
address and a random 32-byte stop token.  ``python -m sparktf stop PATH``
reads the file and sends a :class:`sparktf.protocol.StopRequest` over the
authenticated framing of :mod:`sparktf.wire` keyed with that token, so:

* the token never crosses the network (both sides prove they know it with
  HMACs over fresh nonces; a recorded exchange cannot be replayed);
* it never appears on a command line or in a process list (only the file's
  path does) and is never logged;
* it is not the cluster secret: whoever may stop the stream cannot feed,
  read or control the TF nodes;
* a peer without the right token fails authentication on its first frame:
  the driver logs the rejected attempt and the stream goes on.

To stop a driver on another host, copy the stop file there by a channel only
its user can read (e.g. ``scp``); the address inside is the driver's.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
from typing import Callable

from . import protocol
from .errors import ConfigError, ProtocolError, SparkTFError
from .wire import (HANDSHAKE_DEADLINE, Channel, HandshakeDeadline, close_listener, connect,
                   new_secret, peername, serve)

logger = logging.getLogger(__name__)

#: Where stop files go unless the application names a directory.
STOP_DIR_ENV = "SPARKTF_STOP_DIR"


def default_dir() -> str:
    """``$SPARKTF_STOP_DIR``, else ``~/.sparktf/stop``."""
    return os.environ.get(STOP_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".sparktf",
                                                        "stop")


class StopServer:
    """The driver's stop endpoint and its stop file; ``on_stop(why)`` is called per
    authenticated request (from a server thread)."""

    def __init__(self, host: str, directory: str, name: str,
                 on_stop: Callable[[str], None]) -> None:
        self._token = new_secret()
        self._on_stop = on_stop
        self._sock = socket.create_server((host, 0))
        self.address: tuple[str, int] = (host, self._sock.getsockname()[1])
        try:
            self.path = _write_stop_file(directory, name, {
                "host": host, "port": self.address[1], "token": self._token.hex(),
                "pid": os.getpid()})
        except BaseException:
            close_listener(self._sock)
            raise
        serve(self._sock, self._serve, "sparktf-stop")

    def _serve(self, sock: socket.socket) -> None:
        peer = peername(sock)
        deadline = HandshakeDeadline(sock)
        try:
            sock.settimeout(HANDSHAKE_DEADLINE)
            chan = Channel.server(sock, self._token, max_payload=0)
            raw, _ = chan.recv()
            deadline.met()
            msg = protocol.decode(raw)
            if not isinstance(msg, protocol.StopRequest):
                raise ProtocolError(f"expected a stop request, got {msg.TYPE!r}")
            why = f"stop command from {peer}" + (f" ({msg.reason[:200]})" if msg.reason else "")
            logger.warning("sparktf: %s: stopping the stream gracefully", why)
            self._on_stop(why)
            chan.send(protocol.StopReply(True, "stopping: the micro-batch in flight "
                                               "completes, then the cluster shuts down").to_dict())
        except (ProtocolError, ValueError, socket.timeout) as e:
            logger.warning("sparktf stop server: rejected a stop request from %s: %s", peer,
                           deadline.explain(e))
        except (EOFError, OSError) as e:
            logger.warning("sparktf stop server: connection from %s ended before a valid "
                           "request: %s", peer, deadline.explain(e or type(e).__name__))
        finally:
            deadline.met()
            sock.close()

    def close(self) -> None:
        """Stop listening and remove the stop file."""
        close_listener(self._sock)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _write_stop_file(directory: str, name: str, data: dict) -> str:
    """Create ``directory/name`` readable by its owner only; refuse to overwrite."""
    created = not os.path.isdir(directory)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if created:
        os.chmod(directory, 0o700)  # makedirs' mode is filtered by the umask
    mode = os.stat(directory).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
        raise ConfigError(f"stop file directory {directory} is writable by other users: use a "
                          f"private directory (set ${STOP_DIR_ENV})")
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return path


def read_stop_file(path: str) -> dict:
    """The driver's address and stop token from a stop file; :class:`ConfigError` if it
    is missing, malformed or readable by other users."""
    try:
        with open(path) as f:
            mode = os.fstat(f.fileno()).st_mode
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no stop file at {path}: the stream has ended, or the path is not "
                          "the one the driver logged") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read stop file {path}: {e}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"stop file {path} is accessible to other users "
                          f"(mode {stat.S_IMODE(mode):o}); it must be 0600")
    if (not isinstance(data, dict) or not isinstance(data.get("host"), str)
            or type(data.get("port")) is not int or not isinstance(data.get("token"), str)):
        raise ConfigError(f"stop file {path} lacks host, port or token")
    try:
        data["token"] = bytes.fromhex(data["token"])
    except ValueError:
        raise ConfigError(f"stop file {path}: the token is not hex") from None
    return data


def send_stop(path: str, reason: str = "", timeout: float = 30.0) -> str:
    """Ask the driver behind stop file ``path`` to stop its stream; return its answer.

    Raises :class:`ConfigError` for a bad stop file and :class:`SparkTFError`
    if the driver cannot be reached or refuses the request.
    """
    info = read_stop_file(path)
    address = (info["host"], info["port"])
    try:
        chan = connect(address, info["token"], timeout=timeout)
        try:
            raw, _ = chan.request(protocol.StopRequest(reason).to_dict())
        finally:
            chan.close()
    except (EOFError, ProtocolError):
        raise SparkTFError(f"the driver at {address[0]}:{address[1]} refused the stop request "
                           f"(wrong stop token in {path}?)") from None
    except OSError as e:
        raise SparkTFError(f"cannot reach the driver at {address[0]}:{address[1]} "
                           f"({e}); has the stream already ended?") from None
    reply = protocol.decode(raw)
    if not isinstance(reply, protocol.StopReply) or not reply.accepted:
        raise SparkTFError(f"the driver did not accept the stop request: {raw!r:.200}")
    return reply.detail
