"""Configurations and results of destseg-bench, kept apart from any backend.

The summary follows trtexec's performance summary (min, mean, median, percentiles, max,
throughput; :func:`destseg.latency.latency_statistics`, the runtime profile's too), so numbers
from our bench and from trtexec on the same engine line up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from destseg.inference import PRECISIONS
from destseg.latency import latency_statistics
from destseg.runtime.backends import NAMES as BACKENDS

# What a configuration can end up as (bf16 included: torch's and OpenVINO's "auto" on CPUs that have it).
RESOLVED_PRECISIONS = PRECISIONS


class BenchError(ValueError):
    """Options the benchmark cannot run with; the message says what to pass instead."""


@dataclass(frozen=True)
class Config:
    """One measured point: a backend, a precision and a batch size."""

    backend: str
    precision: str
    batch: int

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}/b{self.batch}"

    @classmethod
    def parse(cls, text: str) -> "Config":
        """'onnxruntime/fp32/b1' (or .../1), as printed in the table."""
        match = re.fullmatch(r"(\w+)/(\w+)/b?(\d+)", text.strip())
        if not match or match.group(1) not in BACKENDS or match.group(2) not in RESOLVED_PRECISIONS:
            raise BenchError(f"--baseline {text!r} is not BACKEND/PRECISION/bBATCH, e.g. onnxruntime/fp32/b1")
        return cls(match.group(1), match.group(2), int(match.group(3)))


@dataclass
class Result:
    """The timings of one configuration and what they are compared with."""

    config: Config
    samples_ms: List[float]  # wall time of each timed infer() call, the whole batch
    stages_ms: Dict[str, List[float]]  # the backend's last_timings() per run: h2d, infer, d2h
    variant: Optional[str] = None  # the bundle model it ran (fp32, int8_cpu, int8_trt, ...)
    detail: str = ""  # the backend's own description: model file, provider or GPU, threads
    baseline_ratio: Optional[Dict[str, float]] = None
    accuracy: Optional[Dict[str, Any]] = None
    latency_ms: Dict[str, float] = field(init=False)
    stage_stats_ms: Dict[str, Dict[str, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.latency_ms = latency_statistics(self.samples_ms)
        self.stage_stats_ms = {k: latency_statistics(v) for k, v in self.stages_ms.items() if v}

    @property
    def throughput(self) -> float:
        """Images per second over the timed runs (batch x runs / total time)."""
        return 1e3 * self.config.batch * len(self.samples_ms) / float(np.sum(self.samples_ms))

    def compare_with(self, baseline: "Result") -> None:
        """Latency ratio (of the batch's median) and throughput ratio to the baseline: > 1 means faster."""
        self.baseline_ratio = {
            "baseline": baseline.config.label,
            "speedup_median_latency": baseline.latency_ms["median"] / self.latency_ms["median"],
            "throughput_ratio": self.throughput / baseline.throughput,
        }

    def to_dict(self) -> Dict[str, Any]:
        return {
            "config": self.config.label,
            "backend": self.config.backend,
            "precision": self.config.precision,
            "batch": self.config.batch,
            "variant": self.variant,
            "detail": self.detail,
            "runs": len(self.samples_ms),
            "latency_ms": self.latency_ms,
            "throughput_images_per_s": self.throughput,
            "stages_ms": self.stage_stats_ms,
            "baseline": self.baseline_ratio,
            "accuracy": self.accuracy,
            "samples_ms": self.samples_ms,
        }
