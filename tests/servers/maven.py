"""Jars for the tests' Java servers, fetched by Maven into a cache outside the source tree.

One pom per set of jars (``tests/hadoop/pom.xml``, ``tests/kafka/*.xml``);
``mvn dependency:copy-dependencies`` copies what it resolves into a directory
named after the pom's version property and content digest, so a changed pom
gets fresh jars.  A lock file makes concurrent test sessions wait for one
download; a ``.complete`` stamp marks a directory whose download finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from typing import Iterator


def pom_property(pom: str, name: str) -> str:
    """The value of ``<name>`` in the pom's ``<properties>``."""
    with open(pom) as f:
        return f.read().split(f"<{name}>", 1)[1].split("<", 1)[0]


def cache_dir(pom: str, env: str, default: str, version: str) -> str:
    """``$env`` (or ``default``) / ``<version>-<digest of the pom>``."""
    root = os.environ.get(env) or os.path.expanduser(default)
    with open(pom, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    return os.path.join(root, f"{version}-{digest}")


@contextlib.contextmanager
def locked(base: str) -> Iterator[None]:
    """Hold ``base/.lock`` (creating ``base``): one session fills a cache at a time."""
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def copy_dependencies(pom: str, jars: str, *mvn_args: str, what: str = "the tests") -> str:
    """Fill ``jars`` with the pom's dependencies unless done before; returns ``jars``.

    Call it under :func:`locked`.
    """
    if not os.path.exists(os.path.join(jars, ".complete")):
        shutil.rmtree(jars, ignore_errors=True)
        mvn = shutil.which("mvn")
        if not mvn:
            raise RuntimeError(f"{what} need Maven (`mvn`) to fetch the jars of {pom}; "
                               "install it")
        subprocess.run([mvn, "-q", "-B", "-f", pom, "dependency:copy-dependencies",
                        f"-DoutputDirectory={jars}", *mvn_args], check=True, timeout=1200)
        open(os.path.join(jars, ".complete"), "w").close()
    return jars


def java_env(**extra: str) -> dict[str, str]:
    """This environment for a test JVM: JAVA_HOME set, no inherited CLASSPATH."""
    java_home = os.environ.get("JAVA_HOME") or os.path.dirname(os.path.dirname(
        os.path.realpath(shutil.which("java") or "/usr/bin/java")))
    env = {**os.environ, "JAVA_HOME": java_home, **extra}
    env.pop("CLASSPATH", None)
    return env
