"""A pyarrow file system over ``hdfs-native``, for ``hdfs://`` and ``viewfs://`` URLs.

``hdfs-native`` speaks HDFS's own RPC and data transfer protocols from Rust: no
JVM, no libhdfs, no ``CLASSPATH``, and it reads ``HADOOP_CONF_DIR`` (name
services with NameNode HA, viewfs mount tables, ``fs.defaultFS``) like a Hadoop
client.  :mod:`sparktf.fs` wraps :class:`HdfsNativeHandler` in a
:class:`pyarrow.fs.PyFileSystem`.

Its client retries a NameNode that does not answer for about three minutes by
default; the handler caps the failover attempts (:data:`FAST_FAIL`, which take
precedence over the same keys in ``hdfs-site.xml``), so an unreachable NameNode
raises :class:`~sparktf.errors.StorageError` in seconds.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import shutil

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import StorageError
from .webhdfs import SeekableReader

logger = logging.getLogger(__name__)

#: Client settings making an unreachable NameNode fail within seconds (hdfs-native's
#: defaults retry for about three minutes); HA failover still gets three attempts.
FAST_FAIL = {"dfs.client.failover.max.attempts": "3",
             "dfs.client.failover.sleep.base.millis": "200",
             "dfs.client.failover.sleep.max.millis": "1000"}
_CHUNK = 1 << 20
_NOT_FOUND = pafs.FileType.NotFound
_DIRECTORY = pafs.FileType.Directory


def available() -> bool:
    """Whether the ``hdfs-native`` package is installed."""
    try:
        import hdfs_native  # noqa: F401
    except ImportError:
        return False
    return True


class HdfsNativeHandler(pafs.FileSystemHandler):
    """HDFS through ``hdfs_native.Client`` for one file system URL (``hdfs://nn:8020``).

    ``user`` (``HADOOP_USER_NAME``, simple authentication) and ``conf_dir``
    (``HADOOP_CONF_DIR``) are part of the handler so that pickled copies sent to
    other processes connect the same way.
    """

    def __init__(self, url: str, user: str | None, conf_dir: str | None) -> None:
        self.url, self.user, self.conf_dir = url, user, conf_dir   # url: hdfs://AUTHORITY
        self._client = None

    def __reduce__(self):
        return HdfsNativeHandler, (self.url, self.user, self.conf_dir)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HdfsNativeHandler) and self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash(self.__reduce__()[1])

    @property
    def client(self):
        if self._client is None:
            import hdfs_native

            saved = os.environ.get("HADOOP_USER_NAME")
            try:   # the client reads the user name when it is created
                if self.user:
                    os.environ["HADOOP_USER_NAME"] = self.user
                # hdfs:// without a NameNode: the client uses fs.defaultFS
                url = None if self.url.endswith("://") else self.url
                self._client = self.call(self.url, hdfs_native.Client, url, dict(FAST_FAIL),
                                         self.conf_dir)
            finally:
                if self.user:
                    if saved is None:
                        os.environ.pop("HADOOP_USER_NAME", None)
                    else:
                        os.environ["HADOOP_USER_NAME"] = saved
        return self._client

    def call(self, path: str, method, *args, **kwargs):
        """``method(*args, **kwargs)`` with hdfs-native's errors turned into Python ones."""
        try:
            return method(*args, **kwargs)
        except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                StorageError):
            raise
        except RuntimeError as e:   # RPCError(java class, message), InvalidArgument(...)
            raise self._translate(path, e) from e
        except OSError as e:        # cannot connect, connection lost
            raise StorageError(
                f"cannot reach the HDFS NameNode of {self.url} (path {path}): {e}. Check the "
                "NameNode address (host and RPC port, dfs.namenode.rpc-address: 8020 by "
                "default) and, for a name service, that HADOOP_CONF_DIR "
                f"({self.conf_dir or 'not set'}) holds its hdfs-site.xml") from e

    def _translate(self, path: str, error: RuntimeError) -> Exception:
        text = str(error)
        first = text.split("\\n", 1)[0].split("\n", 1)[0]
        if "AccessControlException" in text or "Permission denied" in text:
            who = self.user or os.environ.get("HADOOP_USER_NAME") or "the current user"
            return PermissionError(errno.EACCES, f"{first} (HDFS {self.url}, path {path}; "
                                   f"as {who}: check the path's permissions or "
                                   "HADOOP_USER_NAME)")
        if "FileNotFoundException" in text:
            return FileNotFoundError(errno.ENOENT, first, path)
        if "FileAlreadyExistsException" in text:
            return FileExistsError(errno.EEXIST, first, path)
        if "PathIsNotEmptyDirectoryException" in text:
            return OSError(errno.ENOTEMPTY, first, path)
        if "defaultFS" in text:
            return StorageError(f"{self.url} names no NameNode and no fs.defaultFS was found "
                                f"(HADOOP_CONF_DIR: {self.conf_dir or 'not set'}): write "
                                "hdfs://NAMENODE:8020/PATH or point HADOOP_CONF_DIR at the "
                                "directory holding core-site.xml")
        return OSError(f"{first} (HDFS {self.url}, path {path})")

    # ------------------------------------------------------------------ pyarrow handler API

    def status(self, path: str):
        """hdfs-native's FileStatus of ``path``, ``None`` if it does not exist."""
        try:
            return self.call(path, self.client.get_file_info, path)
        except FileNotFoundError:
            return None

    @staticmethod
    def file_info(path: str, status) -> pafs.FileInfo:
        if status is None:
            return pafs.FileInfo(path, _NOT_FOUND)
        mtime = status.modification_time * 1_000_000
        if status.isdir:
            return pafs.FileInfo(path, _DIRECTORY, mtime_ns=mtime)
        return pafs.FileInfo(path, pafs.FileType.File, size=status.length, mtime_ns=mtime)

    def get_type_name(self) -> str:
        return "hdfs-native"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self.file_info(p, self.status(p)) for p in paths]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = selector.base_dir.rstrip("/") or "/"
        try:
            entries = list(self.call(base, lambda: list(self.client.list_status(
                base, selector.recursive))))
        except FileNotFoundError:
            if selector.allow_not_found:
                return []
            raise
        infos = []
        for status in entries:
            child = status.path if status.path.startswith("/") else posixpath.join(
                base, status.path)
            infos.append(self.file_info(child, status))
        return infos

    def create_dir(self, path: str, recursive: bool) -> None:
        self.call(path, self.client.mkdirs, path, 0o755, recursive)

    def delete_dir(self, path: str) -> None:
        status = self.status(path)
        if status is None or not status.isdir:
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        self.call(path, self.client.delete, path, True)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        selector = pafs.FileSelector(path, allow_not_found=missing_dir_ok)
        for info in self.get_file_info_selector(selector):
            self.call(info.path, self.client.delete, info.path, True)

    def delete_root_dir_contents(self) -> None:
        self.delete_dir_contents("/")

    def delete_file(self, path: str) -> None:
        status = self.status(path)
        if status is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        if status.isdir:
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        self.call(path, self.client.delete, path, False)

    def move(self, src: str, dest: str) -> None:
        """Rename; a file at ``dest`` is replaced, a directory there is an error."""
        status = self.status(dest)
        if status is not None and status.isdir:
            raise FileExistsError(errno.EEXIST, "destination is a directory", dest)
        self.call(src, self.client.rename, src, dest, status is not None)

    def copy_file(self, src: str, dest: str) -> None:
        with self.open_input_stream(src) as fin, self.open_output_stream(dest, None) as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)

    def open_input_file(self, path: str) -> pa.PythonFile:
        status = self.status(path)
        if status is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        if status.isdir:
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        reader = self.call(path, self.client.read, path)
        return pa.PythonFile(_Reader(self, path, reader), mode="r")

    def open_input_stream(self, path: str) -> pa.PythonFile:
        return self.open_input_file(path)

    def open_output_stream(self, path: str, metadata) -> pa.PythonFile:
        import hdfs_native

        # Parents as mkdir creates them (0755 less the umask), not as hdfs-native's
        # create_parent would: those were writable by every user.
        self.call(path, self.client.mkdirs, posixpath.dirname(path) or "/", 0o755, True)
        options = hdfs_native.WriteOptions(overwrite=True, create_parent=False)
        writer = self.call(path, self.client.create, path, options)
        return pa.PythonFile(_Writer(self, path, writer), mode="w")

    def open_append_stream(self, path: str, metadata) -> pa.PythonFile:
        return pa.PythonFile(_Writer(self, path, self.call(path, self.client.append, path)),
                             mode="w")


class _Reader(SeekableReader):
    """A seekable hdfs-native reader; each read fetches just the bytes asked for."""

    def __init__(self, handler: HdfsNativeHandler, path: str, reader) -> None:
        super().__init__()
        self._handler, self._path, self._reader = handler, path, reader
        self._size = len(reader)
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        length = self._size - self._pos if size is None or size < 0 else size
        length = max(0, min(length, self._size - self._pos))
        if not length:
            return b""
        data = self._handler.call(self._path, self._reader.read_range, self._pos, length)
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)


class _Writer:
    """An hdfs-native writer; the file is complete (and its lease released) on close."""

    def __init__(self, handler: HdfsNativeHandler, path: str, writer) -> None:
        self._handler, self._path, self._writer = handler, path, writer
        self._pos = 0
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        written = self._handler.call(self._path, self._writer.write, data)
        self._pos += len(memoryview(data))
        return written

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._handler.call(self._path, self._writer.close)
