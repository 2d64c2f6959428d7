"""destseg-export RUN --out BUNDLE: a training run as a deployment bundle (and, where possible, an engine)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path
from typing import Iterator, List, Optional

from destseg.calibration.cli import add_arguments as add_int8_arguments
from destseg.calibration.cli import given as int8_options_given
from destseg.export.bundle_writer import VIA, ExportOptions, engine_summary, export_bundle
from destseg.export.fused import INPUT_FORMATS
from destseg.export.onnx_export import DEFAULT_OPSET
from destseg.export.parity import PARITY_TOLERANCE
from destseg.tensorrt import DEFAULT_WORKSPACE_GB


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="destseg-export",
        description="Export a destseg-train run to a bundle: model.onnx (uint8 NHWC in, anomaly_map and score out), "
                    "destseg.json, and optionally a TensorRT engine.",
    )
    p.add_argument("run", help="training run folder (destseg-train --out)")
    p.add_argument("--out", required=True,
                   help="bundle folder to write: new, empty, or an earlier bundle (replaced atomically, INT8 included)")
    p.add_argument("--allow-unfinished", action="store_true", help="export a run whose training has not finished")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (17 is the newest TensorRT 8.5 parses)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch", type=int, default=1, help="static batch size (default 1)")
    batch.add_argument("--dynamic-batch", action="store_true", help="dynamic batch dimension")
    p.add_argument("--opt-batch", type=int, default=1, help="TensorRT profile: batch to optimise for (dynamic batch)")
    p.add_argument("--max-batch", type=int, default=8, help="TensorRT profile: largest batch (dynamic batch)")
    p.add_argument("--fp16", action="store_true", help="add an fp16 variant (TensorRT builds it from the fp32 graph)")
    p.add_argument("--input-format", choices=INPUT_FORMATS, default="uint8-nhwc",
                   help="graph input: uint8 N x S x S x 3 RGB (default) or normalised float N x 3 x S x S")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument("--parity-tol", type=float, default=PARITY_TOLERANCE, help="max abs ONNX Runtime vs PyTorch difference")
    p.add_argument("--engine", action="store_true",
                   help="also build the TensorRT engine here if TensorRT is installed (else the device builds it at first start)")
    p.add_argument("--via", choices=VIA, default="onnx", help="engine path: TensorRT's ONNX parser or torch-tensorrt (dynamo)")
    p.add_argument("--workspace-gb", type=float, default=DEFAULT_WORKSPACE_GB, help="TensorRT builder workspace limit")
    p.add_argument("--int8", action="store_true", help="also write the INT8 variants (options below)")
    add_int8_arguments(p)
    return p


def add_int8(staged: Path, out: Path, args: argparse.Namespace) -> None:
    """Add the INT8 variants to the ``staged`` bundle (not yet at ``out``) and print the quantisation report.

    A refused model's report goes beside ``out``, where the user looks for it.
    """
    from destseg.bundle import load_bundle
    from destseg.calibration.cli import run_args
    from destseg.calibration.report import to_markdown

    category = load_bundle(staged).meta["model"].get("category")
    refused = out.with_name(out.name + ".int8-refused")
    print(to_markdown(run_args(staged, args, run_category=category, refused_dir=refused)), end="")


@contextlib.contextmanager
def log_to_stderr() -> Iterator[None]:
    """Show the export's progress (onnxsim fallback, engine notes) on stderr for this call only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("destseg")
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = int8_options_given(args)
    if given and not args.int8:
        parser.error(f"{', '.join(given)} only apply with --int8")
    opts = ExportOptions(
        opset=args.opset,
        batch=args.batch,
        dynamic_batch=args.dynamic_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        fp16=args.fp16,
        input_format=args.input_format,
        simplify=not args.no_simplify,
        parity_tolerance=args.parity_tol,
        engine=args.engine,
        via=args.via,
        workspace_gb=args.workspace_gb,
    )
    out = Path(args.out)
    extend = (lambda staged: add_int8(staged, out, args)) if args.int8 else None
    try:
        with log_to_stderr():
            meta = export_bundle(args.run, out, opts, allow_unfinished=args.allow_unfinished, extend=extend)
            report(out, meta)
    except ValueError as exc:  # every expected failure is a ValueError subclass with a one-line fix
        print(f"destseg-export: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ndestseg-export: interrupted; {out} is as it was before", file=sys.stderr)
        return 130
    return 0


def report(out: Path, meta: dict) -> None:
    export = meta["export"]
    parity = ", ".join(f"batch {p['batch']}: map {p['max_abs_map']:.1e}, score {p['max_abs_score']:.1e}" for p in export["parity"])
    problems = export["tensorrt_ops"]["problems"]
    print(f"bundle: {out} ({', '.join(meta['files'])})")
    print(f"onnx: opset {export['opset']}, {'simplified' if export['simplified'] else 'not simplified: ' + str(export['simplify_error'])}")
    print(f"parity vs PyTorch (max abs): {parity}")
    print(f"TensorRT ops: {'all supported' if not problems else '; '.join(problems)}")
    summary = engine_summary(meta)
    if summary:
        print(summary)


if __name__ == "__main__":
    sys.exit(main())
