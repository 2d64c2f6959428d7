"""The TensorRT compatibility check flags what TensorRT's ONNX parser would reject.

Small graphs built with onnx.helper, each with one thing TensorRT 8.5+ cannot build
without a plugin; the exported DeSTSeg graphs pass it in test_export_parity.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from destseg.export.trt_ops import SUPPORTED_OPS_FILE, op_types, supported_ops, tensorrt_problems


def model(nodes, inputs, initializers=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])


FLOAT_IN = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
UINT8_IN = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])


def test_supported_op_list_comes_from_onnx_tensorrt_docs():
    ops = supported_ops()
    assert {"Conv", "Resize", "TopK", "Cast", "QuantizeLinear", "DequantizeLinear", "ReduceL2"} <= ops
    assert not {"Unique", "ConvInteger", "QLinearConv", "MatMulInteger"} & ops  # "N" in the table
    assert "onnx/onnx-tensorrt" in SUPPORTED_OPS_FILE.read_text().splitlines()[1]


def test_uint8_input_cast_to_float_is_fine():
    m = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [UINT8_IN])
    assert tensorrt_problems(m) == []


def test_uint8_into_anything_but_a_float_cast_is_flagged():
    m = model([helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
               helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT)], [UINT8_IN])
    (problem,) = tensorrt_problems(m)
    assert "uint8 input 'x'" in problem


def test_custom_domain_needs_a_plugin():
    m = model([helper.make_node("Fancy", ["x"], ["y"], name="f", domain="com.example")], [FLOAT_IN],
              extra_opsets=[helper.make_opsetid("com.example", 1)])
    assert tensorrt_problems(m) == ["node f (Fancy): custom domain 'com.example' needs a TensorRT plugin"]
    assert op_types(m) == {"com.example::Fancy": 1}


def test_unsupported_op_is_flagged():
    m = model([helper.make_node("Unique", ["x"], ["y"], name="u")], [FLOAT_IN])
    assert tensorrt_problems(m) == ["node u (Unique): not supported by TensorRT's ONNX parser"]


@pytest.mark.parametrize("k, message", [(None, "K must be a constant"), (4000, "below 3840"), (100, None)])
def test_topk_needs_a_small_constant_k(k, message):
    inits = [] if k is None else [numpy_helper.from_array(np.array([k], np.int64), "k")]
    inputs = [FLOAT_IN] + ([helper.make_tensor_value_info("k", TensorProto.INT64, [1])] if k is None else [])
    m = model([helper.make_node("TopK", ["x", "k"], ["y", "idx"])], inputs, inits)
    problems = tensorrt_problems(m)
    assert (problems == []) if message is None else (message in problems[0])


def test_asymmetric_quantisation_is_flagged():
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    inits = [scale, numpy_helper.from_array(np.array(3, np.int8), "z")]
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], [FLOAT_IN], inits)
    problems = tensorrt_problems(m)
    assert len(problems) == 2 and all("zero point must be 0" in p for p in problems)
    symmetric = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                       helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], [FLOAT_IN],
                      [scale, numpy_helper.from_array(np.array(0, np.int8), "z")])
    assert tensorrt_problems(symmetric) == []


def test_uint8_zero_points_of_a_cpu_int8_graph_are_flagged():
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")]
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], [FLOAT_IN], inits)
    assert any("uint8 input 'z'" in p for p in tensorrt_problems(m))


def test_opset_newer_than_tensorrt_8_5_is_flagged():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [FLOAT_IN], opset=19)
    (problem,) = tensorrt_problems(m)
    assert "--opset 17" in problem


def test_ops_inside_subgraphs_are_checked():
    body = helper.make_graph([helper.make_node("Unique", ["x"], ["out"], name="inner")], "then", [],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    m = model([helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)], [FLOAT_IN, cond])
    assert sum("inner (Unique)" in p for p in tensorrt_problems(m)) == 2
