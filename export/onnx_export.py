"""The fused module as an ONNX file: traced, checked, simplified, and labelled with its run.

Uses PyTorch's TorchScript exporter (``dynamo=False``): the torch.export-based one needs
onnxscript, which is not a dependency here, and the traced graph is what TensorRT 8.5 to
10.x parse. onnxsim folds the shape arithmetic; if it fails the unsimplified graph is
kept (it is correct, only larger) and the bundle records why.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import onnx
import torch

from destseg.export.fused import FusedDeSTSeg

DEFAULT_OPSET = 17  # the newest TensorRT 8.5 (JetPack 5) parses
INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score")
METADATA_PREFIX = "destseg."


class ExportError(ValueError):
    """The model could not be exported as asked; the message says what to change."""


@dataclass(frozen=True)
class SimplifyResult:
    model: onnx.ModelProto
    simplified: bool
    error: Optional[str]  # why onnxsim was skipped, None when it worked


def trace_to_onnx(fused: FusedDeSTSeg, path: str | os.PathLike, batch: int = 1, dynamic_batch: bool = False,
                  opset: int = DEFAULT_OPSET) -> None:
    """Trace ``fused`` into ``path`` with input "image" and outputs "anomaly_map", "score"."""
    if batch < 1:
        raise ExportError(f"batch must be at least 1, got {batch}")
    if not 13 <= opset <= 20:
        raise ExportError(f"opset {opset} is outside 13..20; use 17 for TensorRT 8.5 to 10.x")
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        # The traced shape comparisons (feature-level sizes) are constants for a fixed S.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        torch.onnx.export(
            fused.eval(),
            (fused.example_input(batch),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def simplify(model: onnx.ModelProto) -> SimplifyResult:
    """onnxsim, or the input model with a warning when onnxsim is missing or fails."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises anything from protobuf errors to RuntimeError
        reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"onnxsim failed ({reason}); keeping the unsimplified graph", stacklevel=2)
        return SimplifyResult(model, False, reason)
    if not ok:
        warnings.warn("onnxsim could not verify the simplified graph; keeping the unsimplified one", stacklevel=2)
        return SimplifyResult(model, False, "onnxsim check failed")
    return SimplifyResult(simplified, True, None)


def set_metadata(model: onnx.ModelProto, props: Mapping[str, Any]) -> None:
    """Write ``props`` into metadata_props as destseg.KEY, non-strings as JSON."""
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        full = METADATA_PREFIX + key
        if full in existing:
            existing[full].value = text
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = full, text


def read_metadata(model: onnx.ModelProto) -> Dict[str, str]:
    """The destseg.* metadata_props, without the prefix (values as stored)."""
    return {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}


def fix_output_shapes(model: onnx.ModelProto, image_size: int) -> None:
    """Declare the map's static 1 x S x S (the tracer names them symbolically because the
    Resize target is computed from the dynamic batch), so runtimes can allocate from the graph."""
    for output in model.graph.output:
        if output.name == OUTPUT_NAMES[0]:
            dims = output.type.tensor_type.shape.dim
            for dim, value in zip(dims[1:], (1, image_size, image_size)):
                dim.Clear()
                dim.dim_value = value


def export_onnx(fused: FusedDeSTSeg, path: str | os.PathLike, metadata: Mapping[str, Any], batch: int = 1,
                dynamic_batch: bool = False, opset: int = DEFAULT_OPSET, run_simplifier: bool = True) -> SimplifyResult:
    """Trace, check with onnx.checker, simplify, label and save ``path``; returns what onnxsim did."""
    path = Path(path)
    trace_to_onnx(fused, path, batch, dynamic_batch, opset)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    result = simplify(model) if run_simplifier else SimplifyResult(model, False, "disabled with --no-simplify")
    model = result.model
    del model.metadata_props[:]  # onnxsim's own notes (removed node lists); the bundle records what it did
    fix_output_shapes(model, fused.image_size)
    onnx.checker.check_model(model, full_check=True)
    model.producer_name = "destseg-edge"
    model.doc_string = f"DeSTSeg anomaly detector: image ({fused.input_format}) -> anomaly_map, score"
    set_metadata(model, metadata)
    onnx.save(model, str(path))
    return result
