"""What machine a benchmark ran on: CPU, GPU, library versions, and Jetson power mode and clocks.

A latency is only meaningful with the machine beside it: a Jetson in a 15 W mode or with
its clocks scaled down is several times slower than the same board at MAXN. Everything
here is read from /proc, /sys, /etc and the vendor tools when present, each field
optional, and never by importing torch (the Jetson image has none).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from destseg.cpu import parse_cpuinfo, this_cpu, usable_cpus

LIBRARIES = ("tensorrt", "onnxruntime", "torch", "numpy", "pycuda")


def _read(path: str | os.PathLike) -> Optional[str]:
    try:
        return Path(path).read_text(errors="replace").strip().rstrip("\x00")
    except OSError:
        return None


def _command(args: List[str], timeout: float = 10.0) -> Optional[str]:
    """Output of a vendor tool, or None when it is absent, refuses (not root) or hangs."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (done.stdout or done.stderr).strip()
    return out if done.returncode == 0 and out else None


def cpu_info(cpuinfo: Optional[str] = None) -> Dict[str, Any]:
    """Model, instruction-set flags and core counts (:func:`destseg.cpu.parse_cpuinfo`; x86 and Arm spellings)."""
    info = parse_cpuinfo(cpuinfo) if cpuinfo is not None else this_cpu()
    return {
        "model": info.model or platform.processor() or None,
        "architecture": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": info.physical_cores or os.cpu_count(),
        "usable_cores": usable_cpus(),
        "flags": sorted(info.flags),
    }


def library_versions() -> Dict[str, Optional[str]]:
    """Installed versions from package metadata, so nothing heavy (torch) gets imported.

    TensorRT from JetPack's apt package may lack pip metadata; it is imported then, since a
    machine with TensorRT is one the benchmark will use it on anyway.
    """
    versions: Dict[str, Optional[str]] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions["tensorrt"] is None and importlib.util.find_spec("tensorrt") is not None:
        import tensorrt

        versions["tensorrt"] = getattr(tensorrt, "__version__", "unknown")
    if versions["onnxruntime"] is not None:
        import onnxruntime

        versions["onnxruntime_providers"] = ",".join(onnxruntime.get_available_providers())
    return versions


def gpu_info() -> List[Dict[str, str]]:
    """Name, driver and memory of each GPU nvidia-smi lists (none on machines without it)."""
    out = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"])
    gpus = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append(dict(zip(("name", "driver", "memory", "max_sm_clock"), parts)))
    return gpus


def jetson_info(sys_root: str = "/") -> Optional[Dict[str, Any]]:
    """L4T release, board, power mode and clocks of a Jetson; None elsewhere.

    ``nvpmodel -q`` works without root; ``jetson_clocks --show`` needs it and is then
    recorded as unavailable. The /sys clocks (CPU cpufreq and every devfreq device: GPU,
    and on some boards the DLA and EMC) are readable by anyone.
    """
    root = Path(sys_root)
    release = _read(root / "etc/nv_tegra_release")
    if release is None:
        return None
    cpus = {}
    for policy in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        cpus[policy.parent.name] = {
            k: _read(policy / f) for k, f in (("cur_khz", "scaling_cur_freq"), ("max_khz", "scaling_max_freq"), ("governor", "scaling_governor"))
        }
    devfreq = {}
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        devfreq[dev.name] = {k: _read(dev / k) for k in ("cur_freq", "max_freq", "governor")}
    return {
        "l4t_release": release.splitlines()[0],
        "model": _read(root / "proc/device-tree/model"),
        "nvpmodel": _command(["nvpmodel", "-q"]) or "unavailable (nvpmodel not found or refused)",
        "jetson_clocks": _command(["jetson_clocks", "--show"]) or "unavailable (needs root, or not installed)",
        "cpu_clocks": cpus,
        "devfreq": devfreq,
    }


def machine_record() -> Dict[str, Any]:
    """Everything above, plus OS, Python and the load average (other jobs skew latencies)."""
    return {
        "cpu": cpu_info(),
        "memory_total": next((line.split(":", 1)[1].strip() for line in (_read("/proc/meminfo") or "").splitlines() if line.startswith("MemTotal")), None),
        "gpus": gpu_info(),
        "jetson": jetson_info(),
        "libraries": library_versions(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
