"""Where the compute and the time of one DeSTSeg inference go, part by part.

For each backbone and image size: parameters, GMACs and the median ONNX Runtime CPU
latency of every part of the inference path (teacher, student encoder, student decoder,
feature fusion, segmentation network, tail), so a user can see that the segmentation
network, not the backbones, decides the edge latency, and how the input size moves it.

MACs are counted with forward hooks on Conv2d and Linear (out elements x in_ch/groups x
kh x kw); the elementwise parts (fusion: L2 normalisation, product, upsampling; tail:
sigmoid, upsampling, top-k) therefore show 0 GMACs but a measured latency. Weights are
random: neither the counts nor the latency depend on them (counting alone runs on
PyTorch's meta device, shapes only). Each part is exported on its own with
torch.onnx.export and timed on the CPU execution provider (warm-up, then ``--runs``
rounds, one run of every part per round; median and min); the whole model is exported
once more as one graph, so the sum of the parts can be compared with a fused graph.

    python benchmarks/compute_budget.py --sizes 128,256,320 --out budget/
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from destseg.atomic import atomic_path, write_json, write_text
from destseg.inference import onnx_session
from destseg.latency import latency_statistics
from destseg.train.model import BACKBONES, SEG_HEAD, SEG_HEADS, SEG_WIDTH, DeSTSeg, top_k_score

PARTS = ("teacher", "student encoder", "student decoder", "fusion", "segmentation", "tail")
WHOLE = "whole model (one graph)"
# The student encoder halves the input five times and the decoder doubles it back to S/4.
SIZE_MULTIPLE = 32


class BudgetError(ValueError):
    """Options the budget cannot be computed for."""


@dataclass(frozen=True)
class PartBudget:
    backbone: str
    size: int
    seg_width: int  # channels of the segmentation network (the paper's 256)
    part: str
    params: int
    macs: int
    latency_ms: Optional[float]  # median ONNX Runtime CPU latency; None when not measured
    latency_min_ms: Optional[float]  # the fastest run: the better estimate when the machine is shared
    seg_head: str = SEG_HEAD  # "paper" or "light" (depthwise-separable ASPP and head convs)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass through every Conv2d and Linear in ``module``.

    Conv2d: output elements x in_channels/groups x kh x kw; Linear: output elements x
    in_features. Bias additions, BN, activations and pooling are not counted, as in the
    usual GMAC figures the spec's numbers are quoted in.
    """
    total = 0

    def conv_hook(conv: nn.Conv2d, _inp: Tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = conv.kernel_size
        total += out.numel() * (conv.in_channels // conv.groups) * kh * kw

    def linear_hook(linear: nn.Linear, _inp: Tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * linear.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


class _Call(nn.Module):
    """A parameter-free function of the model as an nn.Module, so the glue between parts exports on its own."""

    def __init__(self, fn: Callable[..., object]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *inputs: torch.Tensor) -> object:
        return self.fn(*inputs)


def _tail(logits: torch.Tensor, size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid, upsampling to the input size and the top-k score, as DeSTSeg.forward ends."""
    anomaly_map = F.interpolate(torch.sigmoid(logits), size=(size, size), mode="bilinear", align_corners=False)
    return anomaly_map, top_k_score(anomaly_map)


def model_parts(model: DeSTSeg, size: int) -> List[Tuple[str, nn.Module, Tuple[torch.Tensor, ...]]]:
    """(name, module, example inputs) for each part, chained on one random image of ``size``."""
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        t_feats = model.teacher(x)
        z = model.student.encoder(x)
        s_feats = model.student.decoder(z)
        seg_in = model.segmentation_input(t_feats, s_feats)
        logits = model.segmentation(seg_in)
    fusion = _Call(lambda t1, t2, t3, s1, s2, s3: model.segmentation_input([t1, t2, t3], [s1, s2, s3]))
    return [
        ("teacher", model.teacher, (x,)),
        ("student encoder", model.student.encoder, (x,)),
        ("student decoder", model.student.decoder, (z,)),
        ("fusion", fusion, (*t_feats, *s_feats)),
        ("segmentation", model.segmentation, (seg_in,)),
        ("tail", _Call(lambda lg: _tail(lg, size)), (logits,)),
        (WHOLE, model, (x,)),
    ]


class OnnxPart:
    """One part exported to ONNX with an ONNX Runtime CPU session and its input feed."""

    def __init__(self, module: nn.Module, inputs: Sequence[torch.Tensor], path: Path, threads: int) -> None:
        names = [f"in{i}" for i in range(len(inputs))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(module, tuple(inputs), str(path), input_names=names, opset_version=17, dynamo=False)
        self.session = onnx_session(path, threads)
        self.feed = {n: t.numpy().astype(np.float32) for n, t in zip(names, inputs)}

    def run_ms(self) -> float:
        tic = time.perf_counter()
        self.session.run(None, self.feed)
        return (time.perf_counter() - tic) * 1e3


def interleaved_latency_ms(parts: Dict[str, OnnxPart], runs: int, warmup: int) -> Dict[str, Tuple[float, float]]:
    """(median, min) ms per part, timed round-robin: one run of every part per round.

    On a shared machine other jobs come and go; interleaving spreads their effect over
    all parts alike, so the shares of the total stay right even when the totals drift.
    """
    for _ in range(warmup):
        for part in parts.values():
            part.run_ms()
    times: Dict[str, List[float]] = {name: [] for name in parts}
    for _ in range(runs):
        for name, part in parts.items():
            times[name].append(part.run_ms())
    stats = {name: latency_statistics(t) for name, t in times.items()}
    return {name: (s["median"], s["min"]) for name, s in stats.items()}


def budget(backbone: str, size: int, runs: int = 10, warmup: int = 2, threads: int = 2, measure: bool = True,
           seg_width: int = SEG_WIDTH, seg_head: str = SEG_HEAD) -> List[PartBudget]:
    """Parameters, MACs and (with ``measure``) latency of every part, then the whole model."""
    check_options([backbone], [size])
    torch.manual_seed(0)
    # Counting needs only shapes: on the meta device it takes no memory and no arithmetic.
    with torch.device("cpu" if measure else "meta"):
        model = DeSTSeg(backbone, seg_width, seg_head=seg_head).eval()
        parts = model_parts(model, size)
    latency: Dict[str, Tuple[Optional[float], Optional[float]]] = {}
    if measure:
        with tempfile.TemporaryDirectory(prefix="destseg-budget-") as tmp:
            sessions = {name: OnnxPart(module, inputs, Path(tmp) / f"part{i}.onnx", threads)
                        for i, (name, module, inputs) in enumerate(parts)}
            latency.update(interleaved_latency_ms(sessions, runs, warmup))
    return [
        PartBudget(backbone, size, seg_width, name, count_params(module), count_macs(module, *inputs), *latency.get(name, (None, None)),
                   seg_head=seg_head)
        for name, module, inputs in parts
    ]


def check_options(backbones: Sequence[str], sizes: Sequence[int]) -> None:
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown:
        raise BudgetError(f"unknown backbone {unknown[0]!r}; choose from {', '.join(BACKBONES)}")
    bad = [s for s in sizes if s <= 0 or s % SIZE_MULTIPLE]
    if bad:
        raise BudgetError(f"image size {bad[0]} is not a positive multiple of {SIZE_MULTIPLE}; pass e.g. --sizes 128,256,320")


def _fmt_ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown_table(rows: Sequence[PartBudget]) -> str:
    """One Markdown table, grouped by backbone and size, with each part's share of the MACs and time."""
    lines = [
        "| backbone | size | seg width | part | params (M) | GMACs | MAC share | median (ms) | min (ms) | time share |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (backbone, size, width), group in _groups(rows).items():
        width = _seg_label(*width)
        parts = [r for r in group if r.part != WHOLE]
        macs = sum(r.macs for r in parts)
        measured = all(r.latency_ms is not None for r in parts)
        latency = sum(r.latency_ms for r in parts) if measured else None
        fastest = sum(r.latency_min_ms for r in parts) if measured else None
        for r in parts:
            mac_share = f"{100 * r.macs / macs:.0f}%"
            time_share = f"{100 * r.latency_ms / latency:.0f}%" if measured else "-"
            lines.append(f"| {backbone} | {size} | {width} | {r.part} | {r.params / 1e6:.2f} | {r.macs / 1e9:.2f} | {mac_share} | {_fmt_ms(r.latency_ms)} | {_fmt_ms(r.latency_min_ms)} | {time_share} |")
        lines.append(f"| {backbone} | {size} | {width} | **sum of parts** | {sum(r.params for r in parts) / 1e6:.2f} | {macs / 1e9:.2f} | 100% | {_fmt_ms(latency)} | {_fmt_ms(fastest)} | 100% |")
        whole = [r for r in group if r.part == WHOLE]
        if whole:
            w = whole[0]
            lines.append(f"| {backbone} | {size} | {width} | {WHOLE} | {w.params / 1e6:.2f} | {w.macs / 1e9:.2f} | | {_fmt_ms(w.latency_ms)} | {_fmt_ms(w.latency_min_ms)} | |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class JetsonPeak:
    """Dense GPU tensor-core peaks of one Jetson module at its highest stock power mode.

    NVIDIA quotes sparse INT8 TOPS (2:4 structured sparsity); our weights are dense, so the
    figures here are half of those, GPU only (no DLA: the Orin Nano has none, and DeSTSeg's
    ASPP does not run on it unchanged). FP16 dense is half of INT8 dense on Ampere.
    """

    name: str
    gpu_clock_mhz: int
    int8_tops: float
    fp16_tflops: float
    source: str


JETSONS = (
    JetsonPeak("Orin Nano 8GB (15 W)", 625, 20.0, 10.0, "40 sparse INT8 TOPS, 1024 CUDA / 32 tensor cores"),
    JetsonPeak("Orin NX 16GB (25 W)", 918, 30.0, 15.0, "100 sparse INT8 TOPS with 2 DLAs; GPU part from 8 SMs x 918 MHz x 4096 INT8 ops/clk"),
    JetsonPeak("AGX Orin 64GB (60 W)", 1300, 85.0, 42.5, "275 sparse INT8 TOPS = GPU 170 + 2 DLA 105"),
)
# Fraction of the dense peak an end-to-end TensorRT engine reaches at batch 1: an assumption,
# to be replaced by destseg-bench measurements on the device.
ASSUMED_UTILISATION = {"int8": 0.30, "fp16": 0.40}


def jetson_estimate(rows: Sequence[PartBudget]) -> str:
    """Estimated batch-1 GPU latency on each Orin from our GMACs and the datasheet peaks (Markdown)."""
    lines = [f"- {j.name}: GPU {j.gpu_clock_mhz} MHz, {j.int8_tops:g} dense INT8 TOPS, {j.fp16_tflops:g} dense FP16 TFLOPS "
             f"(datasheet: {j.source})" for j in JETSONS]
    lines += [
        "",
        "| backbone | size | seg width | GMACs | " + " | ".join(f"{j.name} INT8 / FP16 (ms)" for j in JETSONS) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(JETSONS),
    ]
    for (backbone, size, width), group in _groups(rows).items():
        width = _seg_label(*width)
        gmacs = sum(r.macs for r in group if r.part != WHOLE) / 1e9
        cells = []
        for j in JETSONS:
            int8 = 2 * gmacs / (j.int8_tops * 1e3 * ASSUMED_UTILISATION["int8"]) * 1e3
            fp16 = 2 * gmacs / (j.fp16_tflops * 1e3 * ASSUMED_UTILISATION["fp16"]) * 1e3
            cells.append(f"{int8:.1f} / {fp16:.1f}")
        lines.append(f"| {backbone} | {size} | {width} | {gmacs:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _groups(rows: Sequence[PartBudget]) -> Dict[Tuple[str, int, Tuple[int, str]], List[PartBudget]]:
    groups: Dict[Tuple[str, int, Tuple[int, str]], List[PartBudget]] = {}
    for r in rows:
        groups.setdefault((r.backbone, r.size, (r.seg_width, r.seg_head)), []).append(r)
    return groups


def _seg_label(width: int, head: str) -> str:
    """The "seg width" cell: the width, and the head where it is not the paper's ("64 light")."""
    return str(width) if head == SEG_HEAD else f"{width} {head}"


def plot(rows: Sequence[PartBudget], path: Path) -> None:
    """Stacked horizontal bars per configuration: GMACs per part, and latency per part when measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(rows)
    labels = [f"{b} @ {s}" + (f", seg {_seg_label(*w)}" if w != (SEG_WIDTH, SEG_HEAD) else "") for b, s, w in groups]
    measured = all(r.latency_ms is not None for r in rows)
    panels = [("GMACs", lambda r: r.macs / 1e9)] + ([("median latency, ONNX Runtime CPU (ms)", lambda r: r.latency_ms)] if measured else [])
    ncol = 3 * len(panels)
    legend_in = 0.3 * -(-len(PARTS) // ncol)  # inches below the axes: one line per legend row
    height = 1.4 + legend_in + 0.6 * len(labels)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), height), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, (title, value) in zip(axes[0], panels):
        left = np.zeros(len(labels))
        for i, part in enumerate(PARTS):
            widths = np.array([next(value(r) for r in g if r.part == part) for g in groups.values()], dtype=float)
            ax.barh(labels, widths, left=left, color=colors[i % len(colors)], label=part)
            left += widths
        ax.set_xlabel(title)
        ax.invert_yaxis()
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize="small")
    fig.suptitle("DeSTSeg compute budget per part")
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _csv_ints(text: str) -> List[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated (default: all)")
    p.add_argument("--sizes", type=_csv_ints, default=[256], help="comma-separated image sizes, multiples of 32 (default 256)")
    p.add_argument("--seg-widths", type=_csv_ints, default=[SEG_WIDTH],
                   help=f"comma-separated segmentation network widths (default {SEG_WIDTH}, the paper's), e.g. 256,128")
    p.add_argument("--seg-heads", default=SEG_HEAD, help=f"comma-separated segmentation heads from {', '.join(SEG_HEADS)} (default {SEG_HEAD})")
    p.add_argument("--runs", type=int, default=10, help="timed runs per part (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--no-latency", action="store_true", help="count parameters and MACs only (seconds instead of minutes)")
    p.add_argument("--out", type=Path, help="folder for compute_budget.md, .json and .png")
    args = p.parse_args(argv)
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    heads = [h.strip() for h in args.seg_heads.split(",") if h.strip()]
    try:
        check_options(backbones, args.sizes)
        if not heads or any(h not in SEG_HEADS for h in heads):
            raise BudgetError(f"--seg-heads {args.seg_heads!r}: choose from {', '.join(SEG_HEADS)} (comma-separated)")
        if args.runs < 1 or args.warmup < 0 or args.threads < 1 or min(args.seg_widths, default=0) < 1:
            raise BudgetError("--runs, --threads and --seg-widths must be at least 1 and --warmup at least 0")
    except BudgetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    rows: List[PartBudget] = []
    for backbone in backbones:
        for size in args.sizes:
            for width in args.seg_widths:
                for head in heads:
                    rows += budget(backbone, size, args.runs, args.warmup, args.threads, not args.no_latency, width, head)
    table = markdown_table(rows)
    print(table, end="")
    if args.out:
        how = "counts only" if args.no_latency else f"ONNX Runtime CPUExecutionProvider, {args.threads} threads, {args.warmup} warm-up + {args.runs} runs"
        # Other jobs on the machine inflate the medians; the load average says whether they did.
        load = f"1-min load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
        utilisation = ", ".join(f"{k.upper()} {v:.0%}" for k, v in ASSUMED_UTILISATION.items())
        estimate = (f"\n## Estimate for Jetson Orin (not measured)\n\nDense GPU peaks from the datasheets, "
                    f"assumed utilisation {utilisation}, batch 1, 1 MAC = 2 ops.\n\n{jetson_estimate(rows)}")
        write_text(args.out / "compute_budget.md", f"# DeSTSeg compute budget\n\nLatency: {how}; batch 1; {load}.\n\n{table}{estimate}")
        write_json(args.out / "compute_budget.json", {
            "latency_method": how,
            "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
            "rows": [asdict(r) for r in rows],
        })
        plot(rows, args.out / "compute_budget.png")
        print(f"wrote {args.out}/compute_budget.md, .json and .png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
