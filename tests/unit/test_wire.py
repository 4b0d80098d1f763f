import socket
import struct
import threading

import pyarrow as pa
import pytest

from sparktf.errors import ProtocolError
from sparktf import wire
from sparktf.wire import MAX_NESTING, Channel, new_secret, parse_header


def pair(secret_a, secret_b, max_payload=1 << 20):
    a, b = socket.socketpair()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("s", Channel.server(b, secret_b,
                                                                        max_payload=max_payload)))
    t.start()
    client = Channel.client(a, secret_a, max_payload=max_payload)
    t.join()
    return client, out["s"]


def test_round_trip_header_and_payload():
    s = new_secret()
    c, srv = pair(s, s)
    c.send({"type": "hello"})
    assert srv.recv() == ({"type": "hello"}, bytearray())
    big = bytes(range(256)) * 1000
    t = threading.Thread(target=c.send, args=({"type": "batch", "n": 3}, big))
    t.start()  # a large frame does not fit the socket buffer: send and receive concurrently
    header, payload = srv.recv()
    t.join()
    assert header == {"type": "batch", "n": 3} and payload == big
    srv.send({"ok": True})
    assert c.recv()[0] == {"ok": True}


def test_wrong_secret_is_rejected():
    c, srv = pair(new_secret(), new_secret())
    c.send({"type": "hello"})
    with pytest.raises(ProtocolError, match="failed authentication"):
        srv.recv()


class Recorder:
    def __init__(self):
        self.data = b""

    def sendall(self, data):
        self.data += bytes(data)

    def getpeername(self):
        return ("recorder", 0)


def frame_bytes(chan, header):
    """The exact bytes ``chan`` sends for its next frame ``header``."""
    clone = Channel(Recorder(), chan._key, is_server=chan._out_dir == b"S")
    clone._send_seq = chan._send_seq
    clone.send(header)
    return clone.sock.data


def test_replayed_frame_is_rejected():
    s = new_secret()
    c, srv = pair(s, s)
    first = frame_bytes(c, {"type": "hello"})
    c.send({"type": "hello"})
    srv.recv()
    c.sock.sendall(first)  # the same bytes again: the sequence number differs
    with pytest.raises(ProtocolError):
        srv.recv()


def test_frame_reflected_back_to_sender_is_rejected():
    s = new_secret()
    c, srv = pair(s, s)
    first = frame_bytes(c, {"type": "hello"})
    c.send({"type": "hello"})
    srv.recv()
    srv.sock.sendall(first)  # a client frame sent back to the client
    with pytest.raises(ProtocolError):
        c.recv()


def test_oversized_lengths_are_refused_before_allocation():
    s = new_secret()
    c, srv = pair(s, s)
    c.sock.sendall(struct.pack("!II", 1 << 31, 0))
    with pytest.raises(ProtocolError, match="too large"):
        srv.recv()


def test_first_frame_may_not_carry_a_payload():
    s = new_secret()
    c, srv = pair(s, s)
    c.send({"type": "hello"}, b"x" * 10)
    with pytest.raises(ProtocolError, match="too large"):
        srv.recv()


def test_not_our_protocol():
    a, b = socket.socketpair()
    a.sendall(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    with pytest.raises(ProtocolError, match="does not speak"):
        Channel.server(b, new_secret())


D = MAX_NESTING


@pytest.mark.parametrize("body,ok", [
    (b"[" * D + b"]" * D, True),
    (b"[" * (D + 1) + b"]" * (D + 1), False),
    (b'{"a":' * (D + 1) + b"1" + b"}" * (D + 1), False),
    (b"[" * 5000 + b"]" * 5000, False),  # json.loads alone: RecursionError or not, by stack
    (b'["' + b"[" * 500 + b'"]', True),  # brackets inside a string do not nest
    (b'["\\"' + b",[" * D + b"]" * D + b"]", False),  # an escaped backslash ends no string
    (b'{"counts": {"0": 5, "1": 7}, "type": "end"}', True),
])
def test_header_nesting_is_bounded_the_same_in_every_thread(body, ok):
    def parse():
        try:
            parse_header(body)
            return True
        except ValueError:
            return False

    def deep(n):  # the same answer with a deep stack
        return deep(n - 1) if n else parse()

    assert parse() is ok and deep(500) is ok


BIG = bytes(range(256)) * 1024  # 256 KB: written as it is, not joined


@pytest.mark.parametrize("parts", [
    [b"", b"a", b""],
    [b"ab", BIG, b"c", b"d", BIG[:70_000], b"e"],
    [pa.py_buffer(BIG), memoryview(BIG)[3:], bytearray(b"xyz")],  # a pyarrow buffer is "b"
    [BIG] * 3,  # more buffers than one sendmsg call takes (see the monkeypatch)
], ids=["empty parts", "small and large", "buffer kinds", "many large"])
def test_a_payload_sent_in_parts_arrives_as_the_parts_joined(parts, monkeypatch):
    monkeypatch.setattr(wire, "_MAX_IOV", 2)
    s = new_secret()
    c, srv = pair(s, s)
    c.send({"type": "hello"})
    srv.recv()
    c.sock.settimeout(10)  # as the feed's sockets: sendmsg may then write part of its data
    t = threading.Thread(target=c.send, args=({"type": "batch"}, parts), daemon=True)
    t.start()  # larger than the socket's buffer: written in several sendmsg calls
    header, payload = srv.recv()
    t.join(10)
    assert not t.is_alive()
    assert header == {"type": "batch"}
    assert payload == b"".join(bytes(memoryview(p)) for p in parts)
