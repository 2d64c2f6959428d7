"""Segmentation-head trade-off: compute, CPU latency and detection quality of each head configuration.

Reads quality-benchmark runs (``benchmarks/quality.py --no-int8``, one or more folders per
configuration, every ``object-s*`` case with an evaluation), and for each configuration:
GMACs and parameters (:func:`destseg.benchmarks.compute_budget.budget`), the mean and range
over seeds of all six metrics, and the CPU latency of its first run exported to a bundle with
INT8 (calibrated on the run's own training images, no accuracy gate: latency does not depend
on which layers a gate would keep in float; the report's FP32 vs INT8 agreement on normal
images is recorded beside it, since an INT8 latency is only worth what that INT8 model keeps). Every configuration x backend is timed round-robin in one
process (ONNX Runtime FP32 and INT8 CPU form, OpenVINO FP32, bf16 where native, INT8 on the
CPU form as the openvino backend runs it, and the TensorRT form), so the ratios hold on a shared machine. Writes head_tradeoff.md, .json and the
Pareto plot head_tradeoff.png (latency and GMACs vs pixel AP).

    python benchmarks/head_tradeoff.py --out tradeoff \\
        --config paper-64=/work/shared_runs/quality --config light-64=q/light-w64-s0,q/light-w64-s1
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from destseg.atomic import atomic_path, write_json, write_text
from destseg.benchmarks.machine import machine_record
from destseg.benchmarks.quality import HEADERS, METRICS
from destseg.cpu import native_bf16
from destseg.inference import onnx_session, openvino_model
from destseg.latency import latency_statistics

CALIB_COUNT = 32


def find_cases(folders: Sequence[Path]) -> List[Path]:
    """The evaluated runs under quality-benchmark folders (``*/object-s*/run`` with eval/metrics.json)."""
    runs = [run for f in folders for run in sorted(f.glob("object-s*/run")) if (run / "eval" / "metrics.json").is_file()]
    if not runs:
        raise SystemExit(f"head_tradeoff: no evaluated object-s*/run under {', '.join(map(str, folders))}")
    return runs


def quality_of(runs: Sequence[Path]) -> Dict[str, Dict[str, float]]:
    """Mean, min and max over the runs (seeds) of each metric (fractions)."""
    values = {m: [json.loads((r / "eval" / "metrics.json").read_text())["destseg"][m] for r in runs] for m in METRICS}
    return {m: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "seeds": v} for m, v in values.items()}


def architecture(run: Path) -> Dict[str, Any]:
    config = json.loads((run / "config.json").read_text())
    return {"backbone": config["backbone"], "image_size": config["image_size"], "seg_width": config["seg_width"],
            "seg_head": config.get("seg_head", "paper"), "options": config["options"]}


def compute(arch: Dict[str, Any]) -> Dict[str, float]:
    """Whole-model and segmentation-network GMACs and parameters (counted on the meta device)."""
    from destseg.benchmarks.compute_budget import WHOLE, budget

    rows = {r.part: r for r in budget(arch["backbone"], arch["image_size"], measure=False,
                                      seg_width=arch["seg_width"], seg_head=arch["seg_head"])}
    return {"gmacs": rows[WHOLE].macs / 1e9, "params_m": rows[WHOLE].params / 1e6,
            "seg_gmacs": rows["segmentation"].macs / 1e9, "seg_params_m": rows["segmentation"].params / 1e6}


def export_with_int8(run: Path, out: Path) -> Dict[str, Any]:
    """Export the run to ``out`` as a batch-1 bundle with both INT8 forms, calibrated on its training
    images; the quantisation report's FP32 vs INT8 agreement on normal images, per row."""
    from destseg.calibration.int8 import Int8Options, add_int8
    from destseg.export.bundle_writer import export_bundle

    export_bundle(run, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = add_int8(out, Int8Options(count=CALIB_COUNT, allow_degraded=True))
    return report["normal_images"]


def runners(bundle: Path, threads: int) -> Dict[str, Callable[[], object]]:
    """One callable per backend x precision this machine runs, each on the same frame."""
    from destseg.bundle import load_bundle

    b = load_bundle(bundle)
    frame = np.random.default_rng(0).integers(0, 256, (1, b.image_size, b.image_size, 3), dtype=np.uint8)
    out: Dict[str, Callable[[], object]] = {}
    for name, variant in (("ORT FP32", "fp32"), ("ORT INT8", "int8_cpu")):
        session = onnx_session(b.model_path(variant), threads)
        out[name] = (lambda s: lambda: s.run(None, {b.input_name: frame}))(session)
    if importlib.util.find_spec("openvino") is not None:
        modes = [("OV FP32", "fp32", "fp32"), *([("OV bf16", "fp32", "bf16")] if native_bf16() else []),
                 ("OV INT8", "int8_cpu", "int8"), ("OV INT8 TRT form", "int8_trt", "int8")]
        for name, variant, precision in modes:
            request = openvino_model(b.model_path(variant), precision, threads).create_infer_request()
            out[name] = (lambda r: lambda: r.infer({0: frame}))(request)
    return out


def time_round_robin(calls: Dict[str, Callable[[], object]], runs: int, warmup: int) -> Dict[str, Dict[str, float]]:
    """Median and min ms of each call, interleaved: one run of every call per round."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    samples: Dict[str, List[float]] = {k: [] for k in calls}
    for _ in range(runs):
        for key, fn in calls.items():
            tic = time.perf_counter()
            fn()
            samples[key].append((time.perf_counter() - tic) * 1e3)
    return {k: {s: latency_statistics(v)[s] for s in ("median", "min")} for k, v in samples.items()}


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def to_markdown(result: Dict[str, Any]) -> str:
    cpu = result["machine"]["cpu"]
    configs = result["configs"]
    modes = list(next(iter(configs.values()))["latency_ms"])
    base = next(iter(configs.values()))
    lines = [f"Machine: {cpu['model']}, {cpu['usable_cores']} usable cores, {result['threads']} threads; "
             f"latency: median of {result['runs']} round-robin runs, batch 1; load average {result['load_average']:.1f}.", "",
             "| config | GMACs | params (M) | seg GMACs | seeds | " + " | ".join(HEADERS) + " | "
             + " | ".join(f"{m} ms (median / min)" for m in modes) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * (len(HEADERS) + len(modes))]
    for name, c in configs.items():
        q = c["quality"]
        cells = [f"{_pct(q[m]['mean'])} ({_pct(q[m]['min'])}-{_pct(q[m]['max'])})" for m in METRICS]
        lat = [f"{c['latency_ms'][m]['median']:.1f} / {c['latency_ms'][m]['min']:.1f}" for m in modes]
        lines.append(f"| {name} | {c['gmacs']:.2f} | {c['params_m']:.1f} | {c['seg_gmacs']:.2f} | {len(c['runs'])} | "
                     + " | ".join(cells) + " | " + " | ".join(lat) + " |")
    lines += ["", "Relative to " + next(iter(configs)) + " (pixel AP and image AUROC in points, mean over seeds):", "",
              "| config | x GMACs | pixel AP | image AUROC | " + " | ".join(f"{m} x" for m in modes) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(modes)]
    for name, c in configs.items():
        d_ap = 100 * (c["quality"]["pixel_ap"]["mean"] - base["quality"]["pixel_ap"]["mean"])
        d_au = 100 * (c["quality"]["image_auroc"]["mean"] - base["quality"]["image_auroc"]["mean"])
        ratios = [f"{c['latency_ms'][m]['median'] / base['latency_ms'][m]['median']:.2f}" for m in modes]
        lines.append(f"| {name} | {base['gmacs'] / c['gmacs']:.2f} fewer | {d_ap:+.1f} | {d_au:+.1f} | " + " | ".join(ratios) + " |")
    rows = list(next(iter(configs.values()))["int8_normal_images"])
    lines += ["", f"INT8 of the timed bundles (minmax on {CALIB_COUNT} training images, no gate) against FP32 on held-out "
              "normal images: map mean abs diff / score Spearman:", "",
              "| config | " + " | ".join(rows) + " |", "|---|" + "---:|" * len(rows)]
    for name, c in configs.items():
        agree = c["int8_normal_images"]
        lines.append(f"| {name} | " + " | ".join(f"{agree[r]['map_mean_abs_diff']:.3f} / {agree[r]['score_spearman']:.2f}"
                                                for r in rows) + " |")
    return "\n".join(lines) + "\n"


def plot(result: Dict[str, Any], path: Path) -> None:
    """Pixel AP (mean, seed range as error bars) against GMACs and against the fastest run of each CPU
    backend (on a shared machine the minimum is the closest to an idle one; the medians are in the table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = result["configs"]
    modes = [m for m in ("ORT FP32", "OV INT8") if m in next(iter(configs.values()))["latency_ms"]]
    fig, axes = plt.subplots(1, 1 + len(modes), figsize=(5 * (1 + len(modes)), 4), sharey=True, squeeze=False)
    for ax, (xlabel, xof) in zip(axes[0], [("GMACs (whole model)", lambda c: c["gmacs"])]
                                 + [(f"{m} min latency (ms)", (lambda m: lambda c: c["latency_ms"][m]["min"])(m)) for m in modes]):
        for name, c in configs.items():
            ap = c["quality"]["pixel_ap"]
            y = 100 * ap["mean"]
            ax.errorbar([xof(c)], [y], yerr=[[y - 100 * ap["min"]], [100 * ap["max"] - y]], fmt="o", capsize=3)
            ax.annotate(name, (xof(c), y), textcoords="offset points", xytext=(5, 5), fontsize="small")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pixel AP (%), mean and range over seeds")
    fig.suptitle("Segmentation head: cost vs pixel AP (object kind)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _config(text: str) -> Tuple[str, List[Path]]:
    name, sep, folders = text.partition("=")
    if not sep or not name or not folders:
        raise argparse.ArgumentTypeError(f"--config {text!r}: expected NAME=FOLDER[,FOLDER...]")
    return name, [Path(f) for f in folders.split(",") if f]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=_config, action="append", required=True,
                   help="NAME=FOLDER[,FOLDER...]: quality-benchmark folders of one configuration (the first is the reference)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--latency-from", type=Path, help="an earlier head_tradeoff.json: reuse its latencies and INT8 agreement "
                   "(same configurations), recompute the rest; for adding seeds without timing again")
    args = p.parse_args(argv)
    earlier = json.loads(args.latency_from.read_text()) if args.latency_from else None
    configs: Dict[str, Dict[str, Any]] = {}
    calls: Dict[Tuple[str, str], Callable[[], object]] = {}
    with tempfile.TemporaryDirectory(prefix="destseg-tradeoff-") as tmp:
        for name, folders in args.config:
            runs = find_cases(folders)
            arch = architecture(runs[0])
            configs[name] = {"runs": [str(r) for r in runs], **{k: arch[k] for k in ("seg_head", "seg_width", "image_size")},
                             **compute(arch), "quality": quality_of(runs)}
            if earlier is not None:
                configs[name].update({k: earlier["configs"][name][k] for k in ("latency_ms", "int8_normal_images")})
                continue
            bundle = Path(tmp) / name
            configs[name]["int8_normal_images"] = export_with_int8(runs[0], bundle)
            calls.update({(name, mode): fn for mode, fn in runners(bundle, args.threads).items()})
            print(f"{name}: {len(runs)} runs, bundle ready", file=sys.stderr, flush=True)
        load = machine_record()["load_average_1min"] if earlier is None else earlier["load_average"]
        timings = time_round_robin({f"{n}\t{m}": fn for (n, m), fn in calls.items()}, args.runs, args.warmup)
    for key, stats in timings.items():
        name, mode = key.split("\t")
        configs[name].setdefault("latency_ms", {})[mode] = stats
    timed = earlier or {"machine": machine_record(), "threads": args.threads, "runs": args.runs}
    result = {"machine": timed["machine"], "threads": timed["threads"], "runs": timed["runs"], "load_average": load,
              "configs": configs}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "head_tradeoff.json", result)
    write_text(args.out / "head_tradeoff.md", to_markdown(result))
    plot(result, args.out / "head_tradeoff.png")
    print(to_markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
