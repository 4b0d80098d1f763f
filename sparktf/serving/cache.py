"""Exported models loaded once per Python worker process and reused by its tasks.

Spark reuses a Python worker for task after task (``spark.python.worker.reuse``,
on by default), so a model loaded by the first task serves every later task and
streaming micro-batch in that process.  The cache is keyed by the export's URL,
its version digest (see :mod:`sparktf.serving.signature`), the tag set and the
device, and holds at most ``SPARKTF_MODEL_CACHE_SIZE`` (default 3) models,
dropping the least recently used: a newer export at the same URL is a new key,
and two versions can be served side by side.

The first load in a process also sizes TensorFlow's thread pools to the task's
cores (``spark.task.cpus``), so several tasks of one executor do not each
start a thread per core of the machine, and places the model on the task's
GPU when Spark assigned one (``TaskContext.resources()['gpu']``), else the CPU.

The cache object below is the one piece of module-level state in sparktf, on
purpose: living as long as the worker process is what it is for.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import threading
from typing import Any, Callable, Iterator

from sparktf import checkpoint, gpus
from sparktf.errors import ModelLoadError
from sparktf.serving.signature import VERSION_FILES, Signature, export_version

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 3


@dataclasses.dataclass
class LoadedModel:
    """A loaded export: ``fn(**inputs)`` runs its signature on ``device``."""

    signature: Signature
    device: str
    fn: Callable[..., Any]
    owner: Any            # the loaded object: the signature function needs it alive


@dataclasses.dataclass
class CacheStats:
    loads: int = 0
    hits: int = 0


class ModelCache:
    """A bounded, least-recently-used cache of :class:`LoadedModel` (thread-safe)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY,
                 loader: Callable[[Signature, str], LoadedModel] | None = None) -> None:
        self.capacity = max(1, capacity)
        self.stats = CacheStats()
        self._loader = loader or load_model
        self._models: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, signature: Signature, device: str) -> LoadedModel:
        """The model for ``signature`` on ``device``, loading it on the first request."""
        key = (signature.url, signature.version, signature.tags, signature.key, device)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                self.stats.hits += 1
                return model
            model = self._loader(signature, device)
            self.stats.loads += 1
            self._models[key] = model
            while len(self._models) > self.capacity:
                dropped, _ = self._models.popitem(last=False)
                logger.info("model cache full (%d): dropped %s version %s",
                            self.capacity, dropped[0], dropped[1])
            return model


def _capacity() -> int:
    try:
        return int(os.environ.get("SPARKTF_MODEL_CACHE_SIZE", DEFAULT_CAPACITY))
    except ValueError:
        return DEFAULT_CAPACITY



@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` in ``os.environ`` for the duration (the worker process outlives the task)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def task_device(gpu_addresses: list[str], visible_gpus: int,
                cuda_visible_devices: str | None) -> str:
    """The TensorFlow device for a task given its Spark GPU addresses (pure logic).

    Spark's addresses are the machine's GPU ids; when ``CUDA_VISIBLE_DEVICES``
    renumbers them, TensorFlow's index is the address's position in that list.
    """
    if not gpu_addresses or visible_gpus <= 0:
        return "/CPU:0"
    address = gpu_addresses[0].strip()
    if cuda_visible_devices:
        ids = [d.strip() for d in cuda_visible_devices.split(",") if d.strip()]
        index = ids.index(address) if address in ids else -1
    else:
        index = int(address) if address.isdigit() else -1
    if not 0 <= index < visible_gpus:
        logger.warning("GPU address %s of this task is not among the %d GPUs TensorFlow sees; "
                       "using GPU 0", address, visible_gpus)
        index = 0
    return f"/GPU:{index}"


def task_resources() -> tuple[int, list[str]]:
    """This Spark task's cores and GPU addresses (1 and none outside a task)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return 1, []
    return max(1, int(ctx.cpus() or 1)), gpus.spark_gpus(ctx.resources()) or []


def current_device() -> str:
    """This task's TensorFlow device (TensorFlow is imported only when Spark gave it a GPU)."""
    cpus, addresses = task_resources()
    if not addresses:
        return "/CPU:0"
    visible = len(_tensorflow(cpus).config.list_physical_devices("GPU"))
    return task_device(addresses, visible, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _tensorflow(cpus: int):
    """Import TensorFlow; on the first import in this process, size its thread pools."""
    import sys
    first = "tensorflow" not in sys.modules
    import tensorflow as tf
    if first:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpus)
            tf.config.threading.set_inter_op_parallelism_threads(cpus)
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
            logger.info("TensorFlow threads sized to the task's %d core(s)", cpus)
        except RuntimeError as e:   # TensorFlow was already running
            logger.info("cannot size TensorFlow's threads: %s", e)
    return tf


def load_model(signature: Signature, device: str) -> LoadedModel:
    """Download (if remote) and load the export of ``signature`` on ``device``.

    Refuses an export whose files changed since the driver read its signature:
    one job then never mixes two versions.  Any failure raises
    :class:`ModelLoadError` naming the URL and the reason.
    """
    url = signature.url
    try:
        with checkpoint.local_copy(url) as path:
            contents = {}
            for name in VERSION_FILES:
                local = os.path.join(path, *name.split("/"))
                if os.path.exists(local):
                    with open(local, "rb") as f:
                        contents[name] = f.read()
            found = export_version(contents)
            if found != signature.version:
                raise ModelLoadError(
                    f"the model at {url} changed after the prediction function was created "
                    f"(version {signature.version}, now {found}): create it again to use the "
                    "new export")
            tf = _tensorflow(task_resources()[0])
            with tf.device(device):
                owner = tf.saved_model.load(path, tags=list(signature.tags))
            fn = owner.signatures[signature.key]
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - any loading failure is reported with its URL
        raise ModelLoadError(f"cannot load the model at {url} (tags {','.join(signature.tags)}, "
                             f"signature {signature.key!r}): {type(e).__name__}: {e}") from e
    logger.info("loaded model %s version %s on %s (pid %d)", url, signature.version, device,
                os.getpid())
    return LoadedModel(signature, device, fn, owner)


#: The worker process's cache (see the module docstring).
CACHE = ModelCache(_capacity())
