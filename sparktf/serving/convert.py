"""Columns to model inputs and model outputs to columns, without a Python step per row.

Spark hands an Arrow UDF one ``pyarrow.Array`` per column and batch.  A
fixed-size ``array<float>`` column is a list array whose values buffer already
holds the rows back to back, so the model input is a reshape of that buffer;
a fixed-size ``binary`` column (raw image bytes) is the same, read as bytes.
Outputs go back the same way: a ``(rows, 10)`` float array becomes a list
array over its buffer and an offsets vector.

Every check happens before the model runs and names the column, the
signature input it feeds, the dtype and shape expected and what was found.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparktf.errors import PredictInputError
from sparktf.serving.signature import TensorSpec

_FLOAT_KINDS = "f"
_INT_KINDS = "iu"
#: Output dtypes Spark cannot hold as they are -> the dtype they are widened to.
_WIDEN = {"uint8": "int16", "uint16": "int32", "uint32": "int64", "uint64": "int64",
          "float16": "float32", "bfloat16": "float32"}


def numpy_dtype(spec: TensorSpec) -> np.dtype:
    """The numpy dtype fed to a signature input (object for strings)."""
    if spec.dtype == "string":
        return np.dtype(object)
    if spec.dtype == "bfloat16":
        return np.dtype(np.float32)      # TensorFlow casts on the way in
    return np.dtype(spec.dtype)


def to_numpy(array: pa.Array | pa.ChunkedArray, column: str, spec: TensorSpec,
             where: str = "", first_row: int = 0) -> np.ndarray:
    """The rows of ``array`` (column ``column``) as one numpy array for signature input ``spec``.

    Lists (any depth, fixed length per row) and scalars become a
    ``(rows, *shape)`` array; a flat list is reshaped when its length is the
    product of the expected shape (``784`` for ``(None, 28, 28, 1)``).  A
    binary column holds each row's raw bytes: ``prod(shape)`` bytes are pixels
    (uint8, cast to the input's dtype, no scaling), ``prod(shape) * itemsize``
    bytes are the input's dtype itself (little-endian).  Nulls, ragged rows,
    other lengths and unconvertible types raise :class:`PredictInputError`
    (``where`` says where the batch comes from; row numbers in messages count
    from ``first_row``).
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    rows = len(array)
    dtype = numpy_dtype(spec)
    _no_nulls(array, column, spec, where, first_row)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        if spec.dtype != "string":
            return _binary_rows(array, column, spec, dtype, where, first_row)
    row_shape: list[int] = []
    values = array
    depth = 0
    while _is_list(values.type):
        depth += 1
        row_shape.append(_uniform_length(values, column, spec, depth, where, first_row))
        values = values.flatten()
        _no_nulls(values, column, spec, where, first_row, nested=True)
    flat = _values(values, column, spec, dtype, where)
    shape = _fit_shape(rows, row_shape, array.type, column, spec, where)
    return flat.reshape((rows,) + shape)


def to_arrow(values: np.ndarray) -> pa.Array:
    """``values`` (``(rows, *shape)``) as an Arrow array of rows: scalars or nested lists."""
    values = np.asarray(values)
    if values.ndim == 0:
        raise ValueError("a model output has no batch dimension")
    if values.dtype.kind in "OSU":
        flat = pa.array([v.decode() if isinstance(v, bytes) else str(v)
                         for v in values.reshape(-1)], pa.string())
    else:
        name = values.dtype.name
        if name in _WIDEN:
            values = values.astype(_WIDEN[name])
        flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    result: pa.Array = flat
    for level in range(values.ndim - 1, 0, -1):
        outer = math.prod(values.shape[:level])
        offsets = np.arange(outer + 1, dtype=np.int64) * values.shape[level]
        if offsets[-1] < 2 ** 31:
            result = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), result)
        else:
            result = pa.LargeListArray.from_arrays(pa.array(offsets), result)
    return result


def spark_type(spec: TensorSpec):
    """The Spark SQL type of a column holding output ``spec`` row by row."""
    from pyspark.sql import types as T

    if spec.shape is None:
        raise ValueError(f"output {spec.name!r} has an unknown rank; cannot declare its column")
    name = _WIDEN.get(spec.dtype, spec.dtype)
    element = {"float32": T.FloatType(), "float64": T.DoubleType(), "int8": T.ByteType(),
               "int16": T.ShortType(), "int32": T.IntegerType(), "int64": T.LongType(),
               "bool": T.BooleanType(), "string": T.StringType()}.get(name)
    if element is None:
        raise ValueError(f"output {spec.name!r} has dtype {spec.dtype}, which has no Spark type")
    result = element
    for _ in spec.shape[1:]:
        result = T.ArrayType(result, containsNull=False)
    return result


def check_spark_type(column: str, data_type, spec: TensorSpec) -> None:
    """Raise :class:`PredictInputError` if a Spark column of type ``data_type`` cannot feed it.

    The driver-side twin of :func:`to_numpy`: it catches wrong element types
    and nesting before a job starts; lengths are only known from the data.
    """
    from pyspark.sql import types as T

    depth, element = 0, data_type
    while isinstance(element, T.ArrayType):
        depth += 1
        element = element.elementType
    expected = None if spec.shape is None else len(spec.shape) - 1
    if isinstance(element, T.BinaryType) and depth == 0 and spec.dtype != "string":
        if spec.shape is not None and None in spec.shape[1:]:
            _fail(column, spec, "is binary, but a binary column needs the whole shape known")
        return
    kind = numpy_dtype(spec).kind
    ok = {"f": (T.FloatType, T.DoubleType, T.ByteType, T.ShortType, T.IntegerType, T.LongType),
          "i": (T.ByteType, T.ShortType, T.IntegerType, T.LongType),
          "u": (T.ByteType, T.ShortType, T.IntegerType, T.LongType),
          "b": (T.BooleanType,),
          "O": (T.StringType, T.BinaryType)}.get(kind, ())
    if not isinstance(element, ok):
        _fail(column, spec, f"has type {data_type.simpleString()}, whose values cannot be fed "
                            f"as {spec.dtype}")
    if expected is not None and depth > expected:
        _fail(column, spec, f"has type {data_type.simpleString()}, nested {depth} deep, more "
                            f"than the {expected} dimension(s) of a row")
    if expected is not None and depth < expected and (depth > 1 or None in spec.shape[1:]):
        _fail(column, spec, f"has type {data_type.simpleString()}, nested {depth} deep; a row "
                            f"needs {expected} dimension(s) (or one flat array when all are known)")


# ----------------------------------------------------------------------------- helpers


def _fail(column: str, spec: TensorSpec, problem: str, where: str = "") -> None:
    at = f" in {where}" if where else ""
    raise PredictInputError(f"column {column!r}{at} {problem}; it feeds signature input "
                            f"{spec.name!r}, which expects {spec.describe()}")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _no_nulls(array: pa.Array, column: str, spec: TensorSpec, where: str, first_row: int,
              nested: bool = False) -> None:
    if array.null_count:
        first = pc.index(pc.is_null(array), True).as_py()
        what = "a null element inside a row" if nested else f"a null in row {first_row + first}"
        _fail(column, spec, f"has {what}", where)


def _uniform_length(array: pa.Array, column: str, spec: TensorSpec, depth: int,
                    where: str, first_row: int) -> int:
    """The common length of the lists in ``array``; raise naming a row that differs."""
    if pa.types.is_fixed_size_list(array.type):
        return array.type.list_size
    offsets = array.offsets.to_numpy()
    lengths = np.diff(offsets)
    if not len(lengths):
        return 0
    different = np.flatnonzero(lengths != lengths[0])
    if len(different):
        i = int(different[0])
        at = f"row {first_row + i}" if depth == 1 else f"position {i} of nesting level {depth}"
        _fail(column, spec, f"has lists of different lengths: {int(lengths[0])} values in the "
                            f"first, {int(lengths[i])} in {at}", where)
    return int(lengths[0])


def _values(values: pa.Array, column: str, spec: TensorSpec, dtype: np.dtype,
            where: str) -> np.ndarray:
    t = values.type
    if dtype.kind == "O":
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t)):
            _fail(column, spec, f"holds {t} values, not strings", where)
        return values.to_numpy(zero_copy_only=False)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        _fail(column, spec, f"holds {t} values, which cannot be fed as {spec.dtype}", where)
    if pa.types.is_boolean(t) != (dtype.kind == "b"):
        _fail(column, spec, f"holds {t} values, which cannot be fed as {spec.dtype}", where)
    if pa.types.is_floating(t) and dtype.kind in _INT_KINDS:
        _fail(column, spec, f"holds {t} values; an integer input would truncate them", where)
    if dtype.kind in _INT_KINDS and t != pa.from_numpy_dtype(dtype):
        try:
            values = values.cast(pa.from_numpy_dtype(dtype), safe=True)
        except pa.ArrowInvalid as e:
            _fail(column, spec, f"holds values out of {spec.dtype}'s range ({e})", where)
    flat = values.to_numpy(zero_copy_only=False)
    return flat if flat.dtype == dtype else flat.astype(dtype)


def _fit_shape(rows: int, row_shape: list[int], arrow_type: pa.DataType, column: str,
               spec: TensorSpec, where: str) -> tuple[int, ...]:
    """The per-row shape to reshape to: the data's own, or the expected one if sizes agree."""
    if spec.shape is None:
        return tuple(row_shape)
    expected = spec.shape[1:]
    if len(row_shape) == len(expected) and all(e is None or e == r
                                               for e, r in zip(expected, row_shape)):
        return tuple(row_shape)
    if None not in expected and math.prod(row_shape) == math.prod(expected) and (
            len(row_shape) <= 1):
        return tuple(expected)
    if not row_shape:
        found = "one value per row"
    elif len(row_shape) == 1:
        found = f"{row_shape[0]} values per row"
    else:
        found = f"rows of shape ({', '.join(map(str, row_shape))})"
    hint = (f"; a flat array needs {math.prod(expected)} values per row"
            if None not in expected and len(expected) > 1 else "")
    _fail(column, spec, f"has {found} ({arrow_type}){hint}", where)
    return ()


def _binary_rows(array: pa.Array, column: str, spec: TensorSpec, dtype: np.dtype,
                 where: str, first_row: int) -> np.ndarray:
    """Rows of raw bytes -> ``(rows, *shape)``: uint8 pixels or the input's own dtype."""
    expected = spec.shape[1:] if spec.shape is not None else None
    if expected is None or None in expected:
        _fail(column, spec, "is binary, but a binary column needs the whole shape known", where)
    rows = len(array)
    large = pa.types.is_large_binary(array.type)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if large else np.int32)[
        array.offset:array.offset + rows + 1]
    lengths = np.diff(offsets)
    size = math.prod(expected)
    if rows:
        different = np.flatnonzero(lengths != lengths[0])
        if len(different):
            i = int(different[0])
            _fail(column, spec, f"has values of different sizes: {int(lengths[0])} bytes in "
                                f"the first row, {int(lengths[i])} in row {first_row + i}",
                  where)
    length = int(lengths[0]) if rows else size
    data = (np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
            if rows and buffers[2] is not None else np.zeros(0, np.uint8))
    if dtype.kind != "O" and length == size * dtype.itemsize:
        flat = data.view(dtype) if (offsets[0] % dtype.itemsize == 0) else (
            data.copy().view(dtype))
        return flat.reshape((rows,) + tuple(expected))
    if length == size and dtype.kind in _FLOAT_KINDS + _INT_KINDS:
        return data.astype(dtype).reshape((rows,) + tuple(expected))
    _fail(column, spec, f"has {length} bytes per row; expected {size} (uint8 pixels) or "
                        f"{size * dtype.itemsize} ({spec.dtype} values)", where)
    return data
