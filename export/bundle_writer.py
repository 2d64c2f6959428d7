"""Run folder -> bundle folder: the ONNX graph, its checks, optional engines and destseg.json.

The bundle is built in a temporary sibling and renamed into place only after the graph is
checked, simplified, compared with PyTorch, extended (the INT8 forms, past their gate) and
hashed (destseg.atomic.atomic_dir), so an export that fails or is interrupted at any step
leaves the previous bundle as it was and no half bundle. Only a folder that is a bundle
(holds destseg.json) or is empty is ever replaced, and never the run itself.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import onnx
import torch

import destseg
from destseg.atomic import atomic_dir, check_replaceable, same_or_inside
from destseg.bundle import BUNDLE_FILE, read_meta, write_meta
from destseg.export.fused import INPUT_LAYOUTS, FusedDeSTSeg, fused_from_run
from destseg.export.onnx_export import DEFAULT_OPSET, INPUT_NAME, ExportError, export_onnx
from destseg.export.parity import PARITY_TOLERANCE, check_parity
from destseg.export.trt_ops import SUPPORTED_OPS_FILE, op_types, tensorrt_problems
from destseg.tensorrt import DEFAULT_WORKSPACE_GB, ENGINES_DIR, build_engine, sidecar_path, why_no_tensorrt
from destseg.train.checkpoint import load_run, weights_sha256

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
VIA = ("onnx", "torch-tensorrt")
PARITY_DYNAMIC_BATCH = 4  # the dynamic-batch graph is checked at batch 1 and at this batch
FP16_NOTE = ("FP16 is built by TensorRT from the FP32 graph with BuilderFlag.FP16 (TensorRT 8.5 to 10.x); "
             "TensorRT 11 needs an FP16-typed ONNX instead")


@dataclass(frozen=True)
class ExportOptions:
    opset: int = DEFAULT_OPSET
    batch: int = 1  # static batch size; ignored with dynamic_batch
    dynamic_batch: bool = False
    opt_batch: int = 1  # TensorRT optimisation profile of a dynamic batch: min is 1
    max_batch: int = 8
    fp16: bool = False
    input_format: str = "uint8-nhwc"
    simplify: bool = True
    parity_tolerance: float = PARITY_TOLERANCE
    engine: bool = False
    via: str = "onnx"
    workspace_gb: float = DEFAULT_WORKSPACE_GB


def _check_options(opts: ExportOptions) -> None:
    if opts.via not in VIA:
        raise ExportError(f"unknown --via {opts.via!r}; choose one of {', '.join(VIA)}")
    if opts.dynamic_batch and not 1 <= opts.opt_batch <= opts.max_batch:
        raise ExportError(f"need 1 <= --opt-batch <= --max-batch, got {opts.opt_batch} and {opts.max_batch}")
    if opts.via == "torch-tensorrt":
        if not opts.engine:
            raise ExportError("--via torch-tensorrt builds an engine: add --engine")
        from destseg.export.torch_tensorrt import why_no_torch_tensorrt

        reason = why_no_torch_tensorrt()
        if reason:  # say so before minutes of export, not after
            raise ExportError(f"--via torch-tensorrt is not possible here: {reason}; use --via onnx")


def _io(size: int, opts: ExportOptions) -> Dict[str, Any]:
    batch: Any = "batch" if opts.dynamic_batch else opts.batch
    if opts.input_format == "uint8-nhwc":
        image = {"name": INPUT_NAME, "shape": [batch, size, size, 3], "dtype": "uint8"}
    else:
        image = {"name": INPUT_NAME, "shape": [batch, 3, size, size], "dtype": "float32"}
    io = {
        "inputs": [image],
        "outputs": [
            {"name": "anomaly_map", "shape": [batch, 1, size, size], "dtype": "float32"},
            {"name": "score", "shape": [batch], "dtype": "float32"},
        ],
        "dynamic_batch": opts.dynamic_batch,
    }
    if opts.dynamic_batch:
        io["batch_profile"] = [1, opts.opt_batch, opts.max_batch]
    return io


def _preprocessing(size: int, config: Dict[str, Any], input_format: str) -> Dict[str, Any]:
    nhwc = input_format == "uint8-nhwc"
    return {
        "size": size,
        "layout": INPUT_LAYOUTS[input_format],
        "dtype": "uint8" if nhwc else "float32",
        "color": "RGB",
        "resize": "area",
        "mean": list(config["mean"]),
        "std": list(config["std"]),
        "normalisation": "inside-graph" if nhwc else "by-caller",
    }


def _engines(fused: FusedDeSTSeg, onnx_path: Path, folder: Path, opts: ExportOptions) -> Dict[str, Any]:
    """Build the engine here when TensorRT is installed, else record that the device will."""
    note = ("Engines are specific to the GPU and TensorRT version: destseg-runtime builds one from this bundle "
            "at first start on the device and caches it in ~/.cache/destseg/engines (or $DESTSEG_ENGINE_CACHE)")
    section: Dict[str, Any] = {"note": note, "built": []}
    if not opts.engine:
        return section
    precision = "fp16" if opts.fp16 else "fp32"
    profile = dict(min_batch=1, opt_batch=opts.opt_batch, max_batch=opts.max_batch) if opts.dynamic_batch else {}
    if opts.via == "torch-tensorrt":
        from destseg.export.torch_tensorrt import compile_engine

        built = compile_engine(fused, precision, folder / ENGINES_DIR, onnx_path, **profile)
    else:
        reason = why_no_tensorrt()
        if reason:
            section["not_built"] = reason
            return section
        built = build_engine(onnx_path, precision, folder / ENGINES_DIR, opts.workspace_gb, **profile)
    section["built"].append({"file": f"{ENGINES_DIR}/{built.name}", "sidecar": f"{ENGINES_DIR}/{sidecar_path(built).name}",
                             "precision": precision, "via": opts.via})
    return section


def check_out(run_dir: str | os.PathLike, out: str | os.PathLike) -> None:
    """Refuse an ``--out`` whose replacement would delete what export did not write."""
    if same_or_inside(out, run_dir) or same_or_inside(run_dir, out):
        raise ExportError(f"--out {out} is, contains or lies inside the run {run_dir}; write the bundle to its own folder")
    check_replaceable(out, BUNDLE_FILE, "bundle", "--out")


def export_bundle(run_dir: str | os.PathLike, out: str | os.PathLike, opts: ExportOptions = ExportOptions(),
                  allow_unfinished: bool = False, extend: Optional[Callable[[Path], None]] = None) -> Dict[str, Any]:
    """Export a training run to a bundle folder; returns the destseg.json written.

    ``extend(folder)`` adds to the bundle before it is swapped in (``--int8``), so its
    failure leaves the previous bundle in place too.
    """
    _check_options(opts)
    check_out(run_dir, out)
    model, config = load_run(run_dir, device="cpu", allow_unfinished=allow_unfinished)
    fused = fused_from_run(model, config, opts.input_format)
    size = int(config["image_size"])
    thresholds = config.get("thresholds") or {}
    weights = weights_sha256(run_dir)
    metadata = {
        "backbone": config["backbone"],
        "image_size": size,
        "weights_sha256": weights,
        "thresholds": thresholds,
        "config": config,
        "input_format": opts.input_format,
        "mean": list(config["mean"]),
        "std": list(config["std"]),
    }
    with atomic_dir(out) as tmp:
        onnx_path = tmp / MODEL_FILE
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            simplified = export_onnx(fused, onnx_path, metadata, opts.batch, opts.dynamic_batch, opts.opset, opts.simplify)
        for w in caught:
            log.warning("%s", w.message)
        graph = onnx.load(str(onnx_path))
        problems = tensorrt_problems(graph)
        for problem in problems:
            log.warning("TensorRT compatibility: %s", problem)
        batches = [1, PARITY_DYNAMIC_BATCH] if opts.dynamic_batch else [opts.batch]
        parity = check_parity(model, config, onnx_path, batches, opts.input_format, opts.parity_tolerance)
        engines = _engines(fused, onnx_path, tmp, opts)
        models: Dict[str, Any] = {"fp32": {"file": MODEL_FILE, "precision": "fp32", "target": "any", "opset": opts.opset}}
        if opts.fp16:
            models["fp16"] = {"file": MODEL_FILE, "precision": "fp16", "target": "tensorrt", "built_from": "fp32", "note": FP16_NOTE}
        meta = {
            "model": {
                "backbone": config["backbone"],
                "image_size": size,
                "category": config.get("category"),
                "weights_sha256": weights,
                "config": config,
            },
            "preprocessing": _preprocessing(size, config, opts.input_format),
            "thresholds": thresholds,
            "io": _io(size, opts),
            "models": models,
            "engines": engines,
            "export": {
                "tool": "destseg-export",
                "destseg_edge_version": destseg.__version__,
                "run": str(Path(run_dir).resolve()),
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "exporter": "torch.onnx TorchScript (dynamo=False)",
                "opset": opts.opset,
                "simplified": simplified.simplified,
                "simplify_error": simplified.error,
                "parity": parity,
                "tensorrt_ops": {
                    "checked_against": f"{SUPPORTED_OPS_FILE.name} (onnx-tensorrt operators.md, TensorRT 8.5)",
                    "ops": op_types(graph),
                    "problems": problems,
                },
            },
        }
        extra: List[str] = [e[k] for e in engines["built"] for k in ("file", "sidecar")]
        meta = write_meta(tmp, meta, extra_files=extra)
        if extend is not None:
            extend(tmp)
            meta = read_meta(tmp)
    return meta


def engine_summary(meta: Dict[str, Any]) -> Optional[str]:
    """What happened to the engine, in one line for the CLI (None when none was asked for)."""
    engines = meta.get("engines", {})
    if engines.get("built"):
        return "engine: " + ", ".join(e["file"] for e in engines["built"])
    if engines.get("not_built"):
        return f"engine: not built here ({engines['not_built']}); the runtime builds it on the device at first start"
    return None
