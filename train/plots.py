"""Evaluation figures as PNG: the image-level ROC curve and the good-vs-defective score histogram.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so no display is needed,
no global backend is switched under the caller, and nothing leaks between calls.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from destseg.atomic import atomic_path


def _save(fig: Figure, path: str | os.PathLike) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def roc_plot(path: str | os.PathLike, curves: Mapping[str, Tuple[np.ndarray, np.ndarray]], title: str = "") -> None:
    """One ROC curve per entry ``name: (labels, scores)``; needs good and defective images in each."""
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.add_subplot()
    for name, (labels, scores) in curves.items():
        labels, scores = np.asarray(labels).astype(bool), np.asarray(scores)
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {100 * roc_auc_score(labels, scores):.1f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate (good images flagged)", ylabel="true positive rate (defects caught)",
           xlim=(0, 1), ylim=(0, 1.01), title=title or "image-level ROC")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def score_histogram(
    path: str | os.PathLike, labels: np.ndarray, scores: np.ndarray, threshold: Optional[float] = None, title: str = ""
) -> None:
    """Histogram of image scores, good and defective overlaid, with the decision threshold if given."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    bins = np.histogram_bin_edges(scores[finite] if finite.any() else [0.0, 1.0], bins=30)
    fig = Figure(figsize=(5.6, 3.6))
    ax = fig.add_subplot()
    for name, keep, color in (("good", ~labels, "tab:green"), ("defective", labels, "tab:red")):
        if (keep & finite).any():
            ax.hist(scores[keep & finite], bins=bins, alpha=0.6, color=color, label=f"{name} ({int(keep.sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
    ax.set(xlabel="image score", ylabel="images", title=title or "image scores")
    ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)
