"""The arithmetic a served model runs in: float32 as exported, or bfloat16 where the CPU has it.

``precision="bfloat16"`` (an option of :func:`sparktf.predict_udf` and ``TFModel``)
turns on TensorFlow's oneDNN automatic mixed precision, a graph rewrite
(grappler's ``auto_mixed_precision_onednn_bfloat16``) that runs matrix
multiplications and convolutions in bfloat16 and keeps numerically sensitive
ops (softmax, reductions) in float32, on the model's calls only.  The export
is unchanged: the rewrite happens when TensorFlow instantiates the signature.

On CPUs with bfloat16 instructions (Intel AMX or AVX512-BF16, AMD Zen 4 and
later: the ``amx_bf16`` / ``avx512_bf16`` flags) the MNIST CNN runs about 2.5x
the rows per CPU second of float32, with outputs within about 0.5% of float32's
(bfloat16 keeps 8 significant bits).  Without those instructions TensorFlow emulates
bfloat16 and it is slower than float32: the executor logs a warning.  The
rewrite applies to CPU kernels; a model placed on a GPU runs as exported.

TensorFlow keeps grappler options per process; the rewrite is switched on
around each model call and back off afterwards (a Python worker runs one task
at a time), so a float32 model served by the same worker stays float32.
TensorFlow caches one instantiation of the signature per option set, so the
switch costs no recompilation after the first call.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")
#: /proc/cpuinfo flags of CPUs with native bfloat16 matrix instructions.
BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_REWRITE = "auto_mixed_precision_onednn_bfloat16"


def check(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, "
                         f"not {precision!r}")
    return precision


def cpu_has_bfloat16(cpuinfo: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists a native bfloat16 flag (pure logic)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)
    return False


def warn_if_emulated(precision: str) -> None:
    """Log a warning when bfloat16 is asked for on a CPU that would emulate it."""
    if precision != "bfloat16":
        return
    try:
        with open("/proc/cpuinfo") as f:
            native = cpu_has_bfloat16(f.read())
    except OSError:          # not Linux: nothing to tell
        return
    if not native:
        logger.warning("precision='bfloat16' on a CPU without %s: TensorFlow emulates "
                       "bfloat16 here, slower than float32; use precision='float32'",
                       " or ".join(BFLOAT16_CPU_FLAGS))


@contextlib.contextmanager
def applied(tf: Any, precision: str) -> Iterator[None]:
    """Model calls inside run in ``precision`` (see the module docstring)."""
    if precision == "float32":
        yield
        return
    before = tf.config.optimizer.get_experimental_options().get(_REWRITE, False)
    tf.config.optimizer.set_experimental_options({_REWRITE: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({_REWRITE: before})
