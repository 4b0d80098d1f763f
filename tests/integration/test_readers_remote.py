"""sparktf.readers over real storage servers: S3 (moto), HDFS and WebHDFS.

HDFS is Hadoop's MiniDFSCluster over hdfs:// (hdfs-native), whose NameNode audit
log tells which files were opened; the in-repo WebHDFS server also counts the
bytes sent per request.  Three workers (index 0..2 of 3) read the same data in
turn; what they read must be every record exactly once, each file must be opened
by one worker only, and a Parquet read by row group must fetch byte ranges, not
whole files.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

tf = pytest.importorskip("tensorflow")

from sparktf import fs, readers  # noqa: E402
from sparktf.errors import ConfigError  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.hadoop]

WORKERS = 3
WIDTH = 64  # floats per Parquet "image"


def example(i: int) -> bytes:
    feature = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
               "pad": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x" * (i % 300)]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_parquet(path: str, labels: np.ndarray, row_group_size: int) -> None:
    images = np.repeat(labels.astype(np.float32)[:, None], WIDTH, axis=1)
    images += np.random.default_rng(int(labels[0])).random(images.shape, dtype=np.float32)
    column = pa.ListArray.from_arrays(np.arange(0, images.size + 1, WIDTH, dtype=np.int32),
                                      pa.array(images.reshape(-1)))
    pq.write_table(pa.table({"image": column, "label": labels}), path,
                   row_group_size=row_group_size, compression="none")


@pytest.fixture(scope="module")
def local_data(tmp_path_factory):
    """Local copies of every data set, and what each holds."""
    root = tmp_path_factory.mktemp("readers-data")
    truth = {}
    tfr = root / "tfr"
    tfr.mkdir()
    i = 0
    records = []
    for f, n in enumerate([40, 55, 12, 33, 20]):
        with tf.io.TFRecordWriter(str(tfr / f"part-{f:05d}")) as w:
            for _ in range(n):
                records.append(example(i))
                w.write(records[-1])
                i += 1
    (tfr / "_SUCCESS").write_bytes(b"")
    truth["tfr"] = records
    csv = root / "csv"
    csv.mkdir()
    i = 0
    for f, n in enumerate([100, 7, 64, 30]):
        ids = np.arange(i, i + n)
        pacsv.write_csv(pa.table({"id": ids, "x": ids / 4}), str(csv / f"part-{f:05d}.csv"))
        i += n
    truth["csv"] = list(range(i))
    for name, counts, group in [("pq-files", [300, 120, 260, 90], 100),
                                ("pq-groups", [4000, 4000], 1000)]:
        d = root / name
        d.mkdir()
        i = 0
        for f, n in enumerate(counts):
            write_parquet(str(d / f"part-{f:05d}.parquet"), np.arange(i, i + n), group)
            i += n
        (d / "_SUCCESS").write_bytes(b"")
        truth[name] = list(range(i))
    truncated = root / "truncated"
    truncated.mkdir()
    data = (tfr / "part-00000").read_bytes()
    (truncated / "part-00000").write_bytes(data[:len(data) - 10])
    return str(root), truth


class AuditOpens:
    """``stats()["opened"]`` (opens per HDFS path) from the NameNode's audit log."""

    def __init__(self, hadoop) -> None:
        self.hadoop = hadoop

    def stats(self) -> dict:
        opened = collections.Counter(e[4] for e in self.hadoop.audit()
                                     if e[0] == "ok" and e[3] == "open")
        return {"opened": opened}


@pytest.fixture(scope="module", params=["s3", "webhdfs", "hdfs"])
def store(request, local_data):
    """(base URL holding the uploaded data sets, truth, open counter or None).

    The counter's ``stats()`` gives ``opened`` (and for the WebHDFS test server
    ``reads``: path, offset, length of every request).
    """
    root, truth = local_data
    if request.param == "s3":
        server = None
        base = request.getfixturevalue("s3_server")["url"] + "/readers"
    elif request.param == "webhdfs":
        server = request.getfixturevalue("webhdfs_server")
        base = server.url + "/readers"
    else:
        hadoop = request.getfixturevalue("hadoop")
        server = AuditOpens(hadoop)
        base = hadoop.namenode + "/tmp/readers"
    fs.upload(root, base)
    return base, truth, server


def opened_by_each_worker(server, read):
    """Run ``read(worker)`` for every worker; the HDFS paths each one opened."""
    results, opened = [], []
    for worker in range(WORKERS):
        before = dict(server.stats()["opened"]) if server else {}
        results.append(read(worker))
        after = server.stats()["opened"] if server else {}
        opened.append({p for p, n in after.items() if n > before.get(p, 0)})
    return results, opened


def assert_partition(parts, everything):
    assert all(len(p) for p in parts), [len(p) for p in parts]
    union = collections.Counter(x for p in parts for x in p)
    assert union == collections.Counter(everything)


def assert_disjoint_opens(server, opened, base, name):
    if server is None:
        return
    files = {os.path.basename(u) for u in fs.listdir(f"{base}/{name}")
             if not os.path.basename(u).startswith("_")}
    mine = [{os.path.basename(p) for p in o} for o in opened]
    assert all(mine), opened
    assert sum(len(m) for m in mine) == len(set().union(*mine)) == len(files), mine


@pytest.mark.parametrize("parallel", [None, 2])
def test_tfrecord(store, parallel):
    base, truth, server = store
    pattern = base + "/tfr/part-*"
    parts, opened = opened_by_each_worker(server, lambda w: list(readers.tfrecord_dataset(
        pattern, index=w, count=WORKERS, parallel_reads=parallel).as_numpy_iterator()))
    assert_partition(parts, truth["tfr"])
    assert_disjoint_opens(server, opened, base, "tfr")


def test_tfrecord_truncated_remote_file_names_url_and_offset(store):
    base, truth, _ = store
    url = base + "/truncated/part-00000"
    with pytest.raises(readers.CorruptRecordError, match=f"{url}: truncated TFRecord at offset"):
        list(readers.iter_tfrecords(url, chunk_size=1000))
    ds = readers.tfrecord_dataset(base + "/truncated")
    with pytest.raises(Exception, match="truncated TFRecord at offset"):
        list(ds.as_numpy_iterator())


def test_csv(store):
    base, truth, server = store

    def read(w):
        ids = []
        for b in readers.csv_dataset(base + "/csv", index=w, count=WORKERS,
                                     batch_size=16).as_numpy_iterator():
            np.testing.assert_array_equal(b["x"], b["id"] / 4)
            ids.extend(b["id"].tolist())
        return ids
    parts, opened = opened_by_each_worker(server, read)
    assert_partition(parts, truth["csv"])
    assert_disjoint_opens(server, opened, base, "csv")


def read_labels(ds):
    labels = []
    for b in ds.as_numpy_iterator():
        assert b["image"].shape == (len(b["label"]), WIDTH)
        np.testing.assert_array_equal(np.floor(b["image"][:, 0]), b["label"])
        labels.extend(b["label"].tolist())
    return labels


def test_parquet_by_file(store):
    base, truth, server = store
    parts, opened = opened_by_each_worker(server, lambda w: read_labels(readers.parquet_dataset(
        base + "/pq-files", index=w, count=WORKERS, batch_size=64)))
    assert_partition(parts, truth["pq-files"])
    assert_disjoint_opens(server, opened, base, "pq-files")


def test_parquet_by_row_group_fetches_only_its_row_groups(store):
    base, truth, server = store
    url = base + "/pq-groups"
    server = server if server and "reads" in server.stats() else None   # byte counts
    before = server.stats()["reads"] if server else []
    parts = [read_labels(readers.parquet_dataset(url, index=w, count=WORKERS, batch_size=500))
             for w in range(WORKERS)]
    assert_partition(parts, truth["pq-groups"])
    # 8 row groups of 1000 rows: worker 1 has groups 1, 4 (file 0) and 7 (file 1).
    assert sorted(parts[1]) == [*range(1000, 2000), *range(4000, 5000), *range(7000, 8000)]
    if server is None:
        return
    sizes = {p: fs.size(server.url + p) for p, _, _ in server.stats()["reads"][len(before):]}
    requested = collections.Counter()
    for path, offset, length in server.stats()["reads"][len(before):]:
        assert length is not None, "a whole file was requested"
        requested[path] += min(length, sizes[path] - offset)
    # Each worker reads 2 or 3 of the 8 row groups (each ~1/4 of its file) plus footers:
    # the three together fetch about every byte once, far from 3 times each file.
    for path, n in requested.items():
        assert n < 1.6 * sizes[path], (path, n, sizes[path])


def test_resolve_remote(store):
    base, _, _ = store
    files = readers.resolve(base + "/tfr")
    assert [f.rsplit("/", 1)[1] for f in files] == [f"part-{i:05d}" for i in range(5)]
    assert readers.resolve(base + "/tfr/part-0000[02]") == [files[0], files[2]]
    assert readers.resolve(base + "/*/part-00004") == [files[4]]
    assert readers.resolve(files[3]) == [files[3]]
    with pytest.raises(ConfigError, match="no input files match"):
        readers.resolve(base + "/tfr/nothing-*")
    with pytest.raises(ConfigError, match="no input files match"):
        readers.resolve(base + "/missing")
