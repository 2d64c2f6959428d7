"""destseg-bench's outputs: the terminal/Markdown table, JSON, CSV and the PNG chart.

Kept apart from the measuring so the formats can be read (and tested) without a backend.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from destseg.atomic import atomic_path, write_json, write_text
from destseg.benchmarks.bench_results import BenchError, Result
from destseg.latency import STATISTICS

REPORT_FILE = "quantization_report.json"


def accuracy_for(report: Dict[str, Any], variant: Optional[str], backend: str = "onnxruntime") -> Optional[Dict[str, Any]]:
    """What the bundle's quantisation report says about ``variant`` as ``backend`` runs it: FP32 vs
    INT8 output agreement on normal images and, when it was evaluated, the metric deltas in points.
    OpenVINO rounds differently from ONNX Runtime: its rows are "VARIANT@openvino"."""
    if not variant or not variant.startswith("int8"):
        return None
    if backend == "openvino":
        variant = f"{variant}@openvino"
    found: Dict[str, Any] = {}
    normal = (report.get("normal_images") or {}).get(variant)
    if normal:
        found["normal_images"] = normal
    delta = (report.get("metrics") or {}).get(f"delta_{variant}")
    if delta:
        found["metric_deltas"] = delta
    return found or None


def read_quantization_report(bundle: Path) -> Optional[Dict[str, Any]]:
    """The bundle's INT8 report (written by destseg-export --int8), or None when it has none."""
    path = bundle / REPORT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path} is not valid JSON ({exc.msg}); re-run destseg-export --int8 or remove it") from exc


def _accuracy_note(acc: Optional[Dict[str, Any]]) -> str:
    if not acc:
        return ""
    notes = []
    delta = acc.get("metric_deltas") or {}
    for key, name in (("image_auroc", "AUROC"), ("pixel_ap", "pixel AP")):
        if key in delta:
            notes.append(f"{name} {delta[key]:+.2f}")
    normal = acc.get("normal_images") or {}
    if "score_spearman" in normal:
        notes.append(f"score rho {normal['score_spearman']:.3f}")
    return ", ".join(notes)


def table(results: Sequence[Result], skipped: Sequence[Dict[str, str]]) -> str:
    """A Markdown table (readable on a terminal) of every configuration, the stage split
    where the backend reports one, and the skipped configurations with their reasons."""
    has_baseline = any(r.baseline_ratio for r in results)
    head = ["config", *[f"{s} ms" for s in STATISTICS], "img/s"] + (["x baseline"] if has_baseline else []) + ["INT8 accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for r in results:
        cells = [r.config.label, *[f"{r.latency_ms[s]:.2f}" for s in STATISTICS], f"{r.throughput:.1f}"]
        if has_baseline:
            cells.append(f"{r.baseline_ratio['throughput_ratio']:.2f}" if r.baseline_ratio else "")
        cells.append(_accuracy_note(r.accuracy))
        lines.append("| " + " | ".join(cells) + " |")
    staged = [r for r in results if len(r.stage_stats_ms) > 1]  # a split to show: TensorRT's h2d/infer/d2h
    if staged:
        keys = sorted({k for r in staged for k in r.stage_stats_ms})
        lines += ["", "Stages, median ms (CUDA events):", "",
                  "| config | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
        for r in staged:
            lines.append(f"| {r.config.label} | " + " | ".join(
                f"{r.stage_stats_ms[k]['median']:.2f}" if k in r.stage_stats_ms else "" for k in keys) + " |")
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- {configs}: {reason}" for configs, reason in _grouped(skipped)]
    return "\n".join(lines) + "\n"


def _grouped(skipped: Sequence[Dict[str, str]]) -> List[Tuple[str, str]]:
    """Skipped configurations with one reason for several batch sizes on one line: "tensorrt/int8/b1,4,8"."""
    groups: Dict[Tuple[str, str], List[str]] = {}
    for s in skipped:
        stem, _, batch = s["config"].rpartition("/b")
        groups.setdefault((stem, s["reason"]), []).append(batch)
    return [(f"{stem}/b{','.join(batches)}", reason) for (stem, reason), batches in groups.items()]


def csv_text(results: Sequence[Result]) -> str:
    """One row per configuration: latency statistics, throughput, stage medians, baseline ratios."""
    stage_keys = sorted({k for r in results for k in r.stage_stats_ms})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["config", "backend", "precision", "batch", "variant", "runs",
                     *[f"{s}_ms" for s in STATISTICS], "throughput_images_per_s",
                     *[f"{k}_median_ms" for k in stage_keys], "speedup_median_latency", "throughput_ratio"])
    for r in results:
        ratio = r.baseline_ratio or {}
        writer.writerow([r.config.label, r.config.backend, r.config.precision, r.config.batch, r.variant or "",
                         len(r.samples_ms), *[f"{r.latency_ms[s]:.4f}" for s in STATISTICS], f"{r.throughput:.3f}",
                         *[f"{r.stage_stats_ms[k]['median']:.4f}" if k in r.stage_stats_ms else "" for k in stage_keys],
                         f"{ratio['speedup_median_latency']:.4f}" if ratio else "",
                         f"{ratio['throughput_ratio']:.4f}" if ratio else ""])
    return out.getvalue()


def plot(results: Sequence[Result], path: Path) -> None:
    """Left: the latency distribution of every configuration (box plot of the timed runs).
    Right: throughput against batch size, one line per backend and precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(max(10.0, 4 + 0.8 * len(results)), 5))
    # Vertical boxes: the keyword for horizontal ones changed between Matplotlib 3.7 (JetPack 5) and 3.11.
    left.boxplot([r.samples_ms for r in results], whis=(1, 99), showfliers=True)
    left.set_xticks(range(1, len(results) + 1))
    left.set_xticklabels([r.config.label for r in results], rotation=30, ha="right", fontsize="small")
    left.set_ylabel("latency per batch (ms); whiskers p1-p99")
    lines: Dict[str, List[Result]] = {}
    for r in results:
        lines.setdefault(f"{r.config.backend}/{r.config.precision}", []).append(r)
    for name, group in lines.items():
        group = sorted(group, key=lambda r: r.config.batch)
        right.plot([r.config.batch for r in group], [r.throughput for r in group], marker="o", label=name)
    right.set_xlabel("batch size")
    right.set_ylabel("images / s")
    right.set_xticks(sorted({r.config.batch for r in results}))
    right.legend(fontsize="small")
    right.grid(alpha=0.3)
    fig.suptitle("destseg-bench")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_outputs(out: Path, record: Dict[str, Any], results: Sequence[Result], skipped: Sequence[Dict[str, str]]) -> List[str]:
    """bench.json, bench.csv, bench.md and bench.png in ``out``; returns the names written.

    The chart needs matplotlib, which the runtime does not: without it the PNG is left out
    and the JSON says so, the numbers are all in the other files.
    """
    names = ["bench.json", "bench.csv", "bench.md"]
    try:
        plot(results, out / "bench.png")
        names.append("bench.png")
        record["plot"] = "bench.png"
    except ImportError:
        record["plot"] = "not drawn: matplotlib is not installed (pip install matplotlib)"
    write_json(out / "bench.json", record)
    write_text(out / "bench.csv", csv_text(results))
    write_text(out / "bench.md", f"# destseg-bench {record['bundle']}\n\n{record['command']}\n\n" + table(results, skipped))
    return names
