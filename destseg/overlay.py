"""Drawing an anomaly map over a frame: the heatmaps of evaluation and the runtime's display.

The runtime calls :func:`overlay` on every frame, so the per-pixel work at frame resolution is
two OpenCV calls (resizing the colour image, blending); colouring and thresholding happen at the
map's own, smaller resolution (about 6 ms for a 1080p frame on two x86 cores). Colours are jet over the map's absolute values in [0, 1]: the
DeSTSeg map is a probability, and normalising each frame to its own min/max would paint a
perfectly good part as hot as a broken one.
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from destseg.verdict import verdict as score_verdict

OK_RGB = (0, 200, 0)
NG_RGB = (230, 0, 0)
UNKNOWN_RGB = (255, 170, 0)
OUTLINE_RGB = (255, 255, 255)
TEXT_RGB = (255, 255, 255)

# cv2's JET table in RGB order, as a user colour map, so applyColorMap yields RGB directly.
_JET_RGB = np.ascontiguousarray(
    cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, :, ::-1]
)


class OverlayError(ValueError):
    """A frame or map that cannot be drawn (wrong shape or dtype)."""


def _as_2d_map(anomaly_map: np.ndarray) -> np.ndarray:
    """H x W float32 in [0, 1]; NaN drawn as 0 so one broken frame does not stop a stream."""
    m = np.asarray(anomaly_map)
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.size == 0:
        raise OverlayError(f"anomaly map must be H x W (or 1 x H x W), got shape {np.shape(anomaly_map)}")
    return np.clip(np.nan_to_num(m.astype(np.float32, copy=False), nan=0.0), 0.0, 1.0)


def _check_frame(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise OverlayError(f"frame must be an H x W x 3 uint8 RGB array, got {got}")


def _jet(m01: np.ndarray) -> np.ndarray:
    """H x W map in [0, 1] as H x W x 3 uint8 RGB (0 blue, 1 dark red)."""
    return cv2.applyColorMap(cv2.convertScaleAbs(m01, alpha=255.0), _JET_RGB)


def _draw_label(img: np.ndarray, text: str, color: tuple) -> None:
    h, w = img.shape[:2]
    scale = max(0.3, min(h, w) / 600.0)
    thickness = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, th // 3)
    cv2.rectangle(img, (0, 0), (min(w - 1, tw + 2 * pad), min(h - 1, th + base + 2 * pad)), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def _outline(out: np.ndarray, m: np.ndarray, pixel_threshold: float) -> None:
    """Outline the regions of ``m`` >= the threshold on ``out``, traced at map resolution and scaled.

    Thresholding at the map's own resolution is what the model decided; scaling the contour
    (sub-pixel, via polylines' shift) is far cheaper than thresholding a resized full-frame map.
    """
    above = cv2.compare(m, pixel_threshold, cv2.CMP_GE)
    contours, _ = cv2.findContours(above, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_TC89_L1)
    if not contours:
        return
    h, w = out.shape[:2]
    scale = np.array([w / m.shape[1], h / m.shape[0]])
    points = [np.round(((c.reshape(-1, 2) + 0.5) * scale - 0.5) * 16).astype(np.int32) for c in contours]
    cv2.polylines(out, points, True, OUTLINE_RGB, max(1, int(round(min(h, w) / 300))), cv2.LINE_AA, shift=4)


def overlay(
    rgb: np.ndarray,
    anomaly_map: np.ndarray,
    score: Optional[float] = None,
    threshold: Optional[float] = None,
    pixel_threshold: Optional[float] = None,
    alpha: float = 0.5,
    verdict: Optional[str] = None,
    size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """A new H x W x 3 uint8 RGB frame: ``rgb`` blended with the jet-coloured map.

    With ``size`` (width, height) the frame is first resized to it (area when shrinking) and
    everything is drawn there, as an output of that size shows it: cheaper than drawing at
    the camera's resolution and scaling the result, and the label and outline keep their
    proportions.

    The map (any size, resized to the frame) is read as values in [0, 1]. With ``score`` the
    top-left corner shows it; with ``threshold`` too, the verdict of :func:`destseg.verdict.verdict`:
    NG (red) iff ``score >= threshold``, and a NaN score counts as NG.
    With ``pixel_threshold``, regions whose map is >= it are outlined. ``verdict`` ("OK", "NG",
    "UNKNOWN") is printed instead of the score rule's when the runtime narrowed it (ROI, minimum
    defect area, deadline).
    """
    _check_frame(rgb)
    if not 0.0 <= alpha <= 1.0:
        raise OverlayError(f"alpha must be in [0, 1], got {alpha}")
    if size is not None and tuple(size) != (rgb.shape[1], rgb.shape[0]):
        shrink = size[0] * size[1] < rgb.shape[0] * rgb.shape[1]
        rgb = cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    h, w = rgb.shape[:2]
    m = _as_2d_map(anomaly_map)
    heat = _jet(m)
    if heat.shape[:2] != (h, w):
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.addWeighted(rgb, 1.0 - alpha, heat, alpha, 0.0)
    if pixel_threshold is not None:
        _outline(out, m, float(pixel_threshold))
    if score is not None:
        score = float(score)
        shown = verdict if verdict is not None else score_verdict(score, threshold)
        if shown is None:
            _draw_label(out, f"score {score:.3f}", TEXT_RGB)
        else:
            _draw_label(out, f"{shown} {score:.3f}", {"OK": OK_RGB, "NG": NG_RGB}.get(shown, UNKNOWN_RGB))
    return out


def heatmap_panel(
    image: np.ndarray,
    mask: Optional[np.ndarray],
    anomaly_map: np.ndarray,
    score: Optional[float],
    threshold: Optional[float] = None,
    pixel_threshold: Optional[float] = None,
) -> np.ndarray:
    """input | ground truth | overlay, side by side, as one uint8 RGB image (mask None: all black)."""
    _check_frame(image)
    h, w = image.shape[:2]
    truth = np.zeros((h, w), dtype=np.uint8)
    if mask is not None:
        binary = (np.asarray(mask) > 0.5).astype(np.uint8) * 255  # bool, 0/1, 0/255 or probabilities
        truth = cv2.resize(binary, (w, h), interpolation=cv2.INTER_NEAREST) if binary.shape != (h, w) else binary
    gap = np.full((h, max(2, w // 64), 3), 255, dtype=np.uint8)
    shown = overlay(image, anomaly_map, score, threshold, pixel_threshold)
    return np.hstack([image, gap, cv2.cvtColor(truth, cv2.COLOR_GRAY2RGB), gap, shown])
