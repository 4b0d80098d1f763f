"""Cached feeding: a node keeps the rows of one fed epoch and replays them itself.

With ``cluster.train(data, num_epochs, cache=True)`` Spark feeds the data once;
each node keeps the rows it received in that epoch in an :class:`EpochCache`
and, when the driver says so, replays them as epochs 2..N, shuffled within the
node.  A node replays exactly the rows it was fed, so every node's row count of
a replayed epoch is its count of the fed one, and the epoch agreement of
:mod:`sparktf.feed.datafeed` (equal steps for synchronous workers) holds as it
did for the fed epoch.

Memory is bounded in bytes: up to ``SPARKTF_CACHE_MEMORY_MB`` (node
environment, default 1024) of chunks stay in memory; past it, chunks go to a
private spill file in the node's directory.  The spill file is always
encrypted (AES-256-GCM under a random key that exists only in the node
process's memory) and unlinked as it is created, so nothing fed is ever
written in clear, whatever ``spark.io.encryption.enabled`` says, and nothing
is left behind when the node dies.

Shuffling within the node: the cached chunks are replayed in a random order,
and the rows of consecutive chunks are permuted within windows of about
``WINDOW_BYTES`` (a cache smaller than that is permuted as a whole), as a
``tf.data`` shuffle buffer would, without holding a second copy of the cache.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from ..errors import ConfigError
from . import arrowconv

logger = logging.getLogger(__name__)

#: Bytes of cached chunks a node keeps in memory before it spills (``SPARKTF_CACHE_MEMORY_MB``).
DEFAULT_MEMORY_BYTES = 1 << 30
#: Rows are permuted within windows of about this many bytes of cached chunks.
WINDOW_BYTES = 64 << 20


#: Spark's unit suffixes for memory settings; a bare number is MiB (``spark.executor.memory``).
_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def memory_bytes() -> int:
    """The in-memory bound of a node's cache, from its environment."""
    return int(float(os.environ.get("SPARKTF_CACHE_MEMORY_MB", DEFAULT_MEMORY_BYTES >> 20))
               * (1 << 20))


def _mib(conf: Callable[[str], str | None], key: str, default: str) -> float:
    """Spark memory setting ``key`` (``512m``, ``2g``, ``1024``; ``default`` if unset) in MiB."""
    text = conf(key) or default
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt])?b?\s*", text.lower())
    if not m:
        raise ConfigError(f"{key}={text!r} is not a memory size (e.g. 512m, 2g)")
    return float(m.group(1)) * _UNITS[m.group(2) or "m"]


def default_memory_mb(conf: Callable[[str], str | None]) -> tuple[int, str]:
    """The cache's in-memory bound for nodes whose user set none, and why (pure logic).

    A node process lives inside its executor's memory budget, so the default
    follows the Spark setting that bounds it:

    * ``spark.executor.pyspark.memory``: PySpark caps its Python workers'
      address space, and a node (started from one) inherits the cap: a quarter
      of it;
    * on YARN and Kubernetes the container is killed past executor memory plus
      ``spark.executor.memoryOverhead``, and Python processes live in the
      overhead (explicit, or Spark's ``max(384m, factor x executor memory)``):
      a quarter of it;
    * elsewhere (standalone, local) nothing bounds it: 1024 MiB.

    Past the bound the cache spills to an encrypted local file, which replays
    almost as fast (README, Performance), so a small bound costs little.
    """
    if conf("spark.executor.pyspark.memory"):
        limit = _mib(conf, "spark.executor.pyspark.memory", "")
        return max(1, int(limit / 4)), "a quarter of spark.executor.pyspark.memory"
    if (conf("spark.master") or "").startswith(("yarn", "k8s://")):
        if conf("spark.executor.memoryOverhead"):
            overhead = _mib(conf, "spark.executor.memoryOverhead", "")
        else:
            factor = float(conf("spark.executor.memoryOverheadFactor") or 0.1)
            overhead = max(_mib(conf, "spark.executor.minMemoryOverhead", "384m"),
                           factor * _mib(conf, "spark.executor.memory", "1g"))
        return max(1, int(overhead / 4)), "a quarter of spark.executor.memoryOverhead"
    return DEFAULT_MEMORY_BYTES >> 20, "the default"


@dataclass(frozen=True)
class _Spilled:
    """Where one encrypted chunk lies in the spill file."""

    offset: int
    length: int
    nonce: bytes


class EpochCache:
    """The rows one node received in fed epoch ``epoch`` (``partitions`` partitions)."""

    def __init__(self, epoch: int, partitions: int, memory_limit: int | None = None,
                 spill_dir: str | None = None, window_bytes: int = WINDOW_BYTES) -> None:
        self.epoch = epoch
        self.partitions = partitions
        self.memory_limit = memory_bytes() if memory_limit is None else memory_limit
        self.spill_dir = spill_dir
        self.window_bytes = window_bytes
        self.rows = 0
        self.memory = 0  # bytes of chunks held in memory
        self.spilled = 0  # bytes written to the spill file (encrypted)
        self._chunks: list[pa.RecordBatch | _Spilled] = []
        self._lock = threading.Lock()
        self._file = None
        self._aead = None

    def add(self, batch: pa.RecordBatch) -> None:
        """Keep ``batch`` (a delivered chunk); called by the node's feed connections."""
        if not batch.num_rows:
            return
        with self._lock:
            self.rows += batch.num_rows
            if self.memory + batch.nbytes <= self.memory_limit:
                self._chunks.append(batch)
                self.memory += batch.nbytes
            else:
                self._chunks.append(self._spill(batch))

    def _spill(self, batch: pa.RecordBatch) -> _Spilled:
        if self._file is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
            # TemporaryFile: 0600 and already unlinked (O_TMPFILE on Linux).
            self._file = tempfile.TemporaryFile(dir=self.spill_dir, prefix="sparktf-cache-")
            self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
            logger.info("sparktf cache of epoch %d: over %d MB in memory, spilling the rest "
                        "(encrypted) to %s", self.epoch, self.memory_limit >> 20,
                        self.spill_dir or tempfile.gettempdir())
        nonce = os.urandom(12)
        blob = self._aead.encrypt(nonce, arrowconv.to_ipc(batch).to_pybytes(), None)
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(blob)
        self._file.flush()
        self.spilled += len(blob)
        return _Spilled(offset, len(blob), nonce)

    def _load(self, chunk: pa.RecordBatch | _Spilled) -> pa.RecordBatch:
        if isinstance(chunk, pa.RecordBatch):
            return chunk
        blob = os.pread(self._file.fileno(), chunk.length, chunk.offset)
        return arrowconv.from_ipc(self._aead.decrypt(chunk.nonce, blob, None))

    def replay(self, rng: np.random.Generator | None = None) -> Iterator[pa.RecordBatch]:
        """Every cached row once, shuffled: chunks in a random order, rows permuted
        within windows of about ``window_bytes``; pieces about as large as the chunks."""
        rng = rng or np.random.default_rng()
        with self._lock:
            chunks = list(self._chunks)
        window: list[pa.RecordBatch] = []
        size = 0
        for i in rng.permutation(len(chunks)):
            batch = self._load(chunks[i])
            window.append(batch)
            size += batch.nbytes
            if size >= self.window_bytes:
                yield from _permuted(window, rng)
                window, size = [], 0
        if window:
            yield from _permuted(window, rng)

    def close(self) -> None:
        """Drop the cache (and its spill file)."""
        with self._lock:
            self._chunks = []
            if self._file is not None:
                self._file.close()
                self._file = None


def _permuted(window: list[pa.RecordBatch], rng: np.random.Generator) -> Iterator[pa.RecordBatch]:
    """The rows of ``window`` in a random order, in ``len(window)`` pieces."""
    batch = arrowconv.concat(window)
    shuffled = batch.take(pa.array(rng.permutation(batch.num_rows)))
    step = -(-batch.num_rows // len(window))
    for start in range(0, batch.num_rows, step):
        yield shuffled.slice(start, step)
