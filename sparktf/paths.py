"""Path resolution as TensorFlowOnSpark's ``TFNode.hdfs_path`` (pure logic)."""

from __future__ import annotations

import getpass
import os
import posixpath

#: The URL schemes :mod:`sparktf.fs` opens (plain paths are local).
FS_SCHEMES = ("file", "hdfs", "viewfs", "webhdfs", "swebhdfs", "s3", "s3a")
#: Schemes returned unchanged by :func:`absolute_path`: those of :mod:`sparktf.fs`
#: and the other Hadoop file systems a Spark application may name.
SCHEMES = FS_SCHEMES + ("s3n", "gs", "abfs", "abfss", "wasb", "wasbs", "adl", "oss", "swift")
_HDFS_LIKE = ("hdfs", "viewfs", "webhdfs")


def absolute_path(path: str, default_fs: str, working_dir: str, user: str | None = None) -> str:
    """Turn ``path`` into a fully qualified URL.

    A path with a known scheme is returned unchanged; ``/abs/path`` becomes
    ``default_fs + path``; a relative path becomes ``default_fs/user/<user>/path``
    on HDFS-like file systems and ``file://<working_dir>/path`` locally.
    """
    scheme = path.split("://", 1)[0] if "://" in path else ""
    if scheme in SCHEMES:
        return path
    if scheme:
        raise ValueError(f"unknown file system scheme {scheme!r} in {path!r}; "
                         f"known: {', '.join(SCHEMES)}")
    fs_scheme, sep, rest = (default_fs or "file://").partition("://")
    # Trailing slashes go, the scheme's "//" stays: "hdfs://" + "/a" is "hdfs:///a", as in TFoS.
    fs = fs_scheme + sep + rest.rstrip("/") if sep else fs_scheme.rstrip("/")
    if path.startswith("/"):
        return fs + path
    if fs.split("://", 1)[0] in _HDFS_LIKE:
        return f"{fs}/user/{user or getpass.getuser()}/{path}"
    return "file://" + posixpath.join(working_dir, path)


def is_local(url: str) -> bool:
    """Whether ``url`` is a plain path or a ``file://`` URL (the one place that decides)."""
    return "://" not in url or url.startswith("file://")


def local_path(path: str) -> str:
    """A local file system path from a plain path or a ``file://`` URL."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if not is_local(path):
        raise ValueError(f"{path!r} is not on the local file system")
    return os.path.abspath(path)
