"""Optional engine path through torch-tensorrt (dynamo IR), for workstations that have it.

It compiles the fused PyTorch module directly instead of parsing the ONNX, which helps
when TensorRT's ONNX parser and the exporter disagree about an op. The result is a
torch.export program with embedded TensorRT engines (``.ep``), loaded with
``torch.export.load(path).module()``; it needs torch and torch-tensorrt where it runs, so
Jetsons use the ONNX path. Same key and sidecar as the ONNX path's engines.
"""
from __future__ import annotations

import inspect
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from destseg.bundle import sha256_file
from destseg.export.fused import FusedDeSTSeg
from destseg.tensorrt import DeviceInfo, TensorRTError, batch_profile, engine_key, write_sidecar

SUFFIX = ".torchtrt.ep"


def why_no_torch_tensorrt() -> Optional[str]:
    """None when torch-tensorrt and a CUDA GPU are both here, else why not."""
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError:
        return "torch-tensorrt is not installed (pip install torch-tensorrt matching your torch)"
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return None


def torch_device_info() -> DeviceInfo:
    import tensorrt

    major, minor = torch.cuda.get_device_capability()
    return DeviceInfo(torch.cuda.get_device_name(), f"{major}.{minor}", tensorrt.__version__)


def compile_settings(precision: str) -> Dict[str, Any]:
    """torch_tensorrt.compile's precision options: the kernels it may choose, for every version
    (a ``.half()`` module with ``enabled_precisions`` left at FP32 may still get FP32 kernels)."""
    return {"enabled_precisions": {torch.float16 if precision == "fp16" else torch.float32}}


def compile_engine(
    fused: FusedDeSTSeg,
    precision: str,
    out_dir: str | os.PathLike,
    onnx_path: str | os.PathLike,
    min_batch: Optional[int] = None,
    opt_batch: Optional[int] = None,
    max_batch: Optional[int] = None,
) -> Path:
    """Compile ``fused`` with torch_tensorrt.compile(ir="dynamo") and save it beside a sidecar.

    FP16 runs the whole module in half precision (its outputs stay float32), which newer
    torch-tensorrt (explicit typing, the default from 2.9) builds as FP16; older ones build
    only the precisions in ``enabled_precisions`` (default FP32 alone), so it is passed too
    (:func:`compile_settings`).
    """
    import torch_tensorrt

    if precision not in ("fp32", "fp16"):
        raise TensorRTError(f"--via torch-tensorrt builds fp32 or fp16, not {precision}; INT8 uses the ONNX path")
    profile = batch_profile(min_batch, opt_batch, max_batch)
    device = torch_device_info()
    module = fused.cuda().eval()
    if precision == "fp16":
        module = module.half()
    example = module.example_input(profile[1] if profile else 1)
    if profile:
        shape = tuple(example.shape[1:])
        spec = torch_tensorrt.Input(min_shape=(profile[0], *shape), opt_shape=(profile[1], *shape),
                                    max_shape=(profile[2], *shape), dtype=example.dtype)
    else:
        spec = torch_tensorrt.Input(tuple(example.shape), dtype=example.dtype)
    start = time.perf_counter()
    compiled = torch_tensorrt.compile(module, ir="dynamo", inputs=[spec], **compile_settings(precision))
    seconds = time.perf_counter() - start

    onnx_sha = sha256_file(onnx_path)
    key = engine_key(onnx_sha, precision, device, profile)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{key}{SUFFIX}"
    # torch-tensorrt renamed inputs= to arg_inputs= in 2.4; pass whichever this version takes.
    param = "arg_inputs" if "arg_inputs" in inspect.signature(torch_tensorrt.save).parameters else "inputs"
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_file = Path(tmp) / target.name
        torch_tensorrt.save(compiled, str(tmp_file), **{param: [example]})
        os.replace(tmp_file, target)
    write_sidecar(target, key, onnx_path, onnx_sha, precision, device, profile, seconds,
                  via="torch-tensorrt dynamo", torch_tensorrt=torch_tensorrt.__version__)
    return target
