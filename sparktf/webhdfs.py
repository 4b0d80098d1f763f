"""A pyarrow file system over the WebHDFS REST API, for ``webhdfs://`` URLs.

WebHDFS needs no Hadoop installation on the client (the ``hdfs`` package's
client speaks HTTP to the NameNode, which redirects to the DataNodes), which
makes it the storage path that works on YARN, CDH, HDP and EMR as they come.
:mod:`sparktf.fs` wraps :class:`WebHdfsHandler` in a
:class:`pyarrow.fs.PyFileSystem`.
"""

from __future__ import annotations

import errno
import io
import logging
import posixpath
import shutil
import tempfile

import hdfs
import pyarrow as pa
import pyarrow.fs as pafs
import requests
from hdfs.util import HdfsError

from .errors import StorageError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0   # seconds to open a connection: an unreachable server fails fast
_READ_TIMEOUT = 120.0    # seconds without data from a WebHDFS server before giving up
_CHUNK = 1 << 20         # bytes per read of a stream
_MIN_WINDOW = 64 << 10   # first read-ahead after a seek (a Parquet footer is small)
_MAX_WINDOW = 16 << 20   # read-ahead cap while reading sequentially
_NOT_FOUND = pafs.FileType.NotFound
_DIRECTORY = pafs.FileType.Directory


class WebHdfsHandler(pafs.FileSystemHandler):
    """A pyarrow file system over the WebHDFS REST API (``hdfs.InsecureClient``).

    Wrap it in :class:`pyarrow.fs.PyFileSystem`.  Files open for random access
    read byte ranges (OPEN with offset and length), so Parquet readers fetch a
    footer and the row groups they need, not whole files.  Written files are
    buffered in a local temporary file and uploaded when closed.
    """

    def __init__(self, base_url: str, user: str) -> None:
        self.base_url = base_url
        self.user = user
        self._client: hdfs.InsecureClient | None = None

    def __reduce__(self):
        return WebHdfsHandler, (self.base_url, self.user)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, WebHdfsHandler)
                and (self.base_url, self.user) == (other.base_url, other.user))

    def __hash__(self) -> int:
        return hash((self.base_url, self.user))

    @property
    def client(self) -> hdfs.InsecureClient:
        if self._client is None:
            self._client = hdfs.InsecureClient(self.base_url, user=self.user,
                                               timeout=(CONNECT_TIMEOUT, _READ_TIMEOUT))
        return self._client

    def call(self, path: str, method, *args, **kwargs):
        """``method(*args, **kwargs)`` with WebHDFS errors turned into Python ones."""
        try:
            return method(*args, **kwargs)
        except HdfsError as e:
            kind = {"FileNotFoundException": FileNotFoundError,
                    "FileAlreadyExistsException": FileExistsError,
                    "AccessControlException": PermissionError,
                    "ParentNotDirectoryException": NotADirectoryError}.get(e.exception, OSError)
            raise kind(f"{e} (WebHDFS {self.base_url}, path {path})") from e
        except requests.RequestException as e:
            raise StorageError(
                f"cannot reach the WebHDFS server at {self.base_url} (path {path}): {e}. Check "
                "the address in the webhdfs:// URL: the namenode's host and HTTP port "
                "(dfs.namenode.http-address: 9870 by default, 50070 on Hadoop 2)") from e

    def status(self, path: str) -> dict | None:
        """The FileStatus of ``path``, ``None`` if it does not exist."""
        try:
            return self.call(path, self.client.status, path)
        except FileNotFoundError:
            return None

    @staticmethod
    def file_info(path: str, status: dict | None) -> pafs.FileInfo:
        if status is None:
            return pafs.FileInfo(path, _NOT_FOUND)
        if status["type"] == "DIRECTORY":
            return pafs.FileInfo(path, _DIRECTORY,
                                 mtime_ns=status["modificationTime"] * 1_000_000)
        return pafs.FileInfo(path, pafs.FileType.File, size=status["length"],
                             mtime_ns=status["modificationTime"] * 1_000_000)

    def get_type_name(self) -> str:
        return "webhdfs"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self.file_info(p, self.status(p)) for p in paths]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = selector.base_dir.rstrip("/") or "/"
        try:
            entries = self.call(base, self.client.list, base, status=True)
        except FileNotFoundError:
            if selector.allow_not_found:
                return []
            raise
        infos = []
        for name, status in entries:
            child = posixpath.join(base, name)
            infos.append(self.file_info(child, status))
            if selector.recursive and status["type"] == "DIRECTORY":
                infos += self.get_file_info_selector(pafs.FileSelector(child, recursive=True))
        return infos

    def create_dir(self, path: str, recursive: bool) -> None:
        parent = posixpath.dirname(path)
        if not recursive and (self.status(parent) or {}).get("type") != "DIRECTORY":
            raise FileNotFoundError(errno.ENOENT, "parent directory does not exist", parent)
        self.call(path, self.client.makedirs, path)

    def delete_dir(self, path: str) -> None:
        if (self.status(path) or {}).get("type") != "DIRECTORY":
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        self.call(path, self.client.delete, path, recursive=True)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        selector = pafs.FileSelector(path, allow_not_found=missing_dir_ok)
        for info in self.get_file_info_selector(selector):
            self.call(info.path, self.client.delete, info.path, recursive=True)

    def delete_root_dir_contents(self) -> None:
        self.delete_dir_contents("/")

    def delete_file(self, path: str) -> None:
        status = self.status(path)
        if status is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        if status["type"] != "FILE":
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        self.call(path, self.client.delete, path)

    def move(self, src: str, dest: str) -> None:
        """Rename; a file at ``dest`` is replaced (deleted first: WebHDFS cannot overwrite)."""
        status = self.status(dest)
        if status and status["type"] == "DIRECTORY":
            raise FileExistsError(errno.EEXIST, "destination is a directory", dest)
        if status:
            self.call(dest, self.client.delete, dest)
        self.call(src, self.client.rename, src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self.open_input_stream(src) as fin, self.open_output_stream(dest, None) as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)

    def open_input_file(self, path: str) -> pa.PythonFile:
        status = self.status(path)
        if status is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        if status["type"] != "FILE":
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        return pa.PythonFile(_WebHdfsReader(self, path, status["length"]), mode="r")

    def open_input_stream(self, path: str) -> pa.PythonFile:
        return self.open_input_file(path)

    def open_output_stream(self, path: str, metadata) -> pa.PythonFile:
        return pa.PythonFile(_WebHdfsWriter(self, path), mode="w")

    def open_append_stream(self, path: str, metadata) -> pa.PythonFile:
        raise NotImplementedError("appending over WebHDFS is not supported")


class SeekableReader(io.RawIOBase):
    """What a ranged reader of a remote file shares: a position within a known size.

    Subclasses set ``_pos`` and ``_size`` and implement the reads.
    """

    _pos = 0
    _size = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos


class _WebHdfsReader(SeekableReader):
    """Reads a WebHDFS file by byte ranges (OPEN with offset and length).

    After a seek the range requested is small (64 KiB, or the read's size); while
    reads go on sequentially it doubles up to 16 MiB, so scanning a file takes
    few requests.  The response is streamed in chunks, never held whole.
    """

    def __init__(self, handler: WebHdfsHandler, path: str, length: int) -> None:
        super().__init__()
        self._handler, self._path, self._size = handler, path, length
        self._pos = 0
        self._response: requests.Response | None = None
        self._response_pos = self._response_end = 0
        self._window = _MIN_WINDOW

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        wanted = max(0, min(len(view), self._size - self._pos))
        done = 0
        while done < wanted:
            if self._response is None or self._response_pos != self._pos \
                    or self._response_pos >= self._response_end:
                self._request(wanted - done)
            step = min(wanted - done, self._response_end - self._response_pos, _CHUNK)
            data = self._response.raw.read(step)
            if not data:
                raise OSError(f"WebHDFS {self._handler.base_url} ended {self._path} early "
                              f"at byte {self._pos} of {self._size}")
            view[done:done + len(data)] = data
            done += len(data)
            self._pos += len(data)
            self._response_pos += len(data)
        return done

    def _request(self, needed: int) -> None:
        sequential = self._response is not None and self._response_pos == self._pos
        self._window = min(2 * self._window, _MAX_WINDOW) if sequential else _MIN_WINDOW
        self._drop_response()
        length = min(max(needed, self._window), self._size - self._pos)
        client = self._handler.client
        self._response = self._handler.call(self._path, client._open, self._path,
                                            offset=self._pos, length=length)
        self._response_pos, self._response_end = self._pos, self._pos + length

    def _drop_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self._drop_response()
        super().close()


class _WebHdfsWriter:
    """Buffers written bytes in a local temporary file and uploads them on close.

    The upload is WebHDFS's two-step CREATE, so the file appears only once whole.
    Dropping the writer without closing it uploads nothing.
    """

    def __init__(self, handler: WebHdfsHandler, path: str) -> None:
        self._handler, self._path = handler, path
        self._buffer = tempfile.TemporaryFile(prefix="sparktf-webhdfs-")
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._buffer.write(data)

    def tell(self) -> int:
        return self._buffer.tell()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._buffer.seek(0)
            client = self._handler.client
            # Parents as MKDIRS creates them (0755 less the umask): CREATE would make
            # missing parents writable by every user.
            parent = posixpath.dirname(self._path) or "/"
            self._handler.call(parent, client.makedirs, parent)
            self._handler.call(self._path, client.write, self._path, data=self._buffer,
                               overwrite=True)
        finally:
            self._buffer.close()
