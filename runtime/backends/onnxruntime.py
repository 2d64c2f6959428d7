"""ONNX Runtime: the bundle's ONNX on the CPU (or CUDA / TensorRT execution providers where installed).

Session options are the ones the CPU benchmarks favour for one frame at a time: intra-op
threads = physical cores (hyper-threads only contend for the same FPU), one inter-op thread,
sequential execution (the graph is a chain; parallel execution adds scheduling and gains
nothing) and every graph optimisation. The precision picks the bundle's variant: INT8 is
``int8_cpu`` (the QOperator/QDQ layout ONNX Runtime's CPU kernels are fast with) on the CPU
and ``int8_trt`` (symmetric Q/DQ) under the TensorRT execution provider.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from destseg.runtime.backends import attach_bundle, check_batch, check_model_input
from destseg.runtime.errors import BackendError

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def physical_cores() -> int:
    """Physical cores this process may use (not hyper-threads): /proc/cpuinfo, capped by affinity."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return usable
    cores = set()
    physical = core = None
    for line in text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if core is not None:
                cores.add((physical, core))
            physical = core = None
    return max(1, min(len(cores) or usable, usable))


def choose_variant(precision: str, variants: List[str], providers: List[str]) -> Tuple[str, str]:
    """(variant, resolved precision) for a requested precision, given the bundle and the providers."""
    gpu_trt = TRT_EP in providers
    int8_variant = "int8_trt" if gpu_trt and "int8_trt" in variants else "int8_cpu"
    if precision == "auto":
        precision = "int8" if int8_variant in variants else "fp32"
    if precision == "int8":
        return int8_variant, "int8"
    if precision == "fp16":
        if not gpu_trt:
            raise BackendError("fp16 on ONNX Runtime needs its TensorRT execution provider (onnxruntime-gpu); use --precision int8 or fp32 on the CPU")
        return ("fp16" if "fp16" in variants else "fp32"), "fp16"
    return "fp32", "fp32"


def _providers(variant: str, precision: str, available: List[str]) -> List[Any]:
    if variant == "int8_cpu":
        return [CPU_EP]
    chosen: List[Any] = []
    if TRT_EP in available:
        from destseg.export.tensorrt import default_cache_dir

        options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(default_cache_dir() / "onnxruntime"),
                   "trt_int8_enable": precision == "int8", "trt_fp16_enable": precision == "fp16"}
        chosen.append((TRT_EP, options))
    if CUDA_EP in available:
        chosen.append(CUDA_EP)
    return chosen + [CPU_EP]


class OnnxRuntimeBackend:
    """One InferenceSession on one bundle variant; copies to a GPU happen inside ``run``."""

    name = "onnxruntime"

    def __init__(self, bundle_path: str | os.PathLike, precision: str = "auto", batch_size: int = 1, threads: Optional[int] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("onnxruntime is not installed; pip install onnxruntime (or onnxruntime-gpu)") from exc
        bundle = attach_bundle(self, bundle_path, batch_size)
        available = ort.get_available_providers()
        variant, self.precision = choose_variant(precision, bundle.variants, available)
        model = bundle.model_path(variant)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(model), options, providers=_providers(variant, self.precision, available))
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            raise BackendError(f"ONNX Runtime cannot load {model}: {str(exc).splitlines()[0]}; re-export the bundle") from exc
        inp = self._session.get_inputs()[0]
        check_model_input(bundle, inp.shape, self._layout, batch_size, model.name)
        self._input = inp.name
        self._outputs = bundle.output_names
        provider = self._session.get_providers()[0]
        self.detail = f"{variant} ({model.name}) on {provider}, {options.intra_op_num_threads} threads"
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
