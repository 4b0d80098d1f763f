"""One storage layer for local, HDFS, WebHDFS and S3 URLs.

TensorFlow cannot open ``hdfs://`` or ``s3://`` itself, so every sparktf reader
(Parquet through pyarrow, TFRecord and CSV through streams) and the checkpoint
upload and download code go through :func:`filesystem`, which gives a
:class:`pyarrow.fs.FileSystem` and the path within it for any URL:

* plain paths and ``file://``: the local file system;
* ``hdfs://`` and ``viewfs://``: ``hdfs-native`` (HDFS's RPC protocol without a JVM;
  reads ``HADOOP_CONF_DIR``), or libhdfs (needs a Hadoop installation and Java) where
  hdfs-native is not installed or ``SPARKTF_HDFS_CLIENT=libhdfs``;
* ``webhdfs://host:port`` and ``swebhdfs://`` (HTTPS): the WebHDFS REST API, which
  needs nothing installed (the ``hdfs`` package's client);
* ``s3://`` and ``s3a://``: S3 or any S3-compatible service (``AWS_ENDPOINT_URL``).

Failures to reach or use a storage raise :class:`~sparktf.errors.StorageError`
naming the URL and what to check; a path that does not exist raises the usual
:class:`FileNotFoundError`.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import fnmatch
import functools
import getpass
import logging
import os
import posixpath
import re
import shutil
import subprocess
import uuid
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import requests
from hdfs.util import HdfsError

from sparktf import hdfsnative
from sparktf.errors import StorageError
from sparktf.paths import FS_SCHEMES as SCHEMES
from sparktf.paths import is_local, local_path
from sparktf.webhdfs import CONNECT_TIMEOUT, WebHdfsHandler

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20         # bytes per read of a stream
_GLOB_MAGIC = re.compile(r"[*?\[]")
_NOT_FOUND = pafs.FileType.NotFound
_DIRECTORY = pafs.FileType.Directory


# ----------------------------------------------------------------------------- public API


def filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    """The file system for ``url`` and the path within it.

    The path is absolute for local and HDFS-like file systems and ``bucket/key``
    for S3, as pyarrow expects.  File systems are cached per endpoint and settings.
    """
    fs, path, _ = _resolve(url)
    return fs, path


def join(url: str, *parts: str) -> str:
    """``url`` with ``parts`` appended as path components, always relative to it."""
    pieces = [p.strip("/") for p in parts if p.strip("/")]
    if not pieces:
        return url
    return url.rstrip("/") + "/" + "/".join(pieces)


def open_input(url: str) -> pa.NativeFile:
    """A seekable, random-access file to read ``url``."""
    fs, path, _ = _resolve(url)
    with _storage_errors("opening", url):
        return fs.open_input_file(path)


def open_output(url: str) -> pa.NativeFile:
    """A stream writing ``url``, creating missing parent directories.

    On S3 and WebHDFS the file appears, whole, only when the stream is closed; on
    HDFS it is visible while being written (:func:`upload` avoids that).
    """
    fs, path, _ = _resolve(url)
    with _storage_errors("writing", url):
        if isinstance(fs, pafs.LocalFileSystem):
            fs.create_dir(posixpath.dirname(path), recursive=True)
        return fs.open_output_stream(path)


def exists(url: str) -> bool:
    """Whether ``url`` is an existing file or directory."""
    return _info(url).type != _NOT_FOUND


def isdir(url: str) -> bool:
    """Whether ``url`` is an existing directory (on S3: a prefix with objects under it)."""
    return _info(url).type == _DIRECTORY


def makedirs(url: str) -> None:
    """Create directory ``url`` and its missing parents; nothing if it exists."""
    fs, path, _ = _resolve(url)
    with _storage_errors("creating directory", url):
        fs.create_dir(path, recursive=True)


def listdir(url: str) -> list[str]:
    """The full URLs of the entries of directory ``url``, sorted."""
    fs, path, prefix = _resolve(url)
    with _storage_errors("listing", url):
        infos = fs.get_file_info(pafs.FileSelector(path))
    return sorted(prefix + info.path for info in infos)


def glob(pattern: str) -> list[str]:
    """The full URLs matching ``pattern``, sorted.

    Each path component is matched with :func:`fnmatch.fnmatchcase` (``*``, ``?``,
    ``[...]``), so ``*`` never crosses a ``/``, as in Hadoop globs; ``{a,b}``
    alternation is not supported.
    """
    fs, path, prefix = _resolve(pattern)
    parts = path.split("/")
    first = next((i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part)), len(parts))
    candidates = ["/".join(parts[:first]) or "/"]
    with _storage_errors("listing", pattern):
        for i, part in enumerate(parts[first:], start=first):
            if not part:
                continue
            if not _GLOB_MAGIC.search(part):
                candidates = [posixpath.join(c, part) for c in candidates]
                continue
            last = i == len(parts) - 1
            dirs = [c for c, info in zip(candidates, fs.get_file_info(candidates))
                    if info.type == _DIRECTORY]
            candidates = [info.path for d in dirs
                          for info in fs.get_file_info(pafs.FileSelector(d))
                          if fnmatch.fnmatchcase(posixpath.basename(info.path), part)
                          and (last or info.type == _DIRECTORY)]
        found = [c for c, info in zip(candidates, fs.get_file_info(candidates))
                 if info.type != _NOT_FOUND]
    return sorted(prefix + path for path in found)


def size(url: str) -> int:
    """The size of file ``url`` in bytes."""
    info = _info(url)
    if info.type == _NOT_FOUND:
        raise FileNotFoundError(errno.ENOENT, "no such file", url)
    if info.type == _DIRECTORY:
        raise IsADirectoryError(errno.EISDIR, "a directory has no size", url)
    return info.size


def delete(url: str, recursive: bool = False) -> None:
    """Delete file or directory ``url``; a non-empty directory only if ``recursive``."""
    fs, path, _ = _resolve(url)
    info = _info(url)
    with _storage_errors("deleting", url):
        if info.type == _NOT_FOUND:
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", url)
        if info.type != _DIRECTORY:
            fs.delete_file(path)
        elif recursive or not fs.get_file_info(pafs.FileSelector(path)):
            fs.delete_dir(path)
        else:
            raise OSError(errno.ENOTEMPTY, "directory not empty (use recursive=True)", url)


def rename(src_url: str, dst_url: str) -> None:
    """Move ``src_url`` to ``dst_url`` on the same file system, replacing a file there.

    S3 has no rename: pyarrow copies then deletes, and only files can be moved.
    """
    src_fs, src, _ = _resolve(src_url)
    dst_fs, dst, _ = _resolve(dst_url)
    if _fs_key(src_url) != _fs_key(dst_url):
        raise StorageError(f"cannot rename {src_url} to {dst_url}: not on the same file system")
    with _storage_errors("renaming", src_url):
        if isinstance(src_fs, pafs.S3FileSystem) and src_fs.get_file_info(src).type == _DIRECTORY:
            raise StorageError(f"cannot rename directory {src_url}: S3 has no rename and only "
                               "files can be moved; write to the final location instead")
        src_fs.move(src, dst)


def upload(local_dir_or_file: str, url: str) -> None:
    """Copy a local file, or a directory tree, to ``url``.

    A reader never sees a half-written file: each file is written under a hidden
    temporary name (``.NAME.sparktf-tmp-*``) in its directory and renamed when
    complete.  S3 has no rename, but an object becomes visible only once it is
    complete, so each file is written to its final key directly.  Files of a
    directory are written in sorted order; no marker tells that the whole
    directory is there.
    """
    src = local_path(local_dir_or_file)
    fs, dst, _ = _resolve(url)
    local = _local_fs()
    with _storage_errors("uploading to", url):
        if not os.path.isdir(src):
            _copy_file(local, src, fs, dst)
            return
        count = 0
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            target = dst if rel == "." else posixpath.join(dst, *rel.split(os.sep))
            fs.create_dir(target, recursive=True)
            for name in sorted(files):
                _copy_file(local, os.path.join(root, name), fs, posixpath.join(target, name))
                count += 1
    logger.info("uploaded %d files from %s to %s", count, src, url)


def download(url: str, local_dir_or_file: str) -> None:
    """Copy file ``url``, or the directory tree under it, to a local path."""
    fs, src, _ = _resolve(url)
    dst = local_path(local_dir_or_file)
    local = _local_fs()
    with _storage_errors("downloading", url):
        info = fs.get_file_info(src)
        if info.type == _NOT_FOUND:
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", url)
        if info.type != _DIRECTORY:
            _copy_file(fs, src, local, dst)
            return
        os.makedirs(dst, exist_ok=True)
        infos = fs.get_file_info(pafs.FileSelector(src, recursive=True))
        for entry in sorted(infos, key=lambda e: e.path):
            target = os.path.join(dst, *posixpath.relpath(entry.path, src).split("/"))
            if entry.type == _DIRECTORY:
                os.makedirs(target, exist_ok=True)
            else:
                _copy_file(fs, entry.path, local, target)
    logger.info("downloaded %s to %s", url, dst)


# ----------------------------------------------------------------------------- helpers


def _info(url: str) -> pafs.FileInfo:
    fs, path, _ = _resolve(url)
    with _storage_errors("getting information on", url):
        return fs.get_file_info(path)


def _copy_file(src_fs: pafs.FileSystem, src: str, dst_fs: pafs.FileSystem, dst: str) -> None:
    """Copy one file so that ``dst`` appears only once complete (see :func:`upload`)."""
    atomic = not isinstance(dst_fs, pafs.S3FileSystem)
    head, name = posixpath.split(dst)
    tmp = posixpath.join(head, f".{name}.sparktf-tmp-{uuid.uuid4().hex[:8]}") if atomic else dst
    if isinstance(dst_fs, pafs.LocalFileSystem):
        dst_fs.create_dir(head, recursive=True)
    try:
        with src_fs.open_input_stream(src) as fin, dst_fs.open_output_stream(tmp) as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)
        if atomic:
            dst_fs.move(tmp, dst)
    except BaseException:
        if atomic:
            with contextlib.suppress(Exception):
                dst_fs.delete_file(tmp)
        raise


def _split(url: str) -> tuple[str, str, str]:
    """``(scheme, authority, path)`` of a remote URL; path is ``/`` or has no trailing ``/``."""
    scheme, _, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    return scheme.lower(), authority, "/" + path.strip("/")


def _fs_key(url: str) -> tuple[str, str]:
    """What identifies the file system of ``url`` (``s3`` and ``s3a`` are one)."""
    if is_local(url):
        return "file", ""
    scheme, authority, _ = _split(url)
    return {"s3a": "s3"}.get(scheme, scheme), "" if scheme in ("s3", "s3a") else authority


def _resolve(url: str) -> tuple[pafs.FileSystem, str, str]:
    """``(file system, path, prefix)`` of ``url``; ``prefix + path`` is a URL again."""
    if is_local(url):
        path = local_path(url)
        path = path.rstrip("/") or "/"
        return _local_fs(), path, "file://" if url.startswith("file://") else ""
    scheme, authority, path = _split(url)
    if scheme in ("s3", "s3a"):
        if not authority:
            raise StorageError(f"{url} names no bucket: write s3://BUCKET/KEY")
        return _s3_fs(), authority + ("" if path == "/" else path), f"{scheme}://"
    if not authority and scheme in ("webhdfs", "swebhdfs"):
        raise StorageError(f"{url} names no server: write {scheme}://NAMENODE:9870/PATH")
    if scheme in ("webhdfs", "swebhdfs"):
        return _webhdfs_fs(scheme, authority), path, f"{scheme}://{authority}"
    if scheme in ("hdfs", "viewfs"):
        return _hdfs_fs(scheme, authority, url), path, f"{scheme}://{authority}"
    raise StorageError(f"unsupported file system scheme {scheme!r} in {url}; supported: "
                       f"plain paths and {', '.join(s + '://' for s in SCHEMES)}")


@functools.lru_cache(maxsize=None)
def _local_fs() -> pafs.LocalFileSystem:
    return pafs.LocalFileSystem()


def _s3_fs() -> pafs.S3FileSystem:
    """The S3 file system for the current ``AWS_*`` variables."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # pyarrow reads the credentials itself; they key the cache so that new ones take effect.
    credentials = tuple(os.environ.get(name, "") for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"))
    return _s3_cached(endpoint, region, credentials)


@functools.lru_cache(maxsize=16)
def _s3_cached(endpoint: str, region: str, _credentials: tuple) -> pafs.S3FileSystem:
    options = dict(region=region, connect_timeout=CONNECT_TIMEOUT, request_timeout=30.0,
                   retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    if endpoint:
        scheme, _, address = endpoint.rpartition("://")
        options.update(scheme=scheme or "https", endpoint_override=address.rstrip("/"))
    logger.debug("S3 file system: endpoint %s, region %s", endpoint or "AWS", region)
    return pafs.S3FileSystem(**options)


def _webhdfs_fs(scheme: str, authority: str) -> pafs.PyFileSystem:
    user = os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
    return _webhdfs_cached(scheme, authority, user)


@functools.lru_cache(maxsize=16)
def _webhdfs_cached(scheme: str, authority: str, user: str) -> pafs.PyFileSystem:
    if ":" not in authority:
        authority += ":9871" if scheme == "swebhdfs" else ":9870"
    http = "https" if scheme == "swebhdfs" else "http"
    return pafs.PyFileSystem(WebHdfsHandler(f"{http}://{authority}", user))


def _hdfs_fs(scheme: str, authority: str, url: str) -> pafs.FileSystem:
    """HDFS through hdfs-native when installed (no JVM needed), else through libhdfs.

    ``SPARKTF_HDFS_CLIENT=libhdfs`` chooses libhdfs (pyarrow's ``HadoopFileSystem``)
    even where hdfs-native is installed, e.g. for Kerberos setups it cannot handle.
    """
    client = os.environ.get("SPARKTF_HDFS_CLIENT", "").lower()
    if client not in ("", "hdfs-native", "libhdfs"):
        raise StorageError(f"SPARKTF_HDFS_CLIENT={client!r} is not a known HDFS client: "
                           "use hdfs-native or libhdfs (or leave it unset)")
    if client != "libhdfs" and hdfsnative.available():
        return _hdfs_native_fs(scheme, authority, url)
    if client == "hdfs-native":
        raise StorageError(f"{url}: SPARKTF_HDFS_CLIENT=hdfs-native but the hdfs-native "
                           "package is not installed: pip install 'sparktf[hdfs]'")
    _hadoop_environment(url)
    if scheme == "viewfs":
        host, port = f"viewfs://{authority}", 0
    else:   # no port: libhdfs uses the default one, or resolves an HA name service
        host, _, port_text = authority.partition(":")
        host, port = host or "default", int(port_text or 0)
    user = os.environ.get("HADOOP_USER_NAME") or None
    try:
        return _hdfs_cached(host, port, user)
    except (OSError, pa.ArrowException) as e:
        raise StorageError(f"cannot connect to HDFS for {url}: {e}. Check the namenode address, "
                           "HADOOP_CONF_DIR and, on a secure cluster, the Kerberos ticket; "
                           "webhdfs://NAMENODE:9870/PATH needs no Hadoop installation") from e


def _hdfs_native_fs(scheme: str, authority: str, url: str) -> pafs.PyFileSystem:
    conf_dir = os.environ.get("HADOOP_CONF_DIR") or None
    if conf_dir and not any(os.path.isfile(os.path.join(conf_dir, name))
                            for name in ("core-site.xml", "hdfs-site.xml")):
        raise StorageError(f"HADOOP_CONF_DIR={conf_dir} holds no core-site.xml or "
                           f"hdfs-site.xml (needed for {url}): point it at the Hadoop client "
                           "configuration directory (often /etc/hadoop/conf), or unset it "
                           "and write hdfs://NAMENODE:PORT/PATH")
    user = os.environ.get("HADOOP_USER_NAME") or None
    return _hdfs_native_cached(f"{scheme}://{authority}", user, conf_dir)


@functools.lru_cache(maxsize=16)
def _hdfs_native_cached(root: str, user: str | None, conf_dir: str | None) -> pafs.PyFileSystem:
    logger.debug("HDFS file system (hdfs-native): %s as %s", root, user or "the current user")
    return pafs.PyFileSystem(hdfsnative.HdfsNativeHandler(root, user, conf_dir))


@functools.lru_cache(maxsize=16)
def _hdfs_cached(host: str, port: int, user: str | None) -> pafs.HadoopFileSystem:
    logger.debug("HDFS file system: %s:%s as %s", host, port, user or "the default user")
    return pafs.HadoopFileSystem(host, port, user=user)


def _hadoop_environment(url: str) -> None:
    """Set what libhdfs needs from ``HADOOP_HOME`` and ``java``, or raise what is missing.

    Checked before loading libhdfs because a JVM that cannot start may hang or
    abort the process instead of raising.
    """
    env = os.environ
    home = env.get("HADOOP_HOME", "")
    if home and not env.get("CLASSPATH"):
        hadoop = os.path.join(home, "bin", "hadoop")
        try:
            env["CLASSPATH"] = subprocess.run([hadoop, "classpath", "--glob"], check=True,
                                              capture_output=True, text=True,
                                              timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            logger.warning("`%s classpath --glob` failed: %s", hadoop, e)
    native = os.path.join(home, "lib", "native")
    if home and not env.get("ARROW_LIBHDFS_DIR") and os.path.exists(native + "/libhdfs.so"):
        env["ARROW_LIBHDFS_DIR"] = native
    java = shutil.which("java")
    if not env.get("JAVA_HOME") and java:
        env["JAVA_HOME"] = os.path.dirname(os.path.dirname(os.path.realpath(java)))

    missing = []
    libdir = env.get("ARROW_LIBHDFS_DIR")
    if not (os.path.exists(f"{libdir}/libhdfs.so") if libdir else ctypes.util.find_library("hdfs")):
        missing.append("libhdfs.so (Hadoop's native client: $HADOOP_HOME/lib/native, "
                       "or set ARROW_LIBHDFS_DIR to its directory)")
    if not env.get("CLASSPATH"):
        missing.append("CLASSPATH (the Hadoop jars: `$HADOOP_HOME/bin/hadoop classpath --glob`)")
    java_home = env.get("JAVA_HOME", "")
    if not any(os.path.exists(os.path.join(java_home, d, "libjvm.so")) for d in (
            "lib/server", "jre/lib/server", "jre/lib/amd64/server", "lib/amd64/server")):
        missing.append("JAVA_HOME (a Java installation with lib/server/libjvm.so)")
    if missing and not home:
        missing.insert(0, "HADOOP_HOME (a Hadoop installation; CLASSPATH and libhdfs.so are "
                          "found from it)")
    if missing:
        _, authority, path = _split(url)
        host = authority.partition(":")[0] or "namenode"
        raise StorageError(f"{url} needs libhdfs, which cannot work here; missing: "
                           + "; ".join(missing) + ". Without installing anything, read "
                           f"HDFS over HTTP instead: webhdfs://{host}:9870{path}")


@contextlib.contextmanager
def _storage_errors(doing: str, url: str) -> Iterator[None]:
    """Turn storage failures into :class:`StorageError` naming ``url`` and what to check.

    A missing path stays a :class:`FileNotFoundError`, and other errors telling
    what is wrong with a path stay as they are.
    """
    try:
        yield
    except (StorageError, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError):
        raise
    except OSError as e:
        if e.errno == errno.ENOTEMPTY:
            raise
        raise StorageError(f"{doing} {url} failed: {e}{_hint(url, str(e))}") from e
    except (pa.ArrowException, HdfsError, requests.RequestException) as e:
        raise StorageError(f"{doing} {url} failed: {e}{_hint(url, str(e))}") from e


def _hint(url: str, message: str) -> str:
    """What to check after a failure on ``url`` with error ``message``."""
    scheme = "file" if is_local(url) else _split(url)[0]
    if "ermission denied" in message and "HADOOP_USER_NAME" not in message \
            and scheme in ("hdfs", "viewfs", "webhdfs", "swebhdfs"):
        user = os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
        return (f"\nCheck the permissions of the path and its parents for user {user} "
                "(HADOOP_USER_NAME)")
    if scheme not in ("s3", "s3a"):
        return ""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if any(s in message for s in ("NETWORK_CONNECTION", "curlCode", "onnect", "resolve host")):
        where = f"the S3 endpoint {endpoint}" if endpoint else "AWS S3 (no AWS_ENDPOINT_URL set)"
        return (f"\nCannot reach {where}: set AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) to "
                "the S3 service's address, e.g. http://minio:9000, and check that it is up")
    if any(s in message for s in ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId",
                                  "SignatureDoesNotMatch", "403", "credentials")):
        return ("\nCheck the credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE), and the bucket's permissions")
    if "NoSuchBucket" in message or "ucket does not exist" in message:
        return f"\nThe bucket {_split(url)[1]!r} does not exist: create it first"
    return "\nCheck AWS_ENDPOINT_URL, AWS_REGION and the AWS credentials variables"
