"""Where a frame's verdict is narrowed: the inspection mask (--roi), the smallest defect (--min-defect-area), the deadline (--deadline-ms).

The image rule stays :func:`destseg.verdict.verdict` (NG iff score >= the image
threshold). A mask or a minimum area only ever turns an NG into an OK: a frame stays NG only
when a connected region of the map at or above the pixel threshold, inside the mask, covers at
least ``min_defect_area`` frame pixels. A fixture edge, a label or a conveyor seam that lights
up the map then no longer rejects parts (mask), and neither does a speck of dust (area), while
the calibrated image threshold keeps deciding everything else. A NaN score stays NG: a broken
model must not pass parts. The deadline is separate and last: a verdict emitted more than
``deadline_ms`` after capture is UNKNOWN, so the line never takes a late OK for a fresh one.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from destseg.runtime.errors import RuntimeInputError
from destseg.verdict import verdict

LATE = "UNKNOWN"


@dataclass(frozen=True)
class Inspection:
    """What narrows the verdict; all off by default."""

    roi: Optional[np.ndarray] = None  # S x S bool at the map's resolution, True = inspect
    min_defect_area: int = 0  # frame pixels; 0 = any region counts
    deadline_ms: Optional[float] = None

    @property
    def regional(self) -> bool:
        """Whether verdicts depend on regions of the map (mask or minimum area)."""
        return self.roi is not None or self.min_defect_area > 0

    @property
    def roi_fraction(self) -> Optional[float]:
        """The share of the frame that is inspected (None without a mask)."""
        return None if self.roi is None else round(float(self.roi.mean()), 4)


def load_roi(path: str, size: int) -> np.ndarray:
    """A mask image (white = inspect, black = ignore; any size, stretched to the frame like the model
    input) as an S x S bool array at the anomaly map's resolution."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if Path(path).is_file() else None
    if mask is None:
        raise RuntimeInputError(f"--roi {path}: not a readable image; draw the mask (white = inspect) on a frame grab and save it as PNG")
    roi = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA) >= 128
    if not roi.any():
        raise RuntimeInputError(f"--roi {path} is all black, so nothing would be inspected; paint the inspected area white")
    return roi


def check_inspection(roi: Optional[str], min_defect_area: Optional[int], deadline_ms: Optional[float], size: int,
                     pixel_threshold: Optional[float]) -> Inspection:
    """The options, checked before the camera opens (bad values are one-line errors)."""
    if min_defect_area is not None and min_defect_area < 1:
        raise RuntimeInputError(f"--min-defect-area must be at least 1 pixel, got {min_defect_area}")
    if deadline_ms is not None and not deadline_ms > 0:
        raise RuntimeInputError(f"--deadline-ms must be positive, got {deadline_ms}")
    inspection = Inspection(load_roi(roi, size) if roi else None, min_defect_area or 0, deadline_ms)
    if inspection.regional and pixel_threshold is None:
        raise RuntimeInputError("--roi and --min-defect-area need a pixel threshold, and the model has none; "
                                "evaluate the run (destseg-eval) before exporting, or pass --pixel-threshold")
    return inspection


def largest_defect(anomaly_map: np.ndarray, pixel_threshold: float, roi: Optional[np.ndarray],
                   frame_shape: Tuple[int, ...]) -> int:
    """The largest 8-connected region of the map >= ``pixel_threshold`` inside ``roi``, in frame pixels.

    Regions are found at the map's resolution (what the model decided) and their pixel counts
    scaled by the frame-to-map area ratio, so the option reads in the camera's pixels.
    """
    m = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32).reshape(anomaly_map.shape[-2:]), nan=1.0)
    above = m >= pixel_threshold
    if roi is not None:
        above &= roi
    count, _, stats, _ = cv2.connectedComponentsWithStats(above.astype(np.uint8), connectivity=8)
    if count <= 1:
        return 0
    largest = int(stats[1:, cv2.CC_STAT_AREA].max())
    return int(round(largest * frame_shape[0] * frame_shape[1] / m.size))


def decide(score: float, anomaly_map: np.ndarray, threshold: Optional[float], pixel_threshold: Optional[float],
           inspection: Inspection, frame_shape: Tuple[int, ...]) -> Tuple[Optional[str], Optional[int]]:
    """(verdict, defect area in frame pixels or None): the image rule, narrowed by mask and minimum area."""
    result = verdict(score, threshold)
    if not inspection.regional or pixel_threshold is None:
        return result, None
    area = largest_defect(anomaly_map, pixel_threshold, inspection.roi, frame_shape)
    if result == "NG" and math.isfinite(score) and area < max(1, inspection.min_defect_area):
        result = "OK"
    return result, area


def apply_deadline(event: Dict[str, Any], captured_at: float, deadline_ms: Optional[float],
                   now: Optional[float] = None) -> bool:
    """Mark ``event`` UNKNOWN if it is emitted more than ``deadline_ms`` after capture; True if it was late.

    Called right before the event leaves (JSON line, MQTT, webhook, dashboard); the verdict the
    model reached stays in ``late_verdict`` for the log.
    """
    if deadline_ms is None:
        return False
    age_ms = ((time.time() if now is None else now) - captured_at) * 1e3
    event["age_ms"] = round(age_ms, 3)
    late = age_ms > deadline_ms
    event["late"] = late
    if late:
        event["late_verdict"] = event["verdict"]
        event["verdict"] = LATE
    return late
