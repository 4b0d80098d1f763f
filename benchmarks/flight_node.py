"""An Arrow Flight stand-in for a training node, for ``feed_cpu.py``'s transport comparison.

    python flight_node.py COLUMN    # prints its port, then serves until killed

Feeding tasks ``do_put`` record batches (gRPC, received and decoded by Arrow's C++ with
the GIL released, no MAC, no acknowledgements of ours); each batch goes into a sparktf
``BoundedBuffer`` (the node's bounded queue), and a consumer thread reads it through
``DataFeed.next_batch(256)`` with ``input_mapping={COLUMN: "x"}``, as a node's ``map_fun``
does.  What it shows: whether receiving in C++ instead of sparktf's Python receiving
threads would make a node cheaper.
"""

import sys
import threading

import pyarrow.flight as flight

from sparktf.feed.datafeed import DataFeed
from sparktf.feed.receiver import BoundedBuffer, EpochStart, Item


class _Feed:
    """What ``DataFeed`` reads: a buffer, a terminated event."""

    def __init__(self) -> None:
        self.buffer = BoundedBuffer(8, 256 << 20)
        self.terminated = threading.Event()

    def open_feed(self, qname_in: str, qname_out: str) -> "_Feed":
        return self

    def terminate(self) -> None:
        pass


class FlightNode(flight.FlightServerBase):
    def __init__(self, feed: _Feed) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self.feed = feed

    def do_put(self, context, descriptor, reader, writer):
        for chunk in reader:
            self.feed.buffer.put(Item(chunk.data))


def _consume(feed: _Feed, column: str) -> None:
    feed.buffer.put(EpochStart(0, 1))
    data = DataFeed(feed, input_mapping={column: "x"})
    while True:
        data.next_batch(256)


def main() -> None:
    feed = _Feed()
    node = FlightNode(feed)
    print(node.port, flush=True)
    threading.Thread(target=_consume, args=(feed, sys.argv[1]), daemon=True).start()
    node.serve()


if __name__ == "__main__":
    main()
