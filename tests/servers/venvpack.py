"""A packed Python environment for YARN, built the way users ship one: ``venv-pack``.

:func:`pack` builds the sparktf wheel from a copy of the project's files, makes a
new venv holding that wheel and the distributions its metadata requires (with
the ``hdfs`` extra), and packs it with ``venv-pack`` into ``env.tar`` for
``spark-submit --archives env.tar#environment``.  Everything is written under
the directory given (never into the source tree).

The dependencies are not downloaded again: their files are hard-linked from the
test venv, following each distribution's ``RECORD`` (what pip installed), so the
new venv holds exactly the wheel's dependency closure with pip's own metadata,
and the archive is as self-contained as one made after ``pip install sparktf``.
Only sparktf itself is installed by pip, from the wheel.  Directories no node
imports are left out of the archive with ``venv-pack --exclude``: TensorFlow's C++
headers, pyspark's jars (the NodeManagers run Spark's own jars) and the test suites
of pandas, numpy and pyarrow.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: What ``venv-pack --exclude`` leaves out: never imported on a node (C++ headers, Spark's
#: jars, the test suites of pandas, numpy and pyarrow: 3,400 of the ~22,000 files, each of
#: which a NodeManager localises one by one).
EXCLUDES = ("lib/python*/site-packages/tensorflow/include/*",
            "lib/python*/site-packages/pyspark/jars/*",
            "lib/python*/site-packages/pandas/tests/*",
            "lib/python*/site-packages/numpy/*/tests/*",
            "lib/python*/site-packages/pyarrow/tests/*")


def project_files() -> list[str]:
    """The project's files: tracked plus new ones not ignored (what a commit would hold)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(ROOT, p))]


def build_wheel(work: str) -> str:
    """The sparktf wheel, built from a copy of the project (no build into the tree)."""
    src, dist = os.path.join(work, "src"), os.path.join(work, "dist")
    for rel in project_files():
        os.makedirs(os.path.join(src, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(src, rel))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, src],
                   check=True, capture_output=True, env=env)
    (wheel,) = [f for f in os.listdir(dist) if f.startswith("sparktf-") and f.endswith(".whl")]
    return os.path.join(dist, wheel)


def wheel_requires(wheel: str) -> list[str]:
    """``Requires-Dist`` of the wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    return [line.split(":", 1)[1].strip() for line in meta.decode().splitlines()
            if line.startswith("Requires-Dist:")]


def closure(requires: list[str], extras: set[str]) -> dict[str, md.Distribution]:
    """The installed distributions ``requires`` (with ``extras``) needs, transitively."""
    found: dict[str, md.Distribution] = {}
    todo = [(Requirement(r), extras) for r in requires]
    while todo:
        req, active = todo.pop()
        if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (active or {""})):
            continue
        key = canonicalize_name(req.name)
        if key in found:
            continue
        found[key] = dist = md.distribution(req.name)
        todo += [(Requirement(r), set(req.extras)) for r in dist.requires or []]
    return found


def link_distributions(dists: dict[str, md.Distribution], site: str) -> int:
    """Hard-link every file of ``dists`` under site-packages into ``site``; bytes linked."""
    here = sysconfig.get_paths()["purelib"]
    size = 0
    for dist in dists.values():
        for rel in dist.files or []:
            src = os.path.normpath(os.path.join(here, rel))
            if not src.startswith(here + os.sep) or not os.path.isfile(src):
                continue   # console scripts (bin/), byte code pip did not record
            dst = os.path.join(site, os.path.relpath(src, here))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:   # another file system
                shutil.copy2(src, dst)
            size += os.path.getsize(src)
    return size


def pack(work: str, name: str = "env.tar") -> tuple[str, dict[str, float]]:
    """``(archive path, numbers)``: the packed environment under ``work``.

    ``env.tar`` (the default) is not compressed: TensorFlow's 1.5 GB pack in 5 s that
    way, against 66 s for a 760 MB ``.tar.gz`` at ``--compress-level 1`` on this
    machine, and the NodeManagers unpack it faster; a real cluster, where the
    archive crosses a network once per NodeManager, may prefer ``.tar.gz``.
    """
    numbers: dict[str, float] = {}
    t0 = time.monotonic()
    wheel = build_wheel(work)
    numbers["wheel_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    venv = os.path.join(work, "env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    dists = closure(wheel_requires(wheel), {"hdfs"})
    numbers["venv_mb"] = link_distributions(dists, site) / 2**20
    numbers["distributions"] = len(dists)
    subprocess.run([sys.executable, "-m", "pip", "--python", os.path.join(venv, "bin", "python"),
                    "install", "-q", "--no-deps", "--no-index", "--no-compile", wheel],
                   check=True, capture_output=True)
    numbers["venv_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    archive = os.path.join(work, name)
    cmd = [os.path.join(os.path.dirname(sys.executable), "venv-pack"), "-q", "-p", venv,
           "-o", archive]
    for pattern in EXCLUDES:
        cmd += ["--exclude", pattern]
    subprocess.run(cmd, check=True, capture_output=True)
    numbers["pack_s"] = time.monotonic() - t0
    numbers["archive_mb"] = os.path.getsize(archive) / 2**20
    return archive, numbers


if __name__ == "__main__":   # python tests/servers/venvpack.py WORK_DIR
    print(pack(sys.argv[1]))
