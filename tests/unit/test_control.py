"""The control server's registration rules, over real sockets on 127.0.0.1."""

import socket
import threading

from sparktf.control import ControlClient, ControlServer
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
