"""Will TensorRT's ONNX parser take this graph? Answered from the ONNX alone, without TensorRT.

Export runs on workstations without TensorRT and the engine is built later on the Jetson,
so an op the parser lacks would only show up there, at first start. This check reads the
parser's documented operator table (tensorrt_onnx_ops.txt, TensorRT 8.5, the oldest we
target) plus the few per-op restrictions this graph can hit.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Set

import onnx
from onnx import TensorProto, numpy_helper

SUPPORTED_OPS_FILE = Path(__file__).with_name("tensorrt_onnx_ops.txt")
ONNX_DOMAINS = ("", "ai.onnx")
MAX_OPSET = 17  # "TensorRT 8.5 supports operators up to Opset 17"
TOPK_MAX_K = 3840  # onnx-tensorrt 10.x: "K input must be less than 3840"
FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)


@lru_cache(maxsize=1)
def supported_ops() -> FrozenSet[str]:
    lines = SUPPORTED_OPS_FILE.read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those inside If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def op_types(model: onnx.ModelProto) -> Dict[str, int]:
    """Op type -> count over the whole graph (custom domains as 'domain::Op')."""
    counts: Dict[str, int] = {}
    for node in _nodes(model.graph):
        name = node.op_type if node.domain in ONNX_DOMAINS else f"{node.domain}::{node.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _constants(graph: onnx.GraphProto) -> Dict[str, onnx.TensorProto]:
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = attr.t
    return values


def _uint8_tensors(graph: onnx.GraphProto) -> Set[str]:
    names = {v.name for v in graph.input if v.type.tensor_type.elem_type == TensorProto.UINT8}
    names |= {t.name for t in graph.initializer if t.data_type == TensorProto.UINT8}
    for node in graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.UINT8 for a in node.attribute):
            names.update(node.output)
    return names


def tensorrt_problems(model: onnx.ModelProto) -> List[str]:
    """Everything that would stop TensorRT 8.5+ from building this graph without plugins; [] if none."""
    problems: List[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), None)
    if opset is not None and opset > MAX_OPSET:
        problems.append(f"opset {opset}: TensorRT 8.5 (JetPack 5) parses up to opset {MAX_OPSET}; export with --opset {MAX_OPSET}")
    supported = supported_ops()
    constants = _constants(model.graph)
    uint8 = _uint8_tensors(model.graph)
    for node in _nodes(model.graph):
        where = f"node {node.name or '?'} ({node.op_type})"
        if node.domain not in ONNX_DOMAINS:
            problems.append(f"{where}: custom domain {node.domain!r} needs a TensorRT plugin")
            continue
        if node.op_type not in supported:
            problems.append(f"{where}: not supported by TensorRT's ONNX parser")
        for name in node.input:
            if name in uint8 and not (node.op_type == "Cast" and _cast_target(node) in FLOAT_TYPES):
                problems.append(f"{where}: uint8 input {name!r}; TensorRT only casts uint8 to float (use symmetric int8 Q/DQ)")
        if node.op_type == "TopK":
            k = constants.get(node.input[1]) if len(node.input) > 1 else None
            if k is None:
                problems.append(f"{where}: K must be a constant for TensorRT")
            elif int(numpy_helper.to_array(k).reshape(-1)[0]) >= TOPK_MAX_K:
                problems.append(f"{where}: K must be below {TOPK_MAX_K} for TensorRT")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = constants.get(node.input[2])
            if zero is not None and numpy_helper.to_array(zero).any():
                problems.append(f"{where}: zero point must be 0 for TensorRT (symmetric quantisation)")
    return problems


def _cast_target(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), TensorProto.UNDEFINED)
