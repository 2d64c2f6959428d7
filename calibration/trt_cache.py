"""TensorRT's implicit-INT8 calibration cache (TensorRT before 11), written from our ranges.

TensorRT before 11 builds INT8 from a float network plus per-tensor scales read through an
``IInt8EntropyCalibrator2``. Its cache is text: a header ``TRT-<version>-EntropyCalibration2``
and one ``tensor_name: <scale as big-endian float32 hex>`` line per tensor, with
scale = amax / 127. We write it from the same ranges as the Q/DQ models, so every
TensorRT version gets the same calibration.

TensorRT accepts only a header with its own version, and the bundle is made on a
workstation that may have another TensorRT or none. The header therefore names the
TensorRT installed here when there is one that calibrates implicitly (8.5 to 10.x), else
JetPack 5.1's TensorRT 8.5.2, the JetPack whose TensorRT most needs the cache. Either way
destseg's own builder rewrites the header for the TensorRT on the device
(:func:`destseg.tensorrt.with_cache_header`); trtexec users put their version in the first
line themselves (README, INT8).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from destseg.tensorrt import TensorRTError, build_recipe, installed_tensorrt_version

TARGET_TENSORRT = "8.5.2"  # JetPack 5.1.x; used when no TensorRT that calibrates implicitly is installed here


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def cache_header(tensorrt_version: Optional[str]) -> str:
    """The header for ``tensorrt_version``, or for :data:`TARGET_TENSORRT` when that is None or a
    TensorRT without implicit calibration (11 and later, or older than 8.5)."""
    try:
        return build_recipe(tensorrt_version or TARGET_TENSORRT, "int8", calibrator=True).calibration_cache_header
    except TensorRTError:
        return build_recipe(TARGET_TENSORRT, "int8", calibrator=True).calibration_cache_header


def render(ranges: Mapping[str, Tuple[float, float]], tensorrt_version: Optional[str] = None) -> str:
    """Cache text from {tensor: (min, max)}; symmetric, as TensorRT's INT8 is.

    ``tensorrt_version`` names the header's TensorRT; by default the installed one (see above).
    """
    lines = [cache_header(tensorrt_version or installed_tensorrt_version())]
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
