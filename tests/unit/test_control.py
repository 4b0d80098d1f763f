"""The control server's registration rules, over real sockets on 127.0.0.1."""

import contextlib
import socket
import threading
import time

import pytest

from sparktf import wire
from sparktf.control import ControlClient, ControlServer
from sparktf.feed.receiver import FeedServer
from sparktf.wire import new_secret


def test_a_node_cannot_register_twice(caplog):
    """A second (node, kind) connection, e.g. from a barrier stage Spark retried, is dropped."""
    secret = new_secret()
    server = ControlServer("127.0.0.1", secret, num_nodes=2)
    try:
        first = ControlClient(server.address, secret, 1, "supervisor", lambda m: None, lambda: None)
        first.send({"type": "started"})
        assert server.events.get(timeout=5) == (1, "supervisor", {"type": "started"})
        lost = threading.Event()
        second = ControlClient(server.address, secret, 1, "supervisor", lambda m: None, lost.set)
        assert lost.wait(5), "the second registration was not dropped"
        assert "node 1 (supervisor) connected a second time" in caplog.text
        first.send({"type": "still here"})
        assert server.events.get(timeout=5) == (1, "supervisor", {"type": "still here"})
        assert server.send(1, "supervisor", {"type": "stop"})
        for client in (first, second):  # close() alone does not wake the listener thread
            client._chan.sock.shutdown(socket.SHUT_RDWR)
            client.close()
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["control", "feed"])
def test_a_slow_handshake_is_cut_at_the_deadline(kind, monkeypatch, caplog):
    """A peer dribbling one byte at a time never trips a read timeout; the deadline cuts it."""
    monkeypatch.setattr(wire, "HANDSHAKE_DEADLINE", 1.0)
    secret = new_secret()
    server = (ControlServer("127.0.0.1", secret, num_nodes=2) if kind == "control"
              else FeedServer("127.0.0.1", secret, control=None))
    sock = socket.create_connection(server.address, timeout=5)
    started = time.monotonic()
    try:
        with contextlib.suppress(OSError):
            for byte in (wire.MAGIC + bytes(wire.NONCE_BYTES))[:-1]:
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
        while sock.recv(4096):  # the server's greeting, then the end of the connection
            pass
        assert time.monotonic() - started < 3
    finally:
        sock.close()
        server.close()
    deadline = time.monotonic() + 5
    while "no complete handshake within 1s" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "no complete handshake within 1s" in caplog.text


def test_feed_failures_first_per_job_bounded_and_checked(monkeypatch, caplog):
    """A feeding task's error report: kept per job (the first wins, the oldest jobs go),
    and a report that does not fit is dropped and logged."""
    from sparktf import control
    from sparktf.control import report_feed_failure
    from sparktf.protocol import FeedFailed

    monkeypatch.setattr(control, "MAX_FEED_FAILURES", 2)
    secret = new_secret()
    server = ControlServer("127.0.0.1", secret, num_nodes=1)
    try:
        report = lambda *a: report_feed_failure(server.address, secret, None, FeedFailed(*a))  # noqa: E731
        report("job-1", "FeedTimeout", "took no data for 2s")
        report("job-1", "FeedError", "a later retry")
        assert server.feed_failure("job-1") == FeedFailed("job-1", "FeedTimeout",
                                                          "took no data for 2s")
        report("job-2", "FeedError", "x" * 10_000, True)
        got = server.feed_failure("job-2")
        assert got.node_lost and len(got.error) == control.MAX_FEED_ERROR
        report("job-3", "FeedError", "bad row")
        assert server.feed_failure("job-1") is None and server.feed_failure("job-3")
        report("job-4", "ValueError", "not a feed error class")
        report_feed_failure(server.address, new_secret(), None,     # another cluster's
                            FeedFailed("job-5", "FeedError", "forged"))
        assert server.feed_failure("job-4") is None and server.feed_failure("job-5") is None
        assert "bad feed failure report" in caplog.text
    finally:
        server.close()


def _failed(job: str, node_lost: bool = False):
    from sparktf.protocol import FeedFailed
    return FeedFailed(job, "FeedError", f"error of {job}", node_lost)


@pytest.mark.parametrize("reports, expected", [
    ([], None),
    (["other/0/1", "inf/x/1", "inf-2/0/1"], None),          # another key, a bad stage
    (["inf/3/0", "inf/3/1"], "inf/3/0"),                   # the first of a stage
    (["inf/3/0", "inf/7/2", "inf/7/1"], "inf/7/2"),        # the latest action's stage
    (["inf/10/0", "inf/9/1"], "inf/10/0"),                 # stages compared as numbers
    (["inf/3/3!", "inf/3/1", "inf/3/0"], "inf/3/1"),       # a lost node is a consequence
    (["inf/3/3!", "inf/3/4!"], "inf/3/3"),                 # ... unless nothing else failed
    (["inf/2/0", "inf/3/3!"], "inf/3/3"),
])
def test_explaining_failure_of_an_inference_key(reports, expected):
    """Which inference task's report the driver raises ("!": the task lost its node)."""
    from sparktf.control import explaining_failure

    got = explaining_failure("inf", [_failed(r.rstrip("!"), r.endswith("!")) for r in reports])
    assert (got.job if got else None) == expected
