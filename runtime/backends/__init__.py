"""Inference backends behind one interface: S x S uint8 RGB frames in, anomaly maps and scores out.

``open_backend(name, path, precision)`` opens a bundle (tensorrt, openvino, onnxruntime) or a
training run (torch); ``choose_backend`` is ``--backend auto``: the fastest one this machine can
run (TensorRT on a Jetson or GPU, OpenVINO on an x86 CPU where it is installed, else ONNX
Runtime), with the reason, so a Jetson that silently fell back to the CPU is visible in the
first line of the log. The bundle backends are :class:`destseg.inference.BundleModel` subclasses (bundle,
variant, input preparation). The modules are imported only when chosen: onnxruntime, openvino and
the TensorRT stack are heavy, and torch must never be imported by the runtime unless asked for.
"""
from __future__ import annotations

import importlib.util
import platform
from pathlib import Path
from typing import Any, Dict, Optional, Protocol, Sequence, Tuple

import numpy as np

from destseg.bundle import BUNDLE_FILE
from destseg.inference import PRECISIONS as MODEL_PRECISIONS, BundleModel
from destseg.runtime.errors import BackendError

NAMES = ("tensorrt", "openvino", "onnxruntime", "torch")  # the backends, in the order --backend auto prefers them
BACKENDS = ("auto", *NAMES)  # --backend
PRECISIONS = ("auto", *MODEL_PRECISIONS)  # --precision
RUN_CONFIG = "config.json"  # what makes a folder a training run (destseg.train.checkpoint.CONFIG_FILE)


class Backend(Protocol):
    name: str  # "onnxruntime" | "openvino" | "tensorrt" | "torch"
    precision: str  # "fp32" | "fp16" | "int8" | "bf16"
    variant: Optional[str]  # the bundle model that runs ("int8_cpu", ...); None for a training run
    batch_size: int
    image_size: int  # S: the pipeline scales frames to S x S
    thresholds: Dict[str, Any]  # {"image", "pixel", "method"} or {} when never evaluated
    detail: str  # what exactly runs, for logs and the profile ("int8_cpu on CPUExecutionProvider, 2 threads")

    def infer(self, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """N x S x S x 3 uint8 RGB -> (anomaly_map N x S x S float32 in [0, 1], score N float32)."""

    def last_timings(self) -> Dict[str, float]:
        """Milliseconds of the last call: "h2d", "infer", "d2h"."""

    def close(self) -> None:
        ...


def is_run(path: str | Path) -> bool:
    """A training run folder (config.json, no destseg.json): only the torch backend reads it."""
    path = Path(path)
    return (path / RUN_CONFIG).is_file() and not (path / BUNDLE_FILE).is_file()


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def why_no_tensorrt_backend() -> Optional[str]:
    """None when the tensorrt backend can run here, else why not."""
    from destseg.tensorrt import why_no_tensorrt

    reason = why_no_tensorrt()
    if reason is None and not _have("pycuda"):
        reason = "pycuda is not installed (pip install pycuda; JetPack: apt-get install python3-pycuda)"
    return reason


def is_x86(machine: Optional[str] = None) -> bool:
    """An x86 CPU (``machine``: platform.machine(), this one's by default): where OpenVINO's CPU plugin is fast."""
    return (machine or platform.machine()).lower() in ("x86_64", "amd64", "i686", "i386")


def why_no_openvino_backend() -> Optional[str]:
    """None when the openvino backend can run here (an x86 CPU with OpenVINO installed), else why not."""
    if not is_x86():
        return f"OpenVINO is for x86, this is {platform.machine()}"
    return None if _have("openvino") else "OpenVINO is not installed (pip install openvino)"


def choose_backend(path: str | Path, requested: str = "auto") -> Tuple[str, str]:
    """(backend name, why): the requested one, else TensorRT, then OpenVINO on x86, then ONNX Runtime, then PyTorch."""
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested, "as asked (--backend)"
    if is_run(path):
        return "torch", f"{path} is a training run, not a bundle (export one with destseg-export for TensorRT/ONNX Runtime)"
    no_trt = why_no_tensorrt_backend()
    if no_trt is None:
        from destseg.tensorrt import device_info

        info = device_info()
        return "tensorrt", f"TensorRT {info.tensorrt_version} and a GPU ({info.gpu_name}) are present"
    no_ov = why_no_openvino_backend()
    if no_ov is None:
        return "openvino", f"an x86 CPU with OpenVINO installed; TensorRT is not usable here: {no_trt}"
    if _have("onnxruntime"):
        return "onnxruntime", f"TensorRT is not usable here: {no_trt}; {no_ov}"
    raise BackendError(
        f"no backend for bundle {path}: TensorRT is not usable ({no_trt}), {no_ov} and onnxruntime is not installed; "
        f"pip install onnxruntime, or pass a training run with --backend torch"
    )


def open_backend(
    name: str,
    path: str | Path,
    precision: str = "auto",
    batch_size: int = 1,
    threads: Optional[int] = None,
    device: Optional[str] = None,
) -> Backend:
    """Load the model at ``path`` (bundle, or run for torch) on backend ``name`` ("auto" chooses).

    ``device`` is OpenVINO's device name (CPU by default; GPU, NPU where OpenVINO lists them) or
    TensorRT's GPU index ("0" by default); the CPU-only backends refuse any other than CPU.
    """
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if batch_size < 1:
        raise BackendError(f"batch size must be at least 1, got {batch_size}")
    if name == "auto":
        name, _ = choose_backend(path)
    if name == "openvino":
        from destseg.runtime.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(path, precision, batch_size, threads, device)
    if name == "tensorrt":
        from destseg.runtime.backends.tensorrt import TensorRTBackend

        if device is not None and not device.isdigit():
            raise BackendError(f"TensorRT's --device is a GPU index (0, 1, ...), not {device!r}")
        return TensorRTBackend(path, precision, batch_size, int(device or 0))
    if device is not None and device.upper() != "CPU":
        raise BackendError(f"the {name} backend runs on the CPU, not {device!r}; --device is for openvino and tensorrt")
    if name == "onnxruntime":
        from destseg.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, precision, batch_size, threads)
    if name == "torch":
        from destseg.runtime.backends.torch import TorchBackend

        return TorchBackend(path, precision, batch_size, threads)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def check_model_input(model: BundleModel, shape: Sequence[Any], model_name: str) -> None:
    """Refuse a model whose input does not match the bundle's size (the pipeline scales to it) or batch."""
    dims = list(shape)
    if len(dims) != 4:
        raise BackendError(f"{model_name} has a {len(dims)}-D input {dims}; expected a batch of images")
    spatial = dims[1:3] if model.layout == "NHWC" else dims[2:4]
    if spatial != [model.image_size, model.image_size]:
        raise BackendError(
            f"{model_name} takes {spatial[0]} x {spatial[1]} images but {BUNDLE_FILE} says {model.image_size}: "
            f"the bundle was edited or mixed up; re-export it with destseg-export"
        )
    batch = dims[0]
    if isinstance(batch, int) and batch > 0 and batch != model.batch_size:
        raise BackendError(
            f"{model_name} has a static batch of {batch}, the runtime feeds {model.batch_size}; "
            f"re-export with --batch {model.batch_size} or --dynamic-batch"
        )


def check_batch(batch: np.ndarray, size: int, batch_size: Optional[int] = None) -> None:
    """A batch the backends accept: N x S x S x 3 uint8 (N = ``batch_size`` when that is fixed)."""
    n = batch_size if batch_size is not None else batch.shape[0] if batch.ndim == 4 else -1
    if batch.dtype != np.uint8 or batch.shape != (n, size, size, 3):
        raise BackendError(f"expected a {'N' if batch_size is None else batch_size} x {size} x {size} x 3 uint8 batch, got {batch.dtype} {batch.shape}")
