"""Property-based fuzzing of the two sparktf servers: ControlServer and FeedServer.

Every byte these servers read comes from the network, and their ports can be
reached by anything that reaches the driver or an executor, so each must
survive any client.  Hypothesis drives hostile clients over real TCP sockets on
127.0.0.1 against one real server per kind (module fixtures):

* random bytes, and handshakes or frames cut short before the client closes;
* frames authenticated with a wrong secret;
* replayed frames: captured from a real authenticated session and sent on a new
  connection, or sent twice on the same one; valid frames sent out of order;
* length prefixes beyond the limits (up to 2**32 - 1, and 2**63 / 2**64 - 1
  sent as eight bytes), before and after the first authenticated frame;
* authenticated frames whose header is not JSON, not an object, nested too
  deeply, or an object with unknown types, wrong field types, huge or negative
  node numbers (the MAC is checked first, so only these reach the parsers);
* one to three of those at once, interleaved on concurrent connections.

Each server is fuzzed twice: in clear, and with TLS (``encrypt``, see
:mod:`sparktf.tls`), where every hostile client above speaks through a real TLS
1.3 connection pinned to the cluster's certificate, and clients without TLS
(random bytes, a sparktf handshake in clear, half a TLS record) join the mix.

Properties checked after every example: the server drops each bad connection by
itself (the client reads EOF or a reset within ``TIMEOUT``; for oversized
prefixes the client keeps its side open, so a server waiting for the announced
bytes would fail), it logs a WARNING naming the peer (and nothing for a client
that did nothing wrong), no connection thread dies of an unexpected exception,
every connection thread ends, and a legitimate client (a real ``ControlClient``,
a real ``feed_train`` of a one-row Arrow batch) is still served.  Separate tests
check that oversized prefixes allocate nothing big (tracemalloc), that a closed
server accepts nobody, and that the secret never reaches the logs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import re
import socket
import struct
import threading
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sparktf import tls, wire
from sparktf.control import ControlClient, ControlServer, cluster_status
from sparktf.feed import arrowconv
from sparktf.feed.receiver import FeedServer, Item
from sparktf.feed.sender import feed_train
from sparktf.wire import (DEFAULT_MAX_PAYLOAD, MAGIC, MAX_FIRST_HEADER, MAX_HEADER, NONCE_BYTES,
                          Channel, connect, new_secret, parse_header)

HOST = "127.0.0.1"
SECRET = new_secret()
NUM_NODES = 4
#: How long a client waits for the server to drop it (only spent when it does not).
TIMEOUT = 5.0
#: Peak allocation allowed while a server handles an oversized length prefix.
MAX_PEAK = 4 << 20
#: Hypothesis examples per target: 400 in ``make test`` (~35 s for the four targets);
#: ``make fuzz`` runs 5,000 (SPARKTF_FUZZ_EXAMPLES) before a release or after a change to
#: the servers' parsing.
FUZZ = settings(max_examples=int(os.environ.get("SPARKTF_FUZZ_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
TINY_IPC = arrowconv.to_ipc(pa.RecordBatch.from_pydict({"x": [0]})).to_pybytes()
#: The TLS targets' cluster certificate and key.
IDENTITY = tls.new_identity()


# -- observing the servers -----------------------------------------------------------------
class LogRecords(logging.Handler):
    """Every record of the ``sparktf`` loggers, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings_for(self, port: int) -> list[str]:
        """The WARNING (or worse) messages that name the client port ``port``."""
        peer = re.compile(rf"{re.escape(HOST)}:{port}(?!\d)")
        return [r.getMessage() for r in list(self.records)
                if r.levelno >= logging.WARNING and peer.search(r.getMessage())]


@pytest.fixture(scope="module")
def logs():
    handler = LogRecords()
    logger = logging.getLogger("sparktf")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@contextlib.contextmanager
def thread_errors():
    """Collect the exceptions that end a thread (they would only be printed)."""
    errors: list[str] = []
    previous = threading.excepthook

    def hook(args) -> None:
        errors.append(f"{args.thread.name if args.thread else '?'}: "
                      f"{args.exc_type.__name__}: {args.exc_value}")
        previous(args)

    threading.excepthook = hook
    try:
        yield errors
    finally:
        threading.excepthook = previous


def wait_threads_gone(names: tuple[str, ...], timeout: float = TIMEOUT) -> None:
    """Wait until no thread whose name starts with one of ``names`` is alive."""
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t.name.startswith(names):
            t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threading.enumerate() if t.name.startswith(names) and t.is_alive()]
    assert not alive, f"threads left running: {alive}"


# -- a hostile client ----------------------------------------------------------------------
class Tap:
    """A socket that records what is sent through it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent: list[bytes] = []

    def sendall(self, data) -> None:
        self.sent.append(bytes(data))
        self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Peer:
    """A raw TCP client that speaks just as much of the protocol as it is told to
    (through TLS when given the cluster's ``tls`` client)."""

    def __init__(self, address: tuple[str, int], tls_client=None) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.port = self.sock.getsockname()[1]
        if tls_client is not None:
            self.sock = tls_client.wrap(self.sock)
        self.chan: Channel | None = None
        self.seq = 0
        self.sent: list[bytes] = []

    def handshake(self, secret: bytes = SECRET) -> None:
        self.chan = Channel.client(self.sock, secret)

    def frame(self, body: bytes, payload: bytes = b"", seq: int | None = None) -> bytes:
        """A frame with a valid MAC for this session (at sequence number ``seq``)."""
        prefix = struct.pack("!II", len(body), len(payload))
        if seq is None:
            seq, self.seq = self.seq, self.seq + 1
        mac = self.chan._mac(b"C", seq, prefix, body, wire._byte_views(payload))
        data = prefix + mac + body + payload
        self.sent.append(data)
        return data

    def raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the server may drop us before it has read everything

    def half_close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def wait_dropped(self) -> bool:
        """True once the server closed the connection (EOF or reset) within TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if not self.sock.recv(65536):
                    return True
        except TimeoutError:
            return False
        except OSError:  # reset: the server closed with our bytes still unread
            return True
        return False

    def close(self) -> None:
        self.sock.close()


Step = Callable[[Peer], None]


@dataclass
class Scenario:
    """What one hostile connection does; ``warns``: the server must log a WARNING."""

    name: str
    steps: list[Step] = field(repr=False)
    warns: bool = True
    half_close: bool = True  # False: the server must drop us while we keep our side open
    detail: str = ""
    plain: bool = False  # no TLS, even when the server speaks it


def handshake(secret: bytes = SECRET) -> Step:
    return lambda peer: peer.handshake(secret)


def send_raw(data: bytes) -> Step:
    return lambda peer: peer.raw(data)


def send_frames(frames: list[tuple[bytes, bytes]]) -> Step:
    return lambda peer: peer.raw(b"".join(peer.frame(body, payload) for body, payload in frames))


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def parse(body: bytes):
    """What the server's JSON parser makes of ``body`` (``ValueError`` if nothing)."""
    return parse_header(body)


# -- the two servers -----------------------------------------------------------------------

def capture_session(address: tuple, talk, tls_client=None) -> tuple[bytes, list[bytes]]:
    """The client's hello and later frames of a real session that ``talk(channel)`` holds
    (what it sent inside TLS, for a TLS server)."""
    sock = socket.create_connection(address, timeout=TIMEOUT)
    tap = Tap(tls_client.wrap(sock) if tls_client else sock)
    talk(Channel.client(tap, SECRET))
    tap.shutdown(socket.SHUT_RDWR)
    tap.close()
    return tap.sent[0], tap.sent[1:]

class ControlTarget:
    kind = "control"
    #: Threads of one connection (server side, and a ControlClient's listener).
    threads = ("sparktf-control-conn", "sparktf-node-control", "sparktf-supervisor-control")
    #: ... and the server's accept thread.
    all_threads = ("sparktf-control",) + threads[1:]
    hello = dumps({"type": "hello", "node": NUM_NODES - 1, "kind": "supervisor"})
    limits = ((MAX_FIRST_HEADER, 0), (MAX_HEADER, 0))  # before / after the first frame

    def __init__(self, encrypt: bool) -> None:
        self.tls = IDENTITY.client() if encrypt else None
        # One server takes every example, so a node may register many times.
        self.server = ControlServer(HOST, SECRET, NUM_NODES, allow_reconnect=True,
                                    status=lambda: {"error": "", "terminated": []},
                                    tls=IDENTITY.server() if encrypt else None)
        self.address = self.server.address
        self.tokens = itertools.count()
        self.captured = self.capture()

    def message(self, i: int) -> tuple[bytes, bytes]:
        return dumps({"type": "fuzz", "i": i}), b""

    def capture(self) -> tuple[bytes, list[bytes]]:
        """The client's hello and frames of a real authenticated session."""
        def talk(chan: Channel) -> None:
            for msg in ({"type": "hello", "node": 0, "kind": "node"}, {"type": "ready"},
                        {"type": "finished"}):
                chan.send(msg)
        return capture_session(self.address, talk, self.tls)

    def accepts_hello(self, body: bytes) -> bool:
        """Whether the server takes ``body`` as the first frame (oracle)."""
        try:
            hello = parse(body)
        except ValueError:
            return False
        if not isinstance(hello, dict):
            return False
        node = hello.get("node")
        return hello.get("type") == "status" or (
            hello.get("type") == "hello" and type(node) is int and 0 <= node < NUM_NODES
            and hello.get("kind") in ("node", "supervisor"))

    def accepts_message(self, body: bytes, payload: bytes) -> bool:
        """Whether the server takes a frame after the hello: any object, no payload."""
        try:
            return isinstance(parse(body), dict) and not payload
        except ValueError:
            return False

    def check_served(self) -> None:
        """A real ControlClient registers and its message arrives on ``events``."""
        token = next(self.tokens)
        node, kind = token % NUM_NODES, ("node", "supervisor")[token % 2]
        lost = threading.Event()
        client = ControlClient(self.address, SECRET, node, kind, on_message=lambda m: None,
                               on_lost=lost.set, tls=self.tls)
        try:
            client.send({"type": "probe", "token": token})
            deadline = time.monotonic() + TIMEOUT
            while True:
                try:
                    event = self.server.events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    pytest.fail(f"the probe of a legitimate client (token {token}) never arrived")
                if event == (node, kind, {"type": "probe", "token": token}):
                    break
        finally:
            # ControlClient.close() alone does not wake its listener thread (close()
            # never interrupts a blocked recv): shut the socket down first.
            with contextlib.suppress(OSError):
                client._chan.sock.shutdown(socket.SHUT_RDWR)
            client.close()
        assert lost.wait(TIMEOUT)

    def close(self) -> None:
        self.server.close()


class FakeControl:
    """The node's control connection, as far as the FeedServer uses it."""

    def send(self, msg: dict) -> None:
        pass


class FeedTarget:
    kind = "feed"
    threads = ("sparktf-feed-conn",)
    all_threads = ("sparktf-feed",)
    hello = dumps({"type": "hello", "mode": "train", "partition": 0, "epoch": 0,
                   "partitions": 1})
    limits = ((MAX_FIRST_HEADER, 0), (MAX_HEADER, DEFAULT_MAX_PAYLOAD))

    def __init__(self, encrypt: bool) -> None:
        self.tls = IDENTITY.client() if encrypt else None
        self.server = FeedServer(HOST, SECRET, FakeControl(),
                                 tls=IDENTITY.server() if encrypt else None)
        self.address = self.server.address
        self.tokens = itertools.count()
        self.captured = self.capture()

    def message(self, i: int) -> tuple[bytes, bytes]:
        return dumps({"type": "batch", "rows": 1}), TINY_IPC

    def capture(self) -> tuple[bytes, list[bytes]]:
        def talk(chan: Channel) -> None:
            assert chan.request(json.loads(self.hello))[0] == {"type": "ok"}
            body, payload = self.message(0)
            assert chan.request(json.loads(body), payload)[0] == {"type": "ack"}
            chan.send({"type": "done"})
        return capture_session(self.address, talk, self.tls)

    def accepts_hello(self, body: bytes) -> bool:
        try:
            hello = parse(body)
        except ValueError:
            return False
        return (isinstance(hello, dict) and hello.get("type") == "hello"
                and type(hello.get("partition")) is int
                and type(hello.get("epoch", 0)) is int and type(hello.get("partitions", 1)) is int)

    def accepts_message(self, body: bytes, payload: bytes) -> bool:
        """After the hello, only "done" is taken without a valid Arrow payload."""
        try:
            msg = parse(body)
        except ValueError:
            return False
        return isinstance(msg, dict) and msg.get("type") == "done"

    def check_served(self) -> None:
        """A real feed_train delivers a one-row Arrow batch into the node's buffer."""
        token = next(self.tokens)
        batch = pa.RecordBatch.from_pydict({"token": [token]})
        node = {"name": "fuzz:0", "node": 0, "feed": list(self.address),
                "control": (HOST, 1), "tls": IDENTITY.cert_pem if self.tls else None}
        assert feed_train(0, [batch], [node], SECRET, 0, 1, TIMEOUT, True) == {0: 1}
        while True:  # acknowledged, so it is queued: get() cannot block forever
            item = self.server.buffer.get()
            if isinstance(item, Item) and item.batch.schema.names == ["token"]:
                assert item.batch.column(0).to_pylist() == [token]
                return

    def close(self) -> None:
        self.server.close()
        self.server.buffer.close()


TARGETS = ["control", "feed", "control-tls", "feed-tls"]


def for_targets(kinds: tuple[str, ...], cases: list, ids: list[str]) -> list:
    """``(target, case)`` parameters: every case against each server of the given kinds."""
    return [pytest.param(t, case, id=f"{t}-{i}") for case, i in zip(cases, ids)
            for t in TARGETS if t.partition("-")[0] in kinds]


@pytest.fixture(scope="module", params=TARGETS)
def target(request, logs):
    kind, _, encrypt = request.param.partition("-")
    server = (ControlTarget if kind == "control" else FeedTarget)(encrypt == "tls")
    yield server
    server.close()
    wait_threads_gone(server.all_threads)


# -- strategies ----------------------------------------------------------------------------
json_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
                | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)
odd_numbers = st.sampled_from([-1, -(2**63), NUM_NODES, 2**31, 2**63, 2**64, 10**100, 1.0, 0.5,
                               True, False, "0", None, [0], {"n": 0}, float("inf"),
                               float("nan")])
number_fields = st.integers(-2, NUM_NODES + 1) | st.integers() | odd_numbers | json_values
#: JSON objects shaped like a hello (or a message) with wrong, odd or missing fields.
hello_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "status", "done", "batch", "ready", "", "HELLO"])
     | json_values},
    optional={"node": number_fields, "partition": number_fields, "epoch": number_fields,
              "partitions": number_fields,
              "kind": st.sampled_from(["node", "supervisor", "driver"]) | json_values,
              "mode": st.sampled_from(["train", "inference"]) | json_values,
              "extra": json_values})
#: Frame bodies (MAC'd with the right key, so they reach the JSON parser).
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=60).map(str.encode),
    json_values.map(dumps),
    hello_like.map(dumps),
    st.integers(1, MAX_FIRST_HEADER // 2).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 2500).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(4301, 10000).map(lambda n: b"1" * n),  # more digits than int() takes
    st.sampled_from([b"", b"null", b"[]", b"\xff\xfe", b"\xef\xbb\xbf{}", b'"hello"', b"{}"]))
secrets_ = st.binary(max_size=64).filter(lambda s: s != SECRET)


def random_bytes() -> st.SearchStrategy[Scenario]:
    """Bytes that are not (or only start like) the protocol, then the client closes."""
    hello = MAGIC + bytes(NONCE_BYTES)
    data = st.one_of(st.binary(max_size=512),
                     st.binary(max_size=512).map(lambda b: MAGIC + b),
                     st.integers(0, len(hello) - 1).map(lambda n: hello[:n]))
    return data.map(lambda b: Scenario("random bytes", [send_raw(b)], detail=repr(b[:60])))


def plain_tcp() -> st.SearchStrategy[Scenario]:
    """A client without TLS on a TLS port: bytes, a sparktf handshake (and frames) in
    clear, or the start of a TLS record that never ends."""
    hello = MAGIC + bytes(NONCE_BYTES)
    data = st.one_of(st.binary(max_size=512),
                     st.binary(max_size=512).map(lambda b: hello + b),
                     st.binary(max_size=64).map(lambda b: b"\x16\x03\x01\x02\x00" + b))
    return data.map(lambda b: Scenario("plain TCP on a TLS port", [send_raw(b)], plain=True,
                                       detail=repr(b[:60])))


@st.composite
def truncated(draw, t) -> Scenario:
    """A valid handshake and valid frames, cut inside a frame; then the client closes."""
    frames = [(t.hello, b"")] + [t.message(i) for i in range(draw(st.integers(0, 2)))]
    k = draw(st.integers(0, len(frames) - 1))
    body, payload = frames[k]
    size = 8 + wire.MAC_BYTES + len(body) + len(payload)
    cut = draw(st.integers(0 if k == 0 else 1, size - 1))  # cut 0 of frame k > 0: clean end

    def send(peer: Peer) -> None:
        data = b"".join(peer.frame(*f) for f in frames[:k + 1])
        peer.raw(data[:len(data) - size + cut])

    return Scenario("truncated frame", [handshake(), send], detail=f"frame {k}, {cut}/{size}")


@st.composite
def wrong_secret(draw, t) -> Scenario:
    secret = draw(secrets_)
    frames = [(t.hello, b"")] + [t.message(i) for i in range(draw(st.integers(0, 1)))]
    return Scenario("wrong secret", [handshake(secret), send_frames(frames)],
                    detail=f"secret {secret!r}")


@st.composite
def replayed(draw, t) -> Scenario:
    """A frame sent again on its own connection, or captured frames on a new one."""
    if draw(st.booleans()):
        frames = [(t.hello, b"")] + [t.message(i) for i in range(draw(st.integers(0, 1)))]
        j = draw(st.integers(0, len(frames) - 1))
        again: Step = lambda peer: peer.raw(peer.sent[j])  # noqa: E731
        return Scenario("replayed on the same connection", [handshake(), send_frames(frames),
                                                            again], detail=f"frame {j}")
    client_hello, captured = t.captured
    picks = draw(st.lists(st.sampled_from(range(len(captured))), min_size=1, max_size=3))
    data = b"".join(captured[i] for i in picks)
    own_hello = draw(st.booleans())  # the recorded handshake too, or a fresh one
    first = send_raw(client_hello) if own_hello else handshake()
    return Scenario("replayed from another connection", [first, send_raw(data)],
                    detail=f"frames {picks}, recorded handshake {own_hello}")


@st.composite
def reordered(draw, t) -> Scenario:
    n = draw(st.integers(2, 4))
    frames = [(t.hello, b"")] + [t.message(i) for i in range(n - 1)]
    order = draw(st.permutations(range(n)))
    if order == sorted(order):  # in order after all: swap two frames
        i = draw(st.integers(0, n - 2))
        order[i], order[i + 1] = order[i + 1], order[i]

    def send(peer: Peer) -> None:
        peer.raw(b"".join(peer.frame(*frames[i], seq=i) for i in order))

    return Scenario("reordered frames", [handshake(), send], detail=f"order {order}")


def too_big(limit: int) -> st.SearchStrategy[int]:
    return st.integers(limit + 1, 2**32 - 1) | st.sampled_from([limit + 1, 2**31, 2**32 - 1])


@st.composite
def oversized(draw, t) -> Scenario:
    """A length prefix over the limits; the client does not close: the server must."""
    later = draw(st.booleans())  # after a valid first frame the limits are larger
    max_header, max_payload = t.limits[later]
    prefix = draw(st.one_of(
        st.tuples(too_big(max_header), st.integers(0, 2**32 - 1)).map(
            lambda hp: struct.pack("!II", *hp)),
        st.tuples(st.integers(0, max_header), too_big(max_payload)).map(
            lambda hp: struct.pack("!II", *hp)),
        st.sampled_from([2**63, 2**64 - 1, 2**63 + 2**32]).map(lambda n: struct.pack("!Q", n))))
    tail = draw(st.binary(max_size=64))
    steps = [handshake()] + ([send_frames([(t.hello, b"")])] if later else [])
    return Scenario("oversized length", steps + [send_raw(prefix + tail)], half_close=False,
                    detail=f"prefix {prefix.hex()} after first frame: {later}")


@st.composite
def garbage_hello(draw, t) -> Scenario:
    """An authenticated first frame whose header is anything."""
    body = draw(bodies.filter(lambda b: len(b) <= MAX_FIRST_HEADER))
    return Scenario("garbage hello", [handshake(), send_frames([(body, b"")])],
                    warns=not t.accepts_hello(body), detail=repr(body[:200]))


@st.composite
def garbage_message(draw, t) -> Scenario:
    """A valid hello, then an authenticated frame whose header (and payload) is anything."""
    body = draw(bodies)
    payload = draw(st.just(b"") | st.binary(min_size=1, max_size=200))
    return Scenario("garbage after hello",
                    [handshake(), send_frames([(t.hello, b""), (body, payload)])],
                    warns=not t.accepts_message(body, payload),
                    detail=f"{body[:200]!r} payload {payload[:40]!r}")


def hostile(t) -> st.SearchStrategy[Scenario]:
    kinds = [random_bytes(), truncated(t), wrong_secret(t), replayed(t), reordered(t),
             oversized(t), garbage_hello(t), garbage_message(t)]
    return st.one_of(kinds + ([plain_tcp()] if t.tls else []))


# -- running scenarios ---------------------------------------------------------------------
def run(t, scenarios: list[Scenario], logs: LogRecords) -> None:
    """Run ``scenarios`` on concurrent connections (steps interleaved) and check them."""
    logs.records.clear()
    with thread_errors() as errors:
        peers = [Peer(t.address, None if s.plain else t.tls) for s in scenarios]
        try:
            for steps in itertools.zip_longest(*(s.steps for s in scenarios)):
                for peer, step in zip(peers, steps):
                    if step is not None:
                        step(peer)
            for peer, s in zip(peers, scenarios):
                if s.half_close:
                    peer.half_close()
            for peer, s in zip(peers, scenarios):
                assert peer.wait_dropped(), f"{s}: the server kept the connection open"
                warned = logs.warnings_for(peer.port)
                if s.warns:
                    assert warned, f"{s}: dropped without a WARNING naming the peer"
                else:
                    assert not warned, f"{s}: a good client was warned about: {warned}"
        finally:
            for peer in peers:
                peer.close()
        t.check_served()
        wait_threads_gone(t.threads)
    assert not errors, f"connection threads died: {errors}"


@FUZZ
@given(data=st.data())
def test_hostile_clients_are_dropped_and_logged_and_the_server_lives_on(target, logs, data):
    scenarios = data.draw(st.lists(hostile(target), min_size=1, max_size=3), label="scenarios")
    for s in scenarios:  # shown by --hypothesis-show-statistics
        event(s.name if s.warns else f"{s.name} (accepted)")
    run(target, scenarios, logs)


# Inputs that made a connection thread die of an exception nobody caught (or be
# accepted) before the fixes: deep JSON nesting (RecursionError), a non-integer
# or infinite partition/epoch in a feed hello (TypeError, OverflowError), a
# boolean node number in a control hello (bool is an int).
KNOWN_BAD = [
    ("both", b"[" * 5000 + b"]" * 5000),
    ("both", b'{"a":' * 2000 + b"1" + b"}" * 2000),
    ("control", dumps({"type": "hello", "node": True, "kind": "node"})),
    ("control", dumps({"type": "hello", "node": -1, "kind": "node"})),
    ("control", dumps({"type": "hello", "node": 10**100, "kind": "node"})),
    ("control", dumps({"type": "hello", "node": 0, "kind": ["node"]})),
    ("feed", dumps({"type": "hello", "partition": None})),
    ("feed", dumps({"type": "hello", "partition": [0]})),
    ("feed", b'{"type":"hello","partition":Infinity}'),
    ("feed", dumps({"type": "hello", "partition": 0, "epoch": {"e": 1}})),
    ("feed", dumps({"type": "hello", "partition": 0, "partitions": "2"})),
]


KNOWN_BAD_CASES = [p for n, (which, body) in enumerate(KNOWN_BAD) for p in for_targets(
    ("control", "feed") if which == "both" else (which,), [body], [f"{n}:{body[:20]!r}"])]


@pytest.mark.parametrize("target,body", KNOWN_BAD_CASES, indirect=["target"])
def test_known_bad_hellos(target, logs, body):
    assert not target.accepts_hello(body)
    run(target, [Scenario("known bad hello", [handshake(), send_frames([(body, b"")])])], logs)


def ipc_stream(*batches: pa.RecordBatch) -> bytes:
    schema = batches[0].schema
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


EMPTY = pa.RecordBatch.from_pydict({"x": pa.array([], pa.int64())})
# Feed payloads pyarrow refused with an exception the FeedServer did not catch.
BAD_BATCHES = [
    b"\x00\x00\x00\x80",  # OSError: Invalid IPC stream: negative continuation token
    ipc_stream(EMPTY, EMPTY),  # IndexError in arrowconv.concat
    TINY_IPC[:-20],  # OSError: Expected to be able to read 24 bytes for message body
]


@pytest.mark.parametrize("target,payload", for_targets(
    ("feed",), BAD_BATCHES, ["continuation", "two-empty", "short-body"]), indirect=["target"])
def test_known_bad_batches(target, logs, payload):
    frames = [(target.hello, b""), (dumps({"type": "batch", "rows": 0}), payload)]
    run(target, [Scenario("known bad batch", [handshake(), send_frames(frames)])], logs)


def test_oversized_prefixes_allocate_nothing_big(target, logs):
    cases = []
    for later, (max_header, max_payload) in enumerate(target.limits):
        prefixes = [struct.pack("!II", h, p) for h, p in [
            (max_header + 1, 0), (0, max_payload + 1), (2**31, 0), (2**32 - 1, 2**32 - 1),
            (0, 1 << 26)] if h > max_header or p > max_payload]
        prefixes += [struct.pack("!Q", 2**63), struct.pack("!Q", 2**64 - 1)]
        cases += [(bool(later), prefix) for prefix in prefixes]
    tracemalloc.start()
    try:
        for later, prefix in cases:
            peer = Peer(target.address, target.tls)
            try:
                peer.handshake()
                if later:
                    peer.raw(peer.frame(target.hello))
                    time.sleep(0.05)  # let the server take the hello before measuring
                base = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                peer.raw(prefix)
                assert peer.wait_dropped(), f"{prefix.hex()}: the server waits for the bytes"
                peak = tracemalloc.get_traced_memory()[1] - base
                assert peak < MAX_PEAK, f"{prefix.hex()}: {peak} bytes allocated"
                assert any("too large" in m for m in logs.warnings_for(peer.port))
            finally:
                peer.close()
    finally:
        tracemalloc.stop()
    target.check_served()


@pytest.mark.parametrize("kind", ["control", "feed"])
def test_a_closed_server_accepts_nobody(kind):
    server = (ControlServer(HOST, SECRET, NUM_NODES, allow_reconnect=True) if kind == "control"
              else FeedServer(HOST, SECRET, FakeControl()))
    server.close()
    # Before close() shut the listener down, the blocked accept() still took (and
    # served) one more connection.
    with pytest.raises(OSError):
        socket.create_connection(server.address, timeout=TIMEOUT).close()


def test_the_secret_never_reaches_the_logs(caplog):
    secret = new_secret()
    caplog.set_level(logging.DEBUG, logger="sparktf")
    control = ControlServer(HOST, secret, NUM_NODES, status=lambda: {"error": ""},
                            allow_reconnect=True)
    feed = FeedServer(HOST, secret, FakeControl())
    try:
        # An authenticated session of each kind.
        client = ControlClient(control.address, secret, 0, "node", lambda m: None, lambda: None)
        client.send({"type": "ready", "pid": 1})
        assert control.events.get(timeout=TIMEOUT) == (0, "node", {"type": "ready", "pid": 1})
        assert control.send(0, "node", {"type": "stop"})
        assert cluster_status(control.address, secret) == {"type": "status", "error": ""}
        node = {"name": "n:0", "node": 0, "feed": list(feed.address), "control": control.address}
        batch = pa.RecordBatch.from_pydict({"x": [1, 2]})
        assert feed_train(0, [batch], [node], secret, 0, 1, TIMEOUT, True) == {0: 2}
        client._chan.sock.shutdown(socket.SHUT_RDWR)
        client.close()
        # Failed ones: a wrong secret, garbage, a cut frame, a bad (authenticated) hello.
        for address in (control.address, feed.address):
            for chan in (connect(address, new_secret()), connect(address, secret[::-1])):
                chan.send({"type": "hello", "node": 0, "kind": "node", "partition": 0})
                chan.close()
            peer = Peer(address)
            peer.raw(b"GET / HTTP/1.0\r\n\r\n" + secret)
            peer.wait_dropped()
            peer.close()
            peer = Peer(address)
            peer.handshake(secret)
            peer.raw(peer.frame(dumps({"type": "hello", "node": "x", "partition": "x"}))[:-3])
            peer.half_close()
            peer.wait_dropped()
            peer.close()
            chan = connect(address, secret)
            chan.send({"type": "nonsense", "node": -5})
            chan.close()
        assert cluster_status(control.address, new_secret()) == {}
        wait_threads_gone(ControlTarget.threads + FeedTarget.threads)
    finally:
        control.close()
        feed.close()
    text = caplog.text + "\n".join(
        logging.Formatter("%(message)s %(args)s").format(r) for r in caplog.records)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) >= 8, text
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    for form in (secret.hex(), secret.hex().upper(), repr(secret), repr(secret)[2:-1],
                 secret.decode("latin-1")):
        assert form not in text
