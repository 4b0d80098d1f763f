import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import Row

from sparktf.errors import FeedError
from sparktf.feed import arrowconv


def roundtrip(rows):
    batches = list(arrowconv.encode_rows(rows, partition=3, batch_rows=4))
    batches = [arrowconv.from_ipc(arrowconv.to_ipc(b)) for b in batches]
    out = []
    for b in batches:
        out.extend(arrowconv.decode_rows(b))
    return batches, out


def test_numpy_rows_become_one_fixed_size_list_column():
    rows = [np.arange(6, dtype="float32").reshape(2, 3) + i for i in range(10)]
    batches, out = roundtrip(rows)
    assert [b.num_rows for b in batches] == [4, 4, 2]
    assert pa.types.is_fixed_size_list(batches[0].column(0).type)
    for a, b in zip(rows, out):
        np.testing.assert_array_equal(a, b)
        assert b.dtype == np.float32 and b.shape == (2, 3)


def test_tuples_of_array_and_label():
    rows = [(np.full(4, i, "float32"), i) for i in range(5)]
    _, out = roundtrip(rows)
    assert [int(label) for _, label in out] == list(range(5))
    np.testing.assert_array_equal(out[3][0], np.full(4, 3, "float32"))


def test_lists_of_numbers_are_vectors_and_dicts_and_rows_keep_names():
    _, out = roundtrip([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(out[1], [3.0, 4.0])
    _, out = roundtrip([Row(x=1.5, y="a"), Row(x=2.5, y="b")])
    assert out == [{"x": 1.5, "y": "a"}, {"x": 2.5, "y": "b"}]


@pytest.mark.parametrize("lists,fast", [
    ([[1, 2], [3, 4]], True), ([[1.5, 2], [3, 4]], True), ([[1, True], [3, 4]], True),
    ([[1.0, True], [2, 3]], True), ([[1, np.int64(2)], [3, 4]], True),
    ([[1.0, np.float32(2)], [3, 4]], True),
    # left to np.asarray (a float among ints, too large, not numbers, ragged, tuples):
    ([[1, 2.5], [3, 4]], False), ([[2**63, 1], [1, 2]], False), ([[1, "a"], [1, 2]], False),
    ([[True, False], [True, True]], False), ([[1, 2], [3]], False), ([(1, 2), (3, 4)], False),
])
def test_lists_of_numbers_convert_as_numpy_would(lists, fast):
    got = arrowconv._number_lists(lists)
    assert (got is not None) == fast
    if fast:
        want = np.asarray(lists)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_list_rows_keep_their_dtype_and_bad_ones_are_named():
    rows = [(list(range(i, i + 784)), i) for i in range(10)]
    batches, out = roundtrip(rows)
    assert batches[0].column(0).type == pa.list_(pa.int64(), 784)
    np.testing.assert_array_equal(out[7][0], np.arange(7, 791))
    _, out = roundtrip([([0.5] * 3, 1), ([1, 2, 3], 2)])
    assert out[1][0].dtype == np.float64
    with pytest.raises(FeedError, match="partition 3, row 2: .*field '_0'"):
        list(arrowconv.encode_rows([([1, 2], 1)] * 2 + [([1, 2, 3], 1)], 3, 100))
    with pytest.raises(FeedError, match="partition 3, row 1: .*differs"):
        list(arrowconv.encode_rows([[1, 2], [1, [2]]], 3, 100))


@pytest.mark.parametrize("rows,where,why", [
    ([(1, 2), None], "row 1", "is None"),
    ([(1, 2), (1, 2, 3)], "row 1", "fields"),
    ([(np.zeros(3), 1), (np.zeros(4), 1)], "row 1", "field '_0'"),
    ([(1, 2)] * 5 + [(1, "x")], "row 5", "field '_1'"),
    ([object()], "row 0", "unsupported row type object"),
    ([{"a": 1}, {"b": 1}], "row 1", "fields"),
    ([np.zeros(2), (1, 2)], "row 1", "differs"),
])
def test_bad_rows_name_partition_and_row(rows, where, why):
    with pytest.raises(FeedError, match=f"partition 3, {where}: .*{why}"):
        list(arrowconv.encode_rows(rows, partition=3, batch_rows=100))


def test_results_to_batch_handles_scalars_and_arrays():
    b = arrowconv.results_to_batch([1, 2, 3])
    assert arrowconv.decode_rows(b) == [1, 2, 3]
    b = arrowconv.results_to_batch(np.ones((3, 2), "float32"))
    np.testing.assert_array_equal(np.stack(arrowconv.decode_rows(b)), np.ones((3, 2)))


def test_variable_list_column_of_equal_lengths_is_reshaped():
    col = pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(pa.float32()))
    batch = pa.RecordBatch.from_arrays([col], names=["img"])
    np.testing.assert_array_equal(arrowconv.column_to_numpy(batch, 0), [[1, 2], [3, 4]])


@pytest.mark.parametrize("arrays", [
    [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)],
    [np.arange(3), np.arange(3.0)],            # dtypes differ: np.stack's promotion
    [np.float32(1), np.float32(2)],           # 0-d
])
def test_stack_equals_np_stack(arrays):
    got, want = arrowconv._stack(arrays), np.stack(arrays)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_stack_of_different_shapes_fails_as_np_stack_does():
    with pytest.raises(ValueError):
        arrowconv._stack([np.ones(2), np.ones(4), np.ones(3), np.ones(3)])


_ROW_KINDS = [
    ("numpy float32 + label", lambda i: (np.full(784, i, "float32"), i)),
    ("numpy uint8 image 28x28", lambda i: np.full((28, 28), i % 256, "uint8")),
    ("lists of ints + label", lambda i: (list(range(i, i + 5)), i)),
    ("lists of pixels, one > 255", lambda i: ([i % 256] * 4 if i != 130 else [256] * 4, i)),
    ("lists of negative ints", lambda i: ([-i] * 4, i)),
    ("lists, one of floats", lambda i: ([0.5 * i] * 3 if i == 130 else [i] * 3, i)),
    ("dicts of arrays and strings", lambda i: {"x": np.arange(3.0) + i, "s": str(i)}),
    ("Rows", lambda i: Row(a=i, b=float(i))),
    ("0-d arrays", lambda i: (np.float64(i), np.array(i))),
    ("bytes", lambda i: (bytes([i % 256]) * 4, i)),
]


@pytest.mark.parametrize("make", [m for _, m in _ROW_KINDS], ids=[k for k, _ in _ROW_KINDS])
def test_chunks_built_group_by_group_equal_their_rows_encoded_at_once(make):
    rows = [make(i) for i in range(250)]
    chunks = list(arrowconv.encode_rows(iter(rows), 3, batch_rows=100))
    assert [c.num_rows for c in chunks] == [100, 100, 50]
    for start, chunk in zip((0, 100, 200), chunks):
        assert chunk.equals(arrowconv.RowEncoder(3).encode(rows[start:start + 100], start))


@pytest.mark.parametrize("make", [m for _, m in _ROW_KINDS], ids=[k for k, _ in _ROW_KINDS])
def test_rows_sent_narrowed_arrive_as_encoded_without(make):
    rows = [make(i) for i in range(250)]
    wide = list(arrowconv.encode_rows(iter(rows), 3, batch_rows=100))
    sent = list(arrowconv.encode_rows(iter(rows), 3, batch_rows=100, narrow=True))
    for w, s in zip(wide, sent):
        assert arrowconv.from_ipc(arrowconv.to_ipc(s)).equals(w)


@pytest.mark.parametrize("first,values,wire", [
    (0, [0, 255], "uint8"),          # pixels: an eighth of the bytes on the wire
    (0, [0, 256], "int64"),
    (0, [-1, 5], "int64"),
    (0, [1, True], "uint8"),         # a bool is an int, as np.asarray takes it (1)
    (130, [0, 256], "int64"),        # a wide value in a later group widens its chunk
])
def test_lists_of_small_ints_go_as_uint8_and_come_back_int64(first, values, wire):
    rows = [([i % 200, i % 100], i) for i in range(200)]
    rows[first] = (values, 0)
    sent = list(arrowconv.encode_rows(iter(rows), 0, batch_rows=200, narrow=True))[0]
    assert sent.column(0).type.value_type == pa.type_for_alias(wire)
    back = arrowconv.from_ipc(arrowconv.to_ipc(sent))
    assert back.column(0).type.value_type == pa.int64()
    np.testing.assert_array_equal(arrowconv.column_to_numpy(back, 0),
                                  np.asarray([r[0] for r in rows]))


def test_a_bad_row_past_the_first_group_is_named_by_its_index():
    rows = [(np.zeros(3, "float32"), 1)] * 200
    rows[150] = (np.zeros(3, "float64"), 1)
    with pytest.raises(FeedError, match="partition 3, row 150: field '_0'"):
        list(arrowconv.encode_rows(iter(rows), 3, batch_rows=100))


@pytest.mark.parametrize("column,dtype", [
    (pa.FixedSizeListArray.from_arrays(pa.array([1, 2], pa.int16()), 2), b"int64"),
    (pa.array([1, 2], pa.uint8()), b"int64"),
    (pa.FixedSizeListArray.from_arrays(pa.array([1, 2], pa.uint8()), 2), b"float16"),
])
def test_a_column_marked_narrowed_that_is_not_is_refused(column, dtype):
    field = pa.field("_0", column.type, metadata={arrowconv.WIRE_DTYPE: dtype})
    batch = pa.RecordBatch.from_arrays([column], schema=pa.schema([field]))
    with pytest.raises(ValueError, match="cannot be widened"):
        arrowconv.from_ipc(arrowconv.to_ipc(batch))
