"""Per-frame latency of every stage, summarised like trtexec: min, mean, median, p90, p95, p99, max.

Stages, in the order a frame meets them:

- ``capture``: live sources, from the buffer's capture timestamp to the appsink handing it
  over (queueing in GStreamer included); files, the time spent waiting for the decoder;
- ``preprocess``: sample to numpy and the batch; ``h2d``, ``infer``, ``d2h``: the backend's
  own timings (CUDA events on TensorRT; ONNX Runtime and PyTorch report the copies inside
  ``infer`` and 0 for h2d/d2h);
- ``postprocess``: verdict and overlay; ``output``: sinks, JSON line, saved anomalies;
- ``end_to_end``: capture to the end of output.

Rows live in a preallocated ring of the last ``window`` frames, so memory stays flat over a
days-long run; statistics describe that window (the whole run unless it is longer).
Per-frame rows stream to the CSV file, which is renamed into place when the run ends.
"""
from __future__ import annotations

import contextlib
import csv
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from destseg.atomic import atomic_path, write_json
from destseg.latency import STATISTICS, latency_statistics

STAGES = ("capture", "preprocess", "h2d", "infer", "d2h", "postprocess", "output", "end_to_end")
DEFAULT_WINDOW = 65536
DIGITS = 3  # the summary's milliseconds keep microseconds


class Profiler:
    """Collects stage timings per frame and writes the summary and the per-frame CSV."""

    def __init__(self, window: int = DEFAULT_WINDOW, csv_path: Optional[str | os.PathLike] = None) -> None:
        self._rows = np.full((window, len(STAGES)), np.nan)  # touched now: RSS does not grow later
        self._count = 0
        self._first_done: Optional[float] = None
        self._last_done: Optional[float] = None
        self.dropped = 0
        self.reconnects = 0
        self._csv_stack = contextlib.ExitStack()
        self._csv_writer: Any = None
        if csv_path is not None:
            tmp = self._csv_stack.enter_context(atomic_path(csv_path))
            handle = self._csv_stack.enter_context(open(tmp, "w", newline=""))
            self._csv_writer = csv.writer(handle)
            self._csv_writer.writerow(["frame", "pts_s", *(f"{s}_ms" for s in STAGES)])

    def record(self, index: int, pts_s: Optional[float], stages_ms: Dict[str, float]) -> None:
        """One frame's milliseconds per stage (missing stages count as 0)."""
        row = [float(stages_ms.get(s, 0.0)) for s in STAGES]
        self._rows[self._count % len(self._rows)] = row
        self._count += 1
        now = time.perf_counter()
        if self._first_done is None:
            self._first_done = now
        self._last_done = now
        if self._csv_writer is not None:
            self._csv_writer.writerow([index, "" if pts_s is None else f"{pts_s:.6f}", *(f"{v:.3f}" for v in row)])

    def summary(self, **context: Any) -> Dict[str, Any]:
        """The run so far: frames, seconds, FPS, dropped, reconnects and per-stage statistics."""
        kept = self._rows[: min(self._count, len(self._rows))]
        seconds = (self._last_done - self._first_done) if self._count > 1 else 0.0
        fps = (self._count - 1) / seconds if seconds > 0 else None
        return {
            **context,
            "frames": self._count,
            "seconds": round(seconds, 3),
            "fps": round(fps, 2) if fps is not None else None,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "statistics_over_frames": len(kept),
            "stages_ms": {s: latency_statistics(kept[:, i], DIGITS) for i, s in enumerate(STAGES)} if len(kept) else {},
        }

    def close(self, profile_path: Optional[str | os.PathLike] = None, summary: Optional[Dict[str, Any]] = None) -> None:
        """Finish the CSV (rename it into place) and write the summary JSON atomically."""
        self._csv_stack.close()
        self._csv_writer = None
        if profile_path is not None:
            write_json(Path(profile_path), summary if summary is not None else self.summary())


def format_summary(summary: Dict[str, Any]) -> str:
    """A trtexec-style table for the terminal."""
    fps = f"{summary['fps']:.1f} FPS" if summary.get("fps") else "FPS n/a"
    lines: List[str] = [
        f"=== profile: {summary['frames']} frames in {summary['seconds']:.2f} s, {fps}, "
        f"{summary['dropped']} dropped, {summary['reconnects']} reconnects ===",
    ]
    if summary["stages_ms"]:
        lines.append(f"{'stage (ms)':<12}" + "".join(f"{s:>9}" for s in STATISTICS))
        for stage, stats in summary["stages_ms"].items():
            lines.append(f"{stage:<12}" + "".join(f"{stats[s]:>9.2f}" for s in STATISTICS))
    return "\n".join(lines)
