"""What an exported SavedModel expects and returns, read without TensorFlow.

The driver must know a model's signature (input and output names, dtypes and
shapes) to declare the Spark type of a prediction column and to check a
DataFrame's columns before any task runs.  Importing TensorFlow on the driver
for that costs seconds, so this module parses ``saved_model.pb`` with the
TensorFlow protocol buffers that TensorBoard ships (``tensorboard.compat.proto``).

It also decides which export a URL means (a SavedModel directory, or the
newest numbered version below it, as TensorFlow Serving lays them out) and the
export's *version*: a digest of its graph and variable index, which changes
whenever a new export is written at the same URL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from sparktf import fs
from sparktf.errors import ModelLoadError

logger = logging.getLogger(__name__)

SAVED_MODEL_PB = "saved_model.pb"
#: Files whose bytes make up an export's version digest (when present).
VERSION_FILES = (SAVED_MODEL_PB, "variables/variables.index")
DEFAULT_SIGNATURE = "serving_default"
DEFAULT_TAGS = ("serve",)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: ``shape`` includes the batch dimension (None if unknown).

    ``dtype`` is a numpy dtype name (``float32``, ``int64``, ``bool``) or
    ``string`` for ``tf.string``; ``shape`` is None when the rank is unknown.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        """``float32 of shape (None, 784)``: what error messages show."""
        shape = "unknown" if self.shape is None else "(" + ", ".join(
            "None" if d is None else str(d) for d in self.shape) + ("," if len(self.shape) == 1
                                                                    else "") + ")"
        return f"{self.dtype} of shape {shape}"


@dataclasses.dataclass(frozen=True)
class Signature:
    """A SavedModel signature, where it came from and which version of the export it is."""

    url: str
    version: str
    key: str
    tags: tuple[str, ...]
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def parse_tags(tag_set: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """TFoS' comma-separated ``tag_set`` (or a sequence) as a sorted tuple; None means serve."""
    if tag_set is None:
        return DEFAULT_TAGS
    parts = tag_set.split(",") if isinstance(tag_set, str) else list(tag_set)
    return tuple(sorted(t.strip() for t in parts if t.strip()))


def resolve_export(url: str, version: int | None = None) -> str:
    """The SavedModel directory that ``url`` means.

    ``url`` holding ``saved_model.pb`` is the export itself.  Otherwise its
    numbered subdirectories are versions (TensorFlow Serving's layout): the one
    numbered ``version``, or the highest.
    """
    url = url.rstrip("/")
    try:
        if version is None and fs.exists(fs.join(url, SAVED_MODEL_PB)):
            return url
        if not fs.exists(url):
            raise ModelLoadError(f"cannot load a model from {url}: no such directory")
        versions = sorted((int(name), child) for child in fs.listdir(url)
                          if (name := child.rstrip("/").rsplit("/", 1)[-1]).isdigit())
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - storage errors carry the URL and what to check
        raise ModelLoadError(f"cannot load a model from {url}: {e}") from e
    if version is not None:
        chosen = [child for number, child in versions if number == version]
        if not chosen:
            raise ModelLoadError(f"cannot load version {version} of the model at {url}: found "
                                 f"versions {[n for n, _ in versions] or 'none'}")
        return chosen[0].rstrip("/")
    if not versions:
        raise ModelLoadError(f"cannot load a model from {url}: no {SAVED_MODEL_PB} there and no "
                             "numbered version directories (export with model.export(url), "
                             "model.save(url) or tf.saved_model.save)")
    return versions[-1][1].rstrip("/")


def read_signature(url: str, signature_def_key: str | None = None,
                   tag_set: str | tuple[str, ...] | None = None,
                   version: int | None = None) -> Signature:
    """The signature ``signature_def_key`` of the export at ``url`` (see :func:`resolve_export`)."""
    export = resolve_export(url, version)
    key = signature_def_key or DEFAULT_SIGNATURE
    tags = parse_tags(tag_set)
    contents: dict[str, bytes] = {}
    for name in VERSION_FILES:
        try:
            with fs.open_input(fs.join(export, name)) as f:
                contents[name] = f.read()
        except FileNotFoundError:
            if name == SAVED_MODEL_PB:
                raise ModelLoadError(f"cannot load a model from {export}: no {SAVED_MODEL_PB}")
        except Exception as e:  # noqa: BLE001
            raise ModelLoadError(f"cannot read {fs.join(export, name)}: {e}") from e
    try:
        inputs, outputs = parse_saved_model(contents[SAVED_MODEL_PB], key, tags)
    except ModelLoadError as e:
        raise ModelLoadError(f"cannot use the model at {export}: {e}") from None
    return Signature(export, export_version(contents), key, tags, inputs, outputs)


def export_version(contents: dict[str, bytes]) -> str:
    """The version digest of an export from the bytes of its :data:`VERSION_FILES`."""
    digest = hashlib.sha256()
    for name in VERSION_FILES:
        if name in contents:
            digest.update(name.encode() + b"\0" + hashlib.sha256(contents[name]).digest())
    return digest.hexdigest()[:16]


def parse_saved_model(data: bytes, key: str, tags: tuple[str, ...]
                      ) -> tuple[dict[str, TensorSpec], dict[str, TensorSpec]]:
    """Inputs and outputs of signature ``key`` in the meta graph tagged ``tags``."""
    from tensorboard.compat.proto import meta_graph_pb2

    found_tags = []
    for raw in _meta_graphs(data):
        meta = meta_graph_pb2.MetaGraphDef.FromString(raw)
        graph_tags = tuple(sorted(meta.meta_info_def.tags))
        found_tags.append(",".join(graph_tags))
        if graph_tags != tags:
            continue
        if key not in meta.signature_def:
            known = sorted(k for k in meta.signature_def if not k.startswith("__"))
            raise ModelLoadError(f"no signature {key!r}; it has {known}")
        sig = meta.signature_def[key]
        return ({name: _spec(name, info) for name, info in sorted(sig.inputs.items())},
                {name: _spec(name, info) for name, info in sorted(sig.outputs.items())})
    raise ModelLoadError(f"no meta graph tagged {','.join(tags)!r}; tag sets found: "
                         f"{found_tags or 'none'}")


def _spec(name: str, info) -> TensorSpec:
    from tensorboard.compat.proto import types_pb2

    dtype = types_pb2.DataType.Name(info.dtype)[3:].lower()   # DT_FLOAT -> float
    dtype = _DTYPES.get(dtype, dtype)
    if info.tensor_shape.unknown_rank:
        return TensorSpec(name, dtype, None)
    shape = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(name, dtype, shape)


#: TensorFlow DataType names (DT_ stripped, lower case) -> numpy dtype names.
_DTYPES = {"float": "float32", "double": "float64", "half": "float16", "int32": "int32",
           "int64": "int64", "int16": "int16", "int8": "int8", "uint8": "uint8",
           "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
           "string": "string", "bfloat16": "bfloat16"}


def _meta_graphs(data: bytes) -> list[bytes]:
    """The serialized MetaGraphDefs of a serialized ``SavedModel`` message (field 2).

    ``SavedModel`` is ``{int64 saved_model_schema_version = 1; repeated
    MetaGraphDef meta_graphs = 2;}``; TensorBoard ships MetaGraphDef but not
    this wrapper, so its two fields are split here.
    """
    out, pos, end = [], 0, len(data)
    try:
        while pos < end:
            tag, pos = _varint(data, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 2:
                size, pos = _varint(data, pos)
                if pos + size > end:
                    raise ValueError("truncated")
                if field == 2:
                    out.append(data[pos:pos + size])
                pos += size
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                raise ValueError(f"unexpected wire type {wire}")
    except (ValueError, IndexError) as e:
        raise ModelLoadError(f"{SAVED_MODEL_PB} is not a SavedModel ({e})") from None
    return out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")
