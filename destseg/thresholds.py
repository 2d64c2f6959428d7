"""Decision thresholds for the runtime's OK/NG verdict, chosen on an evaluation split.

Verdict rule everywhere (:mod:`destseg.verdict`): anomalous (NG) iff ``score >= threshold``;
the same for pixels against the pixel threshold. With defective examples the threshold
maximises F1; without any, the best we can do is to bound the false-alarm rate on good data,
so it is a high quantile of the good scores. The result says which, because the two mean
different things to whoever tunes a line.

An F1-optimal threshold is placed halfway between the lowest score it flags and the next
lower score: every threshold in that gap gives the same F1 on the evaluation split, and the
middle leaves the most room for the small score shifts of an INT8 engine.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from destseg.metrics import binarize, threshold_sweep

DEFAULT_QUANTILE = 0.995


class ThresholdError(ValueError):
    """Scores or labels from which no threshold can be chosen."""


def _check_finite(scores: np.ndarray, what: str) -> None:
    if scores.size == 0:
        raise ThresholdError(f"no {what} to choose a threshold from; evaluate on a split with images")
    if not np.isfinite(scores).all():
        raise ThresholdError(f"the {what} contain NaN or inf; the model output is broken, retrain or check the run")


def best_f1(labels: np.ndarray, scores: np.ndarray) -> Tuple[float, float]:
    """(threshold, F1) maximising F1 of ``score >= threshold``; the highest such threshold on ties."""
    labels, scores = binarize(np.asarray(labels)).ravel(), np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ThresholdError(f"{labels.size} labels but {scores.size} scores: they must match one to one")
    _check_finite(scores, "scores")
    positives = int(np.count_nonzero(labels))
    if positives == 0:
        raise ThresholdError("F1 needs at least one anomalous example; use quantile_threshold on good scores")
    levels, (hits, flagged) = threshold_sweep(scores, labels, np.ones(scores.size, dtype=np.uint8))
    f1 = 2.0 * hits / (flagged + positives)
    k = int(np.argmax(f1))
    threshold = float(levels[k]) if k + 1 == levels.size else (float(levels[k]) + float(levels[k + 1])) / 2.0
    return float(threshold), float(f1[k])


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The F1-optimal threshold of ``score >= threshold`` (see :func:`best_f1`)."""
    return best_f1(labels, scores)[0]


def quantile_threshold(good_scores: np.ndarray, q: float = DEFAULT_QUANTILE) -> float:
    """The ``q`` quantile of scores of good data: about 1 - q of good items will be flagged."""
    if not 0.0 < q <= 1.0:
        raise ThresholdError(f"quantile must be in (0, 1], got {q}")
    good_scores = np.asarray(good_scores).ravel()
    _check_finite(good_scores, "good scores")
    return float(np.quantile(good_scores, q))


def choose_thresholds(
    labels: np.ndarray, scores: np.ndarray, masks: np.ndarray, maps: np.ndarray, q: float = DEFAULT_QUANTILE
) -> Dict[str, Any]:
    """Image and pixel thresholds for config.json: F1-optimal when anomalies exist, else the good quantile.

    ``method`` names the image threshold's rule, ``pixel_method`` the pixel one's (they differ only
    when defective images have masks too small to survive resizing).
    """
    labels, scores = binarize(np.asarray(labels)).ravel(), np.asarray(scores).ravel()
    masks = binarize(masks)
    out: Dict[str, Any] = {"good_images": int(np.count_nonzero(~labels)), "defective_images": int(np.count_nonzero(labels))}
    if labels.any():
        out["image"], out["image_f1"] = best_f1(labels, scores)
        out["method"] = "f1"
    else:
        out["image"], out["method"] = quantile_threshold(scores, q), "good-quantile"
    if masks.any():
        out["pixel"], out["pixel_f1"] = best_f1(masks, maps)
        out["pixel_method"] = "f1"
    else:
        out["pixel"], out["pixel_method"] = quantile_threshold(maps, q), "good-quantile"
    if "good-quantile" in (out["method"], out["pixel_method"]):
        out["quantile"] = q
    return out
