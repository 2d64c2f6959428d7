"""Makes runtime/doctor_bundle, the tiny real bundle destseg-doctor's smoke test runs on every box.

    python -m tests.make_doctor_bundle runtime/doctor_bundle

A DeSTSeg bundle is tens of MB; the doctor needs a few KB that go down the same paths: the
bundle contract (destseg.json, hashes), the uint8 NHWC input with the mean/std folded into
the graph's first ops, convolutions, the sigmoid, bilinear upsampling to S x S and the
top-100 image score, as FP32 and as both INT8 forms (symmetric int8 Q/DQ for TensorRT,
uint8 activations for ONNX Runtime's CPU kernels). It is no detector: the weights are small
integers over 8, so the files are the same on every machine and numpy version, and the
activation scales are powers of two above the ranges ONNX Runtime measures on fixed frames,
so they do not move with the last bit of a float either.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

SIZE = 32
TOP_K = 100
WIDTH = 8  # channels of the two hidden convolutions
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
OPSET = 17
FILES = {"fp32": "model.onnx", "int8_trt": "model.int8.onnx", "int8_cpu": "model.int8.cpu.onnx"}
CONVS = ("conv1", "conv2", "conv3")


def _weights(shape: Tuple[int, ...], salt: int) -> np.ndarray:
    """Small exact values in [-0.75, 0.75], fixed by a formula (no random generator)."""
    n = int(np.prod(shape))
    return ((((np.arange(n) + salt) * 7919) % 13 - 6) / 8.0).astype(np.float32).reshape(shape)


def _parameters() -> Dict[str, np.ndarray]:
    return {
        "conv1.weight": _weights((WIDTH, 3, 3, 3), 1) / 2, "conv1.bias": _weights((WIDTH,), 2) / 4,
        "conv2.weight": _weights((WIDTH, WIDTH, 3, 3), 3) / 4, "conv2.bias": _weights((WIDTH,), 4) / 4,
        "conv3.weight": _weights((1, WIDTH, 1, 1), 5), "conv3.bias": np.zeros(1, np.float32),
    }


def _frames() -> np.ndarray:
    """Eight fixed 32 x 32 RGB frames (gradients, bars, a checkerboard) for the activation ranges."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    frames = []
    for k in range(8):
        r = (x * 8 + k * 31) % 256
        g = (y * 8 + k * 17) % 256
        b = ((x // 4 + y // 4 + k) % 2) * 255
        frames.append(np.stack([r, g, b], axis=-1))
    return np.asarray(frames, np.uint8)


def _graph(activation_qdq: Dict[str, Tuple[float, int]], activation_type: type = np.int8):
    """The model: plain FP32, or with ``activation_qdq`` ({conv: (scale, zero_point)}) Q/DQ of
    ``activation_type`` on every convolution's input and int8 per-channel weights."""
    from onnx import TensorProto, helper, numpy_helper

    from destseg.preprocess import folded_normalization

    params = _parameters()
    scale, shift = folded_normalization(MEAN, STD)
    inits = [
        numpy_helper.from_array(scale.reshape(1, 3, 1, 1), "norm.scale"),
        numpy_helper.from_array(shift.reshape(1, 3, 1, 1), "norm.shift"),
        numpy_helper.from_array(np.array([1.0, 1.0, 2.0, 2.0], np.float32), "resize.scales"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat.shape"),
        numpy_helper.from_array(np.array([TOP_K], np.int64), "topk.k"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "norm.scale"], ["scaled"], name="norm_mul"),
        helper.make_node("Sub", ["scaled", "norm.shift"], ["conv1.in"], name="norm_sub"),
    ]
    activation_out = {"conv1": "conv1.out", "conv2": "conv2.out", "conv3": "logits"}
    relu_to = {"conv1": "conv2.in", "conv2": "conv3.in"}
    for conv in CONVS:
        source, weight = f"{conv}.in", f"{conv}.weight"
        if activation_qdq:
            a_scale, a_zero = activation_qdq[conv]
            inits += [numpy_helper.from_array(np.array(a_scale, np.float32), f"{conv}.in.scale"),
                      numpy_helper.from_array(np.array(a_zero, activation_type), f"{conv}.in.zero_point")]
            nodes += [helper.make_node("QuantizeLinear", [source, f"{conv}.in.scale", f"{conv}.in.zero_point"],
                                       [f"{conv}.in.q"], name=f"{conv}_in_quantize"),
                      helper.make_node("DequantizeLinear", [f"{conv}.in.q", f"{conv}.in.scale", f"{conv}.in.zero_point"],
                                       [f"{conv}.in.dq"], name=f"{conv}_in_dequantize")]
            source = f"{conv}.in.dq"
        w = params[weight]
        if activation_qdq:
            w_scale = (np.abs(w).reshape(len(w), -1).max(axis=1) / 127.0).astype(np.float32)
            w_scale[w_scale == 0] = 1.0
            w_int8 = np.clip(np.round(w / w_scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
            inits += [numpy_helper.from_array(w_int8, f"{weight}.int8"),
                      numpy_helper.from_array(w_scale, f"{weight}.scale"),
                      numpy_helper.from_array(np.zeros(len(w), np.int8), f"{weight}.zero_point")]
            nodes.append(helper.make_node("DequantizeLinear", [f"{weight}.int8", f"{weight}.scale", f"{weight}.zero_point"],
                                          [f"{weight}.dq"], name=f"{conv}_weight_dequantize", axis=0))
            weight = f"{weight}.dq"
        else:
            inits.append(numpy_helper.from_array(w, weight))
        inits.append(numpy_helper.from_array(params[f"{conv}.bias"], f"{conv}.bias"))
        kernel = params[f"{conv}.weight"].shape[-1]
        nodes.append(helper.make_node("Conv", [source, weight, f"{conv}.bias"], [activation_out[conv]], name=conv,
                                      kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4,
                                      strides=[2, 2] if conv == "conv2" else [1, 1]))
        if conv in relu_to:
            nodes.append(helper.make_node("Relu", [activation_out[conv]], [relu_to[conv]], name=f"{conv}_relu"))
    nodes += [
        helper.make_node("Sigmoid", ["logits"], ["probability"], name="sigmoid"),
        helper.make_node("Resize", ["probability", "", "resize.scales"], ["anomaly_map"], name="upsample",
                         mode="linear", coordinate_transformation_mode="half_pixel"),
        helper.make_node("Reshape", ["anomaly_map", "flat.shape"], ["flat"], name="flatten"),
        helper.make_node("TopK", ["flat", "topk.k"], ["top_values", "top_indices"], name="top_k", axis=1),
        helper.make_node("ReduceMean", ["top_values"], ["score"], name="score_mean", axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "destseg-doctor-tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, SIZE, SIZE]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="destseg-doctor")
    model.ir_version = 8
    return model


def _power_of_two_above(value: float) -> float:
    return float(2.0 ** math.ceil(math.log2(max(value, 1e-6))))


def _conv_input_ranges(fp32_path: Path) -> Dict[str, Tuple[float, float]]:
    """(min, max) of every convolution's input over :func:`_frames`, measured by ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fp32_path))
    names = [f"{conv}.in" for conv in CONVS]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    lows: Dict[str, float] = {}
    highs: Dict[str, float] = {}
    for frame in _frames():
        values = session.run(names, {"image": frame[np.newaxis]})
        for conv, value in zip(CONVS, values):
            lows[conv] = min(lows.get(conv, 0.0), float(value.min()))
            highs[conv] = max(highs.get(conv, 0.0), float(value.max()))
    return {conv: (lows[conv], highs[conv]) for conv in CONVS}


def _symmetric(ranges: Dict[str, Tuple[float, float]]) -> Dict[str, Tuple[float, int]]:
    return {c: (_power_of_two_above(max(-lo, hi) / 127.0), 0) for c, (lo, hi) in ranges.items()}


def _asymmetric(ranges: Dict[str, Tuple[float, float]]) -> Dict[str, Tuple[float, int]]:
    out = {}
    for conv, (lo, hi) in ranges.items():
        scale = _power_of_two_above((hi - lo) / 255.0)
        out[conv] = (scale, int(min(255, max(0, round(-lo / scale)))))
    return out


def _meta(ranges: Dict[str, Tuple[float, float]]) -> Dict:
    image = {"name": "image", "shape": [1, SIZE, SIZE, 3], "dtype": "uint8"}
    return {
        "model": {"backbone": "doctor-tiny", "image_size": SIZE, "category": None, "weights_sha256": "0" * 64,
                  "config": {"note": "destseg-doctor's smoke-test model (tests/make_doctor_bundle.py): the "
                                     "deployed graph's ops and contract at 32 x 32, no detector", "top_k": TOP_K}},
        "preprocessing": {"size": SIZE, "layout": "NHWC", "dtype": "uint8", "color": "RGB", "resize": "area",
                          "mean": list(MEAN), "std": list(STD), "normalisation": "inside-graph"},
        "thresholds": {"image": 0.5, "pixel": 0.5, "method": "none (not a detector)"},
        "io": {"inputs": [image],
               "outputs": [{"name": "anomaly_map", "shape": [1, 1, SIZE, SIZE], "dtype": "float32"},
                           {"name": "score", "shape": [1], "dtype": "float32"}],
               "dynamic_batch": False},
        "models": {
            "fp32": {"file": FILES["fp32"], "precision": "fp32", "target": "any", "opset": OPSET},
            "int8_trt": {"file": FILES["int8_trt"], "precision": "int8", "target": "tensorrt",
                         "form": "symmetric int8 Q/DQ, per-channel weights, float biases and tail", "kept_float": []},
            "int8_cpu": {"file": FILES["int8_cpu"], "precision": "int8", "target": "cpu",
                         "form": "uint8 activations, per-channel int8 weights (ONNX Runtime)", "kept_float": []},
        },
        "calibration": {"method": "minmax over 8 fixed frames, power-of-two scales",
                        "ranges": {conv: [round(lo, 4), round(hi, 4)] for conv, (lo, hi) in ranges.items()}},
    }


def write_doctor_bundle(folder: str | Path) -> Path:
    """Write the doctor's bundle into ``folder`` (created; its destseg.json hashes every model)."""
    import onnx

    from destseg.bundle import write_meta

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = _graph({})
    onnx.checker.check_model(fp32)
    onnx.save(fp32, str(folder / FILES["fp32"]))
    ranges = _conv_input_ranges(folder / FILES["fp32"])
    for variant, qdq, dtype in (("int8_trt", _symmetric(ranges), np.int8), ("int8_cpu", _asymmetric(ranges), np.uint8)):
        model = _graph(qdq, dtype)
        onnx.checker.check_model(model)
        onnx.save(model, str(folder / FILES[variant]))
    write_meta(folder, _meta(ranges))
    return folder


if __name__ == "__main__":
    print(write_doctor_bundle(sys.argv[1] if len(sys.argv) > 1 else "runtime/doctor_bundle"))
