"""Where INT8 loses precision: a per-tensor error analysis of a quantised model, in one pass.

The analysis mirrors an INT8 form exactly: every QuantizeLinear of the quantised model (an
activation, with its scale and zero point) and every DequantizeLinear of a constant (a weight
or a bias, as stored) becomes a *switchable* fake-quantiser in the FP32 graph,

    y = x + g * (fake_quant(x) - x),

where the gates ``g`` are one graph input. One ONNX Runtime session then answers every
question: gates one-hot give each tensor's effect on the output alone (the sensitivity),
all ones reproduce the INT8 form, any subset gives a mixed-precision candidate, all without
re-quantising or re-loading anything. The activations' own SQNR is computed from the FP32
values with the same formula.

Why not the greedy search alone: it rebuilt both forms for every trial (seconds each at
256 x 256) and measured layers in network order, so its budget ran out before it reached the
layers that mattered. The ranking here costs one forward per tensor on a few images.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GATES = "quant_gates"  # the probe's input: one gate per fake-quantised tensor
QRANGE = {TensorProto.INT8: (-128, 127), TensorProto.UINT8: (0, 255)}


@dataclass
class Site:
    """One quantised tensor of an INT8 form, as the probe switches it."""

    name: str  # the FP32 tensor (activation) or initializer (weight, bias)
    kind: str  # "activation" or "weight"
    consumers: List[Tuple[str, int]]  # (node name, input index) that read the quantised value
    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    axis: Optional[int] = None
    dequantized: Optional[np.ndarray] = None  # weights: the values the INT8 form computes with


def _initializers(model: onnx.ModelProto) -> Dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _attr(node: onnx.NodeProto, name: str) -> Optional[int]:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


def _qtype(model_inits: Dict[str, np.ndarray], zp_name: str) -> Tuple[int, int]:
    dtype = model_inits[zp_name].dtype
    if dtype == np.int8:
        return QRANGE[TensorProto.INT8]
    if dtype == np.uint8:
        return QRANGE[TensorProto.UINT8]
    info = np.iinfo(dtype)  # int32 biases
    return int(info.min), int(info.max)


def sites(fp32: onnx.ModelProto, quantized: onnx.ModelProto) -> List[Site]:
    """Every place the quantised model rounds a value, mapped back onto the FP32 graph's tensors.

    Node names are shared (the quantiser keeps them), so a consumer of a DequantizeLinear
    output in the quantised graph is the same node, same input index, in the FP32 graph.
    """
    qinits = _initializers(quantized)
    fp_nodes = {n.name: n for n in fp32.graph.node}
    fp_inits = {i.name for i in fp32.graph.initializer}
    producers = {o: n for n in quantized.graph.node for o in n.output}
    readers: Dict[str, List[Tuple[str, int]]] = {}
    for node in quantized.graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append((node.name, index))
    out: Dict[str, Site] = {}
    for dq in (n for n in quantized.graph.node if n.op_type == "DequantizeLinear"):
        consumers = [(node, index) for node, index in readers.get(dq.output[0], []) if node in fp_nodes]
        if not consumers:
            continue
        scale, zp = qinits[dq.input[1]], qinits[dq.input[2]] if len(dq.input) > 2 else np.zeros((), np.int8)
        qmin, qmax = _qtype(qinits, dq.input[2]) if len(dq.input) > 2 else QRANGE[TensorProto.INT8]
        if dq.input[0] in qinits:  # a constant stored quantised: a weight or a bias
            node, index = consumers[0]
            name = fp_nodes[node].input[index]
            if name not in fp_inits:
                continue
            axis = _attr(dq, "axis")
            q = qinits[dq.input[0]].astype(np.float64)
            shape = [1] * q.ndim
            if scale.ndim and q.ndim:
                shape[axis if axis is not None else 1] = -1
            value = ((q - zp.astype(np.float64).reshape(shape)) * scale.astype(np.float64).reshape(shape)).astype(np.float32)
            out[name] = Site(name, "weight", consumers, scale, zp, qmin, qmax, axis, value)
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        name = q.input[0]
        if name in out:
            out[name].consumers += consumers
        else:
            out[name] = Site(name, "activation", consumers, scale, zp, qmin, qmax)
    return list(out.values())


def fake_quant(x: np.ndarray, site: Site, ratio: float = 1.0) -> np.ndarray:
    """The activation as the INT8 form sees it (round half to even, as QuantizeLinear does)."""
    scale = float(site.scale) * ratio
    zp = float(site.zero_point)
    return ((np.clip(np.rint(x / scale) + zp, site.qmin, site.qmax) - zp) * scale).astype(np.float32)


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10 log10(signal power / error power); the signal is taken about its mean (a constant offset carries no information)."""
    ref = ref.astype(np.float64)
    noise = float(np.mean((test.astype(np.float64) - ref) ** 2))
    signal = float(np.var(ref)) or float(np.mean(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * np.log10(signal / noise) if signal > 0 else float("-inf")


def _sigmoid_input(model: onnx.ModelProto) -> str:
    sig = [n for n in model.graph.node if n.op_type == "Sigmoid"]
    if len(sig) != 1:
        raise ValueError(f"the analysis expects one Sigmoid (the anomaly probability), found {len(sig)}")
    return sig[0].input[0]


def build_probe(fp32: onnx.ModelProto, site_list: Sequence[Site]) -> onnx.ModelProto:
    """The FP32 graph with a switchable fake-quantiser at every site (see the module docstring)."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    g = model.graph
    const: List[onnx.TensorProto] = []
    nodes: List[onnx.NodeProto] = []

    def c(name: str, value) -> str:
        const.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    redirect: Dict[Tuple[str, int], str] = {}
    for i, site in enumerate(site_list):
        p = f"qprobe{i}_"
        gate = p + "g"
        nodes.append(helper.make_node("Gather", [GATES, c(p + "idx", np.array([i], np.int64))], [gate], axis=0))
        if site.kind == "weight":
            delta = c(p + "delta", (site.dequantized - numpy_helper.to_array(_init(g, site.name))).astype(np.float32))
            nodes += [helper.make_node("Mul", [gate, delta], [p + "gd"]),
                      helper.make_node("Add", [site.name, p + "gd"], [p + "out"])]
        else:
            s = c(p + "s", np.float32(site.scale))
            z = c(p + "z", np.float32(site.zero_point))
            nodes += [helper.make_node("Div", [site.name, s], [p + "a"]),
                      helper.make_node("Round", [p + "a"], [p + "r"]),
                      helper.make_node("Add", [p + "r", z], [p + "rz"]),
                      helper.make_node("Clip", [p + "rz", c(p + "lo", np.float32(site.qmin)), c(p + "hi", np.float32(site.qmax))], [p + "cl"]),
                      helper.make_node("Sub", [p + "cl", z], [p + "q"]),
                      helper.make_node("Mul", [p + "q", s], [p + "fq"]),
                      helper.make_node("Sub", [p + "fq", site.name], [p + "e"]),
                      helper.make_node("Mul", [p + "e", gate], [p + "ge"]),
                      helper.make_node("Add", [site.name, p + "ge"], [p + "out"])]
        for consumer in site.consumers:
            redirect[consumer] = p + "out"
    for node in g.node:
        for index in range(len(node.input)):
            if (node.name, index) in redirect:
                node.input[index] = redirect[(node.name, index)]
    # the probes of a weight read an initializer, those of an activation its producer's output: put
    # them all first and let a topological sort place them (onnx wants nodes in order)
    ordered = _toposort(list(nodes) + list(g.node), {i.name for i in g.input} | {i.name for i in g.initializer} | {t.name for t in const} | {GATES})
    del g.node[:]
    g.node.extend(ordered)
    g.initializer.extend(const)
    g.input.append(helper.make_tensor_value_info(GATES, TensorProto.FLOAT, [len(site_list)]))
    g.output.append(helper.make_tensor_value_info(_sigmoid_input(fp32), TensorProto.FLOAT, None))
    for site in site_list:  # the FP32 values of the activations, for their own SQNR
        if site.kind == "activation":
            g.output.append(helper.make_tensor_value_info(site.name, TensorProto.FLOAT, None))
    return model


def _init(graph: onnx.GraphProto, name: str) -> onnx.TensorProto:
    return next(i for i in graph.initializer if i.name == name)


def _toposort(nodes: List[onnx.NodeProto], available: set) -> List[onnx.NodeProto]:
    ready = set(available) | {""}
    pending, out = list(nodes), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"probe graph has a cycle or a missing input at {rest[0].name}")
        pending = rest
    return out


class Probe:
    """One ONNX Runtime session of the probe graph; ``run(gates)`` gives the logits."""

    def __init__(self, fp32_path: str | os.PathLike, quantized_path: str | os.PathLike, images: np.ndarray) -> None:
        from destseg.inference import onnx_session

        fp32 = onnx.load(str(fp32_path))
        self.sites = sites(fp32, onnx.load(str(quantized_path)))
        self.logits_name = _sigmoid_input(fp32)
        self.images = images
        with tempfile.TemporaryDirectory(prefix="destseg-probe-") as tmp:
            path = Path(tmp) / "probe.onnx"
            onnx.save(build_probe(fp32, self.sites), str(path))
            self.session = onnx_session(path)
        self.input_name = fp32.graph.input[0].name
        fixed = self.session.get_inputs()[0].shape[0]
        self.step = fixed if isinstance(fixed, int) else len(images)

    def run(self, gates: np.ndarray, outputs: Optional[List[str]] = None) -> List[np.ndarray]:
        names = outputs or [self.logits_name]
        parts = [self.session.run(names, {self.input_name: self.images[i : i + self.step], GATES: gates.astype(np.float32)})
                 for i in range(0, len(self.images), self.step)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]

    def gates(self, on: Sequence[int] = ()) -> np.ndarray:
        g = np.zeros(len(self.sites), np.float32)
        g[list(on)] = 1.0
        return g


def _macs(model: onnx.ModelProto, images: int = 1) -> Dict[str, float]:
    """GMACs per image of every Conv, by node name (shape inference on the FP32 graph)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in
              list(inferred.graph.value_info) + list(inferred.graph.output)}
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.output[0] in shapes and node.input[1] in inits:
            o = shapes[node.output[0]]
            w = inits[node.input[1]]
            if len(o) == 4 and all(o[1:]):
                out[node.name] = float(np.prod(o[1:]) * np.prod(w[1:])) / 1e9
    return out


def _where(name: str, consumers: Sequence[Tuple[str, int]]) -> str:
    """The block a tensor belongs to, from its consumers' scope (teacher, student, segmentation part)."""
    text = " ".join(c for c, _ in consumers) + " " + name
    for key, label in (("segmentation/aspp", "segmentation ASPP"), ("segmentation/head", "segmentation head"),
                       ("segmentation/res", "segmentation blocks"), ("student/decoder", "student decoder"),
                       ("student/encoder", "student encoder"), ("teacher", "teacher")):
        if key in text:
            return label
    return "other"


def suspects(fp32: onnx.ModelProto, site_list: Sequence[Site]) -> Dict[str, List[str]]:
    """The issue's suspects by site name: the fused segmentation input (the Concat of the
    per-level -T_hat * S_hat), the ASPP concat, the input of the logit (sigmoid) path's last
    quantised conv, and the L2-normalised features (the tensors that feed ReduceL2)."""
    producers = {o: n for n in fp32.graph.node for o in n.output}
    names = {s.name for s in site_list}
    concat_outputs = [n.output[0] for n in fp32.graph.node if n.op_type == "Concat"]
    seg_input = [t for t in concat_outputs if "segmentation" not in producers[t].name]
    aspp = [t for t in concat_outputs if "aspp" in producers[t].name]
    logit_conv = next(n for n in fp32.graph.node if n.op_type == "Conv" and n.output[0] == _sigmoid_input(fp32))
    head_in = [logit_conv.input[0]]
    feeds_l2 = [n.input[0] for n in fp32.graph.node if n.op_type == "ReduceL2"]
    return {"segmentation input (concat of -T_hat*S_hat)": [t for t in seg_input if t in names],
            "ASPP concat": [t for t in aspp if t in names],
            "logit conv input (sigmoid range)": [t for t in head_in if t in names],
            "L2-normalised features": [t for t in feeds_l2 if t in names]}


def units(fp32: onnx.ModelProto, site_list: Sequence[Site], nodes: Sequence[str]) -> Dict[str, List[int]]:
    """Sites by the quantisable node (``keep_float`` candidate) that owns them, in graph order.

    A node owns the sites it reads (its input activations and weights) and the activation
    sites it produces: ONNX Runtime also quantises a Conv's output when an activation follows,
    and keeping the Conv in float removes that Q as well. Keeping a node in float takes away
    exactly its sites (a site shared by two nodes goes when both are kept).
    """
    producer = {o: n.name for n in fp32.graph.node for o in n.output}
    wanted = set(nodes)
    out: Dict[str, List[int]] = {n: [] for n in nodes}
    for i, site in enumerate(site_list):
        owners = {c for c, _ in site.consumers if c in wanted}
        if site.kind == "activation" and producer.get(site.name) in wanted:
            owners.add(producer[site.name])
        for owner in owners:
            out[owner].append(i)
    return {n: members for n, members in out.items() if members}


def analyse(fp32_path: str | os.PathLike, quantized_path: str | os.PathLike, images: np.ndarray) -> Tuple[Dict, "Probe"]:
    """The ranked table of one INT8 form.

    Per quantised node (a Conv or a residual Add): the SQNR of its input activation(s) and of
    its weights as the form rounds them, and the logits' SQNR with only that node's sites
    quantised (its sensitivity), with its GMACs; plus every site's own SQNR, and all sites at
    once (the INT8 form itself, as a check of the probe).
    """
    start = time.monotonic()
    probe = Probe(fp32_path, quantized_path, images)
    fp32 = onnx.load(str(fp32_path))
    inits = _initializers(fp32)
    acts = [s.name for s in probe.sites if s.kind == "activation"]
    ref_logits, *act_values = probe.run(probe.gates(), [probe.logits_name] + acts)
    act_by_name = dict(zip(acts, act_values))
    own = [sqnr_db(act_by_name[s.name], fake_quant(act_by_name[s.name], s)) if s.kind == "activation"
           else sqnr_db(inits[s.name], s.dequantized) for s in probe.sites]
    macs = _macs(fp32)
    op_of = {n.name: n.op_type for n in fp32.graph.node}
    rows = []
    from destseg.calibration.quantize import quantizable_nodes

    for node, members in units(fp32, probe.sites, quantizable_nodes(fp32)).items():
        (logits,) = probe.run(probe.gates(members))
        act = [own[i] for i in members if probe.sites[i].kind == "activation"]
        wts = [own[i] for i in members if probe.sites[i].kind == "weight"]
        rows.append({"node": node, "op": op_of.get(node, "?"), "block": _where(node, []),
                     "inputs": [probe.sites[i].name for i in members if probe.sites[i].kind == "activation"],
                     "sites": members,
                     "activation_sqnr_db": round(min(act), 2) if act else None,
                     "weight_sqnr_db": round(min(wts), 2) if wts else None,
                     "output_sqnr_db": round(sqnr_db(ref_logits, logits), 2),
                     "logit_mean_abs_diff": float(np.abs(logits - ref_logits).mean()),
                     "gmacs": round(macs.get(node, 0.0), 4)})
    rows.sort(key=lambda r: r["output_sqnr_db"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    (all_logits,) = probe.run(probe.gates(range(len(probe.sites))))
    rank_of = {}
    for row in rows:
        for tensor in row["inputs"]:
            rank_of.setdefault(tensor, row)
    flagged = {label: [{"tensor": t, "rank": rank_of[t]["rank"], "node": rank_of[t]["node"],
                        "sqnr_db": round(own[next(i for i, s in enumerate(probe.sites) if s.name == t)], 2),
                        "output_sqnr_db": rank_of[t]["output_sqnr_db"]} for t in tensors if t in rank_of]
               for label, tensors in suspects(fp32, probe.sites).items()}
    return {"images": int(len(images)), "sites": len(probe.sites), "nodes": len(rows),
            "seconds": round(time.monotonic() - start, 1),
            "all_output_sqnr_db": round(sqnr_db(ref_logits, all_logits), 2),
            "suspects": flagged, "ranking": rows,
            "site_sqnr_db": {s.name: round(v, 2) for s, v in zip(probe.sites, own)}}, probe


def kept_sqnr(probe: "Probe", ranking: Sequence[Dict], k: int) -> float:
    """Logits SQNR (dB) of the form with its k most harmful nodes kept in float: one probe run."""
    removed = {i for row in ranking[:k] for i in row["sites"]}
    ref = probe.run(probe.gates())[0]
    return round(sqnr_db(ref, probe.run(probe.gates(sorted(set(range(len(probe.sites))) - removed)))[0]), 2)


def to_markdown(analysis: Dict[str, Dict], top: int = 15) -> List[str]:
    """The report's section: per form, the suspects and the ``top`` most harmful nodes."""
    first = next(iter(analysis.values()))
    lines = ["## Per-layer error analysis", "",
             f"Each quantised node alone fake-quantised exactly as the form does it, on {first['images']} images: "
             "the SQNR of its input activation and its weights, and the logits' SQNR (the sigmoid's input) "
             "with only that node quantised. Lowest output SQNR (most harmful) first.", ""]
    for form, a in analysis.items():
        lines += [f"### {form}: {a['nodes']} nodes, {a['sites']} quantised tensors; all at once "
                  f"{a['all_output_sqnr_db']:.1f} dB at the logits ({a['seconds']} s)", ""]
        for label, items in a["suspects"].items():
            text = "; ".join(f"`{s['tensor']}` (into `{s['node']}`) rank {s['rank']}, own {s['sqnr_db']:.1f} dB, "
                             f"output {s['output_sqnr_db']:.1f} dB" for s in items) or "not quantised in this form"
            lines.append(f"- {label}: {text}")
        lines += ["", "| rank | node | block | activation SQNR dB | weight SQNR dB | output SQNR dB | GMACs |",
                  "|---|---|---|---|---|---|---|"]
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        for r in a["ranking"][:top]:
            lines.append(f"| {r['rank']} | `{r['node']}` | {r['block']} | {fmt(r['activation_sqnr_db'])} | "
                         f"{fmt(r['weight_sqnr_db'])} | {r['output_sqnr_db']:.1f} | {r['gmacs']:.3f} |")
        lines.append("")
    return lines
