"""INT8 vs FP32 on the CPU, side by side in one run, and where the time goes.

Times, on the same exported model and input: ONNX Runtime FP32, the INT8 CPU form, the
INT8 TensorRT form (run by ONNX Runtime, for reference), OpenVINO FP32, bf16 (on CPUs with
native bf16) and both INT8 forms (where OpenVINO is installed), PyTorch eager FP32 and
PyTorch bfloat16 autocast; then ONNX Runtime's profiler, summed per op type.

Targets (issue: INT8): the CPU INT8 model at most 0.4 x the FP32 ONNX Runtime latency,
and faster than PyTorch bfloat16 autocast; (issue: OpenVINO) our best INT8 at most 0.11 x
the FP32 ONNX Runtime latency, what OpenVINO + NNCF reaches on a CPU with VNNI and AMX.

    python benchmarks/int8_speed.py                      # random-weight resnet18 at 256, built here
    python benchmarks/int8_speed.py --bundle B --run R   # an exported model and its run
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from destseg.inference import onnx_session, openvino_model
from destseg.latency import latency_statistics

BEST_INT8_TARGET = 0.11  # x ONNX Runtime FP32: OpenVINO + NNCF on an Intel Xeon with VNNI and AMX (issue: OpenVINO)


def timed(fn: Callable[[], object], warmup: int, runs: int) -> Dict[str, float]:
    for _ in range(warmup):
        fn()
    samples: List[float] = []
    for _ in range(runs):
        tic = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - tic) * 1000.0)
    stats = latency_statistics(samples)
    return {f"{k}_ms": stats[k] for k in ("median", "min", "max")}


def profile_by_op(path: Path, feed: Dict[str, np.ndarray], threads: int, runs: int, out_dir: Path) -> Dict[str, float]:
    """Milliseconds per run, summed per op type, from ONNX Runtime's profiler."""
    session = onnx_session(path, threads, profile_prefix=str(out_dir / path.stem))
    session.run(None, feed)
    for _ in range(runs):
        session.run(None, feed)
    trace = json.loads(Path(session.end_profiling()).read_text())
    per_op: Dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000.0 / (runs + 1)
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def build_random_bundle(work: Path, backbone: str, size: int) -> tuple[Path, Path]:
    """A random-weight run, exported and INT8-calibrated on synthetic images (latency needs no training)."""
    import torch

    from destseg.calibration.int8 import Int8Options, add_int8
    from destseg.export.bundle_writer import export_bundle
    from destseg.images import write_image
    from destseg.train.checkpoint import save_checkpoint
    from destseg.train.model import DeSTSeg

    torch.manual_seed(0)
    model = DeSTSeg(backbone)
    run = work / "run"
    # architecture(): what build_model checks (the EfficientNet-Lite0 teacher's architecture among it)
    config = {**model.architecture(), "teacher": "random", "image_size": size, "category": None, "data": str(work / "calib")}
    save_checkpoint(run, model, config, {"phase": "done", "step": 0})
    rng = np.random.default_rng(0)
    for i in range(16):
        write_image(work / "calib" / f"{i}.png", rng.integers(60, 200, (size, size, 3), dtype=np.uint8))
    bundle = work / "bundle"
    export_bundle(run, bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        add_int8(bundle, Int8Options(count=16))
    return run, bundle


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="bundle with int8 variants (default: build a random-weight one)")
    p.add_argument("--run", help="the bundle's training run, for the PyTorch rows")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--profile-runs", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import torch

    from destseg.bundle import load_bundle
    from destseg.cpu import native_bf16
    from destseg.train.checkpoint import load_run

    with tempfile.TemporaryDirectory(prefix="destseg-int8-speed-") as tmp:
        work = Path(tmp)
        run, bundle_dir = (Path(args.run), Path(args.bundle)) if args.bundle else build_random_bundle(work, args.backbone, args.image_size)
        bundle = load_bundle(bundle_dir)
        size = bundle.image_size
        frame = np.random.default_rng(1).integers(0, 255, (1, size, size, 3), dtype=np.uint8)
        feed = {bundle.input_name: frame}
        torch.set_num_threads(args.threads)
        results: Dict[str, Dict[str, float]] = {}
        for variant in ("fp32", "int8_cpu", "int8_trt"):
            session = onnx_session(bundle.model_path(variant), args.threads)
            results[f"onnxruntime {variant}"] = timed(lambda: session.run(None, feed), args.warmup, args.runs)
        if importlib.util.find_spec("openvino") is not None:
            rows = [("fp32", "fp32"), *([("fp32", "bf16")] if native_bf16() else []), ("int8_trt", "int8"), ("int8_cpu", "int8")]
            for variant, precision in rows:
                request = openvino_model(bundle.model_path(variant), precision, args.threads).create_infer_request()
                name = f"openvino {variant}" + (" bf16" if precision == "bf16" else "")
                results[name] = timed(lambda: request.infer({0: frame}), args.warmup, args.runs)
        model, config = load_run(run)
        from destseg.export.fused import fused_from_run

        fused = fused_from_run(model, config).eval()
        x = torch.from_numpy(frame)
        with torch.inference_mode():
            results["torch eager fp32"] = timed(lambda: fused(x), args.warmup, args.runs)

            def bf16() -> object:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return fused(x)

            # Emulated bf16 (no AMX/AVX512-BF16) takes minutes per run at 256: time it briefly.
            native = native_bf16()
            results["torch bf16 autocast" + ("" if native else " (emulated)")] = timed(
                bf16, args.warmup if native else 1, args.runs if native else 2)
        fp32 = results["onnxruntime fp32"]["median_ms"]
        print(f"threads={args.threads} size={size} backbone={bundle.meta['model']['backbone']} runs={args.runs}")
        print(f"{'configuration':<30}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'x FP32 ORT':>12}")
        for name, row in results.items():
            print(f"{name:<30}{row['median_ms']:>11.1f}{row['min_ms']:>9.1f}{row['max_ms']:>9.1f}{row['median_ms'] / fp32:>12.2f}")
        int8 = results["onnxruntime int8_cpu"]["median_ms"]
        best_name, best = min(((k, v["median_ms"]) for k, v in results.items() if "int8" in k), key=lambda kv: kv[1])
        checks = {
            "int8_cpu <= 0.4 x fp32 ORT": int8 <= 0.4 * fp32,
            "int8_cpu faster than torch bf16 autocast": int8 < next(v["median_ms"] for k, v in results.items() if k.startswith("torch bf16")),
            f"best INT8 ({best_name}, {best / fp32:.2f} x) <= {BEST_INT8_TARGET} x fp32 ORT": best <= BEST_INT8_TARGET * fp32,
        }
        for name, ok in checks.items():
            print(f"target {name}: {'met' if ok else 'MISSED'}")
        profiles = {}
        for variant in ("fp32", "int8_cpu"):
            per_op = profile_by_op(bundle.model_path(variant), feed, args.threads, args.profile_runs, work)
            profiles[variant] = per_op
            total = sum(per_op.values())
            top = ", ".join(f"{op} {ms:.1f} ms ({100 * ms / total:.0f}%)" for op, ms in list(per_op.items())[:6])
            print(f"profile {variant}: {total:.1f} ms in kernels; {top}")
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "targets": checks, "profile_ms_per_op": profiles}, indent=2))


if __name__ == "__main__":
    main()
