"""sparktf.gpus: Spark's GPU resources and the nvidia-smi fallback, as tables of cases.

The nvidia-smi outputs are the ones recorded on an H100 host (the project's shared data),
copied into tests/data/nvidia-smi/ so that a clean clone has them.
"""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

from sparktf import gpus
from sparktf.errors import GpuError

RECORDED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                        "nvidia-smi")


def recorded(name: str) -> str:
    path = os.path.join(RECORDED, name)
    assert os.path.exists(path), f"{path}: the recorded nvidia-smi output is missing"
    with open(path) as f:
        return f.read()


def res(*addresses):
    return {"gpu": SimpleNamespace(name="gpu", addresses=list(addresses))}


def smi(*rows):
    return lambda: [gpus.GpuMemory(str(i), mib) for i, mib in rows]


H100_IDLE = [gpus.GpuMemory("0", 0)]
H100_BUSY = [gpus.GpuMemory("0", 6251)]


@pytest.mark.parametrize("name, expected", [
    ("query_index_mem_idle.csv", H100_IDLE),
    ("query_index_mem_busy.csv", H100_BUSY),
])
def test_parses_the_recorded_h100_output(name, expected):
    assert gpus.parse_nvidia_smi(recorded(name)) == expected


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ("\n\n", []),
    ("0, 0 MiB\n1, 6251 MiB\n", [gpus.GpuMemory("0", 0), gpus.GpuMemory("1", 6251)]),
    ("0,0 MiB\r\n1 ,  12 MiB", [gpus.GpuMemory("0", 0), gpus.GpuMemory("1", 12)]),
    ("3, 81559 MiB\n", [gpus.GpuMemory("3", 81559)]),
])
def test_parses_csv_columns(text, expected):
    assert gpus.parse_nvidia_smi(text) == expected


@pytest.mark.parametrize("text, message", [
    # The wider query (index,uuid,name,memory.used,memory.total): a token-position parser would
    # take a wrong field here; the column count says it is the wrong query.
    (None, "has 5 columns; expected 'index, memory.used'"),
    ("0, [N/A]\n", "line 1 '0,[N/A]': expected a GPU index and memory in MiB"),
    ("0, 0 MiB\n1, [Not Supported]\n", "line 2"),
    ("GPU 0, 0 MiB\n", "expected a GPU index"),
    ("0\n", "has 1 columns"),
])
def test_rejects_other_output_naming_the_line(text, message):
    text = recorded("query_gpu_busy.csv") if text is None else text
    with pytest.raises(GpuError, match=message.replace("[", r"\[").replace("]", r"\]")):
        gpus.parse_nvidia_smi(text)


@pytest.mark.parametrize("job, resources, num_gpus, query, slot, expected", [
    # Spark assigned GPUs: exactly those, whatever nvidia-smi would say.
    ("worker", res("1"), None, None, 0, (("1",), "spark", "1")),
    ("chief", res("0", "1"), None, None, 0, (("0", "1"), "spark", "0,1")),
    ("worker", res("2", "3"), 1, None, 0, (("2",), "spark", "2")),
    # ps nodes never get one, even from Spark.
    ("ps", res("0"), None, None, 0, ((), "none", "")),
    ("ps", None, 1, None, 0, ((), "none", "")),
    # Nothing configured, nothing asked: not managed, nothing set.
    ("worker", None, None, None, 0, ((), "", None)),
    ("worker", {}, None, None, 0, ((), "", None)),
    # The fallback: free GPUs in index order, disjoint per slot on a host.
    ("worker", None, 1, smi((0, 0)), 0, (("0",), "nvidia-smi", "0")),
    ("worker", None, 1, smi((0, 6251), (1, 0), (2, 3)), 0, (("1",), "nvidia-smi", "1")),
    ("worker", None, 1, smi((0, 6251), (1, 0), (2, 3)), 1, (("2",), "nvidia-smi", "2")),
    ("chief", None, 2, smi((0, 0), (1, 0), (2, 0), (3, 0)), 1, (("2", "3"), "nvidia-smi", "2,3")),
])
def test_assign(job, resources, num_gpus, query, slot, expected):
    got = gpus.assign(job, resources, num_gpus, slot=slot, slots=2 if slot else 1, query=query)
    ids, source, visible = expected
    assert (got.gpus, got.source) == (ids, source)
    assert got.env == ({} if visible is None else {"CUDA_VISIBLE_DEVICES": visible})


def test_the_recorded_hosts_through_assign():
    idle = gpus.assign("worker", None, 1, query=lambda: gpus.parse_nvidia_smi(
        recorded("query_index_mem_idle.csv")))
    assert idle.env == {"CUDA_VISIBLE_DEVICES": "0"}
    with pytest.raises(GpuError, match=r"0 of 1 are free .*GPU 0 6251 MiB used"):
        gpus.assign("worker", None, 1, where="host h1", query=lambda: gpus.parse_nvidia_smi(
            recorded("query_index_mem_busy.csv")))


@pytest.mark.parametrize("resources, num_gpus, query, slots, message", [
    (None, 2, smi((0, 0)), 1, r"num_gpus=2 needs 2 GPUs but host h1 has 1"),
    (None, 1, smi((0, 0)), 2, r"num_gpus=1 for each of 2 nodes needs 2 GPUs but host h1 has 1"),
    (None, 1, smi((0, 0), (1, 9000)), 2, r"needs 2 free GPUs but 1 of 2 are free"),
    (None, 0, smi((0, 0)), 1, r"num_gpus=0: ask for at least 1"),
    (None, 1, smi(), 1, r"needs 1 GPUs but host h1 has 0 \(nvidia-smi: no GPU\)"),
    (res("0"), 2, None, 1, r"num_gpus=2 but Spark assigned 1 GPU\(s\) \(0\) to the task on "
                           r"host h1: raise spark.task.resource.gpu.amount"),
    (res(), 1, None, 1, r"Spark assigned 0 GPU\(s\) \(none\)"),
    (res("0,1"), None, None, 1, r"cannot go into CUDA_VISIBLE_DEVICES.*discoveryScript"),
])
def test_impossible_requests_name_the_numbers(resources, num_gpus, query, slots, message):
    with pytest.raises(GpuError, match=message):
        gpus.assign("worker", resources, num_gpus, slots=slots, where="host h1", query=query)


@pytest.mark.parametrize("hosts, jobs, node, expected", [
    (["a", "b"], ["chief", "worker"], 1, (0, 1)),
    (["a", "a", "a"], ["chief", "worker", "worker"], 2, (2, 3)),
    (["a", "a", "a"], ["ps", "chief", "worker"], 2, (1, 2)),  # the ps node takes no slot
    (["a", "b", "a"], ["ps", "chief", "worker"], 0, (0, 1)),
])
def test_host_slot(hosts, jobs, node, expected):
    assert gpus.host_slot(hosts, jobs, node) == expected


def test_describe_for_the_driver_log():
    assert gpus.Assignment(("0", "1"), "spark").describe() == "GPU 0,1 (from spark)"
    assert gpus.Assignment((), "none").describe() == 'no GPU (CUDA_VISIBLE_DEVICES="")'
    assert gpus.Assignment((), "").describe() == ""


def fake_nvidia_smi(tmp_path, monkeypatch, script: str) -> None:
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_query_runs_nvidia_smi_with_the_index_memory_query(tmp_path, monkeypatch):
    # The fake prints the recorded output only for the exact query the fallback must send.
    fake_nvidia_smi(tmp_path, monkeypatch, f"""
[ "$*" = "--query-gpu=index,memory.used --format=csv,noheader" ] || {{ echo "$*" >&2; exit 9; }}
cat '{os.path.join(RECORDED, "query_index_mem_busy.csv")}'
""")
    assert gpus.query_nvidia_smi() == H100_BUSY


@pytest.mark.parametrize("script, message", [
    ("echo 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2; "
     "exit 9", r"nvidia-smi on host h1 failed \(exit 9\): NVIDIA-SMI has failed"),
    ("sleep 5", r"did not answer within 1 s"),
])
def test_query_errors(tmp_path, monkeypatch, script, message):
    fake_nvidia_smi(tmp_path, monkeypatch, script)
    with pytest.raises(GpuError, match=message):
        gpus.query_nvidia_smi(timeout=1, where="host h1")


def test_query_without_nvidia_smi_names_the_spark_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GpuError, match=r"not on the PATH.*spark.executor.resource.gpu.amount"):
        gpus.query_nvidia_smi(where="host h1")
