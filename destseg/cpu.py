"""What this CPU is and can do fast, from one /proc/cpuinfo parser (no torch needed).

bfloat16 autocast is several times faster than FP32 on CPUs with AMX or AVX512-BF16, and
several times slower where it is emulated; the trainer, the torch backend and the benchmarks
all decide with :func:`native_bf16`. ONNX Runtime and torch get one thread per physical core
(:func:`physical_cores`): hyper-threads only contend for the same FPU. The benchmarks'
machine record reads the model and flags from the same parse.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import FrozenSet, Optional

CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# x86 spells it "model name"; Arm kernels "model name" (newer), "Model" or "Hardware" (boards).
MODEL_KEYS = ("model name", "Model", "Hardware")


@dataclass(frozen=True)
class CpuInfo:
    """The parts of /proc/cpuinfo that decide threads and kernels."""

    model: Optional[str]
    flags: FrozenSet[str]  # x86 "flags", Arm "Features", of the first processor
    processors: int  # logical CPUs listed
    physical_cores: int  # distinct (physical id, core id) pairs; 0 where the kernel lists none (Arm)


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of /proc/cpuinfo: one block of ``key : value`` lines per logical CPU."""
    first: dict = {}
    cores = set()
    processors = 0
    physical = core = None
    for line in text.splitlines() + [""]:
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not line.strip():  # end of one processor's block
            if core is not None:
                cores.add((physical, core))
            physical = core = None
            continue
        if not sep:
            continue
        first.setdefault(key, value)
        if key == "processor":
            processors += 1
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
    model = next((first[k] for k in MODEL_KEYS if first.get(k)), None)
    flags = frozenset((first.get("flags") or first.get("Features") or "").split())
    return CpuInfo(model, flags, processors, len(cores))


@lru_cache(maxsize=1)
def this_cpu() -> CpuInfo:
    """This machine's /proc/cpuinfo, parsed once (empty where there is none)."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text)


def cpu_flags() -> FrozenSet[str]:
    return this_cpu().flags


def native_bf16(flags: Optional[FrozenSet[str]] = None) -> bool:
    """bfloat16 matrix maths in hardware: AMX-BF16 tiles or AVX512-BF16 (``flags``: this CPU's)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in BF16_FLAGS)


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, e.g. under taskset or a container)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def physical_cores(info: Optional[CpuInfo] = None) -> int:
    """Physical cores this process may use (not hyper-threads): /proc/cpuinfo, capped by affinity."""
    info = this_cpu() if info is None else info
    usable = usable_cpus()
    return max(1, min(info.physical_cores or usable, usable))
