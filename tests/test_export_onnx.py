"""The ONNX post-processing around the traced graph: onnxsim fallback, metadata, output shapes."""
from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from destseg.export.onnx_export import fix_output_shapes, read_metadata, set_metadata, simplify


def graph_model(nodes, outputs):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_simplifier_failure_keeps_the_graph_and_warns():
    broken = graph_model([helper.make_node("Add", ["x", "undefined"], ["y"])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.warns(UserWarning, match="onnxsim failed .* keeping the unsimplified graph"):
        result = simplify(broken)
    assert result.model is broken and not result.simplified
    assert result.error.startswith("RuntimeError")


def test_simplifier_folds_what_it_can():
    # Identity chains are what the traced graph is full of.
    model = graph_model([helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    result = simplify(model)
    assert result.simplified and result.error is None
    assert [n.op_type for n in result.model.graph.node] == ["Relu"]


def test_metadata_roundtrip_overwrites_and_encodes_json():
    model = graph_model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    set_metadata(model, {"backbone": "resnet18", "thresholds": {"image": 0.5}, "image_size": 256})
    set_metadata(model, {"backbone": "efficientnet_lite0"})
    assert read_metadata(model) == {"backbone": "efficientnet_lite0", "thresholds": '{"image": 0.5}', "image_size": "256"}
    assert [p.key for p in model.metadata_props].count("destseg.backbone") == 1


def test_map_output_gets_static_spatial_dims():
    model = graph_model([helper.make_node("Relu", ["x"], ["anomaly_map"])],
                        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", "c", "h", "w"])])
    fix_output_shapes(model, 64)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, 64, 64]
