"""V4L2 cameras: which exist, which modes one offers, and the mode nearest what was asked.

Cameras list their modes as GStreamer caps; the caps *text* is parsed here (a pure
function, tested with the caps of real raw and MJPEG cameras) because PyGObject without
gst-python cannot read caps lists and ranges as values. The choice prefers a mode that
reaches the requested frame rate: a USB 2 camera gives 1080p as MJPEG at 30 fps but as raw
YUY2 at 5, so "nearest resolution" alone would pick a slideshow.
"""
from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple

from destseg.runtime.errors import SourceError

RAW = "video/x-raw"
MJPEG = "image/jpeg"


@dataclass(frozen=True)
class CameraMode:
    media: str  # RAW or MJPEG
    format: Optional[str]  # pixel format of a raw mode ("YUY2"), None for MJPEG
    width: int
    height: int
    fps: Fraction

    def caps(self, memory: str = "") -> str:
        """The caps string that pins the camera to this mode."""
        fmt = f",format={self.format}" if self.format else ""
        return f"{self.media}{memory}{fmt},width={self.width},height={self.height},framerate={self.fps.numerator}/{self.fps.denominator}"


def video_devices(pattern: str = "/dev/video*") -> List[str]:
    """The V4L2 device nodes present, in numeric order."""
    return sorted(glob.glob(pattern), key=lambda p: (len(p), p))


def missing_camera_message(device: str, present: Sequence[str]) -> str:
    if present:
        return f"camera {device} not found; cameras here: {', '.join(present)} (pass one with --camera)"
    return f"camera {device} not found and no /dev/video* exists: plug a camera in, check `v4l2-ctl --list-devices`, or use --input test://"


def _split_top(text: str, sep: str) -> List[str]:
    """Split on ``sep`` outside {}, [] and ()."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _field(structure: str, name: str) -> Optional[str]:
    for item in _split_top(structure, ",")[1:]:
        key, _, value = item.partition("=")
        if key.strip() == name:
            return re.sub(r"^\([a-z]+\)", "", value.strip())
    return None


def _ints(value: Optional[str], wanted: int) -> List[int]:
    """An int field: a number, a {list} or a [min, max(, step)] range (clamped to ``wanted``)."""
    if value is None:
        return []
    numbers = [int(n) for n in re.findall(r"\d+", value)]
    if value.startswith("["):
        lo, hi = numbers[0], numbers[1]
        return [min(max(wanted, lo), hi)]
    return numbers


def _fractions(value: Optional[str], wanted: Fraction) -> List[Fraction]:
    if value is None:
        return []
    rates = [Fraction(int(n), int(d)) for n, d in re.findall(r"(\d+)/(\d+)", value)]
    if value.startswith("["):
        return [min(max(wanted, rates[0]), rates[1])]
    return [r for r in rates if r > 0]


def parse_modes(caps_text: str, width: int = 640, height: int = 480, fps: float = 30.0) -> List[CameraMode]:
    """Raw and MJPEG modes in a camera's caps text; ranges are resolved towards the request."""
    wanted = Fraction(fps).limit_denominator(1001)
    modes: List[CameraMode] = []
    for structure in _split_top(caps_text, ";"):
        media = structure.split(",", 1)[0].strip()
        if media not in (RAW, MJPEG):
            continue
        formats = [None] if media == MJPEG else re.findall(r"[A-Za-z0-9_]+", _field(structure, "format") or "") or [None]
        for fmt in formats:
            for w in _ints(_field(structure, "width"), width):
                for h in _ints(_field(structure, "height"), height):
                    for rate in _fractions(_field(structure, "framerate"), wanted):
                        modes.append(CameraMode(media, fmt, w, h, rate))
    return modes


def _cost(mode: CameraMode, width: int, height: int, fps: float) -> Tuple[float, float, float, int]:
    short_of_fps = max(0.0, fps - float(mode.fps)) / fps
    size_error = abs(math.log(mode.width * mode.height / (width * height)))
    return (round(short_of_fps, 3), round(size_error, 3), abs(float(mode.fps) - fps), mode.media == MJPEG)


def pick_mode(modes: Sequence[CameraMode], width: int, height: int, fps: float) -> CameraMode:
    """The mode nearest ``width`` x ``height`` at ``fps``: frame rate first, then size, raw over MJPEG."""
    if not modes:
        raise SourceError("the camera offers no raw or MJPEG mode; destseg-runtime reads those two (check v4l2-ctl --list-formats-ext)")
    return min(modes, key=lambda m: _cost(m, width, height, fps))


def query_caps(device: str) -> str:
    """The caps text a V4L2 device offers (opens it briefly)."""
    from destseg.runtime.gst import gst

    Gst = gst()
    src = Gst.ElementFactory.make("v4l2src")
    if src is None:
        raise SourceError("the v4l2src element is missing; install gstreamer1.0-plugins-good")
    src.set_property("device", device)
    try:
        if src.set_state(Gst.State.READY) == Gst.StateChangeReturn.FAILURE:
            raise SourceError(f"cannot open camera {device}: busy or not a capture device (check `v4l2-ctl -d {device} --all`)")
        return src.get_static_pad("src").query_caps(None).to_string()
    finally:
        src.set_state(Gst.State.NULL)


def camera_mode(device: str, width: int, height: int, fps: float) -> CameraMode:
    """Check the camera exists, then pick its mode nearest the request."""
    if not os.path.exists(device):
        raise SourceError(missing_camera_message(device, video_devices()))
    return pick_mode(parse_modes(query_caps(device), width, height, fps), width, height, fps)
