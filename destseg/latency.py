"""Latency statistics as trtexec reports them: min, mean, median, p90, p95, p99 and max.

One function for the runtime's per-stage profile and the benchmarks' per-configuration
figures, so a p99 means the same in ``profile.json`` and ``bench.json``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

STATISTICS = ("min", "mean", "median", "p90", "p95", "p99", "max")


def latency_statistics(samples_ms: Sequence[float] | np.ndarray, digits: Optional[int] = None) -> Dict[str, float]:
    """The :data:`STATISTICS` of some milliseconds (linearly interpolated percentiles).

    ``digits`` rounds each figure (the profile keeps microseconds); None keeps them exact.
    """
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples to summarise: time at least one run")
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    stats = (values.min(), values.mean(), p50, p90, p95, p99, values.max())
    return {name: float(v) if digits is None else round(float(v), digits) for name, v in zip(STATISTICS, stats)}
