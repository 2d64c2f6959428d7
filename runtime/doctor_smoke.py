"""destseg-doctor's end-to-end test: test:// frames through every backend and precision this box runs.

The frames come from the runtime's own source pipeline (videotestsrc, scaled to the model's
S x S by nvvidconv on a Jetson, videoscale elsewhere), so the converter is exercised too.
Each backend opens the bundle as destseg-runtime would (the TensorRT one builds its engine
at first start and caches it) and runs every frame; its maps and scores are compared with
ONNX Runtime FP32 on the same frames (max absolute difference) and its calls are timed.
The bundle is the tiny one shipped in the package (runtime/doctor_bundle, made by
tests/make_doctor_bundle.py) unless the user names theirs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from destseg.bundle import BundleError, load_bundle
from destseg.inference import VARIANTS_FOR, variant_for
from destseg.latency import latency_statistics
from destseg.runtime.doctor_checks import ABSENT, FAIL, OK, SKIP, Check

SHIPPED_BUNDLE = Path(__file__).resolve().parent / "doctor_bundle"
FRAMES = 20
PATTERN = "ball"  # moves, so the frames differ
# Largest |anomaly map - ONNX Runtime FP32| accepted per precision (the map is in [0, 1]).
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2, "int8": 0.1}
PLAN = (("onnxruntime", ("fp32", "int8", "fp16")), ("openvino", ("fp32", "bf16", "int8")),
        ("tensorrt", ("fp32", "fp16", "int8")))


class SourceEndedEarly(RuntimeError):
    """The test pattern delivered fewer frames than asked."""


def pattern_frames(size: int, platform: str, count: int = FRAMES) -> np.ndarray:
    """``count`` S x S RGB frames from test://, through the runtime's source pipeline (N x S x S x 3 uint8)."""
    from destseg.runtime.frames import SourceEnded
    from destseg.runtime.sources import open_source

    reader = open_source(f"test://{PATTERN}?live=0&frames={count}", size, platform, 320, 240, 30.0)
    frames = []
    try:
        while len(frames) < count:
            frame = reader.read(5.0)
            if frame is None:
                raise SourceEndedEarly(f"test:// gave {len(frames)} of {count} frames within 5 s")
            frames.append(frame.model_rgb)
    except SourceEnded as exc:
        raise SourceEndedEarly(f"test:// ended after {len(frames)} of {count} frames") from exc
    finally:
        reader.close()
    return np.stack(frames)


def run_backend(backend: Any, frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray, List[float]]:
    """Maps, scores and per-call milliseconds of one backend over the frames, one frame per call."""
    maps, scores, times = [], [], []
    for frame in frames:
        start = time.perf_counter()
        m, s = backend.infer(frame[np.newaxis])
        times.append((time.perf_counter() - start) * 1e3)
        maps.append(m[0])
        scores.append(s[0])
    return np.stack(maps), np.asarray(scores), times


def comparison_check(name: str, precision: str, detail: str, maps: np.ndarray, scores: np.ndarray,
                     reference: Optional[Tuple[np.ndarray, np.ndarray]], times_ms: List[float], opened_s: float) -> Check:
    """One backend x precision: its difference from ONNX Runtime FP32 against :data:`TOLERANCE`, and its speed."""
    stats = latency_statistics(times_ms)
    speed = (f"median {stats['median']:.2f} ms, p90 {stats['p90']:.2f} ms over {len(times_ms)} frames "
             f"(opened in {opened_s:.1f} s)")
    if reference is None:
        return Check("smoke", f"{name} {precision}", OK, f"{speed}; no ONNX Runtime FP32 reference to compare with; {detail}")
    map_diff = float(np.abs(maps - reference[0]).max())
    score_diff = float(np.abs(scores - reference[1]).max())
    text = f"max |map diff| {map_diff:.2g}, max |score diff| {score_diff:.2g} vs ONNX Runtime FP32; {speed}; {detail}"
    if not np.isfinite(maps).all() or map_diff > TOLERANCE[precision]:
        return Check("smoke", f"{name} {precision}", FAIL, text,
                     f"outputs differ by more than {TOLERANCE[precision]:g}: delete the cached engine "
                     f"(~/.cache/destseg/engines) and rerun; if it persists, re-export the bundle")
    return Check("smoke", f"{name} {precision}", OK, text)


def backend_absent(name: str) -> Optional[str]:
    """Why a backend cannot run on this box at all (None when it can)."""
    if name == "tensorrt":
        from destseg.runtime.backends import why_no_tensorrt_backend

        reason = why_no_tensorrt_backend()
        return f"the tensorrt backend cannot run here: {reason}; see the libraries lines" if reason else None
    if name == "openvino":
        from destseg.runtime.backends import why_no_openvino_backend

        reason = why_no_openvino_backend()
        return f"the openvino backend cannot run here: {reason}" if reason else None
    return None  # ONNX Runtime: the libraries lines fail when it is missing, and its reference line says why


def why_not(name: str, precision: str, variants: List[str]) -> Optional[Tuple[str, str]]:
    """(status, reason) when this precision cannot run on this backend here or on this bundle, else None."""
    target = name
    if name == "tensorrt":
        from destseg.tensorrt import TensorRTError, build_recipe, installed_tensorrt_version

        try:  # TensorRT 11 has no FP16 flag: the recipe says so, and how to get an FP16 model
            build_recipe(installed_tensorrt_version() or "", precision)
        except TensorRTError as exc:
            return SKIP, str(exc)
    if name == "openvino" and precision == "bf16":
        from destseg.cpu import native_bf16

        if not native_bf16():
            return SKIP, "this CPU has no native bf16 (AMX or AVX512-BF16): OpenVINO would emulate it; fp32 and int8 are the ones to run"
    if name == "onnxruntime":
        import onnxruntime

        target = "onnxruntime+tensorrt" if "TensorrtExecutionProvider" in onnxruntime.get_available_providers() else "onnxruntime"
        if precision not in VARIANTS_FOR[target]:
            return ABSENT, f"{precision} on ONNX Runtime needs its TensorRT execution provider (onnxruntime-gpu)"
    if variant_for(precision, variants, target) not in variants:
        return SKIP, f"the bundle has no {precision} model (it has {', '.join(variants)})"
    return None


def smoke_checks(bundle_path: Path, platform: str, count: int = FRAMES,
                 say: Callable[[str], None] = lambda line: None) -> List[Check]:
    """Every backend x precision of :data:`PLAN` on ``count`` test:// frames, checked and timed;
    ``say`` hears which one starts (a first TensorRT build takes minutes on a Jetson)."""
    try:
        bundle = load_bundle(bundle_path)
    except BundleError as exc:
        return [Check("smoke", "bundle", FAIL, str(exc), "pass a destseg-export folder with --bundle, or none for the shipped one")]
    checks = [Check("smoke", "bundle", OK, f"{bundle_path} ({bundle.image_size} x {bundle.image_size}, "
                    f"models: {', '.join(bundle.variants)})")]
    try:
        frames = pattern_frames(bundle.image_size, platform, count)
    except Exception as exc:  # noqa: BLE001 - a source failure of any kind is the line's content
        return checks + [Check("smoke", "test:// frames", FAIL, f"{type(exc).__name__}: {exc}",
                               "see the GStreamer lines above (videotestsrc, nvvidconv / videoscale)")]
    checks.append(Check("smoke", "test:// frames", OK, f"{len(frames)} frames of test://{PATTERN} through the "
                        f"{platform} source pipeline"))
    reference: Optional[Tuple[np.ndarray, np.ndarray]] = None
    for name, precisions in PLAN:
        absent = backend_absent(name)
        if absent:
            checks.append(Check("smoke", f"{name} ({', '.join(precisions)})", SKIP, absent))
            continue
        for precision in precisions:
            skipped = why_not(name, precision, bundle.variants)
            if skipped:
                checks.append(Check("smoke", f"{name} {precision}", skipped[0], skipped[1]))
                continue
            say(f"smoke test: {name} {precision}" + (" (building its engine the first time)" if name == "tensorrt" else ""))
            check, outputs = _run_one(name, precision, bundle_path, frames, reference)
            checks.append(check)
            if (name, precision) == ("onnxruntime", "fp32"):
                reference = outputs
    return checks


def _run_one(name: str, precision: str, bundle_path: Path, frames: np.ndarray,
             reference: Optional[Tuple[np.ndarray, np.ndarray]]) -> Tuple[Check, Optional[Tuple[np.ndarray, np.ndarray]]]:
    """The line for one backend x precision, and its (maps, scores) when it ran."""
    from destseg.runtime.backends import open_backend

    start = time.perf_counter()
    try:
        backend = open_backend(name, bundle_path, precision)
    except Exception as exc:  # noqa: BLE001 - an engine that will not build is this line's result
        return Check("smoke", f"{name} {precision}", FAIL, f"cannot open: {exc}",
                     "see the message; for TensorRT also the libraries lines and the log above"), None
    opened_s = time.perf_counter() - start
    try:
        maps, scores, times = run_backend(backend, frames)
    except Exception as exc:  # noqa: BLE001
        return Check("smoke", f"{name} {precision}", FAIL, f"inference failed: {type(exc).__name__}: {exc}",
                     "see the message; for TensorRT delete ~/.cache/destseg/engines and rerun"), None
    finally:
        backend.close()
    if (name, precision) == ("onnxruntime", "fp32"):
        stats = latency_statistics(times)
        return Check("smoke", f"{name} {precision}", OK, f"the reference; median {stats['median']:.2f} ms, p90 "
                     f"{stats['p90']:.2f} ms over {len(times)} frames (opened in {opened_s:.1f} s); "
                     f"{backend.detail}"), (maps, scores)
    return comparison_check(name, precision, backend.detail, maps, scores, reference, times, opened_s), (maps, scores)
