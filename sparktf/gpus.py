"""Which GPUs a TF node may use: from Spark's resource scheduling, or an ``nvidia-smi`` fallback.

A node on a GPU host sees every GPU of the host unless ``CUDA_VISIBLE_DEVICES``
says otherwise, and two nodes on one host then fight over the same device.
This module decides, without sockets or Spark, what each node process gets:

* Spark assigned GPUs to the barrier task (``spark.executor.resource.gpu.amount``
  and ``spark.task.resource.gpu.amount``; ``BarrierTaskContext.resources()['gpu']``):
  the node gets exactly those addresses.
* ps nodes get none (``CUDA_VISIBLE_DEVICES=""``): they hold variables and would
  otherwise take memory on every GPU; TensorBoard gets none either
  (:data:`NO_GPU_ENV`).
* Spark assigned none and ``num_gpus`` was asked for: ``nvidia-smi
  --query-gpu=index,memory.used --format=csv,noheader`` (read by column, never
  by token position) lists the host's GPUs; the nodes on one host take disjoint
  sets of the free ones, in order of their local slot.
* Neither: nothing is set; TensorFlow sees what the executor sees.

Every impossible request raises :class:`GpuError` naming the numbers and the
settings to change.
"""

from __future__ import annotations

import csv
import logging
import re
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import GpuError

logger = logging.getLogger(__name__)

#: The query the fallback runs: one ``index, memory.used`` line per GPU.
NVIDIA_SMI = ("nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader")
#: A GPU with at most this much memory in use counts as free (an idle H100 shows 0 MiB; a
#: CUDA context alone takes ~300-500 MiB).
FREE_MIB = 1024
#: Jobs whose nodes get no GPU even when Spark assigned some to their task.
NO_GPU_JOBS = ("ps",)
#: The environment of a process that must see no GPU (ps nodes, TensorBoard).
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}

_MIB = re.compile(r"^\s*(\d+)\s*MiB\s*$")


@dataclass(frozen=True)
class GpuMemory:
    """One row of ``nvidia-smi --query-gpu=index,memory.used``."""

    index: str
    used_mib: int


@dataclass(frozen=True)
class Assignment:
    """What one node gets: ``gpus`` (device ids, in order) and where they came from.

    ``env`` is what to add to the node's environment: ``{}`` when nothing is
    decided (no GPU resources, no ``num_gpus``), else ``CUDA_VISIBLE_DEVICES``.
    """

    gpus: tuple[str, ...]
    source: str  # "spark", "nvidia-smi", "none" (ps node) or "" (not managed)

    @property
    def env(self) -> dict[str, str]:
        return {} if not self.source else {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)}

    def describe(self) -> str:
        return describe(self.gpus, self.source)


def describe(gpus: Sequence[str] | None, source: str) -> str:
    """For the driver's log: ``GPU 0,1 (from spark)``, ``no GPU (CUDA_VISIBLE_DEVICES="")``,
    or ``""`` when GPUs are not managed (nothing worth a word in the log)."""
    if not source:
        return ""
    if not gpus:
        return 'no GPU (CUDA_VISIBLE_DEVICES="")'
    return f"GPU {','.join(gpus)} (from {source})"


def spark_gpus(resources: Mapping[str, Any] | None) -> list[str] | None:
    """The GPU addresses in a task's ``resources()``; None when no GPU resource is configured.

    ``resources`` maps resource names to objects with ``addresses`` (pyspark's
    ``ResourceInformation``).  An empty address list counts as configured.
    """
    if not resources or "gpu" not in resources:
        return None
    addresses = [str(a).strip() for a in resources["gpu"].addresses]
    bad = [a for a in addresses if not a or "," in a]
    if bad:
        raise GpuError(f"Spark assigned GPU addresses {addresses!r}: {bad!r} cannot go into "
                       "CUDA_VISIBLE_DEVICES; check the discovery script "
                       "(spark.worker.resource.gpu.discoveryScript or "
                       "spark.executor.resource.gpu.discoveryScript)")
    return addresses


def parse_nvidia_smi(text: str, source: str = "nvidia-smi") -> list[GpuMemory]:
    """The GPUs in ``nvidia-smi --query-gpu=index,memory.used --format=csv,noheader`` output.

    Rows are read as CSV columns (``0, 6251 MiB``), not by token position. A
    row that does not have the two columns, or whose memory is not ``<n> MiB``
    (``[N/A]``, ``[Not Supported]``), raises :class:`GpuError` naming the line.
    """
    gpus = []
    for number, row in enumerate(csv.reader(text.splitlines(), skipinitialspace=True), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise GpuError(f"{source}: line {number} {','.join(row)!r} has {len(row)} columns; "
                           "expected 'index, memory.used' (--query-gpu=index,memory.used "
                           "--format=csv,noheader)")
        index, used = (field.strip() for field in row)
        match = _MIB.match(used)
        if not index.isdigit() or not match:
            raise GpuError(f"{source}: line {number} {','.join(row)!r}: expected a GPU index and "
                           "memory in MiB, such as '0, 6251 MiB'")
        gpus.append(GpuMemory(index, int(match.group(1))))
    return gpus


def query_nvidia_smi(timeout: float = 10.0, where: str = "this host") -> list[GpuMemory]:
    """Run :data:`NVIDIA_SMI` and parse it; a missing or failing ``nvidia-smi`` raises GpuError."""
    try:
        proc = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise GpuError(f"num_gpus needs nvidia-smi on {where}, but it is not on the PATH, and "
                       "Spark assigned no GPU to the task: configure GPUs in Spark instead "
                       "(spark.executor.resource.gpu.amount, spark.task.resource.gpu.amount, "
                       "a discovery script) or drop num_gpus") from None
    except subprocess.TimeoutExpired:
        raise GpuError(f"nvidia-smi on {where} did not answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise GpuError(f"nvidia-smi on {where} failed (exit {proc.returncode}): "
                       f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return parse_nvidia_smi(proc.stdout, f"nvidia-smi on {where}")


def pick_free(gpus: Sequence[GpuMemory], num_gpus: int, slot: int = 0, slots: int = 1,
              free_mib: int = FREE_MIB, where: str = "this host") -> list[str]:
    """``num_gpus`` free GPUs for the node in local ``slot`` of ``slots`` nodes on one host.

    The free GPUs (at most ``free_mib`` MiB in use), in index order, are cut
    into consecutive runs of ``num_gpus``: slot 0 takes the first, slot 1 the
    next, so nodes started together on one host never share a device.
    """
    if num_gpus < 1:
        raise GpuError(f"num_gpus={num_gpus}: ask for at least 1 GPU per node, or leave it None")
    if num_gpus * slots > len(gpus):
        per = f" for each of {slots} nodes" if slots > 1 else ""
        raise GpuError(f"num_gpus={num_gpus}{per} needs {num_gpus * slots} GPUs but {where} has "
                       f"{len(gpus)} (nvidia-smi: {_listing(gpus)})")
    free = [g.index for g in gpus if g.used_mib <= free_mib]
    if len(free) < num_gpus * slots:  # every slot checks the total: all fail alike
        raise GpuError(f"num_gpus={num_gpus} for {slots} node(s) on {where} needs "
                       f"{num_gpus * slots} free GPUs but {len(free)} of {len(gpus)} are free "
                       f"(at most {free_mib} MiB used; nvidia-smi: {_listing(gpus)}); other "
                       "processes hold the rest")
    return free[slot * num_gpus:(slot + 1) * num_gpus]


def assign(job: str, resources: Mapping[str, Any] | None, num_gpus: int | None = None, *,
           slot: int = 0, slots: int = 1, where: str = "this host",
           query: Callable[[], Sequence[GpuMemory]] | None = None) -> Assignment:
    """The GPUs of a node of ``job`` whose barrier task holds ``resources``.

    ``num_gpus`` (from ``TFCluster.run``) only matters when Spark assigned no
    GPU: then :func:`pick_free` chooses from ``query()`` (default: run
    nvidia-smi) for ``slot`` of the ``slots`` nodes on this host.  When Spark
    assigned GPUs and ``num_gpus`` is set too, the task must hold at least
    that many; the node takes the first ``num_gpus``.
    """
    if job in NO_GPU_JOBS:
        return Assignment((), "none")
    addresses = spark_gpus(resources)
    if addresses is not None:
        if num_gpus is not None and len(addresses) < num_gpus:
            raise GpuError(f"num_gpus={num_gpus} but Spark assigned {len(addresses)} GPU(s) "
                           f"({','.join(addresses) or 'none'}) to the task on {where}: raise "
                           "spark.task.resource.gpu.amount (and spark.executor.resource.gpu."
                           "amount) or lower num_gpus")
        return Assignment(tuple(addresses[:num_gpus] if num_gpus else addresses), "spark")
    if num_gpus is None:
        return Assignment((), "")
    found = (query or (lambda: query_nvidia_smi(where=where)))()
    return Assignment(tuple(pick_free(found, num_gpus, slot, slots, where=where)), "nvidia-smi")


def host_slot(hosts: Sequence[str], jobs: Sequence[str], node: int) -> tuple[int, int]:
    """``(slot, slots)``: node ``node``'s place among the GPU-taking nodes on its host.

    ``hosts[i]`` and ``jobs[i]`` are node i's host and job (from the barrier's
    ``allGather``); ps nodes take no slot.  Every node computes the same
    answer, so the nodes on one host agree on who takes which GPUs without
    talking.
    """
    same = [i for i, (host, job) in enumerate(zip(hosts, jobs))
            if host == hosts[node] and job not in NO_GPU_JOBS]
    return (same.index(node) if node in same else 0), max(1, len(same))


def _listing(gpus: Sequence[GpuMemory]) -> str:
    return "; ".join(f"GPU {g.index} {g.used_mib} MiB used" for g in gpus) or "no GPU"
