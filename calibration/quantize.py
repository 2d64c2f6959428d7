"""Explicit INT8 quantisation of the fused graph, in the two forms the targets want.

One calibration pass gives per-tensor ranges (saved as JSON in the bundle); both forms are
built from those same ranges:

- TensorRT form (``int8_trt``): symmetric int8 activations and weights, per-channel weights,
  Q/DQ on the inputs of convolutions and residual adds, biases and the tail (sigmoid,
  upsampling, top-k score) in float. TensorRT 10 and 11 build it as a strongly typed network.
- CPU form (``int8_cpu``): unsigned 8-bit activations with signed per-channel weights and
  int32 biases, which ONNX Runtime's x86 kernels run several times faster than the
  symmetric form.

Adds with a constant operand (the epsilon in the feature L2 normalisation) are not residual
adds and stay in float: quantising them would crush a 1e-12 offset to zero. The logit
convolution before the sigmoid stays in float too (see :func:`logit_convs`).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import onnx

QUANTIZED_OPS = ("Conv", "Add")
METHODS = ("minmax", "entropy", "percentile")


@dataclass
class QuantOptions:
    method: str = "minmax"
    percentile: float = 99.99
    keep_float: List[str] = field(default_factory=list)  # node names left unquantised


def constant_names(model: onnx.ModelProto) -> set:
    names = {i.name for i in model.graph.initializer}
    names |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return names


def non_residual_adds(model: onnx.ModelProto) -> List[str]:
    """Add nodes with a constant operand: arithmetic, not a residual connection."""
    consts = constant_names(model)
    return [n.name for n in model.graph.node if n.op_type == "Add" and any(i in consts for i in n.input)]


def logit_convs(model: onnx.ModelProto) -> List[str]:
    """Convolutions whose output goes straight into a Sigmoid: the logits stay in float.

    An int8 logit would quantise the anomaly probability itself, in steps far coarser than
    the differences between normal and anomalous pixels; the conv is 1 x 1 to one channel,
    so keeping it in float costs nothing.
    """
    sigmoid_inputs = {n.input[0] for n in model.graph.node if n.op_type == "Sigmoid"}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.output[0] in sigmoid_inputs]


def quantizable_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the nodes that get Q/DQ: every Conv but the logit one, and every residual Add."""
    skip = set(non_residual_adds(model)) | set(logit_convs(model))
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name not in skip]


class _Reader:
    """ONNX Runtime CalibrationDataReader over a list of uint8 batches."""

    def __init__(self, input_name: str, batches: List[np.ndarray]) -> None:
        self.input_name, self.batches = input_name, iter(batches)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}


def calibrate(pre_path: Path, ranges_path: Path, batches: Iterator[np.ndarray], opts: QuantOptions,
              input_name: str, chunk: int = 8) -> None:
    """Per-tensor ranges over all batches, a chunk at a time, saved as ONNX Runtime's JSON.

    quantize_static keeps every intermediate output of every image in memory (gigabytes for
    500 images at 256 x 256), and its CalibMaxIntermediateOutputs option drops data instead
    of merging it (ONNX Runtime 1.32). Feeding the calibrator chunk by chunk merges ranges
    (MinMax) or histograms (entropy, percentile) with bounded memory.
    """
    from itertools import islice

    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    extra = {"percentile": opts.percentile} if opts.method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="destseg-calib-") as tmp:
        calibrator = create_calibrator(pre_path, list(QUANTIZED_OPS), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_method(opts.method), extra_options=extra)
        seen = 0
        while batch_list := list(islice(batches, chunk)):
            calibrator.collect_data(_Reader(input_name, batch_list))
            seen += len(batch_list)
        if not seen:
            raise ValueError("no calibration images were read; check --calib-dir")
        save_tensors_data(calibrator.compute_data(), ranges_path)


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def prepare(fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> onnx.ModelProto:
    """Shape inference before quantisation, keeping the exported graph's tensor names.

    The names must stay those of model.onnx: TensorRT 8.5 reads the calibration cache by
    tensor name while parsing model.onnx (the graph is already simplified at export).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_optimization=True, skip_symbolic_shape=True)
    model = onnx.load(str(out_path))
    for node_index, node in enumerate(model.graph.node):  # the quantiser addresses nodes by name
        if not node.name:
            node.name = f"{node.op_type}_{node_index}"
    onnx.save(model, str(out_path))
    return model


def _quantize(pre_path: Path, out_path: Path, ranges_path: Path, opts: QuantOptions, form: str) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.load(str(pre_path))
    nodes = [n for n in quantizable_nodes(model) if n not in set(opts.keep_float)]
    extra = {}
    if form == "tensorrt":
        extra.update(ActivationSymmetric=True, WeightSymmetric=True, QuantizeBias=False,
                     OpTypesToExcludeOutputQuantization=["Add"])
        activation = QuantType.QInt8
    else:
        activation = QuantType.QUInt8
    quantize_static(
        str(pre_path),
        str(out_path),
        None,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_quantize=nodes,
        per_channel=True,
        reduce_range=form != "tensorrt",
        activation_type=activation,
        weight_type=QuantType.QInt8,
        calibrate_method=_method(opts.method),
        extra_options=extra,
        calibration_cache_path=str(ranges_path),
    )


def quantize_both(
    fp32_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    batches: Iterator[np.ndarray],
    opts: QuantOptions,
    input_name: str = "image",
    ranges_path: Optional[str | os.PathLike] = None,
) -> Dict[str, Path]:
    """Calibrate once (unless ``ranges_path`` exists) and write both INT8 forms into ``out_dir``.

    Returns the paths of ``int8_trt``, ``int8_cpu`` and ``ranges`` (JSON of per-tensor ranges).
    """
    if opts.method not in METHODS:
        raise ValueError(f"unknown calibration method {opts.method!r}; choose {', '.join(METHODS)}")
    out_dir = Path(out_dir)
    ranges = Path(ranges_path) if ranges_path else out_dir / "calibration_ranges.json"
    with tempfile.TemporaryDirectory(prefix="destseg-int8-") as tmp:
        pre = Path(tmp) / "prepared.onnx"
        prepare(fp32_path, pre)
        trt_path, cpu_path = out_dir / "model.int8.onnx", out_dir / "model.int8.cpu.onnx"
        if not ranges.is_file():
            calibrate(pre, ranges, batches, opts, input_name)
        _quantize(pre, trt_path, ranges, opts, "tensorrt")
        if opts.keep_float:
            onnx.save(half_precision(onnx.load(str(trt_path)), opts.keep_float), str(trt_path))
        _quantize(pre, cpu_path, ranges, opts, "cpu")
    return {"int8_trt": trt_path, "int8_cpu": cpu_path, "ranges": ranges}


def half_precision(model: onnx.ModelProto, nodes: List[str]) -> onnx.ModelProto:
    """The TensorRT form with ``nodes`` (kept out of INT8) in FP16: their float inputs cast to
    float16, their weights and biases stored as float16, their outputs cast back to float32.

    TensorRT 10 and 11 build the Q/DQ graph strongly typed, so a node runs in the precision
    the graph gives it: without this the kept nodes would run in FP32 on the GPU. The CPU form
    keeps them in FP32 (x86 CPUs have no fast FP16 convolution).
    """
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    wanted = set(nodes)
    out_nodes = []
    for node in model.graph.node:
        if node.name not in wanted:
            out_nodes.append(node)
            continue
        for index, name in enumerate(node.input):
            if not name:
                continue
            if name in inits:
                half = name + "_fp16"
                if half not in inits:
                    inits[half] = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16), half)
                    model.graph.initializer.append(inits[half])
                node.input[index] = half
            else:
                cast = f"{node.name}_in{index}_fp16"
                out_nodes.append(helper.make_node("Cast", [name], [cast], name=cast, to=TensorProto.FLOAT16))
                node.input[index] = cast
        out_nodes.append(node)
        for index, name in enumerate(node.output):
            half = f"{name}_fp16"
            node.output[index] = half
            out_nodes.append(helper.make_node("Cast", [half], [name], name=f"{node.name}_out{index}_fp32", to=TensorProto.FLOAT))
    del model.graph.node[:]
    model.graph.node.extend(out_nodes)
    used = {i for n in model.graph.node for i in n.input}
    kept_inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits)
    return model


def ranges_method(ranges_path: str | os.PathLike) -> str:
    """The --calib-method a ranges file was made with."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    made_with = load_tensors_data(Path(ranges_path)).calibration_method
    return next(name for name in METHODS if _method(name) == made_with)


def read_ranges(ranges_path: str | os.PathLike) -> Dict[str, Tuple[float, float]]:
    """{tensor: (min, max)} from ONNX Runtime's calibration JSON."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(Path(ranges_path))
    out = {}
    for name, value in data.data.items():
        lo, hi = value.range_value
        out[name] = (float(np.asarray(lo).min()), float(np.asarray(hi).max()))
    return out


def qdq_summary(model: onnx.ModelProto) -> Dict[str, int]:
    """Counts that say where Q/DQ went (for destseg.json and the report)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized_convs = sum(1 for n in convs if n.input[0] in producers and producers[n.input[0]].op_type == "DequantizeLinear")
    return {
        "conv": len(convs),
        "conv_int8": quantized_convs,
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in model.graph.node),
    }
