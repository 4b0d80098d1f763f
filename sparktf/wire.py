"""Authenticated framing for every socket sparktf opens (control and feed).

A connection starts with a handshake in which each side sends a random nonce;
both derive a session key ``HMAC-SHA256(secret, nonces)``.  Every frame after that is::

    header_len:u32  payload_len:u32  mac:16 bytes  header (JSON)  payload (bytes)

where ``mac = GMAC(session_key, nonce = direction || seq, lengths || header || payload)``:
AES-256-GCM's tag over the frame as associated data, with nothing encrypted
(NIST SP 800-38D's GMAC).  The (key, nonce) pair never repeats: the key is new
for every connection and the sequence number counts each direction's frames.
GMAC runs at memory speed with AES-NI, where HMAC-SHA256 took a sixth of a
2-core machine's time in the training feed (``benchmarks/feed_throughput.py``).
The MAC is checked before the header is parsed, so nothing read from the
network is interpreted before it is authenticated; JSON is the only decoder
used, never pickle.  The per-connection nonces and the sequence number make a
frame recorded on one connection (or earlier on the same one) useless later.
Lengths are bounded *before* any buffer is allocated, and a peer that has not
yet sent one valid frame may send only a small header.

With a ``tls`` object (:mod:`sparktf.tls`: the cluster's pinned certificate)
the socket is wrapped in TLS 1.3 first and all of the above runs inside it:
TLS hides the bytes, the HMAC layer still proves that the client knows the
cluster secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
import threading
from typing import Any, Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import ProtocolError

MAGIC = b"STF1"
NONCE_BYTES = 16
MAC_BYTES = 16
_PREFIX = struct.Struct("!II")
_NONCE = struct.Struct("!c3xQ")  # GCM's 12-byte nonce: direction, 3 zero bytes, seq
#: Deepest nesting of JSON arrays and objects accepted in a header (sparktf's own are 3).
MAX_NESTING = 64
#: Largest JSON header accepted on an authenticated connection.
MAX_HEADER = 1 << 20
#: Largest header accepted before the peer has proven it knows the secret.
MAX_FIRST_HEADER = 16 << 10
#: Default largest payload (one Arrow record batch, one result batch).
DEFAULT_MAX_PAYLOAD = 512 << 20
#: Payload buffers smaller than this are joined before they are written; larger ones are
#: written as they are (:func:`_write_parts`).
_JOIN_BELOW = 64 << 10
#: Buffers per ``sendmsg`` call, at most (Linux's IOV_MAX is 1024).
_MAX_IOV = 512


#: Seconds a peer has, in all, for the handshake and its first frame.
HANDSHAKE_DEADLINE = 10.0


class HandshakeDeadline:
    """Shuts an accepted socket down unless :meth:`met` is called in time.

    Per-read timeouts do not bound a handshake (a peer that sends one byte at
    a time restarts them, holding a server thread for as long as it likes);
    shutting the socket down wakes the blocked read at the deadline.
    """

    def __init__(self, sock: socket.socket, seconds: float | None = None) -> None:
        self.seconds = HANDSHAKE_DEADLINE if seconds is None else seconds
        self.expired = False
        self._sock = sock
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def met(self) -> None:
        """The peer authenticated: no deadline any more."""
        self._timer.cancel()

    def explain(self, error: object) -> object:
        """Why a connection failed: the deadline, if it expired, else ``error``."""
        return f"no complete handshake within {self.seconds:g}s" if self.expired else error


def new_secret() -> bytes:
    """A fresh per-cluster secret (32 random bytes)."""
    return os.urandom(32)


class TruncatedFrame(ProtocolError, EOFError):
    """The peer closed the connection in the middle of a frame (or of the handshake).

    It is both a :class:`ProtocolError` (a server drops and reports it) and an
    ``EOFError`` (a client treats it like any other lost connection).
    """


def _recv_exact(sock: socket.socket, n: int, mid_frame: bool = True) -> bytearray:
    """Exactly ``n`` bytes.  The end of the stream raises ``EOFError`` if it comes
    before the first byte of a read that starts a frame (``mid_frame`` false),
    :class:`TruncatedFrame` anywhere else."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            if mid_frame or got:
                raise TruncatedFrame(f"{peername(sock)} closed the connection in the middle "
                                     "of a frame")
            raise EOFError("connection closed by peer")
        got += k
    return buf


def parse_header(body: bytes | bytearray) -> Any:
    """The JSON value of a frame header; ``ValueError`` if it is not JSON or nests deeper
    than :data:`MAX_NESTING` levels.

    The explicit bound makes the answer the same in every thread: left to ``json.loads``,
    deep nesting fails or not depending on how deep the calling thread's stack already is.
    """
    if body.count(b"[") + body.count(b"{") > MAX_NESTING and _too_deep(body):
        raise ValueError(f"arrays and objects nested deeper than {MAX_NESTING} levels")
    return json.loads(body)


def _too_deep(body: bytes | bytearray) -> bool:
    """Whether ``body`` opens more than :data:`MAX_NESTING` arrays/objects at once
    (brackets inside strings do not count)."""
    depth, in_string, escaped = 0, False, False
    for c in body:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif c in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


class Channel:
    """One authenticated, bidirectional, message-oriented connection.

    ``send`` and ``recv`` may be used from two different threads (one each);
    two threads must not call ``send`` at the same time.
    """

    def __init__(self, sock: socket.socket, session_key: bytes, is_server: bool,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.sock = sock
        self._key = session_key
        self._aes = algorithms.AES(session_key)
        self._out_dir = b"S" if is_server else b"C"
        self._in_dir = b"C" if is_server else b"S"
        self._send_seq = 0
        self._recv_seq = 0
        self.max_payload = max_payload
        self.peer = peername(sock)

    # -- handshake -------------------------------------------------------
    @classmethod
    def client(cls, sock: socket.socket, secret: bytes, **kw: Any) -> "Channel":
        """Run the client side of the handshake on a connected socket (``tls=``: in TLS)."""
        return cls._handshake(sock, secret, is_server=False, **kw)

    @classmethod
    def server(cls, sock: socket.socket, secret: bytes, **kw: Any) -> "Channel":
        """Run the server side of the handshake on an accepted socket (``tls=``: in TLS)."""
        return cls._handshake(sock, secret, is_server=True, **kw)

    @classmethod
    def _handshake(cls, sock: socket.socket, secret: bytes, is_server: bool,
                   tls: Any = None, **kw: Any) -> "Channel":
        if tls is not None:
            sock = tls.wrap(sock)
        mine = os.urandom(NONCE_BYTES)
        sock.sendall(MAGIC + mine)
        theirs = _read_hello(sock)
        nonces = (mine, theirs) if is_server else (theirs, mine)
        return cls(sock, _session_key(secret, *nonces), is_server=is_server, **kw)

    # -- frames ----------------------------------------------------------
    def _mac(self, direction: bytes, seq: int, prefix: bytes, header: bytes,
             payload: list[memoryview]) -> bytes:
        """The frame's tag; ``payload`` in parts, authenticated as one run of bytes."""
        mac = Cipher(self._aes, modes.GCM(_NONCE.pack(direction, seq))).encryptor()
        mac.authenticate_additional_data(prefix)
        mac.authenticate_additional_data(header)
        for part in payload:
            mac.authenticate_additional_data(part)
        mac.finalize()
        return mac.tag

    def send(self, header: dict, payload: Any = b"") -> None:
        """Send one frame: a JSON-serialisable dict and optional raw bytes.

        ``payload`` is one buffer or a list of buffers that make it up in order
        (e.g. an Arrow record batch's IPC pieces, :func:`sparktf.feed.arrowconv.to_ipc_parts`),
        written as they are rather than joined into one copy first.
        """
        parts = _byte_views(payload)
        body = json.dumps(header, separators=(",", ":")).encode()
        prefix = _PREFIX.pack(len(body), sum(len(p) for p in parts))
        mac = self._mac(self._out_dir, self._send_seq, prefix, body, parts)
        self._send_seq += 1
        _write_parts(self.sock, [memoryview(prefix + mac + body), *parts])

    def recv(self) -> tuple[dict, bytearray]:
        """Receive one frame; raise :class:`ProtocolError` if it is not authentic.

        Raises ``EOFError`` when the peer closed the connection cleanly
        between frames, :class:`TruncatedFrame` when it closed it mid-frame.
        """
        prefix = bytes(_recv_exact(self.sock, _PREFIX.size, mid_frame=False))
        hlen, plen = _PREFIX.unpack(prefix)
        first = self._recv_seq == 0
        max_header = MAX_FIRST_HEADER if first else MAX_HEADER
        max_payload = 0 if first else self.max_payload
        if hlen > max_header or plen > max_payload:
            raise ProtocolError(
                f"frame from {self.peer} too large (header {hlen} bytes, payload {plen} bytes; "
                f"limits {max_header} and {max_payload})")
        mac = bytes(_recv_exact(self.sock, MAC_BYTES))
        body = _recv_exact(self.sock, hlen)
        payload = _recv_exact(self.sock, plen) if plen else bytearray()
        want = self._mac(self._in_dir, self._recv_seq, prefix, body, _byte_views(payload))
        if not hmac.compare_digest(mac, want):
            raise ProtocolError(f"frame from {self.peer} failed authentication "
                                "(wrong secret, corrupted or replayed frame)")
        self._recv_seq += 1
        try:
            header = parse_header(body)
        except (ValueError, RecursionError) as e:
            raise ProtocolError(
                f"authenticated frame from {self.peer} has a bad header: {e}") from e
        if not isinstance(header, dict):
            raise ProtocolError(f"frame header from {self.peer} is not a JSON object")
        return header, payload

    def request(self, header: dict, payload: bytes | memoryview = b"") -> tuple[dict, bytearray]:
        """Send a frame and wait for the reply."""
        self.send(header, payload)
        return self.recv()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _byte_views(payload: Any) -> list[memoryview]:
    """The non-empty buffers of ``payload`` (one buffer or a list of them) as views of
    unsigned bytes (a pyarrow buffer's memoryview is of format "b")."""
    buffers = payload if isinstance(payload, (list, tuple)) else [payload]
    return [memoryview(b).cast("B") for b in buffers if len(b)]


def _write_parts(sock: Any, parts: list[memoryview]) -> None:
    """Write ``parts`` in order: runs of small ones joined, large ones as they are, with
    ``sendmsg`` (gathering them without a copy) on a plain socket, or one ``sendall``
    each through :class:`sparktf.tls.TLSSocket`.  Like ``sendall``, returns once all
    is written."""
    views: list[memoryview] = []
    small = bytearray()
    for part in parts:
        if len(part) < _JOIN_BELOW:
            small += part
            continue
        if small:
            views.append(memoryview(small))
            small = bytearray()
        views.append(part)
    if small:
        views.append(memoryview(small))
    if not isinstance(sock, socket.socket):
        for view in views:
            sock.sendall(view)
        return
    while views:
        sent = sock.sendmsg(views[:_MAX_IOV])
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if sent:
            views[0] = views[0][sent:]


def _read_hello(sock: socket.socket) -> bytes:
    hello = bytes(_recv_exact(sock, len(MAGIC) + NONCE_BYTES, mid_frame=False))
    if not hello.startswith(MAGIC):
        raise ProtocolError(f"peer {peername(sock)} does not speak the sparktf protocol")
    return hello[len(MAGIC):]


def _session_key(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(secret, b"sparktf-session" + server_nonce + client_nonce,
                    hashlib.sha256).digest()


def peername(sock: socket.socket) -> str:
    """``host:port`` of the peer of ``sock`` (``?`` if it is not connected)."""
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else (peer or "local socket")


def serve(listener: socket.socket, handle: Callable[[socket.socket], None], name: str) -> None:
    """Accept connections on ``listener`` in a daemon thread, each handled in its own
    daemon thread, until the listener is closed."""
    def accept_loop() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(sock,), name=f"{name}-conn",
                             daemon=True).start()

    threading.Thread(target=accept_loop, name=name, daemon=True).start()


def close_listener(listener: socket.socket) -> None:
    """Stop a listener started with :func:`serve`.

    ``close()`` alone neither wakes a thread blocked in ``accept()`` nor stops
    the kernel from accepting (and that thread from serving) one more
    connection; ``shutdown()`` does both.
    """
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()


def connect(address: tuple[str, int], secret: bytes, timeout: float | None = 30.0,
            tls: Any = None, **kw: Any) -> Channel:
    """Open an authenticated client channel to ``address`` (in TLS with a ``tls`` client)."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return Channel.client(sock, secret, tls=tls, **kw)
    except BaseException:
        sock.close()
        raise
