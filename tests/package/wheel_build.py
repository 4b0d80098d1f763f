"""Build the sdist and wheel and install the wheel into a fresh venv, in the background.

Building and installing takes about 70 s, nearly all of it one process (pip unpacking
TensorFlow and pyspark from its cache) while the machine's other core idles. When the
session holds test_wheel.py, tests/conftest.py starts it with the session's first test, so
it runs beside the unit tests, and test_wheel.py's ``installed`` fixture waits for it.
Its processes are stopped by PID if the session ends first.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = os.path.join(ROOT, "docker", "install.sh")


def project_files() -> list[str]:
    """The project's files: tracked plus new ones not ignored (what a commit would hold)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))]


def clean_env() -> dict[str, str]:
    """The environment without anything that could put the source tree on sys.path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYSPARK_PYTHON",
                        "PYSPARK_DRIVER_PYTHON", "SPARK_HOME")}
    env["PIP_COMPILE"] = "0"  # byte-compile on first import instead (saves ~20 s here)
    env["PIP_ROOT_USER_ACTION"] = "ignore"  # CI runs as root
    return env


@dataclasses.dataclass
class Result:
    """What the build left for test_wheel.py."""

    venv: Path
    dist: Path
    log: str            # install.sh's output
    files: list[str]    # the project files built from
    failure: str = ""   # what went wrong, if something did
    times: dict[str, float] = dataclasses.field(default_factory=dict)


class WheelBuild:
    """``python -m build`` of a copy of the project, then docker/install.sh, in a thread."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stopped = False
        self._result: Result | None = None
        self._thread = threading.Thread(target=self._run, name="wheel-build", daemon=True)

    def start(self) -> "WheelBuild":
        self._thread.start()
        return self

    def result(self, timeout: float = 600) -> Result:
        """The build's result once it is done (``failure`` set if it failed)."""
        if not self._done.wait(timeout):
            self.stop()
            raise TimeoutError(f"the wheel build and install took over {timeout:.0f} s")
        assert self._result is not None
        return self._result

    def stop(self) -> None:
        """Kill the running build or install process, by PID."""
        with self._lock:
            self._stopped = True
            if self._proc is not None and self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._thread.join(30)

    def _step(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        with self._lock:
            if self._stopped:
                raise RuntimeError("stopped")
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, env=clean_env(), start_new_session=True,
                                          **kw)
        out, _ = self._proc.communicate()
        return subprocess.CompletedProcess(argv, self._proc.returncode, out)

    def _run(self) -> None:
        src, dist, venv = self.base / "src", self.base / "dist", self.base / "venv"
        result = Result(venv, dist, "", [])
        try:
            result.files = project_files()
            for rel in result.files:
                os.makedirs(src / os.path.dirname(rel), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, rel), src / rel)
            t0 = time.monotonic()
            build = self._step([sys.executable, "-m", "build", "--outdir", str(dist), str(src)])
            result.times["build"] = time.monotonic() - t0
            if build.returncode:
                result.failure = "python -m build failed:\n" + build.stdout[-4000:]
                return
            wheels = list(dist.glob("sparktf-*.whl"))
            if len(wheels) != 1:
                result.failure = f"expected one wheel in {dist}: {os.listdir(dist)}"
                return
            t0 = time.monotonic()
            install = self._step(["sh", INSTALL, str(venv), str(wheels[0])], cwd=str(self.base))
            result.times["install"] = time.monotonic() - t0
            result.log = install.stdout
            if install.returncode:
                result.failure = "docker/install.sh failed:\n" + install.stdout[-4000:]
        except Exception as e:  # noqa: BLE001 - reported by the test that waits for it
            result.failure = f"{type(e).__name__}: {e}"
        finally:
            self._result = result
            self._done.set()


#: Where tests/conftest.py keeps the session's build for test_wheel.py.
STASH_KEY = pytest.StashKey[WheelBuild]()
