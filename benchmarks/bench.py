"""destseg-bench BUNDLE: latency and throughput of every backend x precision x batch this machine runs.

TensorRT, OpenVINO, ONNX Runtime and PyTorch are timed in one run, so their ratios hold.

Users pick a Jetson, a precision and a batch size from these numbers, so each one comes
with its spread (min to max, p99 as trtexec reports it), the split into host-to-device,
compute and device-to-host where the backend measures it (TensorRT, with CUDA events), the
accuracy the precision costs (from the bundle's quantisation report) and a record of the
machine: CPU, GPU, library versions, Jetson power mode and clocks. Configurations this
machine cannot run are listed with the reason instead of failing the whole run.

    destseg-bench BUNDLE --batch 1,4,8 --runs 200 --out bench/ --baseline onnxruntime/fp32/b1
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from destseg.benchmarks.bench_report import accuracy_for, read_quantization_report, table, write_outputs
from destseg.benchmarks.bench_results import BACKENDS, PRECISIONS, BenchError, Config, Result
from destseg.benchmarks.machine import machine_record
from destseg.bundle import BundleError, load_bundle
from destseg.runtime.backends import Backend, open_backend

SCHEMA = "destseg-bench/1"


def _csv(text: str, allowed: Sequence[str], what: str) -> List[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise BenchError(f"--{what} {text!r}: choose from {', '.join(allowed)} (comma-separated)")
    return items


def _batches(text: str) -> List[int]:
    try:
        batches = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise BenchError(f"--batch {text!r}: pass positive batch sizes, e.g. --batch 1,4,8")
    return sorted(set(batches))


def timed_runs(backend: Backend, frames: np.ndarray, runs: int, warmup: int) -> Tuple[List[float], Dict[str, List[float]]]:
    """Wall time of each ``infer`` call after ``warmup`` untimed ones, and the backend's own stage times."""
    for _ in range(warmup):
        backend.infer(frames)
    samples: List[float] = []
    stages: Dict[str, List[float]] = {}
    for _ in range(runs):
        tic = time.perf_counter()
        backend.infer(frames)
        samples.append((time.perf_counter() - tic) * 1e3)
        for key, ms in backend.last_timings().items():
            stages.setdefault(key, []).append(float(ms))
    # A stage a backend does not time separately reads 0 (ONNX Runtime's copies happen inside run()).
    return samples, {k: v for k, v in stages.items() if any(v)}


def measure(config: Config, bundle: Path, run: Optional[Path], runs: int, warmup: int, threads: Optional[int], image_size: int) -> Result:
    """Open the backend for one configuration and time it; BenchError says why it cannot run here."""
    if config.backend == "torch" and run is None:
        raise BenchError("the torch backend runs a training run, not a bundle: pass --run RUN")
    path = run if config.backend == "torch" else bundle
    try:
        backend = open_backend(config.backend, path, config.precision, batch_size=config.batch, threads=threads)
    except ImportError as exc:
        raise BenchError(f"{exc.name or exc} is not installed") from exc
    except ValueError as exc:  # BackendError, BundleError: the message says what is missing
        raise BenchError(str(exc)) from exc
    try:
        if backend.image_size != image_size:  # a --run that is not the bundle's model
            raise BenchError(f"{path} takes {backend.image_size} x {backend.image_size} images, the bundle {image_size}; "
                             f"pass the --run the bundle was exported from")
        frames = np.random.default_rng(0).integers(0, 256, (config.batch, image_size, image_size, 3), dtype=np.uint8)
        samples, stages = timed_runs(backend, frames, runs, warmup)
        resolved = Config(config.backend, backend.precision, config.batch)
        return Result(resolved, samples, stages, variant=backend.variant, detail=backend.detail)
    finally:
        backend.close()


def measure_all(configs: Sequence[Config], bundle: Path, run: Optional[Path], runs: int, warmup: int,
                threads: Optional[int], image_size: int) -> Tuple[List[Result], List[Dict[str, str]]]:
    """Every configuration in turn: (results, skipped with the reason)."""
    results: List[Result] = []
    skipped: List[Dict[str, str]] = []
    for config in configs:
        print(f"measuring {config.label} ...", file=sys.stderr, flush=True)
        try:
            result = measure(config, bundle, run, runs, warmup, threads, image_size)
        except BenchError as exc:
            skipped.append({"config": config.label, "reason": str(exc)})
            continue
        if any(r.config == result.config for r in results):  # "auto" resolved to a configuration already measured
            skipped.append({"config": config.label, "reason": f"same as {result.config.label}, measured above"})
            continue
        results.append(result)
    return results, skipped


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="destseg-bench", description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path, help="bundle folder (destseg-export --out)")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, from {', '.join(BACKENDS)} (default: all)")
    p.add_argument("--precisions", default="fp32,fp16,bf16,int8",
                   help="comma-separated, from fp32, fp16, int8, bf16, auto (default fp32,fp16,bf16,int8)")
    p.add_argument("--batch", default="1", help="comma-separated batch sizes (default 1; more needs a --dynamic-batch bundle)")
    p.add_argument("--runs", type=int, default=100, help="timed runs per configuration (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10; TensorRT and ONNX Runtime tune on the first calls)")
    p.add_argument("--threads", type=int, help="CPU threads for OpenVINO, ONNX Runtime and torch (default: physical cores)")
    p.add_argument("--run", type=Path, help="training run folder, for the torch backend")
    p.add_argument("--baseline", help="configuration the others are compared with, e.g. onnxruntime/fp32/b1")
    p.add_argument("--out", type=Path, help="folder for bench.json, bench.csv, bench.md and bench.png")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    command = "destseg-bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        bundle = load_bundle(args.bundle)
        backends = _csv(args.backends, BACKENDS, "backends")
        precisions = _csv(args.precisions, (*PRECISIONS, "auto"), "precisions")
        batches = _batches(args.batch)
        if args.runs < 1 or args.warmup < 0:
            raise BenchError("--runs must be at least 1 and --warmup at least 0")
        baseline = Config.parse(args.baseline) if args.baseline else None
        report = read_quantization_report(bundle.path)
    except (BenchError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    machine = machine_record()  # before measuring: its load average is the other jobs', not ours
    results, skipped = measure_all([Config(b, p, n) for b in backends for p in precisions for n in batches],
                                   bundle.path, args.run, args.runs, args.warmup, args.threads, bundle.image_size)
    if not results:
        print("error: nothing could be measured here:\n" + "\n".join(f"  {s['config']}: {s['reason']}" for s in skipped), file=sys.stderr)
        return 1
    base = next((r for r in results if r.config == baseline), None)
    if baseline is not None and base is None:
        print(f"warning: baseline {baseline.label} was not measured; no ratios", file=sys.stderr)
    for r in results:
        if base is not None:
            r.compare_with(base)
        if report is not None:
            r.accuracy = accuracy_for(report, r.variant, r.config.backend)

    print(table(results, skipped), end="")
    if args.out:
        record = {
            "schema": SCHEMA,
            "command": command,
            "bundle": str(bundle.path),
            "model": {k: bundle.meta["model"].get(k) for k in ("backbone", "image_size", "category", "weights_sha256")},
            "settings": {"runs": args.runs, "warmup": args.warmup, "threads": args.threads},
            "machine": machine,
            "load_average_1min_after": os.getloadavg()[0],
            "results": [r.to_dict() for r in results],
            "skipped": skipped,
            "quantization_report": str(bundle.path / "quantization_report.json") if report is not None else None,
        }
        names = write_outputs(args.out, record, results, skipped)
        print(f"wrote {', '.join(str(args.out / n) for n in names)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
