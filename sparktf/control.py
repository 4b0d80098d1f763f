"""The control channel between the driver and the node processes.

The driver runs one :class:`ControlServer`.  Each node opens two connections
to it: one from its *supervisor* (which reports how the node process ended
and obeys ``stop``) and one from the node process itself (which reports that
``map_fun`` started, its feed address, its traceback, and receives the end of
the feed).  Every connection is a :class:`sparktf.wire.Channel`, so frames are
authenticated with the cluster's secret before they are read.

Messages are small JSON dicts with a ``type`` key.  The first frame on a
connection is ``{"type": "hello", "node": i, "kind": "node"|"supervisor"}``.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from typing import Any, Callable

from . import protocol
from .errors import ProtocolError
from .wire import Channel, HandshakeDeadline, close_listener, connect, peername, serve

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
#: Feeding tasks' own errors kept for the driver (the latest jobs'; one job is one epoch).
MAX_FEED_FAILURES = 64
#: Characters of a feeding task's error kept.
MAX_FEED_ERROR = 4000

#: An event delivered to the driver: (node number, connection kind, message).
Event = tuple[int, str, dict]


def explaining_failure(key: str, reports: list[protocol.FeedFailed]
                       ) -> protocol.FeedFailed | None:
    """Which of the failures reported by inference tasks (``<key>/<stage>/<partition>``, in
    the order they arrived) explains the latest action on inference ``key``.

    Only the latest stage counts (an earlier action's failure is old news).  Within it, the
    first failure of a task's own (a count mismatch, bad rows, the user's code) is the cause:
    a task that lost its node (``node_lost``) often reports a moment before or after the
    task whose failure ended the node, so it is taken only when no other task reported.
    """
    prefix = key + "/"
    stages: dict[int, list[protocol.FeedFailed]] = {}
    for report in reports:
        if not report.job.startswith(prefix):
            continue
        stage = report.job[len(prefix):].partition("/")[0]
        if stage.isdigit():
            stages.setdefault(int(stage), []).append(report)
    if not stages:
        return None
    latest = stages[max(stages)]
    return next((r for r in latest if not r.node_lost), latest[0])


class ControlServer:
    """Accepts authenticated node connections and queues their messages.

    Messages land in :attr:`events`; a lost connection produces a
    ``{"type": "disconnected"}`` event for that node and kind.
    """

    def __init__(self, host: str, secret: bytes, num_nodes: int,
                 status: Callable[[], dict] = dict, allow_reconnect: bool = False,
                 tls: Any = None) -> None:
        self._secret = secret
        self._tls = tls  # a sparktf.tls.ServerTLS: every connection in TLS
        self._status = status
        self._num_nodes = num_nodes
        self.events: queue.Queue[Event] = queue.Queue()
        self._channels: dict[tuple[int, str], Channel] = {}
        self._seen: set[tuple[int, str]] = set()  # every (node, kind) that registered
        self._feed_failures: dict[str, protocol.FeedFailed] = {}  # job group -> first error
        self._allow_reconnect = allow_reconnect  # tests that reuse one server
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sock = socket.create_server((host, 0))
        self.address: tuple[str, int] = (host, self._sock.getsockname()[1])
        serve(self._sock, self._serve, "sparktf-control")
        logger.debug("control server listening on %s:%d", *self.address)

    def _serve(self, sock: socket.socket) -> None:
        key = None
        authenticated = False
        peer = peername(sock)
        deadline = HandshakeDeadline(sock)
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT)
            # Control messages are small JSON headers: no payload is ever accepted.
            chan = Channel.server(sock, self._secret, max_payload=0, tls=self._tls)
            hello, _ = chan.recv()
            deadline.met()
            authenticated = True
            node, kind = hello.get("node"), hello.get("kind")
            if hello.get("type") == "status":
                # A feeding task that lost its node asks why (one request, one reply).
                chan.send({"type": "status", **self._status()})
                return
            if hello.get("type") == protocol.FeedFailed.TYPE:
                self._record_feed_failure(protocol.decode(hello))
                chan.send({"type": "ok"})
                return
            if hello.get("type") == protocol.FeedFailureQuery.TYPE:
                query = protocol.decode(hello)
                with self._lock:
                    first = self._feed_failures.get(query.job)
                chan.send(first.to_dict() if first else {"type": "ok"})
                return
            if (hello.get("type") != "hello" or type(node) is not int  # not a bool either
                    or not 0 <= node < self._num_nodes or kind not in ("node", "supervisor")):
                raise ProtocolError(f"bad hello from {chan.peer}: {hello!r}")
            sock.settimeout(None)
            with self._lock:
                if (node, kind) in self._seen and not self._allow_reconnect:
                    # Each node connects once per cluster; a second one comes from
                    # a barrier stage that Spark retried on its own (the driver
                    # restarts clusters itself) and must not join this cluster.
                    raise ProtocolError(f"node {node} ({kind}) connected a second time")
                self._seen.add((node, kind))
                key = (node, kind)
                self._channels[key] = chan
            while True:
                msg, _ = chan.recv()
                self.events.put((node, kind, msg))
        except (ProtocolError, socket.timeout, ValueError) as e:
            logger.warning("control channel: dropped connection from %s: %s", peer,
                           deadline.explain(e))
        except (EOFError, OSError) as e:
            if not authenticated:
                logger.warning("control channel: dropped connection from %s before it "
                               "authenticated: %s", peer,
                               deadline.explain(e or type(e).__name__))
            elif not self._closed.is_set():
                logger.debug("control channel: %s disconnected: %s", peer,
                             e or type(e).__name__)
        finally:
            deadline.met()
            sock.close()
            if key is not None:
                with self._lock:
                    self._channels.pop(key, None)
                if not self._closed.is_set():
                    self.events.put((key[0], key[1], {"type": "disconnected"}))

    def _record_feed_failure(self, msg: protocol.Message) -> None:
        if not (isinstance(msg, protocol.FeedFailed) and msg.job
                and msg.error_class in ("FeedError", "FeedTimeout")):
            raise ProtocolError(f"bad feed failure report: {msg!r:.200}")
        with self._lock:
            if msg.job in self._feed_failures:
                return   # the first error of a job is the one that explains it
            while len(self._feed_failures) >= MAX_FEED_FAILURES:
                self._feed_failures.pop(next(iter(self._feed_failures)))
            self._feed_failures[msg.job] = protocol.FeedFailed(
                msg.job[:200], msg.error_class, msg.error[:MAX_FEED_ERROR], msg.node_lost)

    def feed_failure(self, job: str) -> protocol.FeedFailed | None:
        """The first error a feeding task of Spark job group ``job`` reported, if any; for an
        inference key, the one that explains its latest action (:func:`explaining_failure`)."""
        with self._lock:
            if job in self._feed_failures:
                return self._feed_failures[job]
            return explaining_failure(job, list(self._feed_failures.values()))

    def send(self, node: int, kind: str, msg: dict) -> bool:
        """Send ``msg`` to one node's connection; False if it is not connected."""
        with self._lock:
            chan = self._channels.get((node, kind))
            if chan is None:
                return False
            try:
                chan.send(msg)
                return True
            except OSError:
                return False

    def close(self) -> None:
        self._closed.set()
        close_listener(self._sock)
        with self._lock:
            for chan in self._channels.values():
                chan.close()
            self._channels.clear()


def _request(address: tuple[str, int], secret: bytes, tls: Any, msg: dict) -> dict:
    """One request on a connection of its own (a feeding task's); {} if the driver is not
    reachable or does not answer."""
    try:
        chan = connect(tuple(address), secret, timeout=HANDSHAKE_TIMEOUT, tls=tls)
        try:
            reply, _ = chan.request(msg)
        finally:
            chan.close()
        return reply
    except (OSError, EOFError, ProtocolError):
        logger.debug("no reply from the driver's control server to %s", msg.get("type"),
                     exc_info=True)
        return {}


def cluster_status(address: tuple[str, int], secret: bytes, tls: Any = None) -> dict:
    """Ask the driver for the cluster's first ``error`` and the ``terminated`` nodes."""
    return _request(address, secret, tls, {"type": "status"})


def report_feed_failure(address: tuple[str, int], secret: bytes, tls: Any,
                        failure: protocol.FeedFailed) -> None:
    """Tell the driver why a feeding task failed (best effort)."""
    _request(address, secret, tls, failure.to_dict())


def first_feed_failure(address: tuple[str, int], secret: bytes, tls: Any,
                       job: str) -> protocol.FeedFailed | None:
    """The first error reported under ``job``, if the driver holds one."""
    reply = _request(address, secret, tls, protocol.FeedFailureQuery(job).to_dict())
    if reply.get("type") != protocol.FeedFailed.TYPE:
        return None
    try:
        failure = protocol.decode(reply)
    except ProtocolError:
        return None
    return failure if isinstance(failure, protocol.FeedFailed) else None


class ControlClient:
    """A node-side connection to the driver's control server.

    ``on_message`` is called from a background thread for every message the
    driver sends; ``on_lost`` once when the connection ends.  ``tls``: a
    :class:`sparktf.tls.ClientTLS` when the cluster encrypts.
    """

    def __init__(self, address: tuple[str, int], secret: bytes, node: int, kind: str,
                 on_message: Callable[[dict], None], on_lost: Callable[[], None],
                 tls: Any = None) -> None:
        self._chan = connect(tuple(address), secret, timeout=HANDSHAKE_TIMEOUT, tls=tls)
        self._chan.sock.settimeout(None)
        self._send_lock = threading.Lock()
        self.send({"type": "hello", "node": node, "kind": kind})
        self._on_message = on_message
        self._on_lost = on_lost
        threading.Thread(target=self._listen, name=f"sparktf-{kind}-control",
                         daemon=True).start()

    def _listen(self) -> None:
        try:
            while True:
                msg, _ = self._chan.recv()
                self._on_message(msg)
        except (EOFError, OSError, ProtocolError):
            pass
        self._on_lost()

    def send(self, msg: dict) -> None:
        with self._send_lock:
            self._chan.send(msg)

    @property
    def fileno(self) -> int:
        return self._chan.sock.fileno()

    def close(self) -> None:
        self._chan.close()
