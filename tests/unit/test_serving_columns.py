"""Pure logic of sparktf.serving and sparktf.pipeline: conversions, signatures, cache, params."""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
import pytest

from sparktf.errors import ModelLoadError, PredictInputError
from sparktf.pipeline import HasBatchSize, HasSteps, Namespace, TFModel, TFParams
from sparktf.serving import cache, convert, signature
from sparktf.serving.signature import TensorSpec

IMAGE = TensorSpec("x", "float32", (None, 28, 28, 1))
FLAT = TensorSpec("x", "float32", (None, 4))


def test_list_column_is_a_reshape_of_its_buffer():
    values = np.arange(12, dtype=np.float32)
    array = pa.ListArray.from_arrays(pa.array([0, 4, 8, 12], pa.int32()), pa.array(values))
    out = convert.to_numpy(array, "c", FLAT)
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, values.reshape(3, 4))
    sliced = convert.to_numpy(array.slice(1, 2), "c", FLAT)        # offsets not rebased
    np.testing.assert_array_equal(sliced, values[4:].reshape(2, 4))
    # A flat 784-value row feeds a (28, 28, 1) input; nested lists keep their own shape.
    flat = pa.array([np.ones(784, np.float32)] * 2, pa.list_(pa.float32()))
    assert convert.to_numpy(flat, "image", IMAGE).shape == (2, 28, 28, 1)
    nested = pa.array([[[1, 2], [3, 4]]], pa.list_(pa.list_(pa.int64())))
    got = convert.to_numpy(nested, "m", TensorSpec("m", "float64", (None, 2, None)))
    assert got.dtype == np.float64 and got.tolist() == [[[1, 2], [3, 4]]]


def test_scalars_binary_and_strings():
    assert convert.to_numpy(pa.array([1, 2]), "n", TensorSpec("n", "int32", (None,))).dtype \
        == np.int32
    assert convert.to_numpy(pa.array([1.5]), "v", TensorSpec("v", "float32", (None, 1))).shape \
        == (1, 1)
    pixels = pa.array([bytes(range(4)), bytes([9] * 4)], pa.binary())
    spec = TensorSpec("p", "float32", (None, 2, 2, 1))
    got = convert.to_numpy(pixels, "p", spec)                        # uint8 pixels, cast
    assert got.dtype == np.float32 and got[:, :, :, 0].tolist() == [[[0, 1], [2, 3]],
                                                                     [[9, 9], [9, 9]]]
    raw = pa.array([np.arange(4, dtype=np.float32).tobytes()], pa.binary())
    assert convert.to_numpy(raw, "p", spec).ravel().tolist() == [0, 1, 2, 3]  # float32 bytes
    words = convert.to_numpy(pa.array(["a", "b"]), "w", TensorSpec("w", "string", (None,)))
    assert words.tolist() == ["a", "b"]


@pytest.mark.parametrize("array, spec, message", [
    (pa.array([[1.0, 2.0, 3.0]], pa.list_(pa.float32())), FLAT,
     r"column 'c' in partition 7 has 3 values per row .*signature input 'x', which expects "
     r"float32 of shape \(None, 4\)"),
    (pa.array([[1.0] * 4, [1.0] * 5], pa.list_(pa.float32())), FLAT,
     "lists of different lengths: 4 values in the first, 5 in row 11"),
    (pa.array([[1.0] * 4, None], pa.list_(pa.float32())), FLAT, "a null in row 11"),
    (pa.array([[1.0, None, 1.0, 1.0]], pa.list_(pa.float32())), FLAT, "a null element"),
    (pa.array([["a"] * 4], pa.list_(pa.string())), FLAT, "holds string values"),
    (pa.array([[1.5] * 4]), TensorSpec("x", "int64", (None, 4)), "would truncate"),
    (pa.array([300]), TensorSpec("x", "int8", (None,)), "out of int8's range"),
    (pa.array([b"abc"], pa.binary()), TensorSpec("x", "float32", (None, 2)),
     "3 bytes per row; expected 2 .* or 8"),
])
def test_bad_input_names_column_input_and_shape(array, spec, message):
    with pytest.raises(PredictInputError, match=message) as raised:
        convert.to_numpy(array, "c", spec, "partition 7", first_row=10)
    assert "column 'c'" in str(raised.value) and "signature input 'x'" in str(raised.value)


def test_outputs_back_to_arrow_and_spark_types():
    from pyspark.sql import types as T
    probs = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = convert.to_arrow(probs)
    assert out.to_pylist() == [[0, 1], [2, 3], [4, 5]]
    assert convert.to_arrow(np.zeros((2, 2, 3), np.uint8)).type == pa.list_(pa.list_(pa.int16()))
    assert convert.to_arrow(np.array([b"x", b"y"], object)).to_pylist() == ["x", "y"]
    assert convert.spark_type(TensorSpec("p", "float32", (None, 10))) == \
        T.ArrayType(T.FloatType(), False)
    assert convert.spark_type(TensorSpec("p", "int64", (None,))) == T.LongType()
    convert.check_spark_type("c", T.ArrayType(T.DoubleType()), FLAT)
    convert.check_spark_type("c", T.BinaryType(), IMAGE)
    with pytest.raises(PredictInputError, match="nested 2 deep"):
        convert.check_spark_type("c", T.ArrayType(T.ArrayType(T.FloatType())), FLAT)
    with pytest.raises(PredictInputError, match="cannot be fed as float32"):
        convert.check_spark_type("c", T.StringType(), FLAT)


def _saved_model_bytes(tags, signatures):
    """A serialized SavedModel (schema version 1, one meta graph) from TensorBoard's protos."""
    from tensorboard.compat.proto import meta_graph_pb2, types_pb2
    meta = meta_graph_pb2.MetaGraphDef()
    meta.meta_info_def.tags.extend(tags)
    for key, inputs in signatures.items():
        for name, (dtype, dims) in inputs.items():
            info = meta.signature_def[key].inputs[name]
            info.dtype = getattr(types_pb2, dtype)
            for d in dims:
                info.tensor_shape.dim.add(size=d)
    raw = meta.SerializeToString()
    return bytes([0x08, 0x01, 0x12]) + _varint(len(raw)) + raw


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_signature_parsed_without_tensorflow():
    data = _saved_model_bytes(["serve"], {"serving_default": {"x": ("DT_FLOAT", [-1, 784])}})
    inputs, outputs = signature.parse_saved_model(data, "serving_default", ("serve",))
    assert inputs == {"x": TensorSpec("x", "float32", (None, 784))} and outputs == {}
    assert inputs["x"].describe() == "float32 of shape (None, 784)"
    with pytest.raises(ModelLoadError, match=r"no meta graph tagged 'gpu,serve'"):
        signature.parse_saved_model(data, "serving_default", ("gpu", "serve"))
    with pytest.raises(ModelLoadError, match="not a SavedModel"):
        signature.parse_saved_model(data[:-3] + b"\x12\xff", "serving_default", ("serve",))
    assert signature.parse_tags("serve, gpu") == ("gpu", "serve")


def test_version_directories(tmp_path):
    for v in ("1", "10", "9", "notes"):
        (tmp_path / v).mkdir()
    assert signature.resolve_export(str(tmp_path)).endswith("/10")
    assert signature.resolve_export(str(tmp_path), 9).endswith("/9")
    with pytest.raises(ModelLoadError, match=r"version 3 .* found versions \[1, 9, 10\]"):
        signature.resolve_export(str(tmp_path), 3)
    a = signature.export_version({"saved_model.pb": b"a"})
    assert a != signature.export_version({"saved_model.pb": b"a",
                                          "variables/variables.index": b"w"})


def test_model_cache_is_bounded_and_keyed_by_version():
    loads = []

    def loader(sig, device):
        loads.append((sig.url, sig.version))
        return cache.LoadedModel(sig, device, fn=None, owner=None)

    c = cache.ModelCache(capacity=2, loader=loader)
    sigs = [signature.Signature(url, version, "serving_default", ("serve",), {}, {})
            for url, version in [("m", "v1"), ("m", "v2"), ("n", "v1")]]
    for s in sigs[:2] * 3:                         # two versions side by side: loaded once each
        c.get(s, "/CPU:0")
    assert loads == [("m", "v1"), ("m", "v2")] and c.stats.hits == 4
    c.get(sigs[2], "/CPU:0")                       # evicts the least recently used (m, v1)
    c.get(sigs[0], "/CPU:0")
    assert loads[-2:] == [("n", "v1"), ("m", "v1")]


def test_task_device():
    assert cache.task_device([], 0, None) == "/CPU:0"
    assert cache.task_device(["1"], 2, None) == "/GPU:1"
    assert cache.task_device(["5"], 2, "4,5") == "/GPU:1"        # renumbered by CUDA
    assert cache.task_device(["1"], 0, None) == "/CPU:0"         # no GPU visible to TF


def test_tfos_namespace_and_params():
    """TensorFlowOnSpark's test_pipeline.py test_namespace and test_TFParams."""
    d = {"string": "foo", "integer": 1, "float": 3.14, "array": [1, 2, 3], "map": {"a": 1}}
    n1 = Namespace(d)
    assert n1.string == "foo" and "string" in n1 and "extra" not in n1
    n2 = Namespace(n1)
    assert n2.map == {"a": 1} and n2 == n1
    argv = ["--foo", "1", "--bar", "test"]
    assert Namespace(argv).argv == argv
    assert Namespace(argparse.Namespace(a=1)).a == 1

    class Foo(TFParams, HasBatchSize, HasSteps):
        def __init__(self, args):
            super().__init__()
            self.args = args

    merged = Foo(Namespace({"a": 1, "b": 2})).setBatchSize(10).setSteps(100).merge_args_params()
    assert merged == Namespace({"a": 1, "b": 2, "batch_size": 10, "steps": 100})

    model = TFModel({"x": 1}).setExportDir("/e").setTagSet("serve,gpu")
    args = model.merge_args_params()
    assert args.x == 1 and args.export_dir == "/e" and args.batch_size == 100
    assert args.signature_def_key == "serving_default" and model.getTagSet() == "serve,gpu"
