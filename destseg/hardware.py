"""What machine this is, read without torch: NVIDIA's Jetson release files, nvidia-smi and tegrastats.

The bench's machine record (destseg.benchmarks.machine) and destseg-doctor (destseg.runtime)
read the same facts through here. Each vendor text is parsed by a pure function, tested on
real outputs (tests/fixtures/), and each reader returns None where its file or tool is
absent, refuses (not root) or hangs.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

# Jetson Linux (L4T) release -> JetPack, for the releases destseg-edge runs on (TensorRT 8.5 and
# later), with the TensorRT each ships (NVIDIA's JetPack release notes).
JETPACK: Dict[str, Tuple[str, str]] = {
    "35.2.1": ("5.1", "8.5.2"),
    "35.3.1": ("5.1.1", "8.5.2"),
    "35.4.1": ("5.1.2", "8.5.2"),
    "35.5.0": ("5.1.3", "8.5.2"),
    "35.6.0": ("5.1.4", "8.5.2"),
    "35.6.1": ("5.1.5", "8.5.2"),
    "36.2.0": ("6.0 DP", "8.6.2"),
    "36.3.0": ("6.0", "8.6.2"),
    "36.4.0": ("6.1", "10.3.0"),
    "36.4.3": ("6.2", "10.3.0"),
    "36.4.4": ("6.2.1", "10.3.0"),
    "38.2.0": ("7.0", "10.13.3"),
}


def read_text(path: str | os.PathLike) -> Optional[str]:
    """A small system file's text (trailing NULs of device-tree strings dropped), or None."""
    try:
        return Path(path).read_text(errors="replace").strip().rstrip("\x00")
    except OSError:
        return None


def run_command(args: List[str], timeout: float = 10.0) -> Optional[str]:
    """Output of a vendor tool, or None when it is absent, refuses (not root) or hangs."""
    if shutil.which(args[0]) is None:
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (done.stdout or done.stderr).strip()
    return out if done.returncode == 0 and out else None


@dataclass(frozen=True)
class L4tRelease:
    """The first line of /etc/nv_tegra_release: "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: generic, ..."."""

    major: int
    revision: str  # "4.0"
    board: Optional[str]
    line: str

    @property
    def version(self) -> str:
        """"36.4.0", the form NVIDIA's package versions and container tags use."""
        return f"{self.major}.{self.revision}"

    @property
    def jetpack(self) -> Optional[str]:
        return JETPACK.get(self.version, (None, None))[0]

    @property
    def tensorrt(self) -> Optional[str]:
        """The TensorRT this release ships (None for one this table does not know)."""
        return JETPACK.get(self.version, (None, None))[1]


def parse_nv_tegra_release(text: str) -> Optional[L4tRelease]:
    """The release in /etc/nv_tegra_release's text, or None when it is not one."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    match = re.match(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", line)
    if not match:
        return None
    revision = match.group(2) if "." in match.group(2) else f"{match.group(2)}.0"
    board = re.search(r"BOARD:\s*([^,]+)", line)
    return L4tRelease(int(match.group(1)), revision, board.group(1).strip() if board else None, line)


def parse_l4t_core_version(text: str) -> Optional[str]:
    """"35.4.1" from dpkg's version of nvidia-l4t-core ("35.4.1-20230801124926"), or None."""
    match = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", text or "")
    return match.group(1) if match else None


def l4t_core_version() -> Optional[str]:
    """The nvidia-l4t-core package's L4T release (what a container was built on, or the host's)."""
    out = run_command(["dpkg-query", "-W", "-f=${Version}", "nvidia-l4t-core"])
    return parse_l4t_core_version(out) if out else None


def parse_nvidia_smi(text: str) -> List[Dict[str, str]]:
    """GPUs from ``nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader``."""
    gpus = []
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0]:
            gpus.append(dict(zip(("name", "driver", "memory", "max_sm_clock"), parts)))
    return gpus


def gpu_info() -> List[Dict[str, str]]:
    """Name, driver and memory of each GPU nvidia-smi lists (none on machines without it)."""
    return parse_nvidia_smi(run_command(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"]) or "")


def parse_tegrastats(line: str) -> Optional[Dict[str, Any]]:
    """RAM, swap, GPU load and temperatures from one tegrastats line (JetPack 5 and 6 spellings), or None."""
    ram = re.search(r"\bRAM (\d+)/(\d+)MB", line or "")
    if not ram:
        return None
    swap = re.search(r"\bSWAP (\d+)/(\d+)MB", line)
    gpu = re.search(r"\bGR3D_FREQ (\d+)%(?:@\[?(\d+)\]?)?", line)
    temps = {name.lower(): float(value) for name, value in re.findall(r"\b([A-Za-z][\w]*)@(-?[\d.]+)C\b", line)
             if float(value) > -100}  # -256C marks a sensor that is off
    return {
        "ram_used_mb": int(ram.group(1)), "ram_total_mb": int(ram.group(2)),
        "swap_used_mb": int(swap.group(1)) if swap else None, "swap_total_mb": int(swap.group(2)) if swap else None,
        "gpu_load_percent": int(gpu.group(1)) if gpu else None,
        "gpu_mhz": int(gpu.group(2)) if gpu and gpu.group(2) else None,
        "temperatures_c": temps,
    }


def tegrastats(timeout: float = 5.0) -> Optional[Dict[str, Any]]:
    """One tegrastats sample: it prints a line per interval until stopped, so the first is read and it is ended."""
    if shutil.which("tegrastats") is None:
        return None
    try:
        proc = subprocess.Popen(["tegrastats", "--interval", "200"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
    finally:
        proc.terminate()
        proc.wait(timeout=timeout)
    return parse_tegrastats(line)


def jetson_info(sys_root: str = "/") -> Optional[Dict[str, Any]]:
    """L4T release, board, power mode and clocks of a Jetson; None elsewhere.

    ``nvpmodel -q`` works without root; ``jetson_clocks --show`` needs it and is then
    recorded as unavailable. The /sys clocks (CPU cpufreq and every devfreq device: GPU,
    and on some boards the DLA and EMC) are readable by anyone.
    """
    root = Path(sys_root)
    release = read_text(root / "etc/nv_tegra_release")
    if release is None:
        return None
    cpus = {}
    for policy in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        cpus[policy.parent.name] = {
            k: read_text(policy / f) for k, f in (("cur_khz", "scaling_cur_freq"), ("max_khz", "scaling_max_freq"), ("governor", "scaling_governor"))
        }
    devfreq = {}
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        devfreq[dev.name] = {k: read_text(dev / k) for k in ("cur_freq", "max_freq", "governor")}
    return {
        "l4t_release": release.splitlines()[0],
        "model": read_text(root / "proc/device-tree/model"),
        "nvpmodel": run_command(["nvpmodel", "-q"]) or "unavailable (nvpmodel not found or refused)",
        "jetson_clocks": run_command(["jetson_clocks", "--show"]) or "unavailable (needs root, or not installed)",
        "cpu_clocks": cpus,
        "devfreq": devfreq,
    }
