"""sparktf.readers on local files: sharding is disjoint and complete, the streaming parsers
agree with TensorFlow's, and bad input fails with a message that names the file."""

from __future__ import annotations

import collections
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

tf = pytest.importorskip("tensorflow")

from sparktf import readers, tfrecord  # noqa: E402
from sparktf.errors import ConfigError, SparkTFError  # noqa: E402

WORKERS = 3


class Ctx:
    """The attributes of a NodeContext that the readers use."""

    def __init__(self, rank, num_workers, base=None):
        self.rank = rank
        self.num_workers = num_workers
        self.job_name = "worker" if rank is not None else "ps"
        self.task_index = 0
        self.base = base

    def absolute_path(self, path):
        return path if path.startswith("/") else os.path.join(self.base, path)


def example(i: int, size: int = 3) -> bytes:
    feature = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
               "pad": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x" * size]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(directory, counts, compression=None, size=3):
    """TFRecord files part-0000i holding records with consecutive ids; returns all records."""
    os.makedirs(directory, exist_ok=True)
    records, i = [], 0
    for f, n in enumerate(counts):
        with tf.io.TFRecordWriter(os.path.join(directory, f"part-{f:05d}"),
                                  options=compression) as w:
            for _ in range(n):
                rec = example(i, size + (i * 37) % 200)
                w.write(rec)
                records.append(rec)
                i += 1
    open(os.path.join(directory, "_SUCCESS"), "w").close()
    return records


def assert_partition(parts, everything):
    """The workers' parts are disjoint and together hold every item exactly once."""
    assert all(len(p) for p in parts), [len(p) for p in parts]
    union = collections.Counter(x for p in parts for x in p)
    assert union == collections.Counter(everything)
    assert max(union.values()) == 1


@pytest.fixture
def tfr_dir(tmp_path):
    d = tmp_path / "tfr"
    return str(d), write_tfrecords(str(d), [7, 11, 3, 9, 4])


# ---------------------------------------------------------------------------- shard

def test_shard_is_disjoint_complete_and_uses_ctx_rank():
    urls = [f"s3://b/part-{i}" for i in range(8)]
    parts = [readers.shard(urls, Ctx(r, WORKERS)) for r in range(WORKERS)]
    assert parts[1] == ["s3://b/part-1", "s3://b/part-4", "s3://b/part-7"]
    assert_partition(parts, urls)
    assert readers.shard(urls, index=2, count=3) == parts[2]
    assert readers.shard(urls) == urls  # no ctx: everything
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=1)
    assert readers.shard(urls, context) == parts[1]


def test_shard_errors_are_clear():
    with pytest.raises(ConfigError, match="2 input file.*3 workers.*at least 3 files"):
        readers.shard(["a", "b"], Ctx(0, 3))
    with pytest.raises(ConfigError, match="no input files"):
        readers.shard([], Ctx(0, 3))
    with pytest.raises(ConfigError, match="not a training worker"):
        readers.shard(["a"], Ctx(None, 3))
    with pytest.raises(ConfigError, match="not in 0..2"):
        readers.shard(["a", "b", "c"], index=3, count=3)
    with pytest.raises(ConfigError, match="not a string"):
        readers.shard("a*")


def test_resolve_skips_side_files_and_reports_no_match(tmp_path, tfr_dir):
    d, _ = tfr_dir
    (tmp_path / "tfr" / ".part-00000.crc").write_bytes(b"")
    files = readers.resolve(d)
    assert [os.path.basename(f) for f in files] == [f"part-{i:05d}" for i in range(5)]
    assert readers.resolve(os.path.join(d, "part-0000[13]")) == [files[1], files[3]]
    assert readers.resolve("file://" + d)[0] == "file://" + files[0]
    assert readers.resolve("tfr", Ctx(0, 1, str(tmp_path))) == files
    with pytest.raises(ConfigError, match="no input files match .*nothing-here"):
        readers.resolve(os.path.join(d, "nothing-here*"))
    with pytest.raises(ConfigError, match="no input files match"):
        readers.tfrecord_dataset(str(tmp_path / "missing"), Ctx(0, 3))


# ---------------------------------------------------------------------------- TFRecord

@pytest.mark.parametrize("native,parallel", [(None, None), (False, None), (False, 2)])
def test_tfrecord_workers_read_every_record_once(tfr_dir, native, parallel):
    d, records = tfr_dir
    parts = [list(readers.tfrecord_dataset(d, Ctx(r, WORKERS), native=native,
                                           parallel_reads=parallel).as_numpy_iterator())
             for r in range(WORKERS)]
    assert_partition(parts, records)
    ds = readers.tfrecord_dataset(d, index=0, count=WORKERS, native=native)
    assert ds.element_spec == tf.TensorSpec([], tf.string)
    policy = ds.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.OFF


def test_tfrecord_fewer_files_than_workers_is_a_config_error(tmp_path):
    d = str(tmp_path / "two")
    write_tfrecords(d, [5, 5])
    with pytest.raises(ConfigError, match="2 input file.*3 workers"):
        readers.tfrecord_dataset(d, Ctx(0, WORKERS))


@pytest.mark.parametrize("chunk_size", [1, 100, readers.DEFAULT_CHUNK])
def test_streaming_parser_matches_tensorflow(tmp_path, chunk_size):
    d = str(tmp_path / "big")
    write_tfrecords(d, [60], size=3000)  # records larger than the small chunks
    path = os.path.join(d, "part-00000")
    expected = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    with pa.OSFile(path) as f:
        got = list(readers.iter_tfrecords(f, chunk_size=chunk_size))
    assert got == expected
    assert list(readers.iter_tfrecords("file://" + path, chunk_size=chunk_size)) == expected


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_streaming_parser_decompresses(tmp_path, compression):
    d = str(tmp_path / compression)
    records = write_tfrecords(d, [40, 30], compression=compression, size=500)
    path = os.path.join(d, "part-00000")
    assert list(readers.iter_tfrecords(path, compression=compression,
                                       chunk_size=64)) == records[:40]
    ds = readers.tfrecord_dataset(d, native=False, compression=compression)
    assert list(ds.as_numpy_iterator()) == records


def test_truncated_and_corrupt_files_raise_naming_file_and_offset(tmp_path):
    d = str(tmp_path / "t")
    records = write_tfrecords(d, [10], size=100)
    path = os.path.join(d, "part-00000")
    data = open(path, "rb").read()
    second = 16 + len(records[0])  # offset of the second record
    for cut, what in [(second + 5, "header needs 12 bytes"),
                      (second + 20, f"{len(records[1])}-byte record")]:
        with open(path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(readers.CorruptRecordError,
                           match=f"{path}: truncated TFRecord at offset {second}: .*{what}"):
            list(readers.iter_tfrecords(path, chunk_size=7))
        # The dataset fails too, with the same message, after the first record.
        ds = readers.tfrecord_dataset(path, native=False)
        it = ds.as_numpy_iterator()
        assert next(it) == records[0]
        with pytest.raises(Exception, match=f"truncated TFRecord at offset {second}"):
            next(it)
    with open(path, "wb") as f:  # a cut exactly between records is a valid shorter file
        f.write(data[:second])
    assert list(readers.iter_tfrecords(path)) == records[:1]
    bad = bytearray(data)
    bad[second + 1] ^= 0xFF  # damage the second record's length
    with open(path, "wb") as f:
        f.write(bytes(bad))
    with pytest.raises(readers.CorruptRecordError, match=f"corrupt TFRecord header at offset "
                                                         f"{second}"):
        list(readers.iter_tfrecords(path))
    with pytest.raises(readers.CorruptRecordError, match=f"{path}: cannot decompress GZIP"):
        list(readers.iter_tfrecords(path, compression="GZIP"))


def test_a_corrupted_record_is_detected_by_default(tmp_path):
    d = str(tmp_path / "c")
    records = write_tfrecords(d, [3], size=50)
    path = os.path.join(d, "part-00000")
    assert list(readers.iter_tfrecords(path)) == records
    bad = bytearray(open(path, "rb").read())
    bad[16 + len(records[0]) + 12 + 5] ^= 0x01  # a data byte of the second record
    open(path, "wb").write(bytes(bad))
    with pytest.raises(readers.CorruptRecordError, match=f"offset {16 + len(records[0])}: the "
                                                         "CRC of its"):
        list(readers.iter_tfrecords(path))
    ds = readers.tfrecord_dataset(path, native=False)  # the remote-store path, default options
    with pytest.raises(Exception, match="the CRC of its"):
        list(ds.as_numpy_iterator())
    assert len(list(readers.iter_tfrecords(path, check_crc=False))) == 3


def test_crc32c_agrees_with_the_pure_python_one():
    for data in [b"", b"a", bytes(range(256)) * 3, b"123456789"]:
        assert tfrecord._crc32c(data) == tfrecord._crc32c_py(data)
    assert tfrecord._crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


# ---------------------------------------------------------------------------- CSV

def write_csv(directory, counts, header=True):
    os.makedirs(directory, exist_ok=True)
    i = 0
    for f, n in enumerate(counts):
        ids = np.arange(i, i + n)
        table = pa.table({"id": ids, "x": ids * 0.5, "name": [f"n{j}" for j in ids]})
        pacsv.write_csv(table, os.path.join(directory, f"part-{f:05d}.csv"),
                        pacsv.WriteOptions(include_header=header))
        i += n
    return i


def test_csv_workers_read_every_row_once(tmp_path):
    d = str(tmp_path / "csv")
    total = write_csv(d, [13, 40, 2, 25, 9, 11])
    parts = []
    for r in range(WORKERS):
        ds = readers.csv_dataset(d, Ctx(r, WORKERS), batch_size=8)
        assert ds.element_spec == {"id": tf.TensorSpec([None], tf.int64),
                                   "x": tf.TensorSpec([None], tf.float64),
                                   "name": tf.TensorSpec([None], tf.string)}
        batches = list(ds.as_numpy_iterator())
        assert all(len(b["id"]) == 8 for b in batches[:-1])  # batches span files
        ids = np.concatenate([b["id"] for b in batches])
        np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), ids * 0.5)
        assert [n.decode() for b in batches for n in b["name"]] == [f"n{i}" for i in ids]
        parts.append(ids.tolist())
    assert_partition(parts, range(total))


def test_csv_without_header_and_column_selection(tmp_path):
    d = str(tmp_path / "csv")
    total = write_csv(d, [5, 6, 7], header=False)
    ds = readers.csv_dataset(d, columns=["x", "id"], batch_size=100,
                             column_names=["id", "x", "name"])
    assert list(ds.element_spec) == ["x", "id"]
    (batch,) = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(batch["id"], np.arange(total))
    with pytest.raises(ConfigError, match="unknown option bogus="):
        readers.csv_dataset(d, bogus=1)
    with pytest.raises(ConfigError, match="2 input file|3 input file"):
        readers.csv_dataset(d, Ctx(0, 4))


# ---------------------------------------------------------------------------- Parquet

def write_parquet(directory, counts, row_group_size, width=4):
    """Files of ``image`` list<float>[width] and ``label`` int64 rows; returns all labels."""
    os.makedirs(directory, exist_ok=True)
    i = 0
    for f, n in enumerate(counts):
        labels = np.arange(i, i + n)
        images = pa.array([[float(v)] * width for v in labels], pa.list_(pa.float32()))
        pq.write_table(pa.table({"image": images, "label": labels}),
                       os.path.join(directory, f"part-{f:05d}.parquet"),
                       row_group_size=row_group_size)
        i += n
    open(os.path.join(directory, "_SUCCESS"), "w").close()
    return list(range(i))


def read_labels(ds):
    labels = []
    for b in ds.as_numpy_iterator():
        assert b["image"].shape == (len(b["label"]), 4)
        np.testing.assert_array_equal(b["image"][:, 0], b["label"].astype(np.float32))
        labels.extend(b["label"].tolist())
    return labels


@pytest.mark.parametrize("counts", [[30, 17, 25, 8, 12], [40, 23]],
                         ids=["by-file", "by-row-group"])
def test_parquet_workers_read_every_row_once(tmp_path, counts, caplog):
    d = str(tmp_path / "pq")
    everything = write_parquet(d, counts, row_group_size=10)
    parts = []
    with caplog.at_level("INFO", logger="sparktf.readers"):
        for r in range(WORKERS):
            ds = readers.parquet_dataset(d, Ctx(r, WORKERS), batch_size=7)
            assert ds.element_spec == {"image": tf.TensorSpec([None, 4], tf.float32),
                                       "label": tf.TensorSpec([None], tf.int64)}
            parts.append(read_labels(ds))
    assert_partition(parts, everything)
    if len(counts) < WORKERS:  # row groups 0..6 (4 + 3): worker 1 gets groups 1 and 4
        assert sorted(parts[1]) == list(range(10, 20)) + list(range(40, 50))
        assert "worker 1 of 3 reads 2 of 7 row groups (in 2 of 2 files)" in caplog.text
    else:
        assert "worker 1 of 3 reads 2 of 5 files" in caplog.text


def test_parquet_columns_shapes_and_errors(tmp_path):
    d = str(tmp_path / "pq")
    write_parquet(d, [20], row_group_size=5)
    ds = readers.parquet_dataset(d, columns=["label"], batch_size=6)
    assert [len(b["label"]) for b in ds.as_numpy_iterator()] == [6, 6, 6, 2]
    ds = readers.parquet_dataset(d, batch_size=50, shapes={"image": [2, 2]})
    assert ds.element_spec["image"].shape.as_list() == [None, 2, 2]
    with pytest.raises(ConfigError, match="2 row group|4 row group"):
        readers.parquet_dataset(d, index=0, count=5)
    with pytest.raises(ConfigError, match="no column.*'nope'"):
        readers.parquet_dataset(d, columns=["nope"])
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(pa.table({"v": pa.array([[1.0], [1.0, 2.0]], pa.list_(pa.float64()))}),
                   ragged)
    ds = readers.parquet_dataset(str(ragged))
    assert ds.element_spec["v"].shape.as_list() == [None, None]
    with pytest.raises(Exception, match="lists of different lengths"):
        list(ds.as_numpy_iterator())


def test_parquet_fixed_size_list_and_strings(tmp_path):
    path = str(tmp_path / "f.parquet")
    flat = pa.array(np.arange(24, dtype=np.int32))
    pq.write_table(pa.table({"m": pa.FixedSizeListArray.from_arrays(flat, 6),
                             "s": ["a", "b", "c", "d"],
                             "c": pa.array(["x", "y", "x", "x"]).dictionary_encode(),
                             "b": [True, False, True, False]}), path)
    ds = readers.parquet_dataset(path)
    assert ds.element_spec == {"m": tf.TensorSpec([None, 6], tf.int32),
                               "s": tf.TensorSpec([None], tf.string),
                               "c": tf.TensorSpec([None], tf.string),
                               "b": tf.TensorSpec([None], tf.bool)}
    (batch,) = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(batch["m"], np.arange(24).reshape(4, 6))
    assert batch["s"].tolist() == [b"a", b"b", b"c", b"d"]
    assert batch["c"].tolist() == [b"x", b"y", b"x", b"x"]
    assert batch["b"].tolist() == [True, False, True, False]


def test_parquet_nulls_raise_naming_file(tmp_path):
    path = str(tmp_path / "n.parquet")
    pq.write_table(pa.table({"i": pa.array([1, None], pa.int64())}), path)
    with pytest.raises(Exception, match=f"{path}.*column 'i' has 1 null"):
        list(readers.parquet_dataset(path).as_numpy_iterator())
    assert isinstance(readers.CorruptRecordError("x"), SparkTFError)


def test_tfrecord_writer_matches_tensorflows_byte_for_byte(tmp_path):
    import tensorflow as tf
    records = [b"", b"x", bytes(range(256)) * 9]
    with tf.io.TFRecordWriter(str(tmp_path / "tf")) as w:
        for r in records:
            w.write(r)
    assert tfrecord.write_tfrecords(str(tmp_path / "ours"), records) == 3
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "tf").read_bytes()
    assert list(readers.iter_tfrecords(str(tmp_path / "ours"))) == records
