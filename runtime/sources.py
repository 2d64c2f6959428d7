"""Every input, from one URI: the one factory that turns ``--camera``/``--input`` into frames.

``parse_source`` reads the URI (and rejects a bad one before anything starts);
``source_pipeline`` builds the GStreamer description (a pure function, so the Jetson strings
are tested on machines without Jetson elements); ``open_source`` starts it. Every pipeline
ends the same way (:func:`split_tail`): a queue named ``decoded`` right after the source, then
conversion and scaling to the model's S x S RGB in GStreamer (videoconvert and videoscale, or
nvvidconv on a Jetson) into appsink ``model``; when something shows or keeps the picture, a
``tee`` also carries the full-resolution RGB frame into appsink ``frame``, and the frame reader
pairs the two by buffer timestamp.

Live sources (cameras, RTSP, ``test://``) keep only the newest frame (leaky queue, appsinks with
drop=true, sync=false) so latency stays bounded; files deliver every frame (the appsinks block
the decoder, two frames ahead) unless ``realtime``, which plays them at their frame rate and
drops like a camera.
"""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, Optional

from destseg.images import list_images
from destseg.runtime.cameras import CameraMode, camera_mode, missing_camera_message, video_devices
from destseg.runtime.errors import SourceError
from destseg.runtime.frames import FrameReader, GstFrameReader, ImageFolderReader
from destseg.runtime.gst import converter_threads
from destseg.runtime.jetson_caps import accepts

# videotestsrc's patterns (GStreamer 1.16 to 1.24).
TEST_PATTERNS = (
    "smpte", "snow", "black", "white", "red", "green", "blue", "checkers-1", "checkers-2", "checkers-4",
    "checkers-8", "circular", "blink", "smpte75", "zone-plate", "gamut", "chroma-zone-plate", "solid-color",
    "ball", "smpte100", "bar", "pinwheel", "spokes", "gradient", "colors", "smpte-rp-219",
)
# test://?format=: raw formats a camera or a decoder hands over, so a test pattern can cost the
# colour conversion a real source does (videotestsrc draws RGB directly otherwise).
TEST_FORMATS = ("RGB", "RGBA", "BGRx", "I420", "NV12", "YUY2", "UYVY", "GRAY8")
# nvvidconv's "Nicest" interpolation: closest on the Jetson to the area resize of calibration.
JETSON_INTERPOLATION = 5
# MJPEG to raw frames. NVIDIA's decoder needs jpegparse in front of it to get whole JPEG frames
# with their caps (DeepStream's Gst-nvvideo4linux2 guide: "you must use the open source
# jpegparse plugin before the decoder"; jpegparse is in gstreamer1.0-plugins-bad).
MJPEG_DECODERS = {"jetson": "jpegparse ! nvv4l2decoder mjpeg=1", "generic": "jpegdec"}


@dataclass(frozen=True)
class SourceSpec:
    """What a source URI names, before anything is opened."""

    kind: str  # "v4l2" | "csi" | "rtsp" | "uri" (files, http) | "folder" | "test"
    location: str  # device path, sensor id, URI, folder, or test pattern
    live: bool
    options: Dict[str, str] = field(default_factory=dict)  # test:// query (live, frames, format)


def _test_spec(parsed: urllib.parse.ParseResult, text: str) -> SourceSpec:
    pattern = parsed.netloc or parsed.path.strip("/") or "smpte"
    if pattern not in TEST_PATTERNS:
        raise SourceError(f"unknown test pattern {pattern!r} in {text}; choose one of {', '.join(TEST_PATTERNS)}")
    options = dict(urllib.parse.parse_qsl(parsed.query))
    unknown = sorted(set(options) - {"live", "frames", "format"})
    if unknown:
        raise SourceError(f"unknown option {unknown[0]!r} in {text}; test:// takes live=0|1, frames=N and format=FORMAT")
    if options.get("live", "1") not in ("0", "1") or not options.get("frames", "1").isdigit():
        raise SourceError(f"bad options in {text}; use test://PATTERN?live=0|1&frames=N")
    if options.get("format", "RGB") not in TEST_FORMATS:
        raise SourceError(f"unknown format {options['format']!r} in {text}; choose one of {', '.join(TEST_FORMATS)}")
    return SourceSpec("test", pattern, options.get("live", "1") == "1", options)


def parse_source(text: str) -> SourceSpec:
    """A SourceSpec for a camera device, csi://N, rtsp://, file/http(s) URI, path, folder or test://."""
    if not text:
        raise SourceError("empty source; pass --camera /dev/video0|csi://0 or --input FILE|URI|FOLDER|test://")
    if text.startswith("/dev/"):
        return SourceSpec("v4l2", text, True)
    parsed = urllib.parse.urlparse(text)
    scheme = parsed.scheme.lower()
    if scheme == "v4l2":
        device = parsed.path or parsed.netloc
        if not device.startswith("/dev/"):
            raise SourceError(f"bad camera URI {text}; write v4l2:///dev/video0")
        return SourceSpec("v4l2", device, True)
    if scheme == "csi":
        if not parsed.netloc.isdigit():
            raise SourceError(f"bad CSI URI {text}; write csi://0 (the sensor id)")
        return SourceSpec("csi", parsed.netloc, True)
    if scheme in ("rtsp", "rtsps"):
        if not parsed.netloc:
            raise SourceError(f"bad RTSP URI {text}; write rtsp://HOST[:PORT]/PATH")
        return SourceSpec("rtsp", text, True)
    if scheme == "test":
        return _test_spec(parsed, text)
    if scheme in ("http", "https"):
        if not parsed.netloc:
            raise SourceError(f"bad URI {text}; write {scheme}://HOST/PATH")
        return SourceSpec("uri", text, False)
    if scheme == "file":
        return _path_spec(Path(urllib.parse.unquote(parsed.path)), text)
    if "://" in text:
        raise SourceError(
            f"unsupported source {text}; use /dev/videoN, v4l2://, csi://N, rtsp://, file://, http(s)://, "
            f"a video file, a folder of images or test://"
        )
    return _path_spec(Path(text), text)


def check_source(text: str) -> SourceSpec:
    """parse_source, plus what can be checked on this machine before anything starts: the camera node exists."""
    spec = parse_source(text)
    if spec.kind == "v4l2" and not os.path.exists(spec.location):
        raise SourceError(missing_camera_message(spec.location, video_devices()))
    return spec


def _path_spec(path: Path, text: str) -> SourceSpec:
    if path.is_dir():
        if not list_images(path):
            raise SourceError(f"folder {path} holds no images (.png, .jpg, ...); point --input at images or a video")
        return SourceSpec("folder", str(path), False)
    if not path.is_file():
        raise SourceError(f"input {text} does not exist; pass a video file, a folder of images or a URI")
    return SourceSpec("uri", path.resolve().as_uri(), False)


def _quote(value: str) -> str:
    """A property value for gst-launch syntax (quotes and backslashes escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rate(fps: float) -> str:
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def source_head(
    spec: SourceSpec,
    platform: str,
    width: int,
    height: int,
    fps: float,
    mode: Optional[CameraMode] = None,
    latency_ms: int = 100,
) -> str:
    """The part of the pipeline up to decoded frames (before conversion and scaling)."""
    jetson = platform == "jetson"
    if spec.kind == "test":
        frames = f" num-buffers={spec.options['frames']}" if "frames" in spec.options else ""
        live = "true" if spec.live else "false"
        fmt = f",format={spec.options['format']}" if "format" in spec.options else ""
        return (f"videotestsrc pattern={spec.location} is-live={live}{frames} ! "
                f"video/x-raw{fmt},width={width},height={height},framerate={_rate(fps)}")
    if spec.kind == "v4l2":
        if mode is None:
            raise SourceError(f"no mode chosen for camera {spec.location}")
        head = f"v4l2src device={_quote(spec.location)} ! {mode.caps()}"
        if mode.format is None:  # MJPEG
            head += f" ! {MJPEG_DECODERS['jetson' if jetson else 'generic']}"
        elif jetson and not accepts("nvvidconv", mode.format):
            head += " ! videoconvert"  # a raw format nvvidconv cannot take (RGB, BGR, GRAY16_LE, ...)
        return head
    if spec.kind == "csi":
        if not jetson:
            raise SourceError(
                f"csi://{spec.location} needs a Jetson (nvarguscamerasrc); on one pass --platform jetson, "
                f"elsewhere use a /dev/video* camera"
            )
        return (f"nvarguscamerasrc sensor-id={spec.location} ! "
                f"video/x-raw(memory:NVMM),width={width},height={height},framerate={_rate(fps)},format=NV12")
    if spec.kind == "rtsp":
        return f"rtspsrc location={_quote(spec.location)} latency={latency_ms} drop-on-latency=true ! decodebin"
    if spec.kind == "uri":
        return f"uridecodebin uri={_quote(spec.location)}"
    raise SourceError(f"{spec.kind} sources are not read through GStreamer")


def appsink(name: str, live: bool, realtime: bool = False, max_buffers: int = 1) -> str:
    """An appsink that keeps the newest frames (live, realtime) or blocks until pulled (files)."""
    drop = live or realtime
    return (f"appsink name={name} sync={'true' if realtime else 'false'} drop={'true' if drop else 'false'} "
            f"max-buffers={max_buffers} enable-last-sample=false")


def _threads(threads: Optional[int]) -> str:
    """``n-threads=N`` for videoconvert/videoscale (GStreamer 1.20+); nothing where ``threads`` is None."""
    return f" n-threads={threads}" if threads is not None else ""


def convert_chain(threads: Optional[int] = None) -> str:
    """Generic platforms: any raw format to full-resolution packed RGB (videoconvert slices it over ``threads``)."""
    return f"videoconvert{_threads(threads)} ! video/x-raw,format=RGB"


def scale_chain(size: int, platform: str, threads: Optional[int] = None) -> str:
    """The scaler to the model's S x S. Generic: RGB in, Lanczos, GStreamer's closest match to the
    area resize of calibration (mean |difference| 0.45 of 255 at 1280x960 -> 256, bilinear 2.8).
    Jetson: nvvidconv's Nicest interpolation, into RGBA."""
    if platform == "jetson":
        return (f"nvvidconv interpolation-method={JETSON_INTERPOLATION} ! "
                f"video/x-raw,format=RGBA,width={size},height={size}")
    return (f"videoscale method=lanczos add-borders=false{_threads(threads)} ! "
            f"video/x-raw,width={size},height={size}")


def split_tail(size: int, platform: str, live: bool, realtime: bool = False, full_frame: bool = True,
               threads: Optional[int] = None) -> str:
    """Decoded frames to appsink ``model`` (S x S RGB(A)) and, with ``full_frame``, appsink ``frame``
    (full-resolution RGB(A), for the display, recordings, the dashboard and saved anomalies).

    The model's appsink holds two frames for files (the next one is converted and scaled while
    this one is inferred, and none is lost) and the newest one for live sources. On generic
    platforms a queue in front of the conversion, named ``decoded`` (the reader reads the frame
    size off its caps), gives conversion and scaling their own thread, overlapping the source's
    decoding or generation; live, it leaks old frames so a slow conversion adds no latency.
    With ``full_frame``, a tee splits the frame into a queue per branch, so both sinks preroll
    (without them the first sink would block the tee's only thread); the frame sink keeps two
    frames so the partner of a frame of the slower, scaled branch is still there when the
    reader pairs them. Without it there is no tee and nothing is copied at full resolution.
    """
    leaky = live or realtime
    model_sink = appsink("model", live, realtime, 1 if leaky else 2)
    queue = "queue max-size-buffers=2 max-size-bytes=0 max-size-time=0"
    front = f"{queue} name=decoded{' leaky=downstream' if leaky else ''}"
    scale = scale_chain(size, platform, threads)
    if platform == "jetson":
        if not full_frame:
            return f"{front} ! {scale} ! {model_sink}"
        return (f"{front} ! tee name=t "
                f"t. ! {queue} ! nvvidconv ! video/x-raw,format=RGBA ! {appsink('frame', live, realtime, 2)} "
                f"t. ! {queue} ! {scale} ! {model_sink}")
    if not full_frame:
        return f"{front} ! {convert_chain(threads)} ! {scale} ! {model_sink}"
    return (f"{front} ! {convert_chain(threads)} ! tee name=t "
            f"t. ! {queue} ! {appsink('frame', live, realtime, 2)} "
            f"t. ! {queue} ! {scale} ! {model_sink}")


def source_pipeline(
    spec: SourceSpec,
    size: int,
    platform: str,
    width: int = 640,
    height: int = 480,
    fps: float = 30.0,
    mode: Optional[CameraMode] = None,
    realtime: bool = False,
    latency_ms: int = 100,
    full_frame: bool = True,
    threads: Optional[int] = None,
) -> str:
    """The whole gst-launch description of a source, from the device to the appsinks."""
    head = source_head(spec, platform, width, height, fps, mode, latency_ms)
    return f"{head} ! {split_tail(size, platform, spec.live, realtime and not spec.live, full_frame, threads)}"


def open_source(
    text: str,
    size: int,
    platform: str = "generic",
    width: int = 640,
    height: int = 480,
    fps: float = 30.0,
    realtime: bool = False,
    latency_ms: int = 100,
    full_frame: bool = True,
    inference_threads: Optional[int] = None,
) -> FrameReader:
    """Open any source by URI and return its frame reader (started).

    ``full_frame``: deliver the full-resolution picture too (the display, recordings, the
    dashboard and saved anomalies need it; verdicts alone do not). ``inference_threads``: the
    CPU threads the backend takes (None: its default, all cores), so the converters take the rest.
    """
    spec = parse_source(text)
    if spec.kind == "folder":
        return ImageFolderReader(Path(spec.location), size, fps)
    mode = camera_mode(spec.location, width, height, fps) if spec.kind == "v4l2" else None
    threads = converter_threads(inference_threads) if platform != "jetson" else None
    description = source_pipeline(spec, size, platform, width, height, fps, mode, realtime, latency_ms, full_frame, threads)
    return GstFrameReader(description, live=spec.live or realtime, count_drops=spec.live or realtime,
                          name=text, nominal_fps=fps)
