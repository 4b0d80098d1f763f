"""Feeding is bounded in bytes as well as rows: chunks, and what a node buffers."""

import threading

import numpy as np
import pyarrow as pa
import pytest

from sparktf.feed import arrowconv
from sparktf.feed.receiver import BoundedBuffer, Item


@pytest.mark.parametrize("row_floats, max_bytes, rows_per_chunk", [
    (100_000, 4 << 20, 10),      # 400 KB rows: ten to a 4 MiB chunk, not 4,096
    (784, 4 << 20, 1337),        # MNIST rows: bounded by bytes (784 * 4 * 1337 ~ 4 MiB)
    (4, 4 << 20, 4096),          # tiny rows: bounded by rows
    (2_000_000, 4 << 20, 1),     # one row larger than a chunk still goes, alone
])
def test_row_chunks_are_bounded_in_bytes(row_floats, max_bytes, rows_per_chunk):
    rows = (np.zeros(row_floats, "float32") for _ in range(rows_per_chunk * 2 + 1))
    sizes = [b.num_rows for b in arrowconv.encode_rows(rows, 0, 4096, max_bytes)]
    assert sizes == [rows_per_chunk, rows_per_chunk, 1]


def test_arrow_batches_are_sliced_by_bytes_without_copies():
    batch = pa.RecordBatch.from_pydict({"x": np.arange(100_000, dtype="float64")})  # 800 KB
    pieces = list(arrowconv.split_by_bytes(batch, 100_000))
    assert [p.num_rows for p in pieces] == [12_500] * 8
    assert all(p.nbytes <= 100_000 for p in pieces)
    assert pa.Table.from_batches(pieces).column("x").to_numpy().tolist() == list(range(100_000))
    assert list(arrowconv.split_by_bytes(batch, 10 << 20)) == [batch]


def item(nbytes):
    return Item(pa.RecordBatch.from_pydict({"x": np.zeros(nbytes // 8)}))


def test_the_node_buffer_is_bounded_in_bytes():
    buf = BoundedBuffer(8, max_bytes=1000)
    assert buf.put(item(800))
    blocked = threading.Thread(target=buf.put, args=(item(400),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "800 + 400 bytes is over the bound: the feeder waits"
    assert buf.unread_rows() == 100
    buf.get()
    blocked.join(5)
    assert not blocked.is_alive() and buf.bytes == 400 and buf.unread_rows() == 50
    buf.get()
    assert buf.put(item(5000)), "one batch larger than the bound is let into an empty buffer"
    assert len(buf) == 1 and buf.bytes == 5000
