"""docker/ without a Docker engine: hadolint on the Dockerfile, the Compose file against the
Compose specification's JSON schema (check-jsonschema's vendored copy), and the references
between the files (paths the Dockerfile copies, scripts the Compose job submits, version pins
against pyproject.toml).  The install steps themselves run in tests/package/test_wheel.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER = os.path.join(ROOT, "docker")
BIN = os.path.dirname(sys.executable)


def hadolint(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, "hadolint"), "--no-color", path],
                          capture_output=True, text=True, timeout=60)


def compose_check(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(BIN, "check-jsonschema"), "--builtin-schema",
                           "vendor.compose-spec", path], capture_output=True, text=True,
                          timeout=60)


def test_hadolint_passes_and_would_catch_a_bad_dockerfile(tmp_path):
    proc = hadolint(os.path.join(DOCKER, "Dockerfile"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install tensorflow\n")
    proc = hadolint(str(bad))
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout


def test_compose_file_follows_the_compose_specification(tmp_path):
    path = os.path.join(DOCKER, "compose.yaml")
    proc = compose_check(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "compose.yaml"
    bad.write_text(open(path).read().replace("    hostname: mnist\n",
                                             "    hostname: mnist\n    restart_policy: no\n"))
    proc = compose_check(str(bad))
    assert proc.returncode != 0 and "restart_policy" in proc.stdout


@pytest.fixture(scope="module")
def compose():
    with open(os.path.join(DOCKER, "compose.yaml")) as f:
        return yaml.safe_load(f)


def test_compose_cluster_is_a_master_two_workers_and_the_mnist_job(compose):
    services = compose["services"]
    assert set(services) == {"spark-master", "spark-worker-1", "spark-worker-2", "mnist"}
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
        assert "data:/data" in service["volumes"], name
    for worker in ("spark-worker-1", "spark-worker-2"):
        assert services[worker]["command"][-1] == "spark://spark-master:7077"
    for port in services["spark-master"].get("ports", []):
        assert port.startswith("127.0.0.1:"), f"{port}: publish on the host's loopback only"
    script = services["mnist"]["command"][-1].replace("$$EXAMPLES", "examples/mnist")
    scripts = re.findall(r"(examples/\S+\.py)", script)
    assert len(scripts) >= 4, script
    for rel in scripts:
        assert os.path.isfile(os.path.join(ROOT, rel)), f"compose.yaml submits missing {rel}"


def test_dockerfile_copies_what_exists_and_runs_install_sh():
    text = open(os.path.join(DOCKER, "Dockerfile")).read()
    copies = re.findall(r"^COPY (.+) \S+$", text, re.M)
    assert copies
    for line in copies:
        for src in line.split():
            if src != "dist/":  # built by `python -m build --outdir dist .` first
                assert os.path.exists(os.path.join(ROOT, src)), f"COPY {src}: no such path"
    assert "sh /opt/sparktf/docker/install.sh" in text
    assert re.search(r"^USER \d+", text, re.M), "the image runs as a non-root user"
    assert not re.search(r"(?i)(secret|password|token|AWS_)\w*\s*=", text)


def test_constraints_pin_every_package_within_pyproject_bounds():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    pins = {}
    for line in open(os.path.join(DOCKER, "constraints.txt")):
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: pin an exact version"
            pins[req.name.lower().replace("_", "-")] = spec.version
    wanted = project["dependencies"] + project["optional-dependencies"]["examples"]
    for dep in map(Requirement, wanted):
        name = dep.name.lower().replace("_", "-")
        assert name in pins, f"constraints.txt does not pin {name}"
        assert dep.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {dep}"
    assert pins["pyspark"].startswith("4.3.") and pins["tensorflow"].startswith("2.21.")
