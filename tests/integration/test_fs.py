"""sparktf.fs against the local disk, a real S3 protocol server (moto) and a real HDFS.

HDFS is Hadoop's own MiniDFSCluster (the ``hadoop`` fixture), reached over its RPC
protocol (``hdfs://``, hdfs-native) and over WebHDFS (``webhdfs://``).  The
in-repo WebHDFS server stays for what a real NameNode cannot report: the bytes it
sent per request (ranged reads).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparktf import fs
from sparktf.errors import StorageError

pytestmark = pytest.mark.hadoop

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["local", "file", "s3", "webhdfs", "hdfs"])
def base(request, tmp_path):
    """A fresh, not yet created directory URL on each kind of storage."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    if request.param == "local":
        return str(tmp_path / name)
    if request.param == "file":
        return f"file://{tmp_path}/{name}"
    if request.param == "s3":
        return f"{request.getfixturevalue('s3_server')['url']}/{name}"
    hadoop = request.getfixturevalue("hadoop")
    return f"{hadoop.webhdfs if request.param == 'webhdfs' else hadoop.namenode}/tmp/{name}"


def write(url: str, data: bytes) -> None:
    with fs.open_output(url) as f:
        f.write(data)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_write_read_seek(base):
    data = bytes(range(256)) * 1000
    fs.makedirs(fs.join(base, "d"))
    assert fs.isdir(fs.join(base, "d")) and fs.exists(base)
    url = fs.join(base, "d", "f.bin")
    out = fs.open_output(url)
    out.write(data[:1000])
    out.write(data[1000:])
    if not fs.is_local(url) and not url.startswith("hdfs://"):
        assert not fs.exists(url), "a remote file appears only when its stream is closed"
    out.close()
    assert fs.exists(url) and not fs.isdir(url) and fs.size(url) == len(data)
    with fs.open_input(url) as f:
        assert f.size() == len(data)
        assert f.read() == data
        f.seek(123_457)
        assert f.read(10) == data[123_457:123_467]
        assert f.read_at(5, 200_000) == data[200_000:200_005]
        f.seek(-3, 2)
        assert f.read() == data[-3:]
    assert not fs.exists(fs.join(base, "nothing"))
    with pytest.raises(FileNotFoundError):
        fs.open_input(fs.join(base, "nothing"))
    with pytest.raises(FileNotFoundError):
        fs.size(fs.join(base, "nothing"))


def test_listdir_glob(base):
    for name in ["part-00001.parquet", "part-00000.parquet", "_SUCCESS", "part-9.csv",
                 "sub/part-00000.parquet", "sub/deeper/part-1.parquet"]:
        write(fs.join(base, "out", name), b"x")
    out = fs.join(base, "out")
    assert fs.listdir(out) == sorted(fs.join(out, n) for n in [
        "_SUCCESS", "part-00000.parquet", "part-00001.parquet", "part-9.csv", "sub"])
    assert fs.glob(fs.join(out, "part-*.parquet")) == [
        fs.join(out, "part-00000.parquet"), fs.join(out, "part-00001.parquet")]
    assert fs.glob(fs.join(base, "*", "part-0000[0-9].parquet")) == [
        fs.join(out, "part-00000.parquet"), fs.join(out, "part-00001.parquet")]
    assert fs.glob(fs.join(out, "*", "part-?????.parquet")) == [
        fs.join(out, "sub", "part-00000.parquet")]
    assert fs.glob(fs.join(out, "_SUCCESS")) == [fs.join(out, "_SUCCESS")]
    assert fs.glob(fs.join(out, "nothing-*")) == []
    assert fs.glob(fs.join(base, "missing", "*")) == []
    with pytest.raises(FileNotFoundError):
        fs.listdir(fs.join(base, "missing"))


def test_rename_delete(base):
    write(fs.join(base, "a", "one"), b"1")
    write(fs.join(base, "a", "two"), b"22")
    fs.rename(fs.join(base, "a", "one"), fs.join(base, "a", "uno"))
    assert [u.rsplit("/", 1)[1] for u in fs.listdir(fs.join(base, "a"))] == ["two", "uno"]
    fs.rename(fs.join(base, "a", "two"), fs.join(base, "a", "uno"))   # replaces a file
    with fs.open_input(fs.join(base, "a", "uno")) as f:
        assert f.read() == b"22"
    with pytest.raises(OSError):
        fs.delete(fs.join(base, "a"))
    fs.delete(fs.join(base, "a", "uno"))
    assert not fs.exists(fs.join(base, "a", "uno"))
    write(fs.join(base, "a", "b", "c"), b"3")
    fs.delete(fs.join(base, "a"), recursive=True)
    assert not fs.exists(fs.join(base, "a"))
    with pytest.raises(FileNotFoundError):
        fs.delete(fs.join(base, "a"))
    write(fs.join(base, "dir", "f"), b"4")
    if base.startswith("s3://"):
        with pytest.raises(StorageError, match="S3 has no rename"):
            fs.rename(fs.join(base, "dir"), fs.join(base, "moved"))
    else:
        fs.rename(fs.join(base, "dir"), fs.join(base, "moved"))
        assert fs.listdir(fs.join(base, "moved")) == [fs.join(base, "moved", "f")]


def test_upload_download_tree(base, tmp_path):
    src = tmp_path / "src"
    files = {"model.index": b"index", "variables/data-00000-of-00001": os.urandom(300_000),
             "assets/vocab.txt": b"a\nb\n", "assets/deep/empty": b""}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (src / "empty_dir").mkdir()
    dst = fs.join(base, "export")
    fs.upload(str(src), dst)
    fs.upload(str(src), dst)   # again: files are replaced
    assert fs.listdir(fs.join(dst, "assets")) == [
        fs.join(dst, "assets", "deep"), fs.join(dst, "assets", "vocab.txt")]
    assert not [u for u in fs.glob(fs.join(dst, "*", ".*")) if "sparktf-tmp" in u]
    back = tmp_path / "back"
    fs.download(dst, str(back))
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data
    assert (back / "empty_dir").is_dir()
    fs.upload(str(src / "model.index"), fs.join(base, "single"))
    fs.download(fs.join(base, "single"), str(tmp_path / "single"))
    assert (tmp_path / "single").read_bytes() == b"index"


def write_parquet(base: str) -> tuple[str, pa.Table]:
    table = pa.table({"x": list(range(40_000)), "y": [float(i) for i in range(40_000)]})
    url = fs.join(base, "data", "part-00000.parquet")
    filesystem, path = fs.filesystem(url)
    fs.makedirs(fs.join(base, "data"))
    pq.write_table(table, path, filesystem=filesystem, row_group_size=10_000)
    return url, table


def test_parquet_through_filesystem(base):
    url, table = write_parquet(base)
    filesystem, path = fs.filesystem(url)
    assert pq.read_table(path, filesystem=filesystem).equals(table)
    assert pq.read_table(fs.filesystem(fs.join(base, "data"))[1],
                         filesystem=filesystem).num_rows == 40_000
    with pq.ParquetFile(filesystem.open_input_file(path)) as f:
        assert f.metadata.num_row_groups == 4
        assert f.read_row_group(2).column("x").to_pylist() == list(range(20_000, 30_000))


def test_webhdfs_reads_byte_ranges(webhdfs_server):
    """One row group of a Parquet file costs its bytes, not the file's.

    The in-repo WebHDFS server counts the bytes it sends per request, which a real
    NameNode does not report.
    """
    url, _ = write_parquet(f"{webhdfs_server.url}/t-{uuid.uuid4().hex[:8]}")
    filesystem, path = fs.filesystem(url)
    before = webhdfs_server.bytes_sent.get(path, 0), len(webhdfs_server.reads)
    with pq.ParquetFile(filesystem.open_input_file(path)) as f:
        assert f.read_row_group(2).column("x").to_pylist() == list(range(20_000, 30_000))
    sent = webhdfs_server.bytes_sent[path] - before[0]
    reads = [r for r in webhdfs_server.reads[before[1]:] if r[0] == path]
    assert all(length is not None for _, _, length in reads), reads
    assert sent < fs.size(url) * 0.6, (sent, fs.size(url), reads)


def test_filesystem_pickles(base):
    filesystem, path = fs.filesystem(base)
    assert pickle.loads(pickle.dumps(filesystem)).equals(filesystem)


def test_path_helpers():
    assert fs.is_local("/tmp/x") and fs.is_local("file:///tmp/x") and fs.is_local("rel/x")
    assert not fs.is_local("s3://b/k") and not fs.is_local("webhdfs://h:9870/x")
    assert fs.join("s3://b/dir/", "a", "/b/") == "s3://b/dir/a/b"
    assert fs.join("/tmp", "x") == "/tmp/x"
    assert fs.filesystem("s3a://bucket/key/")[1] == "bucket/key"
    assert fs.filesystem("webhdfs://h:1/a/b")[1] == "/a/b"


def test_unknown_scheme():
    with pytest.raises(StorageError, match="'gopher'.*supported.*webhdfs://"):
        fs.exists("gopher://host/x")


def test_libhdfs_without_hadoop_says_what_is_missing(monkeypatch):
    monkeypatch.setenv("SPARKTF_HDFS_CLIENT", "libhdfs")
    for name in ("HADOOP_HOME", "CLASSPATH", "ARROW_LIBHDFS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAVA_HOME", "")   # found from `java` if any; restored afterwards
    start = time.monotonic()
    with pytest.raises(StorageError) as raised:
        fs.exists("hdfs://namenode:8020/data")
    assert time.monotonic() - start < 10
    message = str(raised.value)
    for needed in ("HADOOP_HOME", "libhdfs.so", "CLASSPATH", "webhdfs://namenode:9870"):
        assert needed in message


@pytest.mark.skipif(not os.environ.get("HADOOP_HOME"),
                    reason="libhdfs path is tested only where Hadoop is installed")
def test_hdfs_environment_from_hadoop_home(monkeypatch):
    monkeypatch.setenv("SPARKTF_HDFS_CLIENT", "libhdfs")
    for name in ("CLASSPATH", "ARROW_LIBHDFS_DIR", "JAVA_HOME"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    filesystem, path = fs.filesystem("hdfs://127.0.0.1:8020/tmp/x")
    assert filesystem.type_name == "hdfs" and path == "/tmp/x"
    assert os.environ["CLASSPATH"] and os.environ["JAVA_HOME"]


def test_unreachable_s3_endpoint(monkeypatch):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    start = time.monotonic()
    with pytest.raises(StorageError) as raised:
        fs.exists("s3://bucket/key")
    assert time.monotonic() - start < 10
    assert "AWS_ENDPOINT_URL" in str(raised.value) and endpoint in str(raised.value)
    assert "testing" not in str(raised.value)


def test_unreachable_webhdfs():
    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(StorageError, match=f"WebHDFS server at http://{address}"):
        fs.listdir(f"webhdfs://{address}/data")
    assert time.monotonic() - start < 10


def test_webhdfs_server_as_a_process(tmp_path):
    proc = subprocess.Popen([sys.executable, os.path.join(TESTS, "servers", "webhdfs.py"),
                             str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        write(f"webhdfs://127.0.0.1:{port}/d/f", b"hello")
        assert (tmp_path / "d" / "f").read_bytes() == b"hello"
        with fs.open_input(f"webhdfs://127.0.0.1:{port}/d/f") as f:
            assert f.read() == b"hello"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
            assert json.load(r)["opened"] == {"/d/f": 1}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


# ----------------------------------------------------------------------------- HDFS faults


def test_hdfs_unreachable_namenode():
    url = f"hdfs://127.0.0.1:{closed_port()}/data"
    start = time.monotonic()
    with pytest.raises(StorageError) as raised:
        fs.listdir(url)
    assert time.monotonic() - start < 10
    assert "127.0.0.1" in str(raised.value) and "NameNode" in str(raised.value)


def test_hdfs_missing_file(hadoop):
    url = f"{hadoop.namenode}/tmp/no-such-dir-{uuid.uuid4().hex[:6]}/f"
    start = time.monotonic()
    assert not fs.exists(url)
    with pytest.raises(FileNotFoundError) as raised:
        fs.open_input(url)
    assert url.split("://", 1)[1].split("/", 1)[1] in str(raised.value), raised.value
    with pytest.raises(FileNotFoundError) as raised:
        fs.listdir(fs.join(url, ".."))
    assert "no-such-dir-" in str(raised.value), raised.value
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("scheme", ["hdfs", "webhdfs"])
def test_hdfs_permission_denied(hadoop, monkeypatch, scheme):
    """A file chmod 000 (and a directory not writable) for another user than the owner."""
    root = hadoop.namenode if scheme == "hdfs" else hadoop.webhdfs
    secret = f"{root}/tmp/secret-{uuid.uuid4().hex[:6]}"
    write(fs.join(secret, "f"), b"s")      # its directory is created on the way
    handler = fs.filesystem(hadoop.namenode)[0].handler
    assert handler.client.get_file_info(fs.filesystem(secret)[1]).permission & 0o022 == 0
    handler.client.set_permission(fs.filesystem(fs.join(secret, "f"))[1], 0o000)
    monkeypatch.setenv("HADOOP_USER_NAME", "someone-else")
    start = time.monotonic()
    if scheme == "hdfs":   # hdfs-native asks for the blocks when opening: denied there
        with pytest.raises(StorageError) as raised:
            fs.open_input(fs.join(secret, "f"))
        assert fs.join(secret, "f") in str(raised.value)
        assert "HADOOP_USER_NAME" in str(raised.value)
    else:                  # WebHDFS is denied at the first read
        with pytest.raises((StorageError, PermissionError)) as raised:
            fs.open_input(fs.join(secret, "f")).read()
    message = str(raised.value)
    assert "ermission denied" in message and "someone-else" in message, message
    with pytest.raises((StorageError, PermissionError), match="ermission denied"):
        write(fs.join(secret, "g"), b"x")
    assert time.monotonic() - start < 10


def test_hdfs_wrong_conf_dir(hadoop, monkeypatch, tmp_path):
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))       # no *-site.xml there
    with pytest.raises(StorageError, match=f"HADOOP_CONF_DIR={tmp_path} holds no"):
        fs.exists("hdfs:///tmp")
    monkeypatch.setenv("HADOOP_CONF_DIR", hadoop.conf_dir)     # fs.defaultFS from it
    assert fs.isdir("hdfs:///tmp")
    (tmp_path / "core-site.xml").write_text("<configuration/>")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))       # no fs.defaultFS in it
    start = time.monotonic()
    with pytest.raises(StorageError, match="no fs.defaultFS.*HADOOP_CONF_DIR"):
        fs.exists("hdfs:///tmp")
    assert time.monotonic() - start < 10
