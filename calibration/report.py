"""How much INT8 changed the detector: the quantisation report and its accuracy gate.

The report compares FP32 and INT8 on held-out normal images (anomaly-map differences,
score correlations) and, given an evaluation set, the paper's metrics of both. The gate
refuses an INT8 model that loses more than 0.5 point of image AUROC or 1 point of pixel AP.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np

from destseg.inference import VARIANTS_FOR, onnx_session, openvino_model

MAX_IMAGE_AUROC_DROP = 0.5  # points (percent)
MAX_PIXEL_AP_DROP = 1.0


def backend_rows(forms: Tuple[str, ...]) -> Tuple[str, ...]:
    """The rows the report and the gate cover: each INT8 form as ONNX Runtime runs it, plus
    "FORM@openvino" for the form OpenVINO runs (when it is installed): backends round differently."""
    rows = list(forms)
    if importlib.util.find_spec("openvino") is not None:
        rows.append(f"{VARIANTS_FOR['openvino']['int8'][0]}@openvino")
    return tuple(rows)


def _runner(path: str | os.PathLike, backend: str) -> Tuple[Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]], object]:
    """(run one batch, its fixed batch size or None) for the ONNX file ``path`` under ``backend``."""
    if backend == "openvino":
        compiled = openvino_model(path, "int8")
        first = compiled.input(0).get_partial_shape()[0]
        return (lambda x: tuple(compiled(x).values())), (first.get_length() if first.is_static else None)
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    return (lambda x: tuple(session.run(None, {name: x}))), (fixed if isinstance(fixed, int) else None)


def run_onnx(path: str | os.PathLike, images: np.ndarray, batch_size: int = 8,
             backend: str = "onnxruntime") -> Tuple[np.ndarray, np.ndarray]:
    """(maps N x S x S, scores N) of an ONNX model with uint8 N x S x S x 3 input, on the CPU,
    run by ONNX Runtime or by OpenVINO (``backend``, "openvino": a Q/DQ graph runs as INT8 there).

    ``path`` is any ONNX file: the candidates of the sensitivity search live in a temporary folder.
    """
    run, fixed = _runner(path, backend)
    step = fixed or batch_size
    maps, scores = [], []
    for start in range(0, len(images), step):
        amap, score = run(images[start : start + step])
        maps.append(np.asarray(amap)[:, 0])
        scores.append(np.asarray(score))
    return np.concatenate(maps), np.concatenate(scores)


def run_row(paths: Dict[str, os.PathLike], row: str, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Outputs of one report row ("int8_trt", or "int8_cpu@openvino"): the form's file under the row's backend."""
    form, _, backend = row.partition("@")
    return run_onnx(paths[form], images, backend=backend or "onnxruntime")


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x))
    return ranks


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def compare_outputs(ref: Tuple[np.ndarray, np.ndarray], quant: Tuple[np.ndarray, np.ndarray]) -> Dict[str, float]:
    """Map mean and max absolute difference, score Pearson and Spearman correlation."""
    diff = np.abs(ref[0].astype(np.float64) - quant[0])
    return {
        "images": int(len(ref[1])),
        "map_mean_abs_diff": float(diff.mean()),
        "map_max_abs_diff": float(diff.max()),
        "score_mean_abs_diff": float(np.abs(ref[1] - quant[1]).mean()),
        "score_pearson": _correlation(ref[1], quant[1]),
        "score_spearman": _correlation(_ranks(ref[1]), _ranks(quant[1])),
    }


GATED = ("image_auroc", "pixel_ap")


def detection_metrics(labels: np.ndarray, masks: np.ndarray, maps: np.ndarray, scores: np.ndarray,
                      gated_only: bool = False) -> Dict[str, float]:
    """The paper's metrics in percent, from destseg.metrics; ``gated_only``: just the two the gate reads
    (the sensitivity search evaluates many candidates, and AUPRO and IAP are the slow ones)."""
    from destseg import metrics

    values = {"image_auroc": metrics.image_auroc(labels, scores), "pixel_ap": metrics.pixel_ap(masks, maps)}
    if not gated_only:
        iap, iap90 = metrics.iap(masks, maps)
        values.update(pixel_auroc=metrics.pixel_auroc(masks, maps), aupro=metrics.aupro(masks, maps),
                      iap=iap, iap90=iap90)
    return {k: 100.0 * float(values[k]) for k in
            [k for k in ("image_auroc", "pixel_auroc", "pixel_ap", "aupro", "iap", "iap90") if k in values]}


@dataclass
class GateResult:
    passed: bool
    reasons: List[str]


def gate(fp32: Dict[str, float], int8: Dict[str, float]) -> GateResult:
    """Fail on more than 0.5 point of image AUROC or 1 of pixel AP lost, or a metric that became NaN."""
    reasons = []
    for key, limit in (("image_auroc", MAX_IMAGE_AUROC_DROP), ("pixel_ap", MAX_PIXEL_AP_DROP)):
        ref, new = fp32[key], int8[key]
        if np.isnan(ref):
            continue
        if np.isnan(new):
            reasons.append(f"{key} of the INT8 model is undefined (FP32: {ref:.2f}): its outputs collapsed to a constant")
        elif ref - new > limit:
            reasons.append(f"{key} dropped from {ref:.2f} to {new:.2f} (limit {limit:g} point{'s' if limit > 1 else ''})")
    return GateResult(not reasons, reasons)


def to_markdown(report: Dict) -> str:
    """The human-readable twin of quantization_report.json."""
    lines = ["# INT8 quantisation report", ""]
    cal = report["calibration"]
    lines += [f"Calibration: {cal['method']} on {cal['count']} normal images; quantiser {cal['quantizer']}.", ""]
    lines += ["## FP32 vs INT8 on held-out normal images", "",
              "| model | images | map mean abs diff | map max abs diff | score Pearson | score Spearman |",
              "|---|---|---|---|---|---|"]
    for form, row in report["normal_images"].items():
        lines.append(f"| {form} | {row['images']} | {row['map_mean_abs_diff']:.5f} | {row['map_max_abs_diff']:.4f} "
                     f"| {row['score_pearson']:.4f} | {row['score_spearman']:.4f} |")
    if report.get("metrics"):
        keys = list(report["metrics"]["fp32"])
        lines += ["", "## Detection metrics (percent)", "", "| model | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for name, row in report["metrics"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[k]:+.2f}" if name.startswith("delta") else f"{row[k]:.2f}" for k in keys) + " |")
    g = report["gate"]
    lines += ["", f"## Gate: {g['status']}", ""]
    lines += [f"- {r}" for r in g.get("reasons", [])]
    if g.get("search"):
        s = g["search"]
        kept = ", ".join(f"`{n}`" for n in g["kept_float"]) or "none"
        lines += [f"- ranked search: kept the {s['k']} most harmful nodes out of INT8 ({g.get('kept_float_gmacs', 0):.3f} GMACs "
                  f"per image), {s['trials']} checks in {s['seconds']} s (gate margin by k: {s['margins']}): {kept}"]
    if report.get("analysis"):
        from destseg.calibration.analysis import to_markdown as analysis_markdown

        lines += [""] + analysis_markdown(report["analysis"])
    return "\n".join(lines) + "\n"
