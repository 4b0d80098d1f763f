"""TENSORFLOW-mode input: ``tf.data.Dataset`` s over TFRecord, CSV or Parquet files at any URL.

In ``InputMode.TENSORFLOW`` every TF node reads its own data.  The functions
here turn a path, a glob pattern or a list of URLs (local, ``file://``,
``hdfs://``, ``viewfs://``, ``webhdfs://``, ``s3://``, ``s3a://``) into a dataset
holding only this worker's share, so that the ``num_workers`` training nodes
read disjoint parts of the data that together cover all of it::

    def map_fun(args, ctx):
        from sparktf import readers
        ds = readers.tfrecord_dataset(args.data, ctx).map(parse).batch(64)

Sharding: worker ``rank`` of ``num_workers`` (from ``ctx``, or ``index`` /
``count``) reads files ``rank, rank + num_workers, ...`` of the sorted file
list.  With fewer files than workers, Parquet is shared out by row group
(row group ``j`` of the concatenated files goes to worker ``j % count``);
TFRecord and CSV, whose files cannot be split safely, raise
:class:`~sparktf.errors.ConfigError` instead of leaving a worker without data.

Reading: local TFRecord files use TensorFlow's own ``TFRecordDataset``.
Remote files are streamed through :mod:`sparktf.fs` (TensorFlow 2.21 has no
HDFS or S3 file system of its own): TFRecord framing is parsed in chunks,
CSV goes through pyarrow's streaming CSV reader and Parquet through
``ParquetFile.iter_batches`` (also for local files), so nothing is downloaded
whole before training starts.  Columns become numpy arrays without a Python
loop per row; list columns of equal-length rows become 2-D tensors.

Every dataset returned has ``auto_shard_policy = OFF``: it is already this
worker's shard, and a distribution strategy must not shard it again.
"""

from __future__ import annotations

import glob as _glob
import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from . import fs
from .errors import ConfigError, DataError
from .paths import local_path
from .feed.arrowconv import column_to_numpy
from .tfrecord import (DEFAULT_CHUNK, CorruptRecordError, compression_type,  # noqa: F401
                       iter_tfrecord_chunks, iter_tfrecords)

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

logger = logging.getLogger(__name__)

_GLOB_CHARS = ("*", "?", "[")
_CSV_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
_MAX_LOGGED = 8


# ---------------------------------------------------------------------------- file lists

def _basename(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _hidden(url: str) -> bool:
    """Spark's and Hadoop's side files: ``_SUCCESS``, ``_metadata``, ``.part-0.crc``."""
    return _basename(url).startswith((".", "_"))


def _expand_local(url: str) -> list[str]:
    prefix = "file://" if url.startswith("file://") else ""
    path = local_path(url)
    if any(c in path for c in _GLOB_CHARS):
        keep_hidden = _hidden(path)
        found = [p for p in sorted(_glob.glob(path))
                 if os.path.isfile(p) and (keep_hidden or not _hidden(p))]
    elif os.path.isdir(path):
        names = sorted(os.listdir(path))
        found = [os.path.join(path, n) for n in names
                 if not _hidden(n) and os.path.isfile(os.path.join(path, n))]
        subdirs = [n for n in names if not _hidden(n) and os.path.isdir(os.path.join(path, n))]
        if subdirs:
            logger.warning("%s has subdirectories (%s...) that are not read: only the files "
                           "directly in it are", url, ", ".join(subdirs[:3]))
    elif os.path.isfile(path):
        found = [path]
    else:
        found = []
    return [prefix + p for p in found]


def _list_files(url: str, match: str | None = None) -> list[str]:
    """The files directly in directory ``url`` (names matching ``match``), in one listing."""
    import fnmatch

    import pyarrow.fs as pafs

    filesystem, path = fs.filesystem(url)
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
    subdirs = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory
                     and not _hidden(i.base_name))
    if subdirs and match is None:
        logger.warning("%s has subdirectories (%s...) that are not read: only the files "
                       "directly in it are", url, ", ".join(subdirs[:3]))
    keep_hidden = match is not None and _hidden(match)
    return [fs.join(url, n) for n in names if (keep_hidden or not _hidden(n))
            and (match is None or fnmatch.fnmatchcase(n, match))]


def _expand_remote(url: str) -> list[str]:
    import pyarrow.fs as pafs

    head, _, last = url.rstrip("/").rpartition("/")
    if any(c in last for c in _GLOB_CHARS) and not any(c in head.split("://", 1)[1]
                                                       for c in _GLOB_CHARS):
        return _list_files(head, last)  # the usual dir/part-* in one listing
    filesystem, path = fs.filesystem(url)
    if any(c in url.split("://", 1)[1] for c in _GLOB_CHARS):
        keep_hidden = _hidden(url)
        found = [u for u in fs.glob(url) if keep_hidden or not _hidden(u)]
        types = filesystem.get_file_info([fs.filesystem(u)[1] for u in found])
        return [u for u, i in zip(found, types) if i.type == pafs.FileType.File]
    kind = filesystem.get_file_info(path).type
    if kind == pafs.FileType.Directory:
        return _list_files(url)
    return [url] if kind == pafs.FileType.File else []


def resolve(pattern_or_urls: str | os.PathLike | Iterable[str | os.PathLike],
            ctx: Any = None) -> list[str]:
    """The files that ``pattern_or_urls`` names, in an order every worker agrees on.

    ``pattern_or_urls`` is a file, a directory (its files, without Spark's
    ``_SUCCESS`` and hidden ``.crc`` side files, not recursing), a glob
    pattern (sorted matches) or a list of those (concatenated in the given
    order).  With ``ctx``, relative paths are qualified by
    ``ctx.absolute_path`` (defaultFS and working directory), as on the driver.
    Raises :class:`ConfigError` naming any entry that matches nothing, since
    an empty input would otherwise only show up as a hung or empty training.
    """
    if isinstance(pattern_or_urls, (str, os.PathLike)):
        items = [os.fspath(pattern_or_urls)]
    else:
        items = [os.fspath(u) for u in pattern_or_urls]
    if not items:
        raise ConfigError("no input files given: pass a path, a glob pattern or a list of URLs")
    urls: list[str] = []
    for item in items:
        url = ctx.absolute_path(item) if hasattr(ctx, "absolute_path") else item
        found = _expand_local(url) if fs.is_local(url) else _expand_remote(url)
        if not found:
            shown = url if url == item else f"{url} (from {item!r})"
            raise ConfigError(f"no input files match {shown}: check the path, the pattern and "
                              "that the data was written (a directory must hold the files "
                              "directly, not in subdirectories)")
        urls.extend(found)
    return urls


def _worker(ctx: Any, index: int | None, count: int | None) -> tuple[int, int]:
    """(index, count) of this reader from explicit values, a NodeContext or an InputContext."""
    if hasattr(ctx, "input_pipeline_id"):  # tf.distribute.InputContext
        index = ctx.input_pipeline_id if index is None else index
        count = ctx.num_input_pipelines if count is None else count
    elif ctx is not None:
        if index is None:
            index = getattr(ctx, "rank", None)
            if index is None:
                raise ConfigError(
                    f"node {getattr(ctx, 'job_name', '?')}:{getattr(ctx, 'task_index', '?')} "
                    "is not a training worker (no rank): pass index= and count= explicitly "
                    "(index=0, count=1 reads every file)")
        count = ctx.num_workers if count is None else count
    elif index is None and count is None:
        index, count = 0, 1
    if index is None or count is None:
        raise ConfigError(f"pass both index= and count= (got index={index}, count={count}), "
                          "or ctx")
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"reader index {index} is not in 0..{count - 1} (count={count})")
    return int(index), int(count)


def _names(urls: Sequence[str]) -> str:
    shown = ", ".join(urls[:_MAX_LOGGED])
    return shown + (f", ... (+{len(urls) - _MAX_LOGGED} more)" if len(urls) > _MAX_LOGGED else "")


def shard(urls: Sequence[str], ctx: Any = None, *, index: int | None = None,
          count: int | None = None) -> list[str]:
    """This worker's files: ``urls[index::count]``.

    ``index`` and ``count`` default to ``ctx.rank`` and ``ctx.num_workers`` (a
    :class:`~sparktf.node.context.NodeContext`; a ``tf.distribute.InputContext``
    also works); with neither ``ctx`` nor ``index``, every file is returned.
    Every worker must pass the same list in the same order (as :func:`resolve`
    gives), so that the shards are disjoint and together hold every file.

    Raises :class:`ConfigError` when ``urls`` is empty or has fewer files than
    there are workers: a worker without data would stall the others in a
    synchronous strategy.
    """
    if isinstance(urls, str):
        raise ConfigError("shard() takes a list of URLs, not a string: use "
                          "shard(resolve(pattern), ctx)")
    urls = list(urls)
    index, count = _worker(ctx, index, count)
    if not urls:
        raise ConfigError("no input files to shard")
    if len(urls) < count:
        raise ConfigError(
            f"{len(urls)} input file(s) cannot be sharded over {count} workers: each worker "
            f"reads whole files, so write at least {count} files (a multiple of {count} "
            f"balances the load; e.g. df.repartition({count}) before writing), or use "
            "Parquet, which parquet_dataset shares out by row group when files are few. "
            f"Files: {_names(urls)}")
    mine = urls[index::count]
    logger.info("worker %d of %d reads %d of %d files: %s", index, count, len(mine), len(urls),
                _names(mine))
    return mine


def _no_autoshard(ds: tf.data.Dataset) -> tf.data.Dataset:
    import tensorflow as tf
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def _open_input(url: str) -> Any:
    """A seekable pyarrow file for a local path or any URL sparktf.fs knows."""
    if fs.is_local(url):
        return pa.OSFile(local_path(url), "rb")
    return fs.open_input(url)


def tfrecord_dataset(pattern_or_urls: str | Iterable[str], ctx: Any = None, *,
                     index: int | None = None, count: int | None = None,
                     compression: str | None = None, parallel_reads: int | None = None,
                     chunk_size: int = DEFAULT_CHUNK, check_crc: bool = True,
                     native: bool | None = None) -> tf.data.Dataset:
    """This worker's TFRecord records: a dataset of scalar ``tf.string`` (serialized records).

    Files come from :func:`resolve` and :func:`shard` (``ctx``, ``index``,
    ``count`` as there); fewer files than workers raise :class:`ConfigError`.
    Local files are read by ``tf.data.TFRecordDataset``; remote ones are
    streamed with :func:`iter_tfrecord_chunks` (so a truncated or corrupt
    file fails the iteration with a message naming file and offset).
    ``parallel_reads`` files are read at once, their records interleaved
    (default: one file after the other).  ``compression`` is None, ``"GZIP"``
    or ``"ZLIB"``, as ``tf.data.TFRecordDataset``'s ``compression_type``.
    ``native=False`` streams local files too (``True`` insists on TensorFlow's
    reader, which cannot open hdfs:// or s3:// URLs in TF 2.21).
    """
    import tensorflow as tf
    comp = compression_type(compression)
    files = shard(resolve(pattern_or_urls, ctx), ctx, index=index, count=count)
    if native or (native is None and all(fs.is_local(u) for u in files)):
        ds = tf.data.TFRecordDataset([local_path(u) for u in files], compression_type=comp,
                                     num_parallel_reads=parallel_reads)
        return _no_autoshard(ds)

    def records(url: str | bytes) -> Iterator[np.ndarray]:
        url = url.decode() if isinstance(url, bytes) else url
        f = _open_input(url)
        try:
            for chunk in iter_tfrecord_chunks(f, url, compression=comp, chunk_size=chunk_size,
                                              check_crc=check_crc):
                out = np.empty(len(chunk), dtype=object)
                out[:] = chunk
                yield out
        finally:
            f.close()

    spec = tf.TensorSpec([None], tf.string)
    if not parallel_reads or parallel_reads <= 1 or len(files) == 1:
        def all_records() -> Iterator[np.ndarray]:
            for url in files:
                yield from records(url)
        ds = tf.data.Dataset.from_generator(all_records, output_signature=spec)
    else:
        ds = tf.data.Dataset.from_tensor_slices(files).interleave(
            lambda url: tf.data.Dataset.from_generator(records, args=(url,),
                                                       output_signature=spec),
            cycle_length=parallel_reads, num_parallel_calls=parallel_reads, deterministic=True)
    return _no_autoshard(ds.unbatch())


# ---------------------------------------------------------------------------- columns

class _Column:
    """How one Arrow column becomes a tensor: TF dtype, numpy dtype, per-row shape."""

    def __init__(self, name: str, tf_dtype: Any, np_dtype: np.dtype, shape: tuple,
                 guessed: bool = False) -> None:
        self.name = name
        self.tf_dtype = tf_dtype
        self.np_dtype = np_dtype
        self.shape = shape  # per row; None for an unknown dimension
        self.guessed = guessed  # shape read from Parquet metadata, not given or fixed

    def spec(self) -> Any:
        import tensorflow as tf
        return tf.TensorSpec((None, *self.shape), self.tf_dtype, name=None)


def _leaf_dtype(t: pa.DataType) -> tuple[Any, np.dtype] | None:
    import tensorflow as tf
    if pa.types.is_dictionary(t):  # e.g. a pandas categorical: decoded when read
        return _leaf_dtype(t.value_type)
    if pa.types.is_boolean(t):
        return tf.bool, np.dtype(bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        np_dtype = np.dtype(t.to_pandas_dtype())
        return tf.as_dtype(np_dtype), np_dtype
    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)):
        return tf.string, np.dtype(object)
    return None


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _columns(schema: pa.Schema, what: str, columns: Sequence[str] | None,
             widths: dict[str, int | None], shapes: dict[str, Any] | None) -> list[_Column]:
    """The output columns of a file with ``schema``; ``widths`` are guessed list lengths."""
    names = list(columns) if columns is not None else list(schema.names)
    if not names:
        raise ConfigError(f"{what}: no columns to read")
    missing = [n for n in names if n not in schema.names]
    if missing:
        raise ConfigError(f"{what}: no column(s) {missing}; the file has {schema.names}")
    shapes = dict(shapes or {})
    unknown = set(shapes) - set(names)
    if unknown:
        raise ConfigError(f"shapes= names column(s) {sorted(unknown)} that are not read "
                          f"({names})")
    out = []
    for name in names:
        field = schema.field(name)
        t = field.type
        if _is_list(t):
            leaf = _leaf_dtype(t.value_type)
            if leaf is None or _is_list(t.value_type):
                raise ConfigError(f"{what}: column {name!r} has type {t}; only lists of numbers, "
                                  "booleans or strings can become tensors: leave it out with "
                                  "columns=")
            if pa.types.is_fixed_size_list(t):
                meta = field.metadata or {}
                raw = meta.get(b"sparktf.shape")
                shape = tuple(json.loads(raw)) if raw else (t.list_size,)
                guessed = False
            else:
                shape, guessed = (widths.get(name),), True
            if name in shapes:
                given = shapes[name]
                shape = tuple(given) if isinstance(given, (tuple, list)) else (given,)
                guessed = False
            out.append(_Column(name, *leaf, shape, guessed))
        else:
            leaf = _leaf_dtype(t)
            if leaf is None:
                raise ConfigError(f"{what}: column {name!r} has type {t}, which has no tensor "
                                  "type: leave it out with columns=, or cast it when writing "
                                  "(CSV: column_types=)")
            out.append(_Column(name, *leaf, ()))
    return out


def _to_arrays(batch: pa.RecordBatch, cols: list[_Column], where: str) -> dict[str, np.ndarray]:
    """A record batch as numpy arrays matching ``cols`` (checked: nulls, ragged lists)."""
    out = {}
    names = batch.schema.names
    for col in cols:
        try:
            i = names.index(col.name)
        except ValueError:
            raise DataError(f"{where}: no column {col.name!r} (columns: {names}); every "
                               "file must have the columns of the first") from None
        arr = batch.column(i)
        floats = col.np_dtype.kind == "f"
        nulls = arr.null_count
        if _is_list(arr.type) and not floats:
            nulls += arr.flatten().null_count
        if nulls and not (floats and not _is_list(arr.type)):
            raise DataError(f"{where}: column {col.name!r} has {nulls} null value(s), which "
                               "a tensor cannot hold: fill or drop them when writing")
        if pa.types.is_dictionary(arr.type):
            values = arr.dictionary_decode().to_numpy(zero_copy_only=False)
        else:
            values = column_to_numpy(batch, i)
        if values.dtype.kind == "O" and col.np_dtype.kind != "O":
            raise DataError(
                f"{where}: column {col.name!r} holds lists of different lengths (or null "
                "lists); a batch must be rectangular: write equal-length arrays, or pad them")
        if len(col.shape) == values.ndim - 1:
            bad = any(w is not None and w != got for w, got in zip(col.shape, values.shape[1:]))
        else:
            bad = True
        if bad:
            hint = (f"; its length was guessed from the first file's metadata: pass "
                    f"shapes={{{col.name!r}: None}} (or the real length)" if col.guessed else "")
            raise DataError(f"{where}: column {col.name!r} has rows of shape "
                               f"{values.shape[1:]}, expected {col.shape}{hint}")
        if col.np_dtype.kind != "O" and values.dtype != col.np_dtype:
            values = values.astype(col.np_dtype)
        out[col.name] = values
    return out


def _rebatch(parts: Iterator[dict[str, np.ndarray]],
             size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of exactly ``size`` rows (the last may be smaller) from batches of any size."""
    pending: list[dict[str, np.ndarray]] = []
    have = 0
    for part in parts:
        n = len(next(iter(part.values())))
        if not n:
            continue
        if not pending and n == size:
            yield part
            continue
        pending.append(part)
        have += n
        while have >= size:
            merged = pending[0] if len(pending) == 1 else {
                k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            yield {k: v[:size] for k, v in merged.items()}
            have -= size
            pending = [{k: v[size:] for k, v in merged.items()}] if have else []
    if pending:
        yield pending[0] if len(pending) == 1 else {
            k: np.concatenate([p[k] for p in pending]) for k in pending[0]}


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")


def _dict_dataset(gen: Callable[[], Iterator[dict[str, np.ndarray]]],
                  cols: list[_Column]) -> tf.data.Dataset:
    import tensorflow as tf
    spec = {c.name: c.spec() for c in cols}
    return _no_autoshard(tf.data.Dataset.from_generator(gen, output_signature=spec))


# ---------------------------------------------------------------------------- Parquet

def _parquet_file(url: str, metadata: Any = None) -> Any:
    import pyarrow.parquet as pq
    source = _open_input(url)
    try:
        return pq.ParquetFile(source, metadata=metadata, pre_buffer=not fs.is_local(url)), source
    except Exception:
        source.close()
        raise


def _parquet_metadata(url: str) -> Any:
    pf, source = _parquet_file(url)
    try:
        return pf.metadata
    finally:
        source.close()


def _list_widths(md: Any, schema: pa.Schema, groups: Sequence[int]) -> dict[str, int | None]:
    """Row lengths of variable-size list columns, guessed from column-chunk value counts.

    A list column of ``w``-long rows stores ``w * rows`` leaf values per row
    group; when that divides evenly, and alike in every row group read, ``w``
    is the (checked at read time) static width, so Keras sees e.g. (None, 784).
    """
    widths: dict[str, int | None] = {}
    leaves: dict[str, list[int]] = {}
    for j in range(md.num_columns):
        path = md.schema.column(j).path
        leaves.setdefault(path.split(".", 1)[0], []).append(j)
    for name in schema.names:
        t = schema.field(name).type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
            continue
        found: set[int | None] = set()
        for g in groups:
            rg = md.row_group(g)
            idx = leaves.get(name, [])
            if rg.num_rows == 0:
                continue
            if len(idx) != 1:
                found.add(None)
                break
            values = rg.column(idx[0]).num_values
            found.add(values // rg.num_rows if values % rg.num_rows == 0 else None)
        widths[name] = found.pop() if len(found) == 1 else None
    return widths


def parquet_dataset(pattern_or_urls: str | Iterable[str], ctx: Any = None, *,
                    columns: Sequence[str] | None = None, batch_size: int = 1024,
                    index: int | None = None, count: int | None = None,
                    shard_by: str = "auto",
                    shapes: dict[str, Any] | None = None) -> tf.data.Dataset:
    """This worker's Parquet rows: a dataset of ``{column: tensor}`` batches of ``batch_size``.

    Scalar columns become 1-D tensors, list columns 2-D ``(rows, width)``
    tensors (the width is taken from a fixed-size list type, guessed from
    the first file's metadata for variable-size lists, or given as
    ``shapes={"image": [28, 28]}``; ``None`` for a dynamic width), strings
    ``tf.string``.  Batches span file boundaries; only the last may be
    smaller.  Nulls (except in float columns, as NaN) and ragged lists raise.

    Sharding (``shard_by``): ``"file"`` gives this worker whole files as
    :func:`shard`; ``"row_group"`` gives it row group ``j`` of the
    concatenated files for every ``j % count == index`` (each worker then
    reads every file's footer, and only its own row groups' column chunks);
    ``"auto"`` (default) shards by file when there are at least as many files
    as workers, else by row group.  Only the ``columns`` asked for are read.
    """
    _check_batch_size(batch_size)
    if shard_by not in ("auto", "file", "row_group"):
        raise ConfigError(f"shard_by={shard_by!r}: use 'auto', 'file' or 'row_group'")
    urls = resolve(pattern_or_urls, ctx)
    index, count = _worker(ctx, index, count)
    # plan: (url, row groups or None for all, cached footer or None)
    if shard_by == "file" or (shard_by == "auto" and len(urls) >= count):
        files = shard(urls, index=index, count=count)
        first_md = _parquet_metadata(files[0])
        plan: list[tuple[str, list[int] | None, Any]] = [(files[0], None, first_md)]
        plan += [(u, None, None) for u in files[1:]]
        first_groups = list(range(first_md.num_row_groups))
    else:
        footers = [_parquet_metadata(u) for u in urls]
        groups = [(f, g) for f, md in enumerate(footers) for g in range(md.num_row_groups)]
        if len(groups) < count:
            raise ConfigError(
                f"{len(urls)} Parquet file(s) with {len(groups)} row group(s) in all cannot be "
                f"shared out over {count} workers: write at least {count} files or row groups "
                f"(e.g. df.repartition({count}) before writing)")
        mine: dict[int, list[int]] = {}
        for f, g in groups[index::count]:
            mine.setdefault(f, []).append(g)
        plan = [(urls[f], gs, footers[f]) for f, gs in mine.items()]
        first_md, first_groups = plan[0][2], plan[0][1]
        logger.info("worker %d of %d reads %d of %d row groups (in %d of %d files): %s",
                    index, count, sum(len(gs) for gs in mine.values()), len(groups), len(plan),
                    len(urls), _names([f"{urls[f]} {gs}" for f, gs in mine.items()]))
    schema = first_md.schema.to_arrow_schema()
    cols = _columns(schema, plan[0][0], columns, _list_widths(first_md, schema, first_groups),
                    shapes)
    names = [c.name for c in cols]

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for url, groups, md in plan:
            pf, source = _parquet_file(url, md)
            try:
                if groups is None:
                    groups = list(range(pf.metadata.num_row_groups))
                for batch in pf.iter_batches(batch_size=batch_size, row_groups=groups,
                                             columns=names, use_threads=True):
                    yield _to_arrays(batch, cols, f"{url} (row groups {groups})")
            finally:
                source.close()

    return _dict_dataset(lambda: _rebatch(batches(), batch_size), cols)


# ---------------------------------------------------------------------------- CSV

def _csv_options(options: dict[str, Any], columns: Sequence[str] | None) -> tuple[Any, Any, Any]:
    """pyarrow ReadOptions, ParseOptions, ConvertOptions from keyword arguments."""
    import pyarrow.csv as pacsv
    read = options.pop("read_options", None) or pacsv.ReadOptions()
    parse = options.pop("parse_options", None) or pacsv.ParseOptions()
    convert = options.pop("convert_options", None) or pacsv.ConvertOptions()
    for key, value in options.items():
        for target in (read, parse, convert):
            if hasattr(target, key):
                setattr(target, key, value)
                break
        else:
            raise ConfigError(f"csv_dataset: unknown option {key}=; options are the fields of "
                              "pyarrow.csv.ReadOptions, ParseOptions and ConvertOptions")
    if columns is not None:
        convert.include_columns = list(columns)
    return read, parse, convert


def _open_csv(url: str, read: Any, parse: Any, convert: Any) -> tuple[Any, Any]:
    import pyarrow.csv as pacsv
    source = _open_input(url)
    try:
        codec = _CSV_CODECS.get(os.path.splitext(url)[1].lower())
        stream = pa.CompressedInputStream(source, codec) if codec else source
        return pacsv.open_csv(stream, read_options=read, parse_options=parse,
                              convert_options=convert), source
    except Exception:
        source.close()
        raise


def csv_dataset(pattern_or_urls: str | Iterable[str], ctx: Any = None, *,
                columns: Sequence[str] | None = None, batch_size: int = 1024,
                index: int | None = None, count: int | None = None,
                **csv_options: Any) -> tf.data.Dataset:
    """This worker's CSV rows: a dataset of ``{column: 1-D tensor}`` batches of ``batch_size``.

    Files are sharded as :func:`shard` (fewer files than workers raise
    :class:`ConfigError`) and streamed with ``pyarrow.csv.open_csv``
    (``.gz``, ``.bz2``, ``.zst``, ``.lz4`` files are decompressed on the fly).
    ``csv_options`` are fields of pyarrow's ``ReadOptions`` / ``ParseOptions``
    / ``ConvertOptions`` (e.g. ``column_names=[...]`` or
    ``autogenerate_column_names=True`` for files without a header, as Spark's
    ``saveAsTextFile`` writes; ``delimiter="\\t"``; ``column_types={...}``),
    or whole ``read_options=`` / ``parse_options=`` / ``convert_options=``.

    Column types are inferred from the first block of this worker's first
    file and then imposed on every file, so all batches have one signature;
    pass ``column_types`` where the first block misleads (integers first,
    floats later).  Empty fields are NaN in float columns and an error
    elsewhere.  Batches span file boundaries; only the last may be smaller.
    """
    _check_batch_size(batch_size)
    read, parse, convert = _csv_options(dict(csv_options), columns)
    files = shard(resolve(pattern_or_urls, ctx), ctx, index=index, count=count)
    reader, source = _open_csv(files[0], read, parse, convert)
    try:
        schema = reader.schema
    finally:
        source.close()
    cols = _columns(schema, files[0], columns, {}, None)
    types = {f.name: f.type for f in schema}
    types.update(dict(convert.column_types or {}))
    convert.column_types = types

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for url in files:
            reader, source = _open_csv(url, read, parse, convert)
            try:
                for batch in reader:
                    yield _to_arrays(batch, cols, url)
            except pa.ArrowInvalid as e:
                raise DataError(f"{url}: {e} (pass column_types= to csv_dataset if a "
                                   "column's type was guessed wrongly from the first "
                                   "block)") from e
            finally:
                source.close()

    return _dict_dataset(lambda: _rebatch(batches(), batch_size), cols)


__all__ = ["resolve", "shard", "tfrecord_dataset", "csv_dataset", "parquet_dataset",
           "iter_tfrecords", "iter_tfrecord_chunks", "CorruptRecordError"]
