"""TensorRT's implicit-INT8 calibration cache, for TensorRT 8.5 (JetPack 5).

TensorRT before 10 builds INT8 from a float network plus per-tensor scales read through an
``IInt8EntropyCalibrator2``. Its cache is text: a header ``TRT-<version>-EntropyCalibration2``
and one ``tensor_name: <scale as big-endian float32 hex>`` line per tensor, with
scale = amax / 127. We write it from the same ranges as the Q/DQ models, so every
TensorRT version gets the same calibration.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Dict, Mapping, Tuple

HEADER_ALGORITHM = "EntropyCalibration2"
DEFAULT_TRT_VERSION = 8501  # JetPack 5.1's TensorRT 8.5.1; the header must match the calibrator


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def render(ranges: Mapping[str, Tuple[float, float]], trt_version: int = DEFAULT_TRT_VERSION) -> str:
    """Cache text from {tensor: (min, max)}; symmetric, as TensorRT's INT8 is."""
    lines = [f"TRT-{trt_version}-{HEADER_ALGORITHM}"]
    for name, (lo, hi) in ranges.items():
        amax = max(abs(float(lo)), abs(float(hi)))
        lines.append(f"{name}: {scale_to_hex(max(amax, 1e-8) / 127.0)}")
    return "\n".join(lines) + "\n"


def parse(path: str | os.PathLike) -> Tuple[str, Dict[str, float]]:
    """(header, {tensor: scale}) of a cache file; raises ValueError on a malformed one."""
    lines = Path(path).read_text().splitlines()
    if not lines or not lines[0].startswith("TRT-"):
        raise ValueError(f"{path} is not a TensorRT calibration cache (no TRT- header)")
    scales: Dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        name, sep, value = line.rpartition(": ")
        if not sep or len(value) != 8:
            raise ValueError(f"{path}:{number}: expected 'tensor: 8 hex digits', got {line!r}")
        scales[name] = hex_to_scale(value)
    return lines[0], scales
