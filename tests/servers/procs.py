"""The live processes of this machine, for the tests' checks that nothing is left behind."""

from __future__ import annotations

import os
from typing import Callable


def live_processes(match: Callable[[str], bool]) -> list[tuple[int, str]]:
    """``(pid, command line)`` of every live (non-zombie) process whose command matches."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and int(pid) != os.getpid() and match(cmd):
            found.append((int(pid), cmd.strip()))
    return found
