"""destseg-doctor: every path destseg-edge would use on this box, checked, each failure with what to do.

Run it on the Jetson, the PC or in the Docker image. It prints one line per check: the
platform and JetPack release, CUDA, TensorRT, pycuda, NumPy, ONNX Runtime and OpenVINO, every
GStreamer element the runtime's pipelines use (NVIDIA's converter, decoder and encoders run a
frame to EOS, since they can be registered and still fail at start), the cameras and their
modes, and an end-to-end smoke test: test:// frames through each backend and precision this
box runs, compared with ONNX Runtime FP32 and timed (runtime/doctor_smoke.py). What a box
lacks by design (TensorRT on a PC without an NVIDIA GPU) is "not present", not a failure.

Exit status: 0 nothing failed; 1 a check failed (its line says what to install or change);
2 bad input (a --bundle that is not a bundle). ``--json`` prints the same as JSON, with the
machine facts, for a support ticket; ``--quick`` (the Docker image's HEALTHCHECK) skips the
cameras and the smoke test.
"""
from __future__ import annotations

import argparse
import json
import platform as py_platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import destseg
from destseg.bundle import BundleError, read_meta
from destseg.runtime.doctor_checks import (ABSENT, FAIL, OK, SKIP, WARN, Check, Machine, camera_checks,
                                           gstreamer_checks, library_checks, platform_checks, read_machine)
from destseg.runtime.doctor_smoke import FRAMES, SHIPPED_BUNDLE, smoke_checks
from destseg.runtime.gst import PLATFORMS

STATUSES = (OK, WARN, FAIL, ABSENT, SKIP)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="destseg-doctor",
        description="Check every path destseg-edge would use on this machine (Jetson, PC or the Docker image) "
                    "and say what to install or change for each one that fails.",
    )
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle for the smoke test (default: the tiny one shipped in the package)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (for a support ticket)")
    p.add_argument("--quick", action="store_true",
                   help="platform, libraries and GStreamer only: no cameras, no smoke test (the Docker HEALTHCHECK)")
    p.add_argument("--frames", type=int, default=FRAMES, help=f"test:// frames per backend and precision (default {FRAMES})")
    p.add_argument("--platform", choices=PLATFORMS, default="auto",
                   help="GStreamer elements to check and use: jetson, generic, or auto (jetson on a Jetson)")
    return p


def checked_platform(requested: str, machine: Machine) -> str:
    """The pipelines to check: as asked, else the Jetson's on a Jetson (even if its plugins fail to load)."""
    if requested != "auto":
        return requested
    return "jetson" if machine.jetson else "generic"


def runtime_platform_check(machine: Machine, checked: str) -> Check:
    """What destseg-runtime's --platform auto will pick, which is decided by whether nvvidconv is registered."""
    from destseg.runtime.errors import RuntimeInputError
    from destseg.runtime.gst import resolve_platform

    try:
        resolved = resolve_platform("auto")
    except RuntimeInputError as exc:
        return Check("gstreamer", "--platform auto", SKIP, str(exc))
    if machine.jetson and resolved != "jetson":
        return Check("gstreamer", "--platform auto", FAIL,
                     "resolves to generic (nvvidconv is not registered): the runtime would convert and scale on the CPU",
                     "see the nvvidconv and blacklisted plugins lines")
    return Check("gstreamer", "--platform auto", OK, f"resolves to {resolved}" + ("" if resolved == checked else
                                                                               f" (checked as {checked})"))


def run_checks(machine: Machine, platform: str, quick: bool, bundle: Path, frames: int) -> List[Check]:
    from destseg.runtime.gst import play_to_end

    checks = platform_checks(machine) + library_checks(machine)
    gst_checks = gstreamer_checks(platform, play_to_end)
    checks += gst_checks
    if gst_checks[0].status != OK:  # no GStreamer: nothing below can run
        return checks
    checks.append(runtime_platform_check(machine, platform))
    if quick:
        return checks
    checks += camera_checks(platform, play_to_end)
    checks += smoke_checks(bundle, platform, frames, say=lambda line: print(f"destseg-doctor: {line}", file=sys.stderr, flush=True))
    return checks


def render_table(checks: List[Check], header: str) -> str:
    """The report as an aligned table; each fix on the line under its check."""
    name_width = max(len(c.name) for c in checks)
    lines = [header, "", f"{'SECTION':<10} {'CHECK':<{name_width}}  {'STATUS':<12} DETAIL"]
    section = None
    for c in checks:
        shown = c.section if c.section != section else ""
        section = c.section
        lines.append(f"{shown:<10} {c.name:<{name_width}}  {c.status:<12} {c.detail}")
        if c.fix and c.status in (FAIL, WARN, ABSENT):
            lines.append(f"{'':<10} {'':<{name_width}}  {'':<12} -> {c.fix}")
    lines += ["", summary_line(checks)]
    return "\n".join(lines)


def summary_line(checks: List[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    verdict = "FAILED: fix the FAIL lines above" if counts[FAIL] else "nothing failed"
    return f"{len(checks)} checks: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f". {verdict}."


def machine_facts(machine: Machine) -> Dict[str, Any]:
    """The raw facts the checks decided on, for a support ticket."""
    return {
        "architecture": machine.architecture,
        "model": machine.model,
        "l4t_release": machine.l4t.line if machine.l4t else None,
        "jetpack": machine.l4t.jetpack if machine.l4t else None,
        "l4t_core_package": machine.l4t_core,
        "gpus": list(machine.gpus),
        "tegrastats": machine.stats,
        "container": machine.container,
        "os": py_platform.platform(),
        "python": sys.version.split()[0],
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1:
        print("destseg-doctor: error: --frames must be at least 1", file=sys.stderr)
        return 2
    bundle = args.bundle or SHIPPED_BUNDLE
    try:
        read_meta(bundle)
    except BundleError as exc:
        print(f"destseg-doctor: error: {exc}", file=sys.stderr)
        return 2
    machine = read_machine()
    platform = checked_platform(args.platform, machine)
    started = time.time()
    checks = run_checks(machine, platform, args.quick, bundle, args.frames)
    failed = any(c.status == FAIL for c in checks)
    if args.json:
        report = {
            "destseg_edge": destseg.__version__,
            "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "platform": platform,
            "quick": args.quick,
            "bundle": str(bundle),
            "machine": machine_facts(machine),
            "checks": [asdict(c) for c in checks],
            "failed": failed,
        }
        print(json.dumps(report, indent=2))
    else:
        what = "Jetson" if machine.jetson else "PC"
        print(render_table(checks, f"destseg-doctor {destseg.__version__}: {what}, checking the {platform} pipelines"
                                   + (" (quick)" if args.quick else "")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
