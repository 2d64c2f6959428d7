"""`destseg-eval`: the paper's metrics for trained runs, plus heatmaps, plots and OK/NG thresholds.

Protocol (spec: Evaluation), shared with calibration through destseg.datasets.load_test_set:
images and ground-truth masks at the run's image size; masks shrink with OpenCV's INTER_AREA
(the antialiased-bilinear equivalent when shrinking; bilinear when enlarging) and are
binarised at 0.5; an image is defective iff its resized mask has a positive pixel. Metrics
are stored as fractions in metrics.json and shown in percent, like the paper's Table 1.

Evaluating also chooses the runtime's decision thresholds and writes them into the run's
config.json, so export and runtime pick them up without another step.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from destseg import metrics
from destseg.atomic import atomic_dir, write_json, write_text
from destseg.datasets import TestSample, load_test_set, test_samples
from destseg.images import write_image
from destseg.metrics import MetricWarning
from destseg.overlay import heatmap_panel
from destseg.preprocess import normalize
from destseg.thresholds import ThresholdError, choose_thresholds
from destseg.train.checkpoint import load_run, read_config, update_config
from destseg.train.plots import roc_plot, score_histogram
from destseg.train.trainer import resolve_device

BATCH_SIZE = 16
FPR_LIMIT = 0.3
METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "aupro", "iap", "iap90")
HEADERS = ("image AUROC", "pixel AUROC", "pixel AP", "AUPRO", "IAP", "IAP90")
MAPS = {"destseg": "DeSTSeg map", "dest": "DeST map"}


class EvalUsageError(ValueError):
    """Runs and categories that cannot be paired, or other misuse of destseg-eval."""


def predict(
    model: torch.nn.Module, images: np.ndarray, mean: Sequence[float], std: Sequence[float], device: str | torch.device
) -> Dict[str, np.ndarray]:
    """Maps and scores of N x S x S x 3 uint8 images: "maps", "scores", "dest_maps", "dest_scores".

    Normalised with the run's own mean/std (EfficientNet-Lite teachers use 0.5/0.5, not ImageNet's).
    The DeST image score is the same top-k mean as DeSTSeg's, so both maps get an image AUROC.
    """
    out: Dict[str, List[np.ndarray]] = {"maps": [], "scores": [], "dest_maps": [], "dest_scores": []}
    with torch.inference_mode():
        for start in range(0, len(images), BATCH_SIZE):
            batch = images[start:start + BATCH_SIZE]
            x = torch.from_numpy(normalize(batch, mean, std)).to(device)
            pred = model.predict(x)
            dest = pred["dest_map"].float()
            out["maps"].append(pred["anomaly_map"].float()[:, 0].cpu().numpy())
            out["scores"].append(pred["score"].float().cpu().numpy())
            out["dest_maps"].append(dest[:, 0].cpu().numpy())
            out["dest_scores"].append(pred["dest_score"].float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def compute_metrics(labels: np.ndarray, masks: np.ndarray, maps: np.ndarray, scores: np.ndarray) -> Dict[str, float]:
    """The six numbers of a table row, as fractions (NaN where undefined, with a MetricWarning)."""
    iap, iap90 = metrics.iap(masks, maps)
    return {
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": metrics.pixel_auroc(masks, maps),
        "pixel_ap": metrics.pixel_ap(masks, maps),
        "aupro": metrics.aupro(masks, maps, fpr_limit=FPR_LIMIT),
        "iap": iap,
        "iap90": iap90,
    }


def _json_number(value: float) -> Optional[float]:
    """JSON has no NaN: undefined metrics are null (metrics.json's "warnings" say why)."""
    return None if value is None or math.isnan(value) else float(value)


def _heatmap_picks(labels: np.ndarray, scores: np.ndarray, count: int) -> List[int]:
    """The highest-scoring defective images, and about a third good ones (the highest: near false alarms)."""
    defective = [int(i) for i in np.argsort(-scores) if labels[i]]
    good = [int(i) for i in np.argsort(-scores) if not labels[i]]
    n_good = min(len(good), max(count // 3, count - len(defective)))
    return defective[: count - n_good] + good[:n_good]


def _write_heatmaps(
    folder: Path, picks: List[int], samples: Sequence[TestSample], images: np.ndarray, masks: np.ndarray,
    maps: np.ndarray, scores: np.ndarray, thresholds: Dict[str, Any],
) -> None:
    """Replace ``folder`` with one panel per pick, named rank_defect_stem.png (atomic: no stale panels)."""
    with atomic_dir(folder) as tmp:
        for rank, i in enumerate(picks):
            panel = heatmap_panel(images[i], masks[i], maps[i], float(scores[i]),
                                  thresholds.get("image"), thresholds.get("pixel"))
            write_image(tmp / f"{rank:02d}_{samples[i].defect}_{samples[i].image.stem}.png", panel)


def evaluate_run(
    run_dir: str | Path,
    data_root: str | Path,
    category: str,
    out_dir: Optional[str | Path] = None,
    save_heatmaps: int = 0,
    device: str = "cpu",
    allow_unfinished: bool = False,
) -> Dict[str, Any]:
    """Evaluate one run on one category's test split; write metrics.json, plots, heatmaps, thresholds.

    Returns what metrics.json holds. Undefined metrics (say, a test split without defects) are
    NaN in the returned dict, null in the file, and explained under "warnings".
    """
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "eval"
    size = int(read_config(run_dir)["image_size"])
    images, labels, masks = load_test_set(data_root, category, size)  # data errors before the model loads
    samples = test_samples(data_root, category)  # the same files in the same order
    model, config = load_run(run_dir, device=str(resolve_device(device)), allow_unfinished=allow_unfinished)
    pred = predict(model, images, config["mean"], config["std"], next(model.parameters()).device)
    labels = labels.astype(bool)

    notes: List[str] = []
    results: Dict[str, Dict[str, float]] = {}
    for key, name in MAPS.items():
        prefix = "" if key == "destseg" else "dest_"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MetricWarning)
            results[key] = compute_metrics(labels, masks, pred[f"{prefix}maps"], pred[f"{prefix}scores"])
        notes += [f"{name}: {w.message}" for w in caught if issubclass(w.category, MetricWarning)]
    try:
        thresholds = choose_thresholds(labels, pred["scores"], masks, pred["maps"])
        update_config(run_dir, thresholds=thresholds)
    except ThresholdError as exc:
        thresholds = {}
        notes.append(f"no thresholds written to config.json: {exc}")

    curves = {name: (labels, pred[key]) for name, key in (("DeSTSeg", "scores"), ("DeST", "dest_scores"))
              if np.isfinite(pred[key]).all()}
    drawable = bool(labels.any() and not labels.all() and curves)
    if not drawable:
        notes.append("roc.png not drawn: the ROC needs good and defective test images and finite scores")
    report: Dict[str, Any] = {
        "run": str(run_dir),
        "category": category,
        "data": str(data_root),
        "backbone": config.get("backbone"),
        "image_size": size,
        "images": int(labels.size),
        "defective_images": int(labels.sum()),
        "good_images": int((~labels).sum()),
        "protocol": f"masks resized to {size}x{size} with INTER_AREA (antialiased bilinear) and binarised at 0.5; "
                    f"image defective iff its mask has a positive pixel; AUPRO up to FPR {FPR_LIMIT}",
        "units": "fractions in [0, 1]; tables show percent",
        **{key: {m: _json_number(v) for m, v in results[key].items()} for key in MAPS},
        "thresholds": thresholds,
        "warnings": notes,
        "per_image": [
            {"image": str(smp.image), "defect": smp.defect, "defective": bool(lab),
             "score": _json_number(score), "dest_score": _json_number(dest)}
            for smp, lab, score, dest in zip(samples, labels, pred["scores"].tolist(), pred["dest_scores"].tolist())
        ],
    }
    title = f"{category} ({config.get('backbone')}, {size}px)"
    score_histogram(out / "score_hist.png", labels, pred["scores"], thresholds.get("image"), title=title)
    if drawable:
        roc_plot(out / "roc.png", curves, title)
    else:
        (out / "roc.png").unlink(missing_ok=True)  # never leave a previous evaluation's curve behind
    if save_heatmaps > 0:
        picks = _heatmap_picks(labels, pred["scores"], save_heatmaps)
        _write_heatmaps(out / "heatmaps", picks, samples, images, masks, pred["maps"], pred["scores"], thresholds)
    write_json(out / "metrics.json", report)
    for note in notes:
        warnings.warn(note, MetricWarning, stacklevel=2)
    for key in MAPS:
        report[key] = results[key]
    return report


def _percent(value: Optional[float]) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def format_table(rows: Sequence[Tuple[str, Dict[str, float]]], title: str = "") -> str:
    """A Markdown table in percent, one row per category, plus a mean row when there are several.

    The mean is over all rows: one undefined value makes the mean undefined ("-"), as averaging
    fewer categories silently would not be comparable with the paper's means.
    """
    lines = [f"{title}\n" if title else "", "| category | " + " | ".join(HEADERS) + " |",
             "|---|" + "---:|" * len(HEADERS)]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(_percent(row.get(m)) for m in METRICS) + " |")
    if len(rows) > 1:
        means = {m: float(np.mean([float("nan") if r.get(m) is None else r[m] for _, r in rows])) for m in METRICS}
        lines.append("| **mean** | " + " | ".join(_percent(means[m]) for m in METRICS) + " |")
    return "\n".join(line for line in lines if line)


def pair_runs(runs: Sequence[str], categories: Optional[Sequence[str]]) -> List[Tuple[str, str]]:
    """(run, category) pairs: one category for all runs, one per run, or each run's own."""
    if categories and len(categories) > 1 and len(categories) != len(runs):
        raise EvalUsageError(
            f"{len(runs)} run(s) but {len(categories)} categories: a run is one category's model; "
            "give one --category for all runs or one per run, in the same order")
    pairs = []
    for i, run in enumerate(runs):
        if categories:
            pairs.append((run, categories[i if len(categories) > 1 else 0]))
            continue
        own = read_config(run).get("category")
        if not own:
            raise EvalUsageError(f"{run} was trained on a plain folder (no category); pass --category NAME")
        pairs.append((run, own))
    return pairs


def _describe(thresholds: Dict[str, Any]) -> str:
    if not thresholds:
        return "no thresholds (see metrics.json warnings)"
    return (f"thresholds written to config.json: image {thresholds['image']:.4f} ({thresholds['method']}), "
            f"pixel {thresholds['pixel']:.4f} ({thresholds['pixel_method']})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="destseg-eval",
        description="Evaluate DeSTSeg runs on MVTec-AD test splits: the paper's metrics, heatmaps, ROC, "
                    "score histogram, and OK/NG thresholds written into each RUN/config.json.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="training run folder(s) written by destseg-train")
    p.add_argument("--data", required=True, help="MVTec-AD root (ROOT/CATEGORY/test, ROOT/CATEGORY/ground_truth)")
    p.add_argument("--category", nargs="+", metavar="NAME",
                   help="one category for all runs, or one per run (default: each run's own category)")
    p.add_argument("--out", help="output folder (default RUN/eval; with several runs OUT/<category>)")
    p.add_argument("--save-heatmaps", type=int, default=0, metavar="N",
                   help="write N input | ground truth | overlay panels per run")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--allow-unfinished", action="store_true", help="evaluate a run whose training has not finished")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from destseg.datasets import DatasetError

    try:
        if args.save_heatmaps < 0:
            raise EvalUsageError("--save-heatmaps must be 0 or more")
        pairs = pair_runs(args.runs, args.category)
        names = [c for _, c in pairs]
        rows: Dict[str, List[Tuple[str, Dict[str, float]]]] = {key: [] for key in MAPS}
        for i, (run, category) in enumerate(pairs):
            name = category if names.count(category) == 1 else f"{category}-{i + 1}"
            out = None
            if args.out:
                out = Path(args.out) / name if len(pairs) > 1 else Path(args.out)
            report = evaluate_run(run, args.data, category, out, args.save_heatmaps, args.device, args.allow_unfinished)
            for key in MAPS:
                rows[key].append((name, report[key]))
            print(f"{run}: {category}, {report['images']} test images, {_describe(report['thresholds'])}", file=sys.stderr)
    except (DatasetError, EvalUsageError, ValueError) as exc:
        print(f"destseg-eval: {exc}", file=sys.stderr)
        return 2
    tables = "\n\n".join(format_table(rows[key], f"{name} (percent)") for key, name in MAPS.items())
    print(tables)
    if args.out and len(pairs) > 1:
        write_text(Path(args.out) / "table.md", tables + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
