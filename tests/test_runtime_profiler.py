"""The latency profile: trtexec-style statistics per stage, the JSON summary and the per-frame CSV."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from destseg.runtime.profiler import STAGES, STATISTICS, Profiler, format_summary


def test_statistics_per_stage_and_files(tmp_path):
    profiler = Profiler(csv_path=tmp_path / "frames.csv")
    for i in range(100):
        profiler.record(i, i / 30, {"infer": float(i + 1), "capture": 2.0})
    profiler.dropped, profiler.reconnects = 3, 1
    summary = profiler.summary(backend="onnxruntime")
    assert summary["backend"] == "onnxruntime" and summary["frames"] == 100
    assert (summary["dropped"], summary["reconnects"]) == (3, 1)
    assert list(summary["stages_ms"]) == list(STAGES)
    infer = summary["stages_ms"]["infer"]
    assert list(infer) == list(STATISTICS)
    assert (infer["min"], infer["max"], infer["mean"], infer["median"]) == (1.0, 100.0, 50.5, 50.5)
    assert infer["p99"] == pytest.approx(np.percentile(np.arange(1, 101), 99), abs=1e-3)
    assert summary["stages_ms"]["capture"]["p95"] == 2.0
    assert summary["stages_ms"]["h2d"]["max"] == 0.0  # a stage the backend does not report
    assert not (tmp_path / "frames.csv").exists()  # renamed into place at close only
    profiler.close(tmp_path / "profile.json", summary)
    assert json.loads((tmp_path / "profile.json").read_text()) == summary
    rows = list(csv.DictReader(open(tmp_path / "frames.csv")))
    assert len(rows) == 100 and rows[99]["frame"] == "99" and float(rows[99]["infer_ms"]) == 100.0
    assert "p99" in format_summary(summary) and "100 frames" in format_summary(summary)


def test_statistics_cover_a_bounded_window_of_recent_frames():
    profiler = Profiler(window=10)
    for i in range(25):
        profiler.record(i, None, {"infer": float(i)})
    summary = profiler.summary()
    assert summary["frames"] == 25 and summary["statistics_over_frames"] == 10
    assert summary["stages_ms"]["infer"]["min"] == 15.0 and summary["stages_ms"]["infer"]["max"] == 24.0
