"""A byte sink standing in for a training node in the feed benchmarks' transport floor.

    python sink.py      # prints its port, then reads and drops whatever connections send

Each connection is read with ``recv_into`` into one reused buffer until EOF:
the least a receiving process can do (no framing, MAC, Arrow or queue).
"""

import socket
import threading


def _drain(conn: socket.socket) -> None:
    view = memoryview(bytearray(4 << 20))
    with conn:
        while conn.recv_into(view):
            pass


def main() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_drain, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
