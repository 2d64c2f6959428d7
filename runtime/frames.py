"""Frames out of a running source: the model's S x S input, with the full-resolution picture when asked.

``GstFrameReader`` pulls from the appsinks that ``sources.py`` puts at the end of every
pipeline and, with a full-resolution branch, pairs the two by buffer timestamp (a live source
may drop a frame on one branch and not the other); without one, the frame's size comes from
the caps of the pipeline's ``decoded`` queue. ``ImageFolderReader`` reads a folder of still
images, where GStreamer adds nothing: it decodes with :func:`destseg.images.read_rgb` and scales with
:func:`destseg.preprocess.frame_to_input`, the function GStreamer's scaler is matched to.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Tuple

import numpy as np

from destseg.images import ImageError, list_images, read_rgb
from destseg.preprocess import frame_to_input
from destseg.runtime.errors import SourceError
from destseg.runtime.gst import gst, parse_pipeline, pop_error, stop

# How long the full-resolution partner of a model frame may lag behind it.
PAIR_TIMEOUT_S = 2.0


class SourceEnded(Exception):
    """The source reached its end (end of file; for a live source, the camera went away)."""


class SourceLost(Exception):
    """The source failed while running (camera unplugged, network gone, decoder error)."""


@dataclass(frozen=True)
class Frame:
    rgb: Optional[np.ndarray]  # H x W x 3 uint8, full resolution; None when the reader was not asked for it
    model_rgb: np.ndarray  # S x S x 3 uint8, the model's input
    pts_s: Optional[float]  # buffer timestamp in the stream, seconds
    captured_at: float  # wall-clock (epoch) seconds the frame was captured
    capture_ms: float  # live: buffer timestamp to appsink; files: waiting for the decoder
    name: Optional[str] = None  # file name, for image folders
    convert_ms: float = 0.0  # copying the samples into numpy (the profile's preprocess)
    size: Tuple[int, int] = (0, 0)  # (height, width) of the full-resolution frame, known also without ``rgb``

    def __post_init__(self) -> None:
        if self.size == (0, 0) and self.rgb is not None:
            object.__setattr__(self, "size", tuple(self.rgb.shape[:2]))


class FrameReader(Protocol):
    live: bool
    fps: float  # the stream's frame rate (the nominal one where the stream has none)

    def read(self, timeout_s: float) -> Optional[Frame]:
        """The next frame, or None if none came within ``timeout_s``; raises SourceEnded/SourceLost."""

    def dropped(self) -> int:
        """Frames decoded but never delivered (live sources keep only the newest)."""

    def close(self) -> None:
        ...


def sample_rgb(sample: Any) -> np.ndarray:
    """An appsink sample (RGB or RGBA, rows padded to 4 bytes) as H x W x 3 uint8."""
    structure = sample.get_caps().get_structure(0)
    width, height = structure.get_value("width"), structure.get_value("height")
    channels = 4 if structure.get_value("format") in ("RGBA", "RGBx") else 3
    buffer = sample.get_buffer()
    data = np.frombuffer(buffer.extract_dup(0, buffer.get_size()), dtype=np.uint8)
    rows = data.reshape(height, data.size // height)[:, : width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(rows[:, :, :3])


def caps_size(caps: Any) -> Tuple[int, int]:
    """(height, width) of video caps."""
    structure = caps.get_structure(0)
    return structure.get_value("height"), structure.get_value("width")


class GstFrameReader:
    """A started GStreamer source pipeline ending in appsink ``model`` (and ``frame``, if it has one)."""

    def __init__(self, description: str, live: bool, count_drops: bool, name: str, nominal_fps: float) -> None:
        Gst = gst()
        self.live = live
        self.fps = nominal_fps
        self.description = description
        self._decoded = 0
        self._delivered = 0
        self._count_drops = count_drops
        self._pipeline = parse_pipeline(description, SourceError, f"source {name}")
        self._model = self._pipeline.get_by_name("model")
        self._frame = self._pipeline.get_by_name("frame")  # None: no full-resolution branch
        self._decoded_pad = self._pipeline.get_by_name("decoded").get_static_pad("sink")
        if count_drops:
            self._decoded_pad.add_probe(Gst.PadProbeType.BUFFER, self._count_decoded)
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            error = pop_error(self._pipeline) or "the pipeline refused to start"
            stop(self._pipeline)
            raise SourceError(f"cannot open source {name}: {error}")

    def _count_decoded(self, pad: Any, info: Any) -> Any:
        self._decoded += 1
        return gst().PadProbeReturn.OK

    def _pull(self, sink: Any, timeout_s: float) -> Optional[Any]:
        sample = sink.emit("try-pull-sample", int(timeout_s * 1e9))
        if sample is not None:
            return sample
        error = pop_error(self._pipeline)
        if error:
            raise SourceLost(error)
        if sink.get_property("eos"):
            raise SourceEnded()
        return None

    def _must_pull(self, sink: Any, branch: str) -> Any:
        sample = self._pull(sink, PAIR_TIMEOUT_S)
        if sample is None:
            raise SourceLost(f"the {branch} branch delivered nothing for {PAIR_TIMEOUT_S:.0f} s")
        return sample

    def _pair(self, model: Any) -> Any:
        """The full-resolution sample with ``model``'s timestamp (older samples on either side are skipped)."""
        if self._frame is None:
            return model, None
        none = gst().CLOCK_TIME_NONE
        frame = self._must_pull(self._frame, "full-resolution")
        while True:
            model_pts, frame_pts = model.get_buffer().pts, frame.get_buffer().pts
            if model_pts == frame_pts or none in (model_pts, frame_pts):
                return model, frame
            if model_pts < frame_pts:
                model = self._must_pull(self._model, "scaled")
            else:
                frame = self._must_pull(self._frame, "full-resolution")

    def read(self, timeout_s: float) -> Optional[Frame]:
        start = time.perf_counter()
        model = self._pull(self._model, timeout_s)
        if model is None:
            return None
        waited_ms = (time.perf_counter() - start) * 1e3
        model, frame = self._pair(model)
        self._delivered += 1
        if self._delivered == 1:
            self._read_fps(model)
        pts = model.get_buffer().pts
        valid = pts != gst().CLOCK_TIME_NONE
        capture_ms = waited_ms
        clock = self._pipeline.get_clock()
        if self.live and valid and clock is not None:
            capture_ms = max(0.0, (clock.get_time() - self._pipeline.get_base_time() - pts) / 1e6)
        converting = time.perf_counter()
        rgb = sample_rgb(frame) if frame is not None else None
        model_rgb = sample_rgb(model)
        size = rgb.shape[:2] if rgb is not None else caps_size(self._decoded_pad.get_current_caps())
        return Frame(
            rgb=rgb,
            model_rgb=model_rgb,
            pts_s=pts / 1e9 if valid else None,
            captured_at=time.time() - capture_ms / 1e3,
            capture_ms=capture_ms,
            convert_ms=(time.perf_counter() - converting) * 1e3,
            size=tuple(size),
        )

    def _read_fps(self, sample: Any) -> None:
        ok, num, den = sample.get_caps().get_structure(0).get_fraction("framerate")
        if ok and num > 0 and den > 0:
            self.fps = num / den

    def dropped(self) -> int:
        return max(0, self._decoded - self._delivered) if self._count_drops else 0

    def close(self) -> None:
        stop(self._pipeline)


class ImageFolderReader:
    """Still images in name order, each one frame; unreadable files are skipped with a warning."""

    live = False

    def __init__(self, folder: Path, size: int, fps: float) -> None:
        self.fps = fps
        self._paths = list_images(folder)
        self._size = size
        self._next = 0

    def read(self, timeout_s: float) -> Optional[Frame]:
        while self._next < len(self._paths):
            path = self._paths[self._next]
            start = time.perf_counter()
            self._next += 1
            try:
                rgb = read_rgb(path)
            except ImageError as exc:
                warnings.warn(f"skipping {exc}", stacklevel=2)
                continue
            model_rgb = frame_to_input(rgb, self._size)
            capture_ms = (time.perf_counter() - start) * 1e3
            return Frame(rgb, model_rgb, (self._next - 1) / self.fps, time.time(), capture_ms, path.name)
        raise SourceEnded()

    def dropped(self) -> int:
        return 0

    def close(self) -> None:
        self._next = len(self._paths)
