"""The INT8 options of ``destseg-export RUN --out BUNDLE --int8 ...``.

Parsed separately from the export options so the calibration stage owns its flags and
their help text; destseg-export hands over whatever follows ``--int8``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from destseg.calibration.images import DEFAULT_COUNT
from destseg.calibration.int8 import Int8Options, add_int8
from destseg.calibration.quantize import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> List[argparse.Action]:
    """The INT8 options, as a group of destseg-export's command line; returns them (see :func:`given`)."""
    p = parser.add_argument_group("INT8 (with --int8)", "calibration on normal images, report and accuracy gate")
    return [
        p.add_argument("--calib-dir", help="folder of normal images, or an MVTec root with --calib-category "
                                           "(default: the run's training split)"),
        p.add_argument("--calib-category", help="MVTec category under --calib-dir (uses its train/good)"),
        p.add_argument("--calib-count", type=int, default=DEFAULT_COUNT, help="images to calibrate on (default 500)"),
        p.add_argument("--calib-method", choices=METHODS, default="minmax"),
        p.add_argument("--percentile", type=float, default=99.99, help="with --calib-method percentile"),
        p.add_argument("--quantizer", choices=["ort", "modelopt"], default="ort",
                       help="ONNX Runtime (default) or NVIDIA ModelOpt for the TensorRT form"),
        p.add_argument("--force-calib", action="store_true", help="calibrate on a folder that looks defective anyway"),
        p.add_argument("--eval-data", help="MVTec root to measure FP32 vs INT8 metrics on (enables the accuracy gate)"),
        p.add_argument("--category", dest="eval_category", help="category under --eval-data (default: the run's)"),
        p.add_argument("--allow-degraded", action="store_true", help="keep an INT8 model that fails the accuracy gate"),
        p.add_argument("--search-budget-s", type=float, default=Int8Options.search_budget_s,
                       help="time for the ranked search (which nodes stay out of INT8) when the gate fails"),
        p.add_argument("--max-kept", type=int, default=Int8Options.max_kept,
                       help="most nodes the ranked search may keep out of INT8 (the analysis' worst first)"),
        p.add_argument("--analysis-images", type=int, default=2,
                       help="calibration images the per-layer error analysis runs on"),
        p.add_argument("--calib-seed", type=int, default=0),
        p.add_argument("--calib-ranges", help="reuse calibration_ranges.json of an earlier INT8 export instead of calibrating"),
    ]


def given(args: argparse.Namespace) -> List[str]:
    """The INT8 options ``args`` sets to something other than their default (destseg-export
    refuses them without --int8), each by its flag."""
    return [a.option_strings[0] for a in add_arguments(argparse.ArgumentParser(add_help=False))
            if getattr(args, a.dest, a.default) != a.default]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="destseg-export RUN --out BUNDLE --int8", add_help=False)
    add_arguments(parser)
    return parser


def run(bundle: Path, argv: Sequence[str], run_category: str | None = None) -> Dict:
    """Parse INT8 options from ``argv`` and add INT8 to ``bundle`` (for scripts and tests)."""
    return run_args(bundle, build_parser().parse_args(list(argv)), run_category)


def run_args(bundle: Path, args: argparse.Namespace, run_category: str | None = None,
             refused_dir: Optional[Path] = None) -> Dict:
    """Add INT8 to ``bundle`` from parsed options; errors are ValueErrors that say the fix.

    ``refused_dir``: where a refused model's report goes (default BUNDLE.int8-refused)."""
    if args.calib_count < 1:
        raise ValueError("--calib-count must be at least 1")
    if args.max_kept < 0 or args.analysis_images < 1:
        raise ValueError("--max-kept must be at least 0 and --analysis-images at least 1")
    if not 50.0 < args.percentile <= 100.0:
        raise ValueError("--percentile must be in (50, 100], e.g. 99.99")
    opts = Int8Options(
        calib_dir=args.calib_dir, calib_category=args.calib_category, count=args.calib_count,
        method=args.calib_method, percentile=args.percentile, quantizer=args.quantizer,
        force_calib=args.force_calib, eval_data=args.eval_data,
        eval_category=args.eval_category or run_category, allow_degraded=args.allow_degraded,
        search_budget_s=args.search_budget_s, seed=args.calib_seed, ranges_file=args.calib_ranges,
        max_kept=args.max_kept, analysis_images=args.analysis_images,
    )
    if opts.ranges_file and not Path(opts.ranges_file).is_file():
        raise ValueError(f"--calib-ranges {opts.ranges_file} does not exist; point it at a bundle's calibration_ranges.json")
    if opts.eval_data and not opts.eval_category:
        raise ValueError("--eval-data needs --category NAME")
    return add_int8(bundle, opts, refused_dir)
