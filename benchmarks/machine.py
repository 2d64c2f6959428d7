"""What machine a benchmark ran on: CPU, GPU, library versions, and Jetson power mode and clocks.

A latency is only meaningful with the machine beside it: a Jetson in a 15 W mode or with
its clocks scaled down is several times slower than the same board at MAXN. Everything
here is read from /proc, /sys, /etc and the vendor tools when present, each field
optional, and never by importing torch (the Jetson image has none). The Jetson and GPU
facts come from :mod:`destseg.hardware`, which destseg-doctor reads too.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any, Dict, Optional

from destseg.cpu import parse_cpuinfo, this_cpu, usable_cpus
from destseg.hardware import gpu_info, jetson_info, read_text
from destseg.tensorrt import installed_tensorrt_version

LIBRARIES = ("tensorrt", "onnxruntime", "openvino", "torch", "numpy", "pycuda")  # TensorRT first: it is looked up its own way


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

    TensorRT from JetPack's apt package may lack pip metadata; it is imported then
    (:func:`destseg.tensorrt.installed_tensorrt_version`), since a machine with TensorRT is
    one the benchmark will use it on anyway.
    """
    versions: Dict[str, Optional[str]] = {"tensorrt": installed_tensorrt_version()}
    for name in LIBRARIES[1:]:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions["onnxruntime"] is not None:
        import onnxruntime

        versions["onnxruntime_providers"] = ",".join(onnxruntime.get_available_providers())
    return versions


def machine_record() -> Dict[str, Any]:
    """Everything above, plus OS, Python and the load average (other jobs skew latencies)."""
    return {
        "cpu": cpu_info(),
        "memory_total": next((line.split(":", 1)[1].strip() for line in (read_text("/proc/meminfo") or "").splitlines() if line.startswith("MemTotal")), None),
        "gpus": gpu_info(),
        "jetson": jetson_info(),
        "libraries": library_versions(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
