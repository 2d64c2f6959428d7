"""The paper's metrics and the decision thresholds: hand-computed cases, brute force, degenerate splits."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from skimage.measure import label as sk_label

from destseg import metrics
from destseg.metrics import MetricInputError, MetricWarning
from destseg.thresholds import ThresholdError, best_f1, choose_thresholds, f1_threshold, quantile_threshold

# One 1 x 6 image: region A = pixels 0-1, region B = pixel 5, pixels 2-4 normal.
ROW_MASK = np.array([[[1, 1, 0, 0, 0, 1]]], dtype=bool)
ROW_MAP = np.array([[[0.9, 0.5, 0.8, 0.2, 0.1, 0.6]]])


# ---- hand-computed cases -------------------------------------------------------------------

def test_image_auroc_by_hand():
    # pairs (defective, good): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_pixel_auroc_and_ap_by_hand():
    masks = np.array([[[1, 0, 1, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.8, 0.7, 0.1]]])
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(0.75)
    # ranks: 0.9 hit (P 1, R 1/2), 0.8 miss, 0.7 hit (P 2/3, R 1) -> AP = 1/2 * 1 + 1/2 * 2/3
    assert metrics.pixel_ap(masks, maps) == pytest.approx(0.5 + 1 / 3)


def test_aupro_by_hand():
    # curve (FPR, PRO): (0,0) (0,1/4) (1/3,1/4) (1/3,3/4) (1/3,1) (2/3,1) (1,1)
    assert metrics.aupro(ROW_MASK, ROW_MAP, fpr_limit=0.3) == pytest.approx(0.25)
    assert metrics.aupro(ROW_MASK, ROW_MAP, fpr_limit=1.0) == pytest.approx(1 / 3 * 0.25 + 2 / 3)


def test_regions_are_8_connected():
    diagonal = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 0]], [[1, 0, 1], [0, 0, 0], [1, 0, 0]]], dtype=bool)
    ids, count = metrics.regions(diagonal)
    assert count == 4  # one diagonal region in the first image, three in the second
    assert ids[0, 0, 0] == ids[0, 1, 1] != 0 and len(np.unique(ids[1])) == 4


def test_instance_score_is_the_descending_element_at_half():
    mask = np.array([[[1, 1, 1, 1, 0, 1, 1, 1]]], dtype=bool)
    maps = np.array([[[0.1, 0.9, 0.3, 0.7, 0.0, 0.8, 0.2, 0.6]]])
    # [0.9, 0.7, 0.3, 0.1][2] = 0.3 and [0.8, 0.6, 0.2][1] = 0.6
    assert sorted(metrics.instance_scores(mask, maps)) == pytest.approx([0.3, 0.6])


def test_iap_by_hand():
    # instance scores 0.5 (A) and 0.6 (B); precision 3/4 at 0.5, 2/3 at 0.6 -> running max 3/4, 3/4
    assert metrics.iap(ROW_MASK, ROW_MAP) == pytest.approx((0.75, 0.75))


def test_iap_running_max_and_iap90_by_hand():
    # ten one-pixel instances 0.50 .. 0.95 at even positions; normal pixels 0 except 0.52 and 0.97
    mask = np.zeros((1, 1, 20), dtype=bool)
    mask[0, 0, ::2] = True
    maps = np.zeros((1, 1, 20))
    maps[0, 0, ::2] = 0.5 + 0.05 * np.arange(10)
    maps[0, 0, 1], maps[0, 0, 19] = 0.52, 0.97
    # raw precision 10/12, 9/10, 8/9, ..., 1/2; monotone from the high-recall end: 10/12, 0.9, 0.9, ...
    iap, iap90 = metrics.iap(mask, maps)
    assert iap == pytest.approx((10 / 12 + 9 * 0.9) / 10)
    assert iap90 == pytest.approx(0.9)  # recall 1 - 1/10 is the lowest recall >= 0.9


# ---- independent brute force on random inputs --------------------------------------------

def _random_case(seed: int, n: int = 4, size: int = 12):
    rng = np.random.default_rng(seed)
    noise = rng.random((n, size // 3, size // 3)).repeat(3, axis=1).repeat(3, axis=2)
    masks = noise > 0.7
    masks[0] = False  # one good image
    maps = np.round(0.6 * masks + 0.7 * rng.random(masks.shape), 1)  # rounded: plenty of ties
    labels = masks.reshape(n, -1).any(axis=1)
    scores = np.round(maps.reshape(n, -1).max(axis=1) + rng.random(n) * 0.2, 1)
    return labels, scores, masks, maps


def _brute_auroc(truth, scores):
    pos, neg = scores[truth], scores[~truth]
    return ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)


def _brute_ap(truth, scores):
    ap, last_recall = 0.0, 0.0
    for t in np.unique(scores)[::-1]:
        flagged = scores >= t
        recall = (flagged & truth).sum() / truth.sum()
        ap += (recall - last_recall) * (flagged & truth).sum() / flagged.sum()
        last_recall = recall
    return ap


def _brute_aupro(masks, maps, limit):
    labelled = [sk_label(m, connectivity=2) for m in masks]
    regions = [(i, lab == k) for i, lab in enumerate(labelled) for k in range(1, lab.max() + 1)]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        fpr = (maps[~masks] >= t).mean()
        pro = np.mean([(maps[i][r] >= t).mean() for i, r in regions])
        points.append((fpr, pro))
    x, y = np.array(points).T
    a = np.flatnonzero(x <= limit)[-1]  # the last point inside; the segment after it crosses the limit
    y_limit = y[a] if x[a] == limit else y[a] + (y[a + 1] - y[a]) * (limit - x[a]) / (x[a + 1] - x[a])
    return np.trapezoid(np.append(y[: a + 1], y_limit), np.append(x[: a + 1], limit)) / limit


def _brute_iap(masks, maps):
    labelled = [sk_label(m, connectivity=2) for m in masks]
    scores = []
    for i, lab in enumerate(labelled):
        for k in range(1, lab.max() + 1):
            desc = np.sort(maps[i][lab == k])[::-1]
            scores.append(desc[int(np.floor(0.5 * desc.size))])
    scores = sorted(scores)
    precision = []
    for s in scores:
        flagged = maps >= s
        precision.append((flagged & masks).sum() / flagged.sum())
    for i in range(1, len(precision)):
        precision[i] = max(precision[i], precision[i - 1])
    recall = [1 - i / len(scores) for i in range(len(scores))]
    k = max(i for i, r in enumerate(recall) if r >= 0.9)
    return np.mean(precision), precision[k]


@pytest.mark.parametrize("seed", range(6))
def test_metrics_agree_with_brute_force(seed):
    labels, scores, masks, maps = _random_case(seed)
    assert metrics.image_auroc(labels, scores) == pytest.approx(_brute_auroc(labels, scores))
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(_brute_auroc(masks.ravel(), maps.ravel()))
    assert metrics.pixel_ap(masks, maps) == pytest.approx(_brute_ap(masks.ravel(), maps.ravel()))
    for limit in (0.05, 0.3, 1.0):
        assert metrics.aupro(masks, maps, fpr_limit=limit) == pytest.approx(_brute_aupro(masks, maps, limit))
    assert metrics.iap(masks, maps) == pytest.approx(_brute_iap(masks, maps))


@pytest.mark.parametrize("seed", range(4))
def test_f1_threshold_agrees_with_brute_force(seed):
    labels, scores, masks, maps = _random_case(seed, n=30)
    t, f1 = best_f1(masks, maps)

    def f1_at(th):
        flagged = maps >= th
        tp = (flagged & masks).sum()
        return 2 * tp / (flagged.sum() + masks.sum())

    assert f1 == pytest.approx(max(f1_at(th) for th in np.unique(maps)))
    assert f1_at(t) == pytest.approx(f1)
    assert t not in np.unique(maps)  # halfway between two scores: margin on both sides


# ---- degenerate inputs: NaN with a reason, never an exception ---------------------------

@pytest.mark.parametrize(
    "labels, scores, reason",
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "no anomalous image"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "no normal image"),
        ([0, 1, 1], [0.5, 0.5, 0.5], "all image scores are equal"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
    ],
)
def test_degenerate_image_auroc_is_nan_with_a_reason(labels, scores, reason):
    with pytest.warns(MetricWarning, match=reason):
        assert np.isnan(metrics.image_auroc(labels, scores))


@pytest.mark.parametrize(
    "masks, maps, reason",
    [
        (np.zeros((2, 4, 4), bool), np.random.default_rng(0).random((2, 4, 4)), "no anomalous pixel"),
        (np.ones((2, 4, 4), bool), np.random.default_rng(0).random((2, 4, 4)), "no normal pixel"),
        (ROW_MASK, np.full(ROW_MAP.shape, 0.3), "all pixel scores are equal"),
        (ROW_MASK, np.where(ROW_MAP > 0.7, np.nan, ROW_MAP), "NaN"),
    ],
)
def test_degenerate_pixel_metrics_are_nan_with_a_reason(masks, maps, reason):
    for metric in (metrics.pixel_auroc, metrics.pixel_ap, metrics.aupro):
        with pytest.warns(MetricWarning, match=reason):
            assert np.isnan(metric(masks, maps))
    with pytest.warns(MetricWarning, match=reason):
        assert np.isnan(metrics.iap(masks, maps)).all()


def test_mismatched_shapes_are_a_clear_error():
    with pytest.raises(MetricInputError, match="same shape"):
        metrics.pixel_ap(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(MetricInputError, match="labels"):
        metrics.image_auroc([0, 1], [0.1, 0.2, 0.3])


def test_masks_as_0_255_uint8_mean_the_same_as_bool():
    _, _, masks, maps = _random_case(1)
    as_uint8 = masks.astype(np.uint8) * 255
    assert metrics.aupro(as_uint8, maps) == metrics.aupro(masks, maps)
    assert metrics.iap(as_uint8, maps) == metrics.iap(masks, maps)


def test_aupro_stays_linear_in_memory():
    """A 40 x 256 x 256 split; a threshold x pixel matrix of even 100 thresholds would need 260 MB."""
    rng = np.random.default_rng(0)
    masks = np.zeros((40, 256, 256), bool)
    masks[::2, 100:140, 60:90] = True
    maps = rng.random(masks.shape, dtype=np.float32)
    tracemalloc.start()
    try:
        value = metrics.aupro(masks, maps)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.0 <= value <= 1.0
    assert peak < 80 * masks.size  # bytes per pixel: a few sorted copies, no thresholds axis


# ---- thresholds -------------------------------------------------------------------------

def test_f1_threshold_separates_a_separable_set_in_the_middle_of_the_gap():
    assert f1_threshold([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9]) == pytest.approx(0.5)


def test_quantile_threshold_flags_about_one_minus_q_of_good_items():
    good = np.random.default_rng(0).random(100_000)
    t = quantile_threshold(good, 0.99)
    assert np.mean(good >= t) == pytest.approx(0.01, abs=0.001)


def test_choose_thresholds_uses_f1_with_defects_and_says_so():
    labels, scores, masks, maps = _random_case(2, n=20)
    out = choose_thresholds(labels, scores, masks, maps)
    assert out["method"] == out["pixel_method"] == "f1"
    assert out["image"] == f1_threshold(labels, scores) and out["pixel"] == f1_threshold(masks, maps)
    assert out["defective_images"] == labels.sum() and out["good_images"] == (~labels).sum()


def test_choose_thresholds_falls_back_to_the_good_quantile_without_defects():
    rng = np.random.default_rng(0)
    scores, maps = rng.random(50), rng.random((50, 8, 8))
    out = choose_thresholds(np.zeros(50), scores, np.zeros((50, 8, 8)), maps, q=0.9)
    assert out["method"] == out["pixel_method"] == "good-quantile" and out["quantile"] == 0.9
    assert out["image"] == pytest.approx(np.quantile(scores, 0.9))
    assert out["pixel"] == pytest.approx(np.quantile(maps, 0.9))


def test_thresholds_refuse_what_they_cannot_use():
    with pytest.raises(ThresholdError, match="at least one anomalous"):
        f1_threshold([0, 0], [0.1, 0.2])
    with pytest.raises(ThresholdError, match="NaN"):
        quantile_threshold([0.1, np.nan])
    with pytest.raises(ThresholdError, match="quantile"):
        quantile_threshold([0.1, 0.2], q=1.5)
