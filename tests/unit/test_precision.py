"""sparktf.serving.precision: the option's values and the CPU check (pure logic)."""

from __future__ import annotations

import pytest

from sparktf.serving import precision

SAPPHIRE_RAPIDS = "flags\t\t: fpu vme avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"


@pytest.mark.parametrize("cpuinfo, native", [
    (SAPPHIRE_RAPIDS, True),
    (ZEN4, True),
    (SKYLAKE, False),
    ("flags\t\t: fpu amx_tile\n", False),    # AMX without its bfloat16 part
    ("", False),                             # no flags line (not x86, or unreadable)
])
def test_cpu_has_bfloat16(cpuinfo, native):
    assert precision.cpu_has_bfloat16(cpuinfo) is native


@pytest.mark.parametrize("value, ok", [
    ("float32", True), ("bfloat16", True), ("float16", False), ("fp32", False), (None, False),
])
def test_check_names_the_allowed_values(value, ok):
    if ok:
        assert precision.check(value) == value
    else:
        with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
            precision.check(value)
