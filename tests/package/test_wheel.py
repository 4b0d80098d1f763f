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
import tarfile
import time
import zipfile

import pytest

from package.wheel_build import ROOT, STASH_KEY, WheelBuild, clean_env

# pip's resolver reports conflicts with these; Python prints a warning as "<Category>Warning:".
PROBLEM_WORDS = ("conflict", "incompatible", "ERROR:", "Warning:")


@pytest.fixture(scope="module")
def installed(request, tmp_path_factory):
    """(venv, dist dir, install log, files built from): the wheel built and installed, by the
    build tests/conftest.py started with the session's first test (package/wheel_build.py)."""
    build = request.config.stash.get(STASH_KEY, None)
    if build is None:
        build = WheelBuild(tmp_path_factory.mktemp("wheel")).start()
    result = build.result()
    assert not result.failure, result.failure
    print("wheel build {build:.1f}s, install.sh {install:.1f}s".format(**result.times))
    return result.venv, result.dist, result.log, result.files


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
