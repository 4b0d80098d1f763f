"""The built package, as a user gets it: sdist and wheel, installed into a fresh venv outside
the source tree by docker/install.sh (the Dockerfile's install steps), then a smoke job.

A file missing from the wheel, a dependency conflict, a pyspark warning at import, or a job
that imports sparktf from the source tree instead of the venv fails here.  Installing uses
pip's cache (the main venv's install fills it); nothing is written into the source tree: the
build runs on a copy of the project's files (``git ls-files``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = os.path.join(ROOT, "docker", "install.sh")
# pip's resolver reports conflicts with these; Python prints a warning as "<Category>Warning:".
PROBLEM_WORDS = ("conflict", "incompatible", "ERROR:", "Warning:")


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


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, dist dir, install log, files built from): the wheel built and installed."""
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    files = project_files()  # once: others may add files to the tree meanwhile
    for rel in files:
        os.makedirs(src / os.path.dirname(rel), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), src / rel)
    times = {}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(src)],
                   check=True, capture_output=True, env=clean_env())
    times["build"] = time.monotonic() - t0
    wheels = list(dist.glob("sparktf-*.whl"))
    assert len(wheels) == 1 and len(list(dist.glob("sparktf-*.tar.gz"))) == 1, os.listdir(dist)
    t0 = time.monotonic()
    proc = subprocess.run(["sh", INSTALL, str(venv), str(wheels[0])], cwd=str(base),
                          capture_output=True, text=True, env=clean_env())
    times["install"] = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    print(f"wheel build {times['build']:.1f}s, install.sh {times['install']:.1f}s")
    return venv, dist, log, files


def test_wheel_and_sdist_hold_every_module(installed):
    _, dist, _, files = installed
    sources = {p for p in files if p.startswith("sparktf/") and p.endswith(".py")}
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    with tarfile.open(next(dist.glob("*.tar.gz"))) as t:
        top = t.getnames()[0].split("/")[0]
        in_sdist = {n[len(top) + 1:] for n in t.getnames()}
    assert sources | {"pyproject.toml", "setup.py", "README.md"} <= in_sdist
    import sparktf
    assert f"\nVersion: {sparktf.__version__}\n" in meta
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    assert any(r.startswith("Requires-Dist: google-crc32c") for r in requires), requires
    assert any(r.startswith("Requires-Dist: pandas") and "<3" in r for r in requires), requires


def test_install_prints_no_conflict_and_import_no_warning(installed):
    venv, _, log, _ = installed
    lines = [line for line in log.splitlines()
             if any(w in line for w in PROBLEM_WORDS)]
    assert not lines, "\n".join(lines)
    assert "No broken requirements found." in log  # install.sh ran pip check
    assert "sparktf 0.1.0 pyspark 4.3.0 tensorflow 2.21.0" in log  # the -W error import ran
    # The guard would see pyspark's warning: a pandas that reports 3.0 makes it warn.
    probe = ("import warnings, pandas; pandas.__version__ = '3.0.0'\n"
             "from pyspark.sql.pandas.utils import require_minimum_pandas_version as r\n"
             "with warnings.catch_warnings(record=True) as w:\n"
             "    warnings.simplefilter('always'); r()\n"
             "print([str(x.message) for x in w])")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd="/", check=True,
                         capture_output=True, text=True, env=clean_env()).stdout
    assert "does not yet fully support pandas >= 3.0.0" in out


@pytest.mark.integration
def test_smoke_job_runs_from_the_installed_wheel(installed, tmp_path):
    venv, _, _, _ = installed
    job = tmp_path / "smoke_job.py"
    shutil.copy(os.path.join(ROOT, "tests", "package", "smoke_job.py"), job)
    t0 = time.monotonic()
    proc = subprocess.run([str(venv / "bin" / "python"), str(job), ROOT], cwd=str(tmp_path),
                          capture_output=True, text=True, env=clean_env(), timeout=280)
    took = time.monotonic() - t0
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    site = os.path.realpath(str(venv))
    assert report["driver"]["file"].startswith(site)
    assert all(n["file"].startswith(site) for n in report["nodes"]), report
    assert "does not yet fully support" not in proc.stderr
    print(f"smoke job {took:.1f}s: {report['seconds']}")
