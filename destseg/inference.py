"""One way into a bundle's models: which variant a precision runs, its input, its ONNX Runtime session.

Every stage that runs an exported model goes through here, torch-free: the runtime's backends
(:class:`BundleModel` is the base of those that run a bundle), the benchmarks, calibration's
report on candidate INT8 models and export's parity check. A TensorRT engine for a bundle
variant comes from :func:`destseg.tensorrt.engine_for_bundle`, which picks the variant from
the same table.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from destseg.bundle import Bundle, BundleError, load_bundle
from destseg.cpu import physical_cores
from destseg.preprocess import model_input

PRECISIONS = ("fp32", "fp16", "int8", "bf16")
# OpenVINO's inference-precision hint per precision: FP32 is asked for explicitly, since OpenVINO's
# CPU default is bf16 wherever the CPU has it natively (AMX, AVX512-BF16); INT8 graphs keep f32 for their float parts, like ONNX Runtime.
OPENVINO_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
OPENVINO_DEVICE = "CPU"
CPU_PROVIDER = "CPUExecutionProvider"

# The bundle variants each precision runs from, best first, by what runs the model: TensorRT
# itself, ONNX Runtime with its TensorRT execution provider, or ONNX Runtime on the CPU (or
# CUDA). FP16 engines are built from the FP32 graph when the bundle has no FP16 variant; ONNX
# Runtime's TensorRT provider falls back to the CPU form of INT8 (TensorRT itself cannot build
# its unsigned activations).
VARIANTS_FOR: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "tensorrt": {"fp32": ("fp32",), "fp16": ("fp16", "fp32"), "int8": ("int8_trt",)},
    "onnxruntime+tensorrt": {"fp32": ("fp32",), "fp16": ("fp16", "fp32"), "int8": ("int8_trt", "int8_cpu")},
    "onnxruntime": {"fp32": ("fp32",), "int8": ("int8_cpu",)},
    # OpenVINO runs either Q/DQ form as INT8 kernels (both from the one calibration TensorRT's is
    # made with). The CPU form first: its unsigned activations are what VNNI's u8 x s8 dot products
    # take, and on an AVX-512 VNNI CPU (no AMX) it measured 0.25x ONNX Runtime FP32 against 0.51x
    # for the signed TensorRT form, whose outputs also strayed further from FP32 (BENCHMARKS.md).
    # bf16 is the FP32 graph under OpenVINO's bf16 inference-precision hint.
    "openvino": {"fp32": ("fp32",), "bf16": ("fp32",), "int8": ("int8_cpu", "int8_trt")},
}
# --precision auto: INT8 where the bundle holds its variant, else this (the openvino backend
# makes that bf16 on a CPU that computes it natively).
AUTO_FLOAT = {"tensorrt": "fp16", "onnxruntime+tensorrt": "fp32", "onnxruntime": "fp32", "openvino": "fp32"}


def variant_for(precision: str, variants: Sequence[str], target: str) -> str:
    """The bundle variant that ``precision`` runs from on ``target`` (a key of :data:`VARIANTS_FOR`).

    The first candidate the bundle holds, else the first one: :meth:`Bundle.model_path` then
    says it is missing and how to export it.
    """
    candidates = VARIANTS_FOR[target].get(precision)
    if candidates is None:
        runs = ", ".join(VARIANTS_FOR[target])
        raise BundleError(f"{target} does not run {precision} models (it runs {runs}); choose another precision")
    return next((v for v in candidates if v in variants), candidates[0])


def choose_variant(precision: str, variants: Sequence[str], target: str) -> Tuple[str, str]:
    """(variant, precision) for a requested precision, "auto" included, on ``target``."""
    if precision == "auto":
        precision = "int8" if variant_for("int8", variants, target) in variants else AUTO_FLOAT[target]
    return variant_for(precision, variants, target), precision


def input_layout(bundle: Bundle) -> str:
    """"NHWC" (uint8 frames, normalised in the graph) or "NCHW" (float, normalised by the caller)."""
    pre = bundle.meta["preprocessing"]
    layout, dtype = pre.get("layout", "NHWC"), pre.get("dtype", "uint8")
    if (layout, dtype) not in (("NHWC", "uint8"), ("NCHW", "float32")):
        raise BundleError(f"bundle {bundle.path} has a {dtype} {layout} input; the runtime reads uint8 NHWC or float32 NCHW")
    return layout


def onnx_session(model: str | os.PathLike, threads: Optional[int] = None, providers: Optional[Sequence[Any]] = None,
                 profile_prefix: Optional[str] = None) -> Any:
    """An ONNX Runtime session on the ONNX file ``model``, with the options the CPU benchmarks favour.

    Intra-op threads = ``threads`` or the physical cores (hyper-threads only contend for the same
    FPU), one inter-op thread, sequential execution (the graph is a chain; parallel execution adds
    scheduling and gains nothing) and every graph optimisation. ``providers`` defaults to the CPU;
    ``profile_prefix`` turns ONNX Runtime's profiler on. It takes a file, not a bundle variant:
    calibration runs its candidate models from temporary folders.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(model), options, providers=list(providers or [CPU_PROVIDER]))


def openvino_model(model: str | os.PathLike, precision: str = "fp32", threads: Optional[int] = None,
                   device: str = OPENVINO_DEVICE) -> Any:
    """An OpenVINO compiled model of the ONNX file ``model`` for one frame at a time.

    Latency hint with one stream and ``threads`` (or the physical cores, as for ONNX Runtime)
    inference threads on the CPU; ``precision`` is a key of :data:`OPENVINO_HINT`. A Q/DQ graph
    runs as INT8 whatever the hint: OpenVINO folds the Q/DQ pairs into integer kernels. It takes a
    file, like :func:`onnx_session`, so calibration can score its candidates under OpenVINO too.
    """
    import openvino as ov

    config: Dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OPENVINO_HINT[precision]}
    if device == "CPU":
        config.update(INFERENCE_NUM_THREADS=threads or physical_cores(), NUM_STREAMS=1)
    core = ov.Core()
    return core.compile_model(core.read_model(str(model)), device, config)


class BundleModel:
    """A bundle opened for inference: the base of every backend that runs one of its variants.

    It owns what they share: the validated bundle, the variant that runs (set by the backend
    once it has chosen, with :func:`choose_variant`), the batch size, what the pipeline reads
    (image size, thresholds) and the step from frames to the model's input.
    """

    variant: str  # the bundle model that runs: "fp32", "fp16", "int8_trt" or "int8_cpu"
    precision: str

    def __init__(self, bundle_path: str | os.PathLike, batch_size: int = 1) -> None:
        self.bundle = load_bundle(bundle_path)
        self.batch_size = batch_size
        self.layout = input_layout(self.bundle)

    @property
    def image_size(self) -> int:
        return self.bundle.image_size

    @property
    def thresholds(self) -> Dict[str, Any]:
        return self.bundle.thresholds

    def to_input(self, batch: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 frames as this model takes them (normalised with the bundle's mean/std if NCHW)."""
        pre = self.bundle.meta["preprocessing"]
        return model_input(batch, self.layout, pre.get("mean"), pre.get("std"))
