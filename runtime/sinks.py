"""Every video output, from one URI: the one factory for ``--output`` (and the anomaly folder).

``display`` (autovideosink; nveglglessink on a Jetson), ``FILE.mp4`` / ``FILE.mkv`` (H.264 from
the first encoder that works here: nvv4l2h264enc, x264enc, openh264enc; MPEG-4 or MJPEG where
none does), ``FILE.avi`` (MJPEG) and ``rtp://HOST:PORT`` (H.264 RTP over UDP). Each is an
appsrc-fed pipeline described by a pure function (tested as strings for the Jetson) and
started by ``open_sink`` once the first frame gives the size. Closing sends EOS and waits
for it, which is what makes an MP4 playable (its index is written last).

Frames go in as RGBA: nvvidconv, the Jetson's converter in front of nveglglessink and
nvv4l2h264enc, takes no packed RGB (:data:`destseg.runtime.jetson_caps.ACCEPTS`), and
4-byte pixels need no row padding. An encoder is used only if it encodes a frame here
(:func:`encoder_problem`): Orin Nano registers nvv4l2h264enc but has no NVENC, so the
element fails at start ("Cannot identify device '/dev/v4l2-nvenc'"); the next one is taken
and the reason said.

Files apply back-pressure (every frame is encoded); display and RTP drop frames in a leaky
queue rather than delay the stream.
"""
from __future__ import annotations

import functools
import os
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple

import cv2
import numpy as np

from destseg.images import write_image
from destseg.runtime.errors import SinkError
from destseg.runtime.gst import gst, has_element, parse_pipeline, play_to_end, pop_error, stop, wait_for_eos

CONTAINERS = {".mp4": "mp4", ".mkv": "mkv", ".avi": "avi"}
MUXERS = {"mp4": "mp4mux", "mkv": "matroskamux", "avi": "avimux"}
H264_ENCODERS = ("nvv4l2h264enc", "x264enc", "openh264enc")
# What each container takes when no H.264 encoder is installed.
FALLBACK_ENCODERS = {"mp4": ("avenc_mpeg4",), "mkv": ("jpegenc",), "avi": ("jpegenc",), "rtp": ()}
EOS_TIMEOUT_S = 10.0
FRAME_FORMAT = "RGBA"  # what appsrc pushes (nvvidconv takes RGBA and BGRx, not RGB)
PROBE_TIMEOUT_S = 10.0  # one 64 x 64 frame through an encoder; a hardware encoder opens in well under a second


@dataclass(frozen=True)
class SinkSpec:
    kind: str  # "display" | "file" | "rtp"
    location: str = ""  # file path or RTP host
    container: str = ""  # "mp4" | "mkv" | "avi" | "rtp"
    port: int = 0


def parse_sink(text: str) -> SinkSpec:
    """A SinkSpec for ``display``, ``FILE.mp4|.mkv|.avi`` or ``rtp://HOST:PORT``."""
    if text == "display":
        return SinkSpec("display")
    if text.lower().startswith("rtp://"):
        parsed = urllib.parse.urlparse(text)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise SinkError(f"bad RTP output {text}; write rtp://HOST:PORT, e.g. rtp://192.168.1.10:5000")
        return SinkSpec("rtp", parsed.hostname, "rtp", port)
    path = Path(text)
    container = CONTAINERS.get(path.suffix.lower())
    if container is None or "://" in text:
        raise SinkError(f"unsupported output {text}; use display, FILE.mp4, FILE.mkv, FILE.avi or rtp://HOST:PORT")
    if not path.resolve().parent.is_dir():
        raise SinkError(f"cannot write {text}: folder {path.resolve().parent} does not exist")
    return SinkSpec("file", str(path), container)


@dataclass(frozen=True)
class EncoderChoice:
    """The encoder an output will use, and the ones present that were passed over (with why)."""

    name: str
    passed_over: Tuple[str, ...] = ()

    @property
    def note(self) -> Optional[str]:
        """One line for the log when a preferred encoder is installed but cannot encode here."""
        if not self.passed_over:
            return None
        return f"encoding with {self.name}: {'; '.join(self.passed_over)}"


def encoder_probe(encoder: str) -> str:
    """One RGBA frame, as appsrc pushes it, through the encoder's own chain into fakesink."""
    caps = f"video/x-raw,format={FRAME_FORMAT},width=64,height=64,framerate=30/1"
    return f"videotestsrc num-buffers=1 ! {caps} ! {encoder_chain(encoder, 30.0, 1000)} ! fakesink"


@functools.lru_cache(maxsize=None)
def encoder_problem(encoder: str) -> Optional[str]:
    """None when ``encoder`` encodes a frame here, else why not; probed once per process."""
    return play_to_end(encoder_probe(encoder), PROBE_TIMEOUT_S)


def choose_encoder(container: str, available: Callable[[str], bool],
                   problem: Callable[[str], Optional[str]] = encoder_problem) -> EncoderChoice:
    """The first encoder for a container that is installed and encodes a frame here: H.264
    (hardware first), else the container's fallback. ``problem`` says why one cannot."""
    candidates = (H264_ENCODERS if container != "avi" else ()) + FALLBACK_ENCODERS[container]
    passed_over = []
    for name in candidates:
        if not available(name):
            continue
        why = problem(name)
        if why is None:
            return EncoderChoice(name, tuple(passed_over))
        passed_over.append(f"{name} is installed but cannot encode here ({why})")
    tried = "; ".join(passed_over) or f"none of {', '.join(candidates)} is installed"
    raise SinkError(
        f"no encoder for {container} here ({tried}); install gstreamer1.0-plugins-ugly "
        f"(x264enc) or write .avi (MJPEG)"
    )


def encoder_chain(encoder: str, fps: float, bitrate_kbps: int) -> str:
    """Conversion from the RGBA frames and the encoder, with its low-latency settings."""
    key_interval = max(1, round(fps))
    if encoder == "nvv4l2h264enc":
        return (f"nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
                f"nvv4l2h264enc bitrate={bitrate_kbps * 1000} insert-sps-pps=true idrinterval={key_interval} ! h264parse")
    if encoder == "x264enc":
        return (f"videoconvert ! video/x-raw,format=I420 ! "
                f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={bitrate_kbps} key-int-max={key_interval}")
    if encoder == "openh264enc":
        return f"videoconvert ! video/x-raw,format=I420 ! openh264enc bitrate={bitrate_kbps * 1000}"
    if encoder == "avenc_mpeg4":
        return f"videoconvert ! video/x-raw,format=I420 ! avenc_mpeg4 bitrate={bitrate_kbps * 1000}"
    if encoder == "jpegenc":
        return "videoconvert ! jpegenc quality=85"  # RGB(x) in: libjpeg converts to full-range YCbCr as JFIF expects
    raise SinkError(f"unknown encoder {encoder}")


def _rate(fps: float) -> str:
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def sink_pipeline(spec: SinkSpec, width: int, height: int, fps: float, platform: str,
                  encoder: Optional[str] = None, bitrate_kbps: int = 4000) -> str:
    """The gst-launch description of an output fed RGBA frames by appsrc ``src``."""
    caps = f"video/x-raw,format={FRAME_FORMAT},width={width},height={height},framerate={_rate(fps)}"
    file = spec.kind == "file"
    frame_bytes = width * height * 4
    # Files block the stream when the encoder lags (every frame is kept); live outputs leak.
    src = (f'appsrc name=src format=time is-live=false caps="{caps}" '
           + (f"block=true max-bytes={4 * frame_bytes}" if file else "block=false"))
    leaky = "queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0"
    if spec.kind == "display":
        if platform == "jetson":
            return f"{src} ! {leaky} ! nvvidconv ! video/x-raw(memory:NVMM) ! nveglglessink sync=false"
        return f"{src} ! {leaky} ! videoconvert ! autovideosink sync=false"
    if encoder is None:
        raise SinkError(f"no encoder given for {spec.kind} output")
    chain = encoder_chain(encoder, fps, bitrate_kbps)
    if spec.kind == "rtp":
        return (f"{src} ! {leaky} ! {chain} ! rtph264pay config-interval=1 pt=96 ! "
                f"udpsink host={spec.location} port={spec.port} sync=false async=false")
    location = '"' + spec.location.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{src} ! {chain} ! {MUXERS[spec.container]} ! filesink location={location}"


def check_sink(spec: SinkSpec, platform: str, available: Callable[[str], bool],
               environ: Mapping[str, str] = os.environ,
               problem: Callable[[str], Optional[str]] = encoder_problem) -> Optional[EncoderChoice]:
    """Before anything starts: the encoder this output will use (None for display), or a SinkError.

    Without a display server autovideosink quietly renders nowhere, so that is an error here.
    """
    if spec.kind == "display":
        if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
            raise SinkError("no display here ($DISPLAY and $WAYLAND_DISPLAY are unset; export DISPLAY=:0 for the "
                            "attached screen); or use --headless, --output FILE.mp4 or rtp://HOST:PORT")
        needed = "nveglglessink" if platform == "jetson" else "autovideosink"
        if not available(needed):
            raise SinkError(f"no {needed} element for --output display; use --headless or an output file")
        return None
    return choose_encoder(spec.container, available, problem)


def rgba_bytes(rgb: np.ndarray) -> bytes:
    """An H x W x 3 RGB frame as the RGBA bytes appsrc pushes (4-byte pixels: no row padding)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2RGBA).tobytes()


class VideoSink:
    """A running output pipeline that takes RGB frames with timestamps (pushed as RGBA)."""

    def __init__(self, text: str, width: int, height: int, fps: float, platform: str,
                 encoder: Optional[str], bitrate_kbps: int = 4000) -> None:
        Gst = gst()
        self.spec = parse_sink(text)
        self.name = text
        self._size = (width, height)
        self._duration = int(1e9 / fps)
        self._last_pts = -1
        self._pipeline = parse_pipeline(sink_pipeline(self.spec, width, height, fps, platform, encoder, bitrate_kbps),
                                        SinkError, f"output {text}")
        self._src = self._pipeline.get_by_name("src")
        if self._pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            stop(self._pipeline)
            raise SinkError(f"cannot start output {text}; for display check $DISPLAY, for files the path")

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) the output encodes: the overlay is drawn at this size."""
        return self._size

    def write(self, rgb: np.ndarray, timestamp_s: float) -> None:
        """Queue one frame; timestamps are made strictly increasing (a reconnect restarts the source's)."""
        Gst = gst()
        width, height = self._size
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        pts = max(int(timestamp_s * 1e9), self._last_pts + 1)
        self._last_pts = pts
        buffer = Gst.Buffer.new_wrapped(rgba_bytes(rgb))
        buffer.pts = pts
        buffer.duration = self._duration
        result = self._src.emit("push-buffer", buffer)
        if result != Gst.FlowReturn.OK:
            raise SinkError(f"output {self.name} stopped: {pop_error(self._pipeline) or result.value_nick}")

    def close(self) -> Optional[str]:
        """Send EOS, wait until the file is finalised, stop; returns an error text or None."""
        try:
            self._src.emit("end-of-stream")
            return wait_for_eos(self._pipeline, EOS_TIMEOUT_S)
        finally:
            stop(self._pipeline)


def open_sink(text: str, width: int, height: int, fps: float, platform: str, bitrate_kbps: int = 4000) -> VideoSink:
    """Start the output named by ``text`` for frames of ``width`` x ``height`` at ``fps``."""
    choice = check_sink(parse_sink(text), platform, has_element)
    return VideoSink(text, width, height, fps, platform, choice.name if choice else None, bitrate_kbps)


class AnomalyFolder:
    """``--save-anomalies DIR``: every NG frame as RUN_NNNNNN_frame.png and its overlay as RUN_NNNNNN_heatmap.jpg.

    RUN is this run's id (start time in UTC and a random tag), so a second run into the same
    folder never overwrites the first run's evidence.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create {folder} for --save-anomalies: {exc.strerror}") from exc

    def save(self, index: int, rgb: np.ndarray, heatmap: np.ndarray) -> None:
        write_image(self.folder / f"{self.run_id}_{index:06d}_frame.png", rgb)
        write_image(self.folder / f"{self.run_id}_{index:06d}_heatmap.jpg", heatmap)
