"""NVIDIA ModelOpt as an alternative quantiser for the TensorRT form (``--quantizer modelopt``).

ModelOpt places Q/DQ by TensorRT's own fusion rules. It pulls heavy GPU packages, so it is
an optional extra (``pip install nvidia-modelopt[onnx]``), never a default dependency; the
CPU form is always built by ONNX Runtime from the same calibration images.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

import numpy as np

METHODS = {"entropy": "entropy", "minmax": "max"}


def available() -> bool:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_tensorrt_form(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    input_name: str,
    method: str,
    keep_float: List[str],
) -> Path:
    """Write the symmetric INT8 Q/DQ model with ModelOpt; raise ValueError when it can't."""
    if not available():
        raise ValueError("--quantizer modelopt needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]', or use the default --quantizer ort")
    if method not in METHODS:
        raise ValueError(f"ModelOpt calibrates with {' or '.join(METHODS)}, not {method!r}; pick another --calib-method")
    from modelopt.onnx.quantization import quantize

    quantize(
        str(fp32_path),
        quantize_mode="int8",
        calibration_data={input_name: calibration},
        calibration_method=METHODS[method],
        calibration_eps=["cpu"],
        nodes_to_exclude=keep_float or None,
        output_path=str(out_path),
    )
    return Path(out_path)
