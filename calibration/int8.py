"""Adding INT8 to a bundle: calibrate, quantise both forms, report, gate, record.

This is what ``destseg-export --int8`` calls on the FP32 bundle it is still building (so the
previous bundle stays in place until INT8 has passed too). The bundle is updated atomically:
a refused model or an error leaves it exactly as it was, and the report of a refused model
is written beside the bundle (or where the caller says) so the user can see why.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx

from destseg.atomic import atomic_dir, write_json, write_text
from destseg.bundle import Bundle, load_bundle, sha256_file, write_meta
from destseg.datasets import good_images, has_test_split, load_test_set, test_samples
from destseg.images import read_rgb
from destseg.preprocess import frame_to_input
from destseg.calibration import modelopt, trt_cache
from destseg.calibration.images import DEFAULT_COUNT, batches, check_scores, select_images
from destseg.calibration.analysis import Probe, analyse, kept_sqnr
from destseg.calibration.quantize import QuantOptions, prepare, quantize_both, qdq_summary, ranges_method, read_ranges
from destseg.calibration.report import (
    MAX_IMAGE_AUROC_DROP,
    MAX_PIXEL_AP_DROP,
    backend_rows,
    compare_outputs,
    detection_metrics,
    gate,
    run_onnx,
    run_row,
    to_markdown,
)

FORMS = ("int8_trt", "int8_cpu")
ROWS = backend_rows(FORMS)  # what the gate and the report cover: the forms, and the one OpenVINO runs as OpenVINO runs it
HOLDOUT = 50


class Int8GateError(ValueError):
    """INT8 lost more accuracy than the gate allows."""


@dataclass
class Int8Options:
    calib_dir: Optional[str] = None  # default: the run's training split
    calib_category: Optional[str] = None
    count: int = DEFAULT_COUNT
    method: str = "minmax"
    percentile: float = 99.99
    quantizer: str = "ort"
    force_calib: bool = False
    eval_data: Optional[str] = None
    eval_category: Optional[str] = None
    allow_degraded: bool = False
    search_budget_s: float = 300.0
    # Most nodes the search may keep out of INT8: the demo's detector needs 17 of 107 (0.19 of 1.46 GMACs)
    # to keep image AUROC within 0.5 point in the CPU form, the quality benchmark's runs 3 to 4.
    max_kept: int = 32
    analysis_images: int = 2  # calibration images the per-layer analysis runs on
    seed: int = 0
    ranges_file: Optional[str] = None  # reuse the ranges of an earlier calibration


def _calibration_source(meta: Dict, opts: Int8Options) -> Tuple[str, Optional[str]]:
    if opts.calib_dir:
        return opts.calib_dir, opts.calib_category
    run_config = meta["model"].get("config", {})
    if not run_config.get("data"):
        raise ValueError("no --calib-dir given and the bundle does not name its training data; pass --calib-dir DIR of normal images")
    return run_config["data"], run_config.get("category")


def _is_training_split(meta: Dict, source: str, category: Optional[str]) -> bool:
    """Whether the calibration images are the ones the run trained on: normal by the user's own word
    (and a barely trained model's threshold would call many of them defective)."""
    run_config = meta["model"].get("config", {})
    data = run_config.get("data")
    return bool(data) and Path(source).resolve() == Path(data).resolve() and category == run_config.get("category")


def _holdout(source: str, category: Optional[str], calib: List[Path], size: int, seed: int) -> Tuple[np.ndarray, bool]:
    """Normal images not used for calibration; test/good, or the calibration set itself, as fall-backs."""
    used = {p.resolve() for p in calib}
    rest = [p for p in good_images(source, category) if p.resolve() not in used]
    held_out = True
    if not rest and category and has_test_split(source, category):
        rest = [s.image for s in test_samples(source, category) if not s.is_anomalous]
    if not rest:
        rest, held_out = calib, False
    if len(rest) > HOLDOUT:
        rest = [rest[i] for i in sorted(np.random.default_rng(seed).permutation(len(rest))[:HOLDOUT])]
    return np.stack([frame_to_input(read_rgb(p), size) for p in rest]), held_out


def _margin(fp32: Dict[str, float], int8: Dict[str, float]) -> float:
    """How far inside the gate (positive) or outside it (negative) a model is."""
    drops = [MAX_IMAGE_AUROC_DROP - (fp32["image_auroc"] - int8["image_auroc"]),
             MAX_PIXEL_AP_DROP - (fp32["pixel_ap"] - int8["pixel_ap"])]
    return float("-inf") if any(np.isnan(d) for d in drops) else min(drops)


class _Builder:
    """Builds both INT8 forms for a given keep-float list from fixed ranges, and scores them."""

    def __init__(self, fp32: Path, work: Path, batches_iter, qopts: QuantOptions, opts: Int8Options,
                 input_name: str, calib_array, eval_set) -> None:
        self.fp32, self.work, self.qopts, self.opts = fp32, work, qopts, opts
        self.input_name, self.calib_array, self.eval_set = input_name, calib_array, eval_set
        ranges = None
        if opts.ranges_file:
            ranges = work / "calibration_ranges.json"
            shutil.copyfile(opts.ranges_file, ranges)
            qopts.method = ranges_method(ranges)  # the ranges say how they were made
        self.paths = quantize_both(fp32, work, batches_iter, qopts, input_name, ranges)
        self._replace_trt_form_if_modelopt(qopts.keep_float)
        self.analysis: Dict[str, Dict] = {}
        self.probe: Optional[Probe] = None

    def analyse(self, images: np.ndarray) -> None:
        """The per-layer error analysis of both forms as first built (every quantisable node in INT8);
        the TensorRT form's probe stays for the search (its ranking decides what is kept in float)."""
        prepared = self.work / "prepared.onnx"
        prepare(self.fp32, prepared)
        for form in FORMS:
            self.analysis[form], probe = analyse(prepared, self.paths[form], images)
            if form == "int8_trt":
                self.probe = probe

    def _replace_trt_form_if_modelopt(self, keep_float: List[str]) -> None:
        if self.opts.quantizer == "modelopt":
            modelopt.quantize_tensorrt_form(self.fp32, self.paths["int8_trt"], self.calib_array(),
                                            self.input_name, self.opts.method, keep_float)

    def rebuild(self, keep_float: List[str]) -> None:
        self.qopts.keep_float = list(keep_float)
        quantize_both(self.fp32, self.work, iter(()), self.qopts, self.input_name, self.paths["ranges"])
        self._replace_trt_form_if_modelopt(keep_float)

    def metrics(self, gated_only: bool = False) -> Dict[str, Dict[str, float]]:
        images, labels, masks = self.eval_set
        out = {}
        for row in ROWS:
            maps, scores = run_row(self.paths, row, images)
            out[row] = detection_metrics(labels, masks, maps, scores, gated_only)
        return out


def _ranked_search(builder: _Builder, fp32_metrics: Dict[str, float], opts: Int8Options) -> Tuple[List[str], Dict, Dict]:
    """Keep the k most harmful nodes (the analysis' ranking) in float, k the smallest the gate accepts.

    The bounded check builds both forms for k = 1, 2, 4, ... until the gate passes and bisects
    back, so it costs a handful of builds, not one per layer; for each k tried the probe also
    records the logits' SQNR. When no k passes within the budget the best margin seen is kept.
    """
    start = time.monotonic()
    ranking = builder.analysis["int8_trt"]["ranking"]
    max_k = min(opts.max_kept, len(ranking))
    margins: Dict[int, float] = {}
    curve: Dict[str, float] = {}

    def margin(k: int) -> float:
        if k not in margins:
            builder.rebuild([r["node"] for r in ranking[:k]])
            margins[k] = min(_margin(fp32_metrics, m) for m in builder.metrics(gated_only=True).values())
            curve[str(k)] = kept_sqnr(builder.probe, ranking, k)
        return margins[k]

    failed, passed = 0, None
    while passed is None and failed < max_k and time.monotonic() - start < opts.search_budget_s:
        k = min(2 * failed, max_k) if failed else 1
        if margin(k) >= 0:
            passed = k
        else:
            failed = k
    while passed is not None and passed - failed > 1 and time.monotonic() - start < opts.search_budget_s:
        mid = (failed + passed) // 2
        if margin(mid) >= 0:
            passed = mid
        else:
            failed = mid
    best = passed if passed is not None else max(margins, key=margins.get, default=0)
    kept = [r["node"] for r in ranking[:best]]
    builder.rebuild(kept)
    final = builder.metrics()
    return kept, final, {"trials": len(margins), "seconds": round(time.monotonic() - start, 1),
                         "k": best, "margins": {str(k): round(v, 2) for k, v in sorted(margins.items())},
                         "probe_sqnr_db_by_k": curve}


@dataclass
class _Images:
    """The images INT8 is made and judged with, chosen once per export."""

    source: str  # where the calibration images come from
    category: Optional[str]
    calib: List[Path]  # the calibration images
    holdout: np.ndarray  # normal images (uint8 N x S x S x 3) the report compares FP32 and INT8 on
    held_out: bool  # False when the holdout had to be the calibration set itself
    eval_set: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]  # --eval-data: images, labels, masks


def _select_images(bundle: Bundle, opts: Int8Options) -> _Images:
    size = bundle.image_size
    source, category = _calibration_source(bundle.meta, opts)
    calib = select_images(source, category, opts.count, opts.seed, opts.force_calib)
    threshold = bundle.thresholds.get("image")
    if threshold is not None and not _is_training_split(bundle.meta, source, category):
        _, scores = run_onnx(bundle.model_path("fp32"), np.concatenate(list(batches(calib, size, 1))))
        check_scores(scores, float(threshold), opts.force_calib)
    holdout, held_out = _holdout(source, category, calib, size, opts.seed)
    eval_set = load_test_set(opts.eval_data, opts.eval_category, size) if opts.eval_data else None
    return _Images(source, category, calib, holdout, held_out, eval_set)


def _quantize(bundle: Bundle, images: _Images, opts: Int8Options, work: Path) -> _Builder:
    """Calibrate (or reuse --calib-ranges) and build both INT8 forms in ``work``."""
    size = bundle.image_size
    batch = 1 if not bundle.dynamic_batch else 8  # a fixed-batch-1 graph takes one image per calibration call
    qopts = QuantOptions(method=opts.method, percentile=opts.percentile)
    builder = _Builder(bundle.model_path("fp32"), work, batches(images.calib, size, batch), qopts, opts, bundle.input_name,
                       lambda: np.concatenate(list(batches(images.calib, size, 1))), images.eval_set)
    builder.analyse(np.concatenate(list(batches(images.calib[: opts.analysis_images], size, 1))))
    return builder


def _calibration_record(builder: _Builder, images: _Images, opts: Int8Options) -> Dict:
    record = {
        "method": builder.qopts.method,
        "percentile": opts.percentile if opts.method == "percentile" else None,
        "quantizer": opts.quantizer,
        "count": len(images.calib),
        "seed": opts.seed,
        "source": str(images.source),
        "category": images.category,
    }
    if opts.ranges_file:
        record["ranges_reused_from"] = str(opts.ranges_file)
    return record


def _gate_on_metrics(builder: _Builder, fp32_path: Path, images: _Images, opts: Int8Options) -> Tuple[Dict, Optional[Dict]]:
    """(gate, metrics section): FP32 vs INT8 detection metrics on --eval-data, with the sensitivity
    search when a form fails; without --eval-data the gate is not applied and there are no metrics."""
    if images.eval_set is None:
        return {"status": "not-evaluated", "reasons": ["no --eval-data: accuracy gate not applied"], "kept_float": []}, None
    eval_images, labels, masks = images.eval_set
    fp32_maps, fp32_scores = run_onnx(fp32_path, eval_images)
    fp32_metrics = detection_metrics(labels, masks, fp32_maps, fp32_scores)
    metrics = builder.metrics()
    results = {row: gate(fp32_metrics, metrics[row]) for row in ROWS}
    kept: List[str] = []
    search = None
    if not all(r.passed for r in results.values()):
        kept, metrics, search = _ranked_search(builder, fp32_metrics, opts)
        results = {row: gate(fp32_metrics, metrics[row]) for row in ROWS}
    passed = all(r.passed for r in results.values())
    reasons = [f"{form}: {reason}" for form, r in results.items() for reason in r.reasons]
    status = "passed" if passed else ("degraded-allowed" if opts.allow_degraded else "failed")
    section = {"fp32": fp32_metrics, **metrics,
               **{f"delta_{r}": {k: metrics[r][k] - fp32_metrics[k] for k in fp32_metrics} for r in ROWS}}
    return {"status": status, "reasons": reasons, "kept_float": kept, "search": search}, section


def _gate_on_collapse(gate_info: Dict, normal_images: Dict, fp32_scores: np.ndarray, opts: Int8Options) -> None:
    """Fail the gate (in place) when an INT8 form's scores are constant on normal images while FP32's vary."""
    collapsed = [f"{form}: INT8 scores are constant on normal images while FP32's vary: the calibration ranges are broken"
                 for form in ROWS if np.isnan(normal_images[form]["score_pearson"]) and np.std(fp32_scores) > 0]
    if collapsed:
        gate_info["reasons"] = [r for r in gate_info["reasons"] if not r.startswith("no --eval-data")] + collapsed
        gate_info["status"] = "degraded-allowed" if opts.allow_degraded else "failed"


def _report(builder: _Builder, bundle: Bundle, images: _Images, opts: Int8Options) -> Dict:
    """The quantisation report of the INT8 forms ``builder`` holds, its gate decided."""
    fp32_path = bundle.model_path("fp32")
    fp32_out = run_onnx(fp32_path, images.holdout)
    report: Dict = {"calibration": _calibration_record(builder, images, opts), "normal_images": {},
                    "held_out": images.held_out, "metrics": None}
    gate_info, report["metrics"] = _gate_on_metrics(builder, fp32_path, images, opts)
    for row in ROWS:  # after the search: these are the forms that ship
        report["normal_images"][row] = compare_outputs(fp32_out, run_row(builder.paths, row, images.holdout))
    _gate_on_collapse(gate_info, report["normal_images"], fp32_out[1], opts)
    report["gate"] = gate_info
    report["qdq"] = {form: qdq_summary(onnx.load(str(builder.paths[form]))) for form in FORMS}
    report["analysis"] = {form: {**a, "ranking": [{k: v for k, v in r.items() if k != "sites"} for r in a["ranking"]]}
                          for form, a in builder.analysis.items()}
    gmacs = {r["node"]: r["gmacs"] for r in builder.analysis["int8_trt"]["ranking"]}
    gate_info["kept_float_gmacs"] = round(sum(gmacs.get(n, 0.0) for n in gate_info["kept_float"]), 4)
    return report


def _refuse(failed: Path, report: Dict) -> None:
    """Write the refused model's report to ``failed`` (beside the bundle, which stays as it was) and raise."""
    gate_info = report["gate"]
    failed.mkdir(parents=True, exist_ok=True)
    write_json(failed / "quantization_report.json", report)
    write_text(failed / "quantization_report.md", to_markdown(report))
    raise Int8GateError(
        "INT8 refused: " + "; ".join(gate_info["reasons"])
        + f" (kept {len(gate_info['kept_float'])} layers in float); report in {failed}; "
        "pass --allow-degraded to ship it anyway, or calibrate on more normal images"
    )


def _commit(bundle_dir: str | Path, bundle: Bundle, builder: _Builder, report: Dict, calib: List[Path]) -> None:
    """Add both forms, the ranges, TensorRT 8.5's cache and the report to the bundle, atomically."""
    kept_float = report["gate"]["kept_float"]
    with atomic_dir(bundle_dir, keep=True) as tmp:
        for form, name in (("int8_trt", "model.int8.onnx"), ("int8_cpu", "model.int8.cpu.onnx")):
            shutil.copyfile(builder.paths[form], tmp / name)
        shutil.copyfile(builder.paths["ranges"], tmp / "calibration_ranges.json")
        write_text(tmp / "calibration.cache", trt_cache.render(read_ranges(builder.paths["ranges"])))
        write_json(tmp / "quantization_report.json", report)
        write_text(tmp / "quantization_report.md", to_markdown(report))
        meta = dict(bundle.meta)
        meta["models"] = dict(meta["models"])
        meta["models"]["int8_trt"] = {"file": "model.int8.onnx", "precision": "int8", "target": "tensorrt",
                                      "form": "symmetric int8 Q/DQ, per-channel weights, float biases and tail",
                                      "kept_float": kept_float, "kept_precision": "fp16"}
        meta["models"]["int8_cpu"] = {"file": "model.int8.cpu.onnx", "precision": "int8", "target": "cpu",
                                      "form": "uint8 activations, 7-bit per-channel int8 weights (no saturation without VNNI), int32 biases (ONNX Runtime)",
                                      "kept_float": kept_float, "kept_precision": "fp32"}
        meta["calibration"] = dict(
            report["calibration"],
            images=[{"name": p.name, "sha256": sha256_file(p)} for p in calib],
            ranges_file="calibration_ranges.json",
            tensorrt_cache="calibration.cache",
            gate=report["gate"]["status"],
        )
        write_meta(tmp, meta, extra_files=["calibration_ranges.json", "calibration.cache",
                                            "quantization_report.json", "quantization_report.md"])


def add_int8(bundle_dir: str | Path, opts: Int8Options, refused_dir: Optional[Path] = None) -> Dict:
    """Calibrate and add both INT8 forms to a bundle; return the quantisation report.

    The steps: choose the images, quantise, report (the gate on metrics and on collapsed
    outputs), then refuse (the bundle untouched, the report in ``refused_dir``, by default
    BUNDLE.int8-refused beside it) or commit.
    """
    bundle = load_bundle(bundle_dir)
    images = _select_images(bundle, opts)
    with tempfile.TemporaryDirectory(prefix="destseg-int8-") as work_dir:
        builder = _quantize(bundle, images, opts, Path(work_dir))
        report = _report(builder, bundle, images, opts)
        if report["gate"]["status"] == "failed":
            _refuse(refused_dir or Path(bundle_dir).with_name(Path(bundle_dir).name + ".int8-refused"), report)
        _commit(bundle_dir, bundle, builder, report, images.calib)
    return report
