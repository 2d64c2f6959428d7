"""The paper's evaluation metrics (spec: Evaluation), numpy + scikit-learn + OpenCV, no torch.

Arrays: ``masks`` and ``maps`` are N x H x W (ground truth, any dtype: bool, 0/1, 0/255 or
probabilities, binarised at 0.5), ``labels`` and ``scores`` have length N. Every metric
returns a fraction in [0, 1]; tables multiply by 100.

A metric that is undefined on its input (no anomalous image or pixel, no normal one,
constant scores, NaN/inf scores) returns NaN and emits one :class:`MetricWarning` saying
why: an evaluation of a category with a broken split must still report its other numbers,
and a silently wrong number (sklearn's 0.5 for constant scores) is worse than none.

Memory: everything is O(pixels). The curve-based metrics (AUPRO, the F1 threshold sweep)
sort the pixels once and accumulate along the sorted order (:func:`threshold_sweep`)
instead of building a threshold x pixel matrix.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import cv2
import numpy as np
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve

NAN = float("nan")


class MetricWarning(UserWarning):
    """A metric is undefined on this input and was returned as NaN."""


class MetricInputError(ValueError):
    """Arrays that do not fit together (shapes, dimensions): a caller bug, not a degenerate split."""


def _undefined(metric: str, why: str) -> float:
    warnings.warn(f"{metric} is undefined: {why}; returning NaN", MetricWarning, stacklevel=3)
    return NAN


def _as_stack(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise MetricInputError(f"{name} must be N x H x W (or one H x W), got shape {arr.shape}")
    return arr


def binarize(masks: np.ndarray) -> np.ndarray:
    """Ground truth as bool: bool stays, anything else is positive above 0.5 (0/1, 0/255, probabilities)."""
    masks = np.asarray(masks)
    return masks if masks.dtype == bool else masks > 0.5


def _pixel_inputs(masks: np.ndarray, maps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    masks, maps = _as_stack(masks, "masks"), _as_stack(maps, "maps")
    if masks.shape != maps.shape:
        raise MetricInputError(f"masks {masks.shape} and maps {maps.shape} must have the same shape")
    return binarize(masks), maps


def _image_inputs(labels: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels).ravel(), np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise MetricInputError(f"{labels.size} labels but {scores.size} scores: one of each per image")
    return labels.astype(bool), scores


def _problem(truth: np.ndarray, scores: np.ndarray, unit: str) -> Optional[str]:
    """Why a ranking metric is undefined for this ground truth and these scores, or None."""
    positives = int(np.count_nonzero(truth))
    if positives == 0:
        return f"no anomalous {unit} in the ground truth"
    if positives == truth.size:
        return f"no normal {unit} in the ground truth"
    if not np.isfinite(scores).all():
        return f"the {unit} scores contain NaN or inf"
    if scores.min() == scores.max():
        return f"all {unit} scores are equal ({scores.flat[0]:.6g}), so they rank nothing"
    return None


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image-level ROC AUC: does the score rank defective images above good ones?"""
    labels, scores = _image_inputs(labels, scores)
    why = _problem(labels, scores, "image")
    return _undefined("image AUROC", why) if why else float(roc_auc_score(labels, scores))


def _presorted(truth: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """All pixels in ascending score order, with their labels, for sklearn's curve functions.

    Each class is sorted on its own (numpy's vectorised sort) and the two runs are merged by a
    stable argsort, which is a linear merge; sklearn's own stable sort then meets sorted input.
    On 10^7 pixels this is several times faster than handing sklearn the raw maps.
    """
    truth, scores = truth.ravel(), scores.ravel()
    normal, anomalous = np.sort(scores[~truth]), np.sort(scores[truth])
    merged = np.concatenate([normal, anomalous])
    order = np.argsort(merged, kind="stable")
    return order >= normal.size, merged[order]


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level ROC AUC over all pixels of all images (sklearn's ROC curve and trapezoid AUC)."""
    masks, maps = _pixel_inputs(masks, maps)
    why = _problem(masks, maps, "pixel")
    if why:
        return _undefined("pixel AUROC", why)
    fpr, tpr, _ = roc_curve(*_presorted(masks, maps))
    return float(auc(fpr, tpr))


def pixel_ap(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level average precision (sklearn's step-wise AP, as the paper's pixel AP)."""
    masks, maps = _pixel_inputs(masks, maps)
    why = _problem(masks, maps, "pixel")
    return _undefined("pixel AP", why) if why else float(average_precision_score(*_presorted(masks, maps)))


def regions(masks: np.ndarray) -> Tuple[np.ndarray, int]:
    """Global region ids (0 = background, 1..R) of the 8-connected ground-truth components, per image."""
    masks = binarize(_as_stack(masks, "masks"))
    ids = np.zeros(masks.shape, dtype=np.int32)
    count = 0
    for i, mask in enumerate(masks):
        n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        if n > 1:
            ids[i] = np.where(lab > 0, lab + count, 0)
            count += n - 1
    return ids, count


def threshold_sweep(scores: np.ndarray, *weights: np.ndarray) -> Tuple[np.ndarray, List[np.ndarray]]:
    """Every distinct threshold t (descending) and, per weight array, its sum over pixels with score >= t.

    One sort and one cumulative sum per weight: the O(pixels) way to get a whole curve.
    Tied scores form one step, as a threshold cannot separate them.
    """
    scores = np.asarray(scores).ravel()
    order = np.argsort(scores)[::-1]  # ties need no order: only tie ends are read
    ordered = scores[order]
    last_of_tie = np.flatnonzero(np.diff(ordered)) if ordered.size else np.zeros(0, np.int64)
    ends = np.append(last_of_tie, ordered.size - 1) if ordered.size else last_of_tie
    sums = [np.cumsum(np.asarray(w).ravel()[order], dtype=np.float64)[ends] for w in weights]
    return ordered[ends], sums


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under y(x) from x=0 to ``limit``; x ascending, starting at 0."""
    inside = np.searchsorted(x, limit, side="right")
    xs, ys = x[:inside], y[:inside]
    if inside < x.size and xs[-1] < limit:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs = np.append(xs, limit)
        ys = np.append(ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by it (MVTec AD's AU-PRO).

    At each threshold, FPR is over all normal pixels and PRO is the mean over regions of the
    fraction of the region above the threshold. Each pixel's contribution to both is a fixed
    weight (1/#normal, or 1/(R*|region|)), so one :func:`threshold_sweep` gives the exact curve
    at every distinct threshold; it is integrated with the trapezoid rule, linearly
    interpolated at the limit (as MVTec's reference code). Not the authors' 200-threshold
    resampling, which differs by a fraction of a point.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise MetricInputError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps = _pixel_inputs(masks, maps)
    why = _problem(masks, maps, "pixel")
    if why:
        return _undefined("AUPRO", why)
    ids, count = regions(masks)
    sizes = np.bincount(ids.ravel(), minlength=count + 1).astype(np.float64)
    per_pixel = np.zeros(count + 1)
    per_pixel[1:] = 1.0 / (count * sizes[1:])
    normal = ~masks
    _, (fp, pro) = threshold_sweep(maps, normal, per_pixel[ids])
    fpr = np.concatenate([[0.0], fp / np.count_nonzero(normal)])
    pro = np.concatenate([[0.0], pro])
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit


def instance_scores(masks: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Each ground-truth instance's score: its pixels sorted descending, element floor(0.5 * n)."""
    masks, maps = _pixel_inputs(masks, maps)
    ids, count = regions(masks)
    flat_ids = ids.ravel()
    inside = np.flatnonzero(flat_ids)
    lab, val = flat_ids[inside], maps.ravel()[inside]
    order = np.lexsort((val, lab))  # by instance, values ascending within it
    lab, val = lab[order], val[order]
    starts = np.searchsorted(lab, np.arange(1, count + 1), side="left")
    sizes = np.bincount(lab, minlength=count + 1)[1:]
    # descending element floor(n/2) is ascending element n-1-floor(n/2)
    return val[starts + sizes - 1 - sizes // 2]


def iap(masks: np.ndarray, maps: np.ndarray, recall_level: float = 0.9) -> Tuple[float, float]:
    """Instance AP and the precision at recall ``recall_level`` (IAP, IAP90), as the spec defines them.

    Instance scores s_0 <= ... <= s_{N-1} (:func:`instance_scores`); at s_i, recall = 1 - i/N
    and precision = #(pred >= s_i and gt) / #(pred >= s_i) over all pixels; precision is made
    monotone with a running max from the high-recall end. IAP is the mean precision, IAP90 the
    precision at the lowest recall still >= ``recall_level``.
    """
    masks, maps = _pixel_inputs(masks, maps)
    why = _problem(masks, maps, "pixel")
    if why:
        return _undefined("IAP", why), NAN
    s = np.sort(instance_scores(masks, maps))
    every = np.sort(maps.ravel())
    positive = np.sort(maps[masks])
    above = every.size - np.searchsorted(every, s, side="left")
    hits = positive.size - np.searchsorted(positive, s, side="left")
    precision = np.maximum.accumulate(hits / above)
    recall = 1.0 - np.arange(s.size) / s.size
    at_level = np.flatnonzero(recall >= recall_level)[-1]
    return float(precision.mean()), float(precision[at_level])
