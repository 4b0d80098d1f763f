"""Process helpers: watch a PID without polling, find the executor JVM, stop a group."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
from typing import Callable


def on_exit(pid: int, callback: Callable[[], None], name: str = "sparktf-watch") -> None:
    """Call ``callback`` from a daemon thread as soon as process ``pid`` ends.

    Uses a pidfd (Linux >= 5.3), which becomes readable when the process
    exits: no polling, and no confusion with a later process reusing the PID.
    If ``pid`` is already gone the callback runs at once.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        threading.Thread(target=callback, name=name, daemon=True).start()
        return

    def wait() -> None:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
        callback()

    threading.Thread(target=wait, name=name, daemon=True).start()


def _stat(pid: int) -> tuple[str, int]:
    """(command name, parent PID) of ``pid`` from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    name = data[data.index("(") + 1:data.rindex(")")]
    ppid = int(data[data.rindex(")") + 2:].split()[1])
    return name, ppid


def executor_jvm_pid(start: int | None = None) -> int:
    """PID of the nearest ancestor JVM (the Spark executor), else the parent."""
    pid = start or os.getppid()
    try:
        while pid > 1:
            name, ppid = _stat(pid)
            if name == "java":
                return pid
            pid = ppid
    except (OSError, ValueError):
        pass
    return os.getppid()


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> int:
    """SIGTERM the process group led by ``proc``, SIGKILL it after ``grace`` s; return the code."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def kill_group(pgid: int) -> None:
    """SIGKILL every process of group ``pgid`` that is still there."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: str, max_lines: int = 50, max_bytes: int = 16384) -> str:
    """The last lines of a text file (empty if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-max_lines:])
