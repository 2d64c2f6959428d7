"""Detection quality yardstick: train, evaluate FP32 and INT8 on synthetic categories, one table.

Every change to the model, the schedule, the head or INT8 is measured with this script: it runs
the user's own commands (destseg-synth, destseg-train, destseg-eval, destseg-export --int8) on an
object category and a texture category, for each seed, and writes all six metrics of FP32 and of
both INT8 forms, the INT8 gate's verdict, training seconds and images/s, plus the machine, to
quality.json and quality.md. The defaults are a fixed CPU schedule of about 20 minutes on two
cores; extra options for training or INT8 go through --train-args / --int8-args unchanged, so a
variant is measured exactly as a user would run it.

    python benchmarks/quality.py --out quality_out
    python benchmarks/quality.py --out q_w32 --train-args "--seg-width 32" --seeds 0
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from destseg.atomic import NotOursError, check_replaceable, write_json, write_text
from destseg.benchmarks.machine import machine_record

METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro", "iap", "iap90")
HEADERS = ("image AUROC", "pixel AUROC", "pixel AP", "AUPRO", "IAP", "IAP90")
KINDS = {"object": "widget", "texture": "tile"}  # kind -> category name destseg-synth renders as that kind
# The fixed CPU schedule is the demo's (Makefile): EfficientNet-Lite0, 128 x 128, a 64-channel
# segmentation network, top-k scaled to the paper's area, 400 + 600 steps of batch 8, on defects
# drawn twice the default size so they stay as visible at 128 px as at 256.
DEFAULT_TRAIN = ("--backbone efficientnet_lite0 --image-size 128 --seg-width 64 --top-k 25 --batch-size 8 "
                 "--steps-student 400 --steps-seg 600")
DEFAULT_SYNTH = "--train 200 --test 60 --size 128 --defect-scale 2"
DEFAULT_INT8 = "--calib-count 64 --allow-degraded"
MARKER = ".destseg-quality"  # what makes an --out folder ours to rewrite
FORMS = {"fp32": "FP32", "int8_trt": "INT8 TensorRT form", "int8_cpu": "INT8 CPU form",
         "int8_cpu@openvino": "INT8 CPU form on OpenVINO"}  # the last where OpenVINO is installed


def _bin(name: str) -> str:
    """The console script beside this Python (the project's virtualenv), else from PATH."""
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else name


def _run(cmd: List[str], log: Path) -> float:
    """Run a command, its output appended to ``log``; seconds taken. A failure names the log."""
    tic = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(cmd)}\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"quality: {Path(cmd[0]).name} failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - tic


def one_case(kind: str, seed: int, work: Path, args: argparse.Namespace) -> Dict[str, Any]:
    """Synthesise, train, evaluate and export one (kind, seed); the row of the table."""
    category = KINDS[kind]
    case = work / f"{kind}-s{seed}"
    shutil.rmtree(case, ignore_errors=True)  # inside a folder that carries our marker: ours to replace
    case.mkdir(parents=True)
    log = case / "commands.log"
    data, run, bundle = case / "data", case / "run", case / "bundle"
    train_s = None
    if args.reuse:  # an earlier benchmark's trained and evaluated runs, read only
        data, run = Path(args.reuse) / case.name / "data", Path(args.reuse) / case.name / "run"
        if not (run / "eval" / "metrics.json").is_file():
            raise SystemExit(f"quality: --reuse {args.reuse} has no evaluated run {run}; run the benchmark there first")
    else:
        _run([_bin("destseg-synth"), str(data), "--category", category, "--kind", kind, "--seed", str(seed),
              *shlex.split(args.synth_args)], log)
        train_s = _run([_bin("destseg-train"), "--data", str(data), "--category", category, "--out", str(run),
                        "--seed", str(seed), "--workers", str(args.workers), "--no-eval", *shlex.split(args.train_args)], log)
        _run([_bin("destseg-eval"), str(run), "--data", str(data), "--category", category], log)
    fp32 = json.loads((run / "eval" / "metrics.json").read_text())["destseg"]
    opts = json.loads((run / "config.json").read_text())["options"]
    images = (opts["steps_student"] + opts["steps_seg"]) * opts["batch_size"]
    row: Dict[str, Any] = {"kind": kind, "category": category, "seed": seed, "reused": str(run) if args.reuse else None,
                           "train_s": None if train_s is None else round(train_s, 1),
                           "train_images_per_s": None if train_s is None else round(images / train_s, 2), "fp32": fp32}
    if not args.no_int8:
        export_s = _run([_bin("destseg-export"), str(run), "--out", str(bundle), "--int8", "--eval-data", str(data),
                         "--category", category, *shlex.split(args.int8_args)], log)
        report = json.loads((bundle / "quantization_report.json").read_text())
        row["export_int8_s"] = round(export_s, 1)
        row["gate"] = report["gate"]["status"]
        row["kept_float"] = report["gate"]["kept_float"]
        row["kept_float_gmacs"] = report["gate"].get("kept_float_gmacs")
        row["int8_search_s"] = (report["gate"].get("search") or {}).get("seconds")
        row["int8_analysis_s"] = {form: a["seconds"] for form, a in report.get("analysis", {}).items()}
        for form in ("int8_trt", "int8_cpu", "int8_cpu@openvino", "fp32"):  # the report is in percent, metrics.json in fractions
            if form in report["metrics"]:
                row["fp32_onnx" if form == "fp32" else form] = {k: v / 100.0 for k, v in report["metrics"][form].items()}
    return row


def _pct(value: Optional[float]) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}"


def to_markdown(result: Dict[str, Any]) -> str:
    """One table: a row per case and form, then the mean over cases of each form."""
    cpu = result["machine"]["cpu"]
    lines = [f"# Quality benchmark\n\nMachine: {cpu['model']}, {cpu['usable_cores']} usable cores. "
             f"Train: `{result['train_args']}`; data: `{result['synth_args']}`; INT8: `{result['int8_args']}`.\n",
             "| case | model | " + " | ".join(HEADERS) + " | train s | img/s | gate |",
             "|---|---|" + "---:|" * (len(HEADERS) + 2) + "---|"]
    rows = result["rows"]
    forms = [f for f in FORMS if any(f in r for r in rows)]
    for r in rows:
        for form in forms:
            if form not in r:
                continue
            extra = (f"{r['train_s']:.0f} | {r['train_images_per_s']:.1f}" if form == "fp32" and r["train_s"] else " | ")
            gate = r.get("gate", "") if form != "fp32" else ""
            lines.append(f"| {r['kind']} s{r['seed']} | {FORMS[form]} | "
                         + " | ".join(_pct(r[form].get(m)) for m in METRICS) + f" | {extra} | {gate} |")
    for form in forms:
        values = [[r[form].get(m) for r in rows if form in r] for m in METRICS]
        means = [None if any(v is None for v in col) else sum(col) / len(col) for col in values]
        lines.append(f"| **mean** | {FORMS[form]} | " + " | ".join(_pct(v) for v in means) + " | | | |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for quality.json, quality.md and every case's files")
    p.add_argument("--kinds", default="object,texture", help="comma-separated: object, texture")
    p.add_argument("--seeds", default="0,1", help="comma-separated training and data seeds")
    p.add_argument("--synth-args", default=DEFAULT_SYNTH, help="destseg-synth options")
    p.add_argument("--train-args", default=DEFAULT_TRAIN, help="destseg-train options (the schedule and model)")
    p.add_argument("--int8-args", default=DEFAULT_INT8, help="destseg-export --int8 options")
    p.add_argument("--workers", type=int, default=2, help="data-loading workers for training")
    p.add_argument("--no-int8", action="store_true", help="FP32 only")
    p.add_argument("--reuse", metavar="RUNS_DIR",
                   help="an earlier benchmark's --out: export and measure INT8 from its trained runs (read only) instead of training")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"quality: unknown kind {unknown[0]!r}; choose from {', '.join(KINDS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        check_replaceable(out, MARKER, "quality benchmark folder", "--out")
    except NotOursError as exc:
        print(f"quality: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    tic = time.perf_counter()
    rows = [one_case(kind, seed, out, args) for kind in kinds for seed in seeds]
    result = {"machine": machine_record(), "train_args": args.train_args, "synth_args": args.synth_args,
              "int8_args": None if args.no_int8 else args.int8_args, "seconds": round(time.perf_counter() - tic, 1),
              "rows": rows}
    write_json(out / "quality.json", result)
    write_text(out / "quality.md", to_markdown(result))
    print(to_markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
