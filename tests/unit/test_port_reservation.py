"""The TF port a node reserves: held on every address, since TF's gRPC server binds them all."""

import socket

import pytest

from sparktf.node.launcher import reserve_port


@pytest.mark.parametrize("other", ["127.0.0.1", "127.0.0.2", "0.0.0.0"])
def test_no_other_socket_can_take_the_reserved_port(other):
    held = reserve_port("127.0.0.1")
    port = held.getsockname()[1]
    try:
        with socket.socket() as s, pytest.raises(OSError, match="in use"):
            s.bind((other, port))
    finally:
        held.close()
    with socket.socket() as s:   # released: TF can bind it now, on every address
        s.bind(("0.0.0.0", port))
