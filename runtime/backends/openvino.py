"""OpenVINO: the bundle's ONNX on an Intel (or any x86) CPU, or an Intel GPU/NPU that OpenVINO lists.

OpenVINO runs the bundle's explicit Q/DQ graphs as INT8 kernels as they are, so one calibration
serves TensorRT, ONNX Runtime and OpenVINO alike; INT8 runs the CPU form (``int8_cpu``, unsigned
activations, what VNNI multiplies natively) where the bundle has it, else the TensorRT form (see
:data:`destseg.inference.VARIANTS_FOR`). FP32 runs ``model.onnx``
with FP32 asked for explicitly (OpenVINO's CPU default is bf16 wherever the CPU computes it
natively), and ``bf16`` is the same graph under OpenVINO's bf16 inference-precision hint, named
so the log says what runs. The compiled model comes from :func:`destseg.inference.openvino_model`
(latency hint, one stream, the physical cores as threads, like ONNX Runtime). Imported only when
chosen; torch-free.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from destseg.cpu import native_bf16
from destseg.inference import OPENVINO_DEVICE, BundleModel, choose_variant, openvino_model
from destseg.runtime.backends import check_batch, check_model_input
from destseg.runtime.errors import BackendError

TARGET = "openvino"  # the key of destseg.inference.VARIANTS_FOR


def resolve_precision(requested: str, variants: Sequence[str], device: str, bf16_native: bool) -> Tuple[str, str]:
    """(variant, precision): auto is INT8 where the bundle has it, else bf16 on a CPU that computes it natively, else FP32."""
    if requested == "fp16":
        raise BackendError("the openvino backend runs fp32, bf16 or int8; fp16 is TensorRT's (use --precision auto)")
    bf16_here = device == "CPU" and bf16_native  # the bf16 hint is the CPU plugin's (GPUs and NPUs pick their own)
    if requested == "bf16" and not bf16_here:
        where = "this CPU has no native bf16 (AMX or AVX512-BF16): OpenVINO would emulate it, slower than fp32" \
            if device == "CPU" else f"bf16 is for CPUs with native bf16, not {device}"
        raise BackendError(f"{where}; use --precision fp32 or int8")
    if requested == "auto":
        variant, precision = choose_variant("auto", variants, TARGET)
        if precision != "int8" and bf16_here:
            precision = "bf16"
        return variant, precision
    return choose_variant(requested, variants, TARGET)


def conv_precisions(compiled) -> Dict[str, int]:
    """How many convolutions of a compiled model run in each precision ("u8"/"i8" = INT8 kernels),
    from OpenVINO's runtime model: proof in the log that the Q/DQ graph really runs as INT8."""
    counts: Dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) == "Convolution":
            key = str(info["runtimePrecision"].astype(str))
            counts[key] = counts.get(key, 0) + 1
    return counts


def check_device(device: str, available: Sequence[str]) -> None:
    """Refuse a device OpenVINO does not list (it lists GPU.0, NPU, ...; "GPU" matches "GPU.0")."""
    if not any(d == device or d.split(".")[0] == device for d in available):
        raise BackendError(f"OpenVINO sees no {device} device here (it lists {', '.join(available) or 'none'}); "
                           f"choose one of those with --device")


class OpenVinoBackend(BundleModel):
    """One compiled model on one bundle variant, one infer request reused for every batch."""

    name = "openvino"

    def __init__(self, bundle_path: str | os.PathLike, precision: str = "auto", batch_size: int = 1,
                 threads: Optional[int] = None, device: Optional[str] = None) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError("openvino is not installed; pip install openvino (or destseg-edge[openvino])") from exc
        super().__init__(bundle_path, batch_size)
        device = (device or OPENVINO_DEVICE).upper()
        check_device(device, ov.Core().available_devices)
        self.variant, self.precision = resolve_precision(precision, self.bundle.variants, device, native_bf16())
        model = self.bundle.model_path(self.variant)
        try:
            self._compiled = openvino_model(model, self.precision, threads, device)
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line trace for bad models
            raise BackendError(f"OpenVINO cannot load {model}: {str(exc).splitlines()[0]}; re-export the bundle") from exc
        shape = [d.get_length() if d.is_static else -1 for d in self._compiled.input(0).get_partial_shape()]
        check_model_input(self, shape, model.name)
        self._request = self._compiled.create_infer_request()
        self._outputs = [self._compiled.output(name) for name in self.bundle.output_names]
        self.conv_precisions = conv_precisions(self._compiled)
        convs = ", ".join(f"{n} {p}" for p, n in sorted(self.conv_precisions.items()))
        threads_used = self._compiled.get_property("INFERENCE_NUM_THREADS") if device == "CPU" else None
        self.detail = (f"{self.variant} ({model.name}) on OpenVINO {ov.__version__.split('-')[0]} {device}, "
                       f"{self.precision}, convolutions {convs}" + (f", {threads_used} threads" if threads_used else ""))
        self._timings = {"h2d": 0.0, "infer": 0.0, "d2h": 0.0}

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        check_batch(batch, self.image_size)
        x = self.to_input(batch)
        start = time.perf_counter()
        result = self._request.infer({0: x})
        anomaly_map, score = (result[out] for out in self._outputs)
        self._timings = {"h2d": 0.0, "infer": (time.perf_counter() - start) * 1e3, "d2h": 0.0}
        return (np.asarray(anomaly_map).reshape(len(batch), self.image_size, self.image_size),
                np.asarray(score).reshape(len(batch)))

    def last_timings(self) -> Dict[str, float]:
        return dict(self._timings)

    def close(self) -> None:
        self._request = None
        self._compiled = None
