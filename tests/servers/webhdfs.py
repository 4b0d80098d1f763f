"""A small WebHDFS REST server over a local directory, for tests.

It follows the Hadoop WebHDFS REST API (``/webhdfs/v1/<path>?op=...``) closely
enough for the ``hdfs`` package's client: CREATE in two steps (the "namenode"
answers 307 with the Location of a "datanode" on the same server, which takes
the data and answers 201), OPEN redirected the same way and honouring
``offset`` and ``length``, GETFILESTATUS, LISTSTATUS, GETCONTENTSUMMARY,
MKDIRS, RENAME, DELETE, and errors as Hadoop's ``RemoteException`` JSON.

It counts the OPEN requests and the bytes sent per path (``server.opened``,
``server.bytes_sent``, ``server.reads``), also served as JSON at ``GET /_stats``
so that other processes can read them.

Run as ``python tests/servers/webhdfs.py ROOT``: prints the port, then serves
until killed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

PREFIX = "/webhdfs/v1"
PARTIAL = ".__webhdfs_partial__"   # suffix of a file being created, hidden from listings
OWNER = "tester"
#: Hadoop's status code per exception class, as its WebHDFS ExceptionHandler maps them.
STATUS = {"FileNotFoundException": 404, "FileAlreadyExistsException": 403,
          "PathIsNotEmptyDirectoryException": 403, "IOException": 403,
          "IllegalArgumentException": 400, "UnsupportedOperationException": 400}


class HadoopError(Exception):
    def __init__(self, exception: str, message: str) -> None:
        super().__init__(message)
        self.exception = exception


class WebHdfsServer(ThreadingHTTPServer):
    """WebHDFS over the directory ``root``, on 127.0.0.1 and a free port."""

    daemon_threads = True

    def __init__(self, root: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = os.path.realpath(root)
        self.port = self.server_address[1]
        self.url = f"webhdfs://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.opened: dict[str, int] = {}       # path -> OPEN requests served
        self.bytes_sent: dict[str, int] = {}   # path -> bytes sent by OPEN
        self.reads: list[tuple[str, int, int | None]] = []   # (path, offset, length)
        self._thread: threading.Thread | None = None

    def start(self) -> "WebHdfsServer":
        self._thread = threading.Thread(target=self.serve_forever, name="webhdfs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def stats(self) -> dict:
        with self.lock:
            return {"opened": dict(self.opened), "bytes_sent": dict(self.bytes_sent),
                    "reads": list(self.reads)}

    def local(self, path: str) -> str:
        """The local file of HDFS ``path``, which must stay inside the root."""
        full = os.path.normpath(os.path.join(self.root, path.lstrip("/")))
        if full != self.root and not full.startswith(self.root + os.sep):
            raise HadoopError("IllegalArgumentException", f"invalid path {path}")
        return full


def file_status(full: str, suffix: str) -> dict:
    st = os.stat(full)
    is_dir = os.path.isdir(full)
    return {"accessTime": 0 if is_dir else int(st.st_atime * 1000),
            "blockSize": 0 if is_dir else 134217728, "childrenNum": 0,
            "fileId": st.st_ino, "group": "supergroup", "length": 0 if is_dir else st.st_size,
            "modificationTime": int(st.st_mtime * 1000), "owner": OWNER, "pathSuffix": suffix,
            "permission": "755" if is_dir else "644", "replication": 0 if is_dir else 1,
            "storagePolicy": 0, "type": "DIRECTORY" if is_dir else "FILE"}


class _Handler(BaseHTTPRequestHandler):
    server: WebHdfsServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body go in separate writes

    def log_message(self, format: str, *args) -> None:   # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        op = self.params.get("op", "").upper()
        try:
            if url.path == "/_stats":
                return self._json(200, self.server.stats())
            if not url.path.startswith(PREFIX):
                raise HadoopError("IllegalArgumentException", f"not a WebHDFS path: {url.path}")
            self.hdfs_path = "/" + unquote(url.path[len(PREFIX):]).strip("/")
            self.full = self.server.local(self.hdfs_path)
            handler = getattr(self, f"_{method}_{op}", None)
            if handler is None:
                raise HadoopError("UnsupportedOperationException", f"{method} op={op} unsupported")
            handler()
        except HadoopError as e:
            self._drain()
            self._json(STATUS.get(e.exception, 500), {"RemoteException": {
                "exception": e.exception, "javaClassName": f"java.io.{e.exception}",
                "message": str(e)}})

    def _json(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self) -> None:
        """The namenode's answer: go to the datanode (this same server)."""
        self._drain()
        query = urlencode({**self.params, "datanode": "true"})
        location = f"http://127.0.0.1:{self.server.port}{PREFIX}{quote(self.hdfs_path)}?{query}"
        self.send_response(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body_chunks(self):
        """The request body, in chunks, plain or with chunked transfer encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk

    def _flag(self, name: str) -> bool:
        """A boolean parameter; Hadoop accepts any case (the hdfs client sends ``True``)."""
        return self.params.get(name, "false").lower() == "true"

    def _drain(self) -> None:
        for _ in self._body_chunks():
            pass

    def _status_or_404(self) -> None:
        if not os.path.exists(self.full):
            raise HadoopError("FileNotFoundException",
                              f"File does not exist: {self.hdfs_path}")

    # --- operations

    def _GET_GETFILESTATUS(self) -> None:
        self._status_or_404()
        self._json(200, {"FileStatus": file_status(self.full, "")})

    def _GET_LISTSTATUS(self) -> None:
        self._status_or_404()
        if os.path.isdir(self.full):
            entries = [file_status(os.path.join(self.full, name), name)
                       for name in sorted(os.listdir(self.full)) if not name.endswith(PARTIAL)]
        else:
            entries = [file_status(self.full, "")]
        self._json(200, {"FileStatuses": {"FileStatus": entries}})

    def _GET_GETCONTENTSUMMARY(self) -> None:
        self._status_or_404()
        dirs = files = length = 0
        for _, dirnames, filenames in os.walk(self.full):
            dirs += 1
            for name in filenames:
                files += 1
                length += os.path.getsize(os.path.join(_, name))
        self._json(200, {"ContentSummary": {
            "directoryCount": dirs, "fileCount": files, "length": length, "quota": -1,
            "spaceConsumed": length, "spaceQuota": -1}})

    def _GET_GETHOMEDIRECTORY(self) -> None:
        self._json(200, {"Path": f"/user/{self.params.get('user.name', OWNER)}"})

    def _GET_OPEN(self) -> None:
        self._status_or_404()
        if not os.path.isfile(self.full):
            raise HadoopError("FileNotFoundException", f"Path is not a file: {self.hdfs_path}")
        if not self._flag("datanode"):
            return self._redirect()
        total = os.path.getsize(self.full)
        offset = int(self.params.get("offset", 0))
        length = int(self.params["length"]) if "length" in self.params else None
        if offset < 0 or offset > total:
            raise HadoopError("IOException", f"Offset={offset} out of the range [0, {total})")
        count = total - offset if length is None else max(0, min(length, total - offset))
        with self.server.lock:
            self.server.opened[self.hdfs_path] = self.server.opened.get(self.hdfs_path, 0) + 1
            self.server.reads.append((self.hdfs_path, offset, length))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(count))
        self.end_headers()
        sent = 0
        try:
            with open(self.full, "rb") as f:
                f.seek(offset)
                while sent < count:
                    chunk = f.read(min(count - sent, 1 << 16))
                    self.wfile.write(chunk)
                    sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True   # the reader stopped early: fine
        finally:
            with self.server.lock:
                self.server.bytes_sent[self.hdfs_path] = (
                    self.server.bytes_sent.get(self.hdfs_path, 0) + sent)

    def _PUT_CREATE(self) -> None:
        if not self._flag("datanode"):
            if os.path.isdir(self.full):
                raise HadoopError("FileAlreadyExistsException", f"{self.hdfs_path} is a directory")
            if os.path.exists(self.full) and not self._flag("overwrite"):
                raise HadoopError("FileAlreadyExistsException",
                                  f"{self.hdfs_path} for client already exists")
            return self._redirect()
        os.makedirs(os.path.dirname(self.full), exist_ok=True)
        partial = self.full + PARTIAL
        with open(partial, "wb") as f:
            for chunk in self._body_chunks():
                f.write(chunk)
        os.replace(partial, self.full)
        self.send_response(201)
        self.send_header("Location", f"hdfs://127.0.0.1:{self.server.port}{self.hdfs_path}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _PUT_MKDIRS(self) -> None:
        if os.path.isfile(self.full):
            raise HadoopError("FileAlreadyExistsException", f"{self.hdfs_path} is a file")
        os.makedirs(self.full, exist_ok=True)
        self._json(200, {"boolean": True})

    def _PUT_RENAME(self) -> None:
        self._status_or_404()
        dest = self.server.local(unquote(self.params.get("destination", "")))
        if os.path.isdir(dest):   # as HDFS: into an existing directory
            dest = os.path.join(dest, os.path.basename(self.full))
        if os.path.exists(dest) or not os.path.isdir(os.path.dirname(dest)):
            return self._json(200, {"boolean": False})
        os.rename(self.full, dest)
        self._json(200, {"boolean": True})

    def _DELETE_DELETE(self) -> None:
        if not os.path.exists(self.full):
            return self._json(200, {"boolean": False})
        if os.path.isdir(self.full):
            if os.listdir(self.full) and not self._flag("recursive"):
                raise HadoopError("PathIsNotEmptyDirectoryException",
                                  f"`{self.hdfs_path} is non empty': Directory is not empty")
            shutil.rmtree(self.full)
        else:
            os.remove(self.full)
        self._json(200, {"boolean": True})


def main() -> None:
    server = WebHdfsServer(sys.argv[1])
    print(server.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
