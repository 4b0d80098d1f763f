"""Rows to Arrow record batches and back (pure logic, no sockets).

A feeding task turns the rows of a partition into Arrow record batches, column
by column, so that rows cross the wire in a compact columnar form and the node
can hand whole columns to TensorFlow.  The shape of the first row fixes the
schema of the partition; every other row must match it, and a row that does
not is reported with its partition and index (nothing is dropped or coerced).

Row kinds (the schema metadata ``sparktf.kind`` records which):

* ``array``: a numpy array or a list of numbers -> one column ``_0``.
* ``tuple``: a tuple, or a list holding arrays -> columns ``_0``, ``_1``, ...
* ``dict``: a dict or a ``pyspark.sql.Row`` -> one column per key.

A column of scalars becomes a primitive Arrow array; a column of equal-shape
arrays becomes a ``FixedSizeList`` (shape kept in the field metadata).
"""

from __future__ import annotations

import array
import itertools
import json
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa

from ..errors import FeedError

_SCALARS = (int, float, bool, str, bytes, np.generic)


def _kind(row: Any) -> str:
    if isinstance(row, np.ndarray):
        return "array"
    if isinstance(row, dict) or hasattr(row, "asDict"):
        return "dict"
    if isinstance(row, tuple):
        return "tuple"
    if isinstance(row, list):
        return "array" if all(isinstance(v, _SCALARS) for v in row) else "tuple"
    if isinstance(row, _SCALARS):
        return "scalar"
    return ""


def _fields(row: Any, kind: str) -> tuple[list[str], list[Any]]:
    if kind == "dict":
        d = row.asDict() if hasattr(row, "asDict") else row
        return list(d.keys()), list(d.values())
    if kind == "tuple":
        return [f"_{i}" for i in range(len(row))], list(row)
    return ["_0"], [row]


def _signature(value: Any) -> tuple:
    if isinstance(value, np.ndarray):
        return ("nd", value.shape, value.dtype.str)
    if isinstance(value, (list, tuple)):
        return ("seq", len(value))
    if isinstance(value, _SCALARS):
        return ("scalar", type(value).__name__ if not isinstance(value, np.generic)
                else value.dtype.str)
    return ("other", type(value).__name__)


#: ``array`` type codes for lists whose first value is a Python int or float.
_LIST_CODES = {int: ("q", np.int64), float: ("d", np.float64)}
#: Field metadata of a column sent narrowed (uint8): the dtype its values had, the only
#: one narrowed.
WIRE_DTYPE = b"sparktf.widen"
_WIDENED = b"int64"


def _number_lists(values: list, narrow: bool = False) -> np.ndarray | None:
    """``values``, equal-length lists of Python numbers, as a 2-D array, or None.

    ``array.fromlist`` converts a list of ints (or floats) in one C loop, about
    twice as fast as ``np.asarray`` (which first scans every value for its
    type), and refuses any value of another type (a float among ints, a
    string, None, a nested list); such lists, and lists whose first value is
    neither an int nor a float, give None (the rows are then checked one by
    one).  Wherever the result is not None it equals ``np.asarray(values)``,
    except that with ``narrow`` lists of ints between 0 and 255 come as uint8:
    an eighth of the bytes to send (see :class:`RowEncoder`), and
    ``bytearray.extend`` converts them 2.5x faster still (4.7 against 11-13 us
    for 784 ints).
    """
    first = values[0]
    if type(first) is not list or not first:
        return None
    code = _LIST_CODES.get(type(first[0]))
    if code is None:
        return None
    if narrow and code[0] == "q":
        small = bytearray()
        try:
            for v in values:
                small.extend(v)  # refuses values outside 0..255 and non-ints
        except (TypeError, ValueError):
            pass
        else:
            return _rows_of(np.frombuffer(small, np.uint8), values)
    out = array.array(code[0])
    try:
        for v in values:
            out.fromlist(v)
    except (TypeError, OverflowError):
        return None
    return _rows_of(np.frombuffer(out, dtype=code[1]), values)


def _rows_of(flat: np.ndarray, values: list) -> np.ndarray | None:
    """``flat``, the values of the lists ``values`` one after another, as one row per
    list; None if the lists differ in length."""
    width = len(values[0])
    if len(flat) != len(values) * width:
        return None
    return flat.reshape(len(values), width)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """``np.stack(arrays)``: one C-level ``np.concatenate`` when all arrays have the
    first one's shape and dtype (``np.stack`` spends ~2 us of Python per array
    expanding each one first, more than the copy itself)."""
    first = arrays[0]
    if first.ndim and len({a.shape for a in arrays}) == 1 and len({a.dtype for a in arrays}) == 1:
        return np.concatenate(arrays).reshape(len(arrays), *first.shape)
    return np.stack(arrays)


def _column(name: str, values: Any) -> tuple[pa.Array, pa.Field]:
    """An Arrow column from a sequence of equal-kind values, and its field.

    Arrays become a ``FixedSizeList`` whose field records the value shape.
    """
    first = values[0]
    if isinstance(first, (np.ndarray, list, tuple)):
        if isinstance(values, np.ndarray):
            arr = values  # already one array (a 2-D result, or see _number_lists)
        else:
            arr = _stack(values) if isinstance(first, np.ndarray) else np.asarray(values)
        shape = arr.shape[1:]
        width = int(np.prod(shape)) if shape else 1
        column = pa.FixedSizeListArray.from_arrays(_from_numpy(arr.reshape(-1)), width)
        return column, pa.field(name, column.type,
                                metadata={"sparktf.shape": json.dumps(list(shape))})
    column = _from_numpy(np.asarray(values)) if not isinstance(first, (str, bytes)) else (
        pa.array(values))
    return column, pa.field(name, column.type)


def _from_numpy(arr: np.ndarray) -> pa.Array:
    """``pa.array(arr)`` for a 1-D array, zero-copy for numbers.

    ``pa.array`` imports pandas on its first call in a process (0.25 s and more
    of every fresh Spark Python worker that feeds), so numbers are wrapped as
    Arrow buffers directly; other kinds (bools, strings, objects) go through it.
    """
    if arr.dtype.kind in "iuf" and arr.dtype.isnative:
        arr = np.ascontiguousarray(arr)
        return pa.Array.from_buffers(pa.from_numpy_dtype(arr.dtype), len(arr),
                                     [None, pa.py_buffer(arr)])
    return pa.array(arr)


class RowEncoder:
    """Encodes the rows of one partition into Arrow record batches.

    ``narrow``: columns of lists of ints between 0 and 255 (pixels parsed from
    CSV lines) are encoded as uint8, marked to be widened back to int64 by
    :func:`from_ipc`; a column stops trying once a value does not fit.
    """

    def __init__(self, partition: int, narrow: bool = False) -> None:
        self.partition = partition
        self.narrow = narrow
        self._wide: set[int] = set()  # columns with an int that does not fit in uint8
        self.kind = ""
        self.names: list[str] = []
        self.signature: list[tuple] = []
        self.row_type: type | None = None  # the first row's

    def _fail(self, index: int, why: str) -> None:
        raise FeedError(f"bad input in partition {self.partition}, row {index}: {why}")

    def _check(self, row: Any, index: int) -> list[Any]:
        if row is None:
            self._fail(index, "the row is None")
        kind = _kind(row)
        if not self.kind:
            if not kind:
                self._fail(index, f"unsupported row type {type(row).__name__}; feed numpy "
                                  "arrays, tuples, lists, dicts or Rows")
            self.kind = "array" if kind == "scalar" else kind
            self.row_type = type(row)
            self.names, values = _fields(row, self.kind)
            self.signature = [_signature(v) for v in values]
            for name, sig in zip(self.names, self.signature):
                if sig[0] == "other":
                    self._fail(index, f"field {name!r} has unsupported type {sig[1]}")
            return values
        if kind != self.kind and not (self.kind == "array" and kind == "scalar"):
            self._fail(index, f"row of kind {kind or type(row).__name__} differs from the "
                              f"partition's first row (kind {self.kind})")
        names, values = _fields(row, self.kind)
        if names != self.names:
            self._fail(index, f"fields {names} differ from the first row's {self.names}")
        for name, value, want in zip(names, values, self.signature):
            got = _signature(value)
            if got != want:
                self._fail(index, f"field {name!r} is {got} but the first row's is {want}")
        return values

    def _fast_columns(self, rows: list[Any]) -> list[Any] | None:
        """The columns of ``rows`` if every row matches the schema, checked with
        C-speed set operations; None if any row may differ (then :meth:`_check`
        walks the rows one by one to name the first bad one).  A column of
        lists of Python numbers comes back converted (a 2-D array)."""
        if self.kind == "dict":
            return None
        if set(map(type, rows)) != {self.row_type}:
            return None
        if self.kind == "tuple":
            if set(map(len, rows)) != {len(self.names)}:
                return None
            columns = [list(c) for c in zip(*rows)]
        else:
            columns = [rows]
        for i, (col, sig) in enumerate(zip(columns, self.signature)):
            if len(set(map(type, col))) != 1:
                return None
            if sig[0] == "nd" and ({a.shape for a in col} != {sig[1]}
                                   or {a.dtype for a in col} != {np.dtype(sig[2])}):
                return None
            if sig[0] == "seq":
                if set(map(len, col)) != {sig[1]}:
                    return None
                narrow = self.narrow and i not in self._wide
                columns[i] = _number_lists(col, narrow)
                if columns[i] is None:
                    return None
                if narrow and columns[i].dtype != np.uint8:
                    self._wide.add(i)
            if sig[0] == "scalar" and _signature(col[0]) != sig:
                return None
        return columns

    def columns(self, rows: list[Any], first_index: int) -> list[Any]:
        """The columns of ``rows`` (the partition's rows from ``first_index`` on), every
        row checked against the partition's first: per column a list of values, or a 2-D
        array for lists of numbers."""
        if not self.kind:
            self._check(rows[0], first_index)
        columns = self._fast_columns(rows)
        if columns is None:
            columns = []
            for i, row in enumerate(rows):
                values = self._check(row, first_index + i)
                if not columns:
                    columns = [[] for _ in values]
                for col, v in zip(columns, values):
                    col.append(v)
        return columns

    def to_batch(self, columns: list[Any], first_index: int, rows: int) -> pa.RecordBatch:
        """One record batch from the ``columns`` of ``rows`` rows from ``first_index`` on."""
        arrays, fields = [], []
        for name, values, sig in zip(self.names, columns, self.signature):
            try:
                arr, field = _column(name, values)
            except (ValueError, TypeError, pa.ArrowException) as e:
                raise FeedError(f"bad input in partition {self.partition}, rows {first_index}-"
                                f"{first_index + rows - 1}: field {name!r}: {e}") from e
            if sig[0] == "seq" and getattr(values, "dtype", None) == np.uint8:  # narrowed
                field = field.with_metadata({**field.metadata, WIRE_DTYPE: _WIDENED})
            arrays.append(arr)
            fields.append(field)
        schema = pa.schema(fields, metadata={"sparktf.kind": self.kind})
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def encode(self, rows: list[Any], first_index: int) -> pa.RecordBatch:
        """One record batch from ``rows`` (the partition's rows from ``first_index`` on)."""
        return self.to_batch(self.columns(rows, first_index), first_index, len(rows))


#: Rows checked and copied into a chunk at a time (see :class:`_Chunk`).
GROUP_ROWS = 64


class _Chunk:
    """The columns of one record batch, filled a group of rows at a time.

    A column of equal-shape arrays is copied into one buffer as each group
    arrives, so the rows can be freed at once: holding a chunk's thousands of
    freshly unpickled rows until it is full costs more than the copy itself
    (784-float rows: 4.9 us a row encoded that way, 2.9 us this way, against
    1.9 us to merely unpickle one).  Other columns collect their values.
    """

    def __init__(self, signature: list[tuple], capacity: int, first_index: int) -> None:
        self.first_index = first_index
        self.rows = 0
        self._buffers = [np.empty((capacity, *sig[1]), sig[2]) if sig[0] == "nd" and sig[1]
                         else None for sig in signature]
        self._pieces: list[list] = [[] for _ in signature]

    def add(self, columns: list[Any], rows: int) -> None:
        for buf, pieces, values in zip(self._buffers, self._pieces, columns):
            if buf is not None:
                into = buf[self.rows:self.rows + rows]
                np.concatenate(values, out=into.reshape(-1, *buf.shape[2:]))
            else:
                pieces.append(values)
        self.rows += rows

    def columns(self) -> list[Any]:
        """The columns so far (:meth:`RowEncoder.to_batch` takes them)."""
        out = []
        for buf, pieces in zip(self._buffers, self._pieces):
            if buf is not None:
                out.append(buf[:self.rows])
            elif any(isinstance(p, np.ndarray) for p in pieces):  # lists of numbers
                out.append(np.concatenate([np.asarray(p) for p in pieces]))
            else:
                out.append([v for p in pieces for v in p])
        return out


def encode_rows(rows: Iterable[Any], partition: int, batch_rows: int,
                max_bytes: int | None = None, narrow: bool = False) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``batch_rows`` rows, and about ``max_bytes`` bytes.

    The row size is learnt from the first row, so a partition of 400 KB rows is
    cut into batches of a few rows, not of ``batch_rows`` rows.  ``narrow``: for
    batches sent through :func:`to_ipc` and :func:`from_ipc` (see :class:`RowEncoder`).
    """
    enc = RowEncoder(partition, narrow)
    it = iter(rows)
    group = list(itertools.islice(it, 1))
    if group and max_bytes:
        row_bytes = max(1, enc.encode(group, 0).nbytes)
        batch_rows = max(1, min(batch_rows, max_bytes // row_bytes))
    chunk: _Chunk | None = None
    index = 0
    while group:
        columns = enc.columns(group, index)
        if chunk is None:
            chunk = _Chunk(enc.signature, batch_rows, index)
        chunk.add(columns, len(group))
        index += len(group)
        if chunk.rows == batch_rows:
            yield enc.to_batch(chunk.columns(), chunk.first_index, chunk.rows)
            chunk = None
        group = list(itertools.islice(it, min(GROUP_ROWS,
                                              batch_rows - (chunk.rows if chunk else 0))))
    if chunk is not None:
        yield enc.to_batch(chunk.columns(), chunk.first_index, chunk.rows)


def split_by_bytes(batch: pa.RecordBatch, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """``batch`` as zero-copy slices of about ``max_bytes`` bytes each (at least one row)."""
    if batch.nbytes <= max_bytes or batch.num_rows <= 1:
        yield batch
        return
    rows = max(1, batch.num_rows * max_bytes // batch.nbytes)
    for start in range(0, batch.num_rows, rows):
        yield batch.slice(start, rows)


def column_to_numpy(batch: pa.RecordBatch, i: int) -> np.ndarray:
    """Column ``i`` as a numpy array, fixed-size lists reshaped to (rows, *shape)."""
    col = batch.column(i)
    field = batch.schema.field(i)
    if pa.types.is_fixed_size_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        meta = field.metadata or {}
        shape = json.loads(meta.get(b"sparktf.shape", b"[]")) or [col.type.list_size]
        return flat.reshape((len(col), *shape))
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        # Spark sends array<...> columns as variable-size lists: reshape when all
        # rows have the same length (zero-copy), else fall back to one array per row.
        offsets = col.offsets.to_numpy()
        lengths = np.diff(offsets)
        if len(col) and col.null_count == 0 and (lengths == lengths[0]).all():
            values = col.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
            return values.reshape(len(col), int(lengths[0]))
        return np.array([np.asarray(v) for v in col.to_pylist()], dtype=object)
    return col.to_numpy(zero_copy_only=False)


def decode_rows(batch: pa.RecordBatch) -> list[Any]:
    """The rows of a record batch in the form they were fed (for ``next_batch``)."""
    kind = (batch.schema.metadata or {}).get(b"sparktf.kind", b"dict").decode()
    cols = [column_to_numpy(batch, i) for i in range(batch.num_columns)]
    if kind == "array":
        return list(cols[0])
    if kind == "tuple":
        return list(zip(*cols))
    names = batch.schema.names
    return [dict(zip(names, vals)) for vals in zip(*cols)]


def _write_ipc(sink: Any, batch: pa.RecordBatch) -> None:
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)


def to_ipc(batch: pa.RecordBatch) -> pa.Buffer:
    """Serialise one record batch (with its schema) as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    _write_ipc(sink, batch)
    return sink.getvalue()


class _Pieces:
    """A file-like sink keeping what pyarrow writes to it: bytes for the IPC metadata,
    and the batch's own column buffers (``pa.Buffer``, no copy) for its body."""

    def __init__(self) -> None:
        self.pieces: list = []
        self.closed = False

    def write(self, data: Any) -> int:
        self.pieces.append(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def to_ipc_parts(batch: pa.RecordBatch) -> list:
    """:func:`to_ipc`'s bytes as the pieces that make them up, the column buffers among them
    not copied (for :meth:`sparktf.wire.Channel.send`, which writes them in order): a
    4 MB float32 chunk's copy into one buffer was about a tenth of a feeding task's work."""
    sink = _Pieces()
    _write_ipc(sink, batch)
    return sink.pieces


def from_ipc(data: bytes | bytearray | memoryview) -> pa.RecordBatch:
    """The single record batch of an Arrow IPC stream written by :func:`to_ipc`, with the
    columns sent narrowed widened back (see :class:`RowEncoder`)."""
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    return _widened(concat(list(reader)))


def _widened(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its narrowed fixed-size list columns in their own dtype again."""
    fields = batch.schema
    if not any(WIRE_DTYPE in (f.metadata or {}) for f in fields):
        return batch
    columns, out = [], []
    for col, field in zip(batch.columns, fields):
        meta = dict(field.metadata or {})
        dtype = meta.pop(WIRE_DTYPE, None)
        if dtype is not None:
            if dtype != _WIDENED or not (pa.types.is_fixed_size_list(col.type)
                                         and col.type.value_type == pa.uint8()):
                raise ValueError(f"column {field.name!r} of type {col.type} cannot be widened "
                                 f"to {dtype!r}")
            values = col.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
            col = pa.FixedSizeListArray.from_arrays(_from_numpy(values), col.type.list_size)
            field = pa.field(field.name, col.type, metadata=meta)
        columns.append(col)
        out.append(field)
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(out, metadata=fields.metadata))


def concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One record batch holding the rows of ``batches`` in order."""
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def results_to_batch(results: Any) -> pa.RecordBatch:
    """Inference results (one per row) as a one-column record batch."""
    if isinstance(results, pa.RecordBatch):
        return results
    values = results if isinstance(results, np.ndarray) else list(results)
    if len(values):
        arr, field = _column("result", values)
    else:
        arr, field = pa.array([]), pa.field("result", pa.null())
    schema = pa.schema([field], metadata={"sparktf.kind": "array"})
    return pa.RecordBatch.from_arrays([arr], schema=schema)


def plain_lists(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with fixed-size list columns as plain lists (what Spark's arrays are)."""
    columns, fields = [], []
    for col, field in zip(batch.columns, batch.schema):
        if pa.types.is_fixed_size_list(col.type):
            col = col.cast(pa.list_(col.type.value_type))
            field = pa.field(field.name, col.type)
        columns.append(col)
        fields.append(field)
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def with_results(source: pa.RecordBatch, keep: list[str], results: pa.RecordBatch,
                 schema: pa.Schema, partition: int) -> pa.RecordBatch:
    """The ``keep`` columns of ``source`` and the ``results`` columns, typed by ``schema``.

    Results line up with ``source`` row for row; they are matched to the
    output fields by position.
    """
    outputs = schema.names[len(keep):]
    if results.num_columns != len(outputs):
        raise FeedError(f"partition {partition}: map_fun returned {results.num_columns} "
                        f"result column(s) {results.schema.names} for the {len(outputs)} output "
                        f"column(s) {outputs} of schema=")
    results = plain_lists(results)
    columns = [source.column(name) for name in keep]
    for i, field in enumerate(schema):
        if i < len(keep):
            continue
        col = results.column(i - len(keep))
        try:
            columns.append(col if col.type == field.type else col.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise FeedError(f"partition {partition}: result column {field.name!r} of type "
                            f"{col.type} cannot become {field.type}: {e}") from None
    return pa.RecordBatch.from_arrays(columns, schema=schema)
