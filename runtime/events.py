"""From a score to a verdict and a JSON line: what a PLC, a dashboard or ``jq`` reads.

One line per frame: index, capture timestamp (wall clock), stream timestamp, score, verdict
and the stage milliseconds; a line per threshold change. Every event carries
``schema_version`` and ``event`` ("frame" or "threshold"); ``event.schema.json`` beside this
file is the versioned JSON Schema of both. The verdict uses the bundle's thresholds, like the overlay: NG
iff score >= the image threshold, a NaN score is NG (a broken model must not pass parts),
and no verdict (null) when the model was never evaluated. Lines go to stdout or a file that
is appended to line by line (a live log is read while it grows, so it is not renamed into
place like the other outputs): a start never truncates yesterday's lines, each line is one
``write`` with O_APPEND, and a second runtime writing the same file is refused
(:class:`destseg.atomic.LineLog`).
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, Optional, TextIO

from destseg.atomic import LineLog, LockedError
from destseg.runtime.errors import SinkError

EVENT_SCHEMA_VERSION = 1  # bump with event.schema.json when a field changes meaning or goes away


def _number(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def frame_event(
    index: int,
    score: float,
    result: Optional[str],
    captured_at: float,
    pts_s: Optional[float],
    stages_ms: Dict[str, float],
    name: Optional[str] = None,
    **fields: Any,
) -> Dict[str, Any]:
    """The JSON object of one frame (non-finite numbers become null: JSON has no NaN); ``fields``
    are the optional ones of the schema (thresholds used, defect area)."""
    event: Dict[str, Any] = {
        "schema_version": EVENT_SCHEMA_VERSION,
        "event": "frame",
        "frame": index,
        "captured_at": _number(captured_at, 6),
        "pts": _number(pts_s, 6),
        "score": _number(score, 6),
        "verdict": result,
        "ms": {stage: _number(ms, 3) for stage, ms in stages_ms.items()},
    }
    if name is not None:
        event["file"] = name
    event.update(fields)
    return event


def threshold_event(image: Optional[float], pixel: Optional[float], previous: Dict[str, Optional[float]],
                    origin: str, next_frame: int, at: float) -> Dict[str, Any]:
    """The JSON object of a threshold change: the new and previous values, who changed them, and the
    first frame judged with them (so a log reader can tell which verdicts came from which threshold)."""
    return {
        "schema_version": EVENT_SCHEMA_VERSION,
        "event": "threshold",
        "at": _number(at, 6),
        "image": _number(image, 6),
        "pixel": _number(pixel, 6),
        "previous": {key: _number(value, 6) for key, value in previous.items()},
        "origin": origin,
        "next_frame": next_frame,
    }


class EventWriter:
    """JSON Lines to stdout (``None``) or appended to a file."""

    def __init__(self, path: Optional[str | os.PathLike] = None) -> None:
        self._log: Optional[LineLog] = None
        self._out: TextIO = sys.stdout
        if path is None:
            return
        try:
            self._log = LineLog(path)
        except LockedError as exc:
            raise SinkError(f"--events {exc}") from exc
        except OSError as exc:
            raise SinkError(f"cannot write events to {path}: {exc.strerror}; pick a writable --events path") from exc

    def write(self, event: Dict[str, Any]) -> None:
        line = json.dumps(event, allow_nan=False) + "\n"
        if self._log is not None:
            self._log.write_line(line)
        else:
            self._out.write(line)
            self._out.flush()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        else:
            self._out.flush()
