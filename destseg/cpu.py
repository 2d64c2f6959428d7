"""What this CPU can do fast, read from /proc/cpuinfo (no torch needed).

bfloat16 autocast is several times faster than FP32 on CPUs with AMX or AVX512-BF16, and
several times slower where it is emulated; the trainer, the torch backend and the benchmarks
all decide with :func:`native_bf16`.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import FrozenSet

BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> FrozenSet[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)
