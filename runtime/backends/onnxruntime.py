"""ONNX Runtime: the bundle's ONNX on the CPU (or CUDA / TensorRT execution providers where installed).

The session is :func:`destseg.inference.onnx_session`, with the options the CPU benchmarks
favour for one frame at a time. The precision picks the bundle's variant
(:data:`destseg.inference.VARIANTS_FOR`): INT8 is ``int8_cpu`` (the QOperator/QDQ layout ONNX
Runtime's CPU kernels are fast with) on the CPU and ``int8_trt`` (symmetric Q/DQ) under the
TensorRT execution provider.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from destseg.inference import BundleModel, CPU_PROVIDER, choose_variant as choose_bundle_variant, onnx_session
from destseg.runtime.backends import check_batch, check_model_input
from destseg.runtime.errors import BackendError

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"


def choose_variant(precision: str, variants: Sequence[str], providers: Sequence[str]) -> Tuple[str, str]:
    """(variant, resolved precision) for a requested precision, given the bundle and the providers."""
    target = "onnxruntime+tensorrt" if TRT_EP in providers else "onnxruntime"
    if precision == "fp16" and target == "onnxruntime":
        raise BackendError("fp16 on ONNX Runtime needs its TensorRT execution provider (onnxruntime-gpu); use --precision int8 or fp32 on the CPU")
    return choose_bundle_variant(precision, variants, target)


def _providers(variant: str, precision: str, available: List[str]) -> List[Any]:
    if variant == "int8_cpu":
        return [CPU_PROVIDER]
    chosen: List[Any] = []
    if TRT_EP in available:
        from destseg.tensorrt import default_cache_dir

        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(default_cache_dir() / "onnxruntime"),
                   "trt_int8_enable": precision == "int8", "trt_fp16_enable": precision == "fp16"}
        chosen.append((TRT_EP, options))
    if CUDA_EP in available:
        chosen.append(CUDA_EP)
    return chosen + [CPU_PROVIDER]


class OnnxRuntimeBackend(BundleModel):
    """One InferenceSession on one bundle variant; copies to a GPU happen inside ``run``."""

    name = "onnxruntime"

    def __init__(self, bundle_path: str | os.PathLike, precision: str = "auto", batch_size: int = 1, threads: Optional[int] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu)") from exc
        super().__init__(bundle_path, batch_size)
        available = ort.get_available_providers()
        self.variant, self.precision = choose_variant(precision, self.bundle.variants, available)
        model = self.bundle.model_path(self.variant)
        try:
            self._session = onnx_session(model, threads, _providers(self.variant, self.precision, available))
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            raise BackendError(f"ONNX Runtime cannot load {model}: {str(exc).splitlines()[0]}; re-export the bundle") from exc
        inp = self._session.get_inputs()[0]
        check_model_input(self, inp.shape, model.name)
        self._input = inp.name
        self._outputs = self.bundle.output_names
        provider = self._session.get_providers()[0]
        threads_used = self._session.get_session_options().intra_op_num_threads
        self.detail = f"{self.variant} ({model.name}) on {provider}, {threads_used} threads"
        self._timings = {"h2d": 0.0, "infer": 0.0, "d2h": 0.0}

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        check_batch(batch, self.image_size)
        x = self.to_input(batch)
        start = time.perf_counter()
        anomaly_map, score = self._session.run(self._outputs, {self._input: x})
        # Host/device copies (CUDA/TensorRT providers) are inside run(): reported as inference.
        self._timings = {"h2d": 0.0, "infer": (time.perf_counter() - start) * 1e3, "d2h": 0.0}
        return anomaly_map.reshape(len(batch), self.image_size, self.image_size), score.reshape(len(batch))

    def last_timings(self) -> Dict[str, float]:
        return dict(self._timings)

    def close(self) -> None:
        self._session = None
