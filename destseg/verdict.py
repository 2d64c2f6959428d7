"""The OK/NG rule, written once: the runtime's events and the overlay's label both use it.

NG iff ``score >= threshold``; a NaN score is NG too (``not score < threshold``), because a
broken model must not pass parts. Without a threshold (a model never evaluated) there is no
verdict. :mod:`destseg.thresholds` chooses the threshold for this rule.
"""
from __future__ import annotations

from typing import Optional


def verdict(score: float, threshold: Optional[float]) -> Optional[str]:
    """"NG", "OK", or None when there is no threshold."""
    if threshold is None:
        return None
    return "OK" if float(score) < float(threshold) else "NG"
