"""Source and sink URIs, the GStreamer pipeline strings built from them, camera modes and backoff.

Jetson elements and cameras do not exist here, so their pipelines are checked as strings;
every generic string is also handed to Gst.parse_launch, which proves it is valid syntax
made of elements that exist (parsing opens no device).
"""
from __future__ import annotations

import subprocess
import sys
import threading
from fractions import Fraction

import numpy as np
import pytest

from destseg.images import write_image
from destseg.runtime.cameras import MJPEG, RAW, CameraMode, missing_camera_message, parse_modes, pick_mode
from destseg.runtime.errors import SinkError, SourceError
from destseg.runtime.frames import SourceEnded
from destseg.runtime.reconnect import backoff_delay, reopen
from destseg.runtime.gst import converter_threads, play_to_end
from destseg.runtime.sinks import (EncoderChoice, check_sink, choose_encoder, encoder_problem, parse_sink,
                                     rgba_bytes, sink_pipeline)
from destseg.runtime.sources import open_source, parse_source, source_pipeline

# What a USB 2 webcam (Logitech C920 class) reports: raw YUY2 is slow at high resolutions, MJPEG is not.
C920_CAPS = (
    "video/x-raw, format=(string)YUY2, width=(int)1920, height=(int)1080, pixel-aspect-ratio=(fraction)1/1, "
    "framerate=(fraction)5/1; "
    "video/x-raw, format=(string)YUY2, width=(int)640, height=(int)480, pixel-aspect-ratio=(fraction)1/1, "
    "framerate=(fraction){ 30/1, 24/1, 15/1 }; "
    "image/jpeg, width=(int)1920, height=(int)1080, pixel-aspect-ratio=(fraction)1/1, framerate=(fraction){ 30/1, 15/1 }; "
    "image/jpeg, width=(int)640, height=(int)480, pixel-aspect-ratio=(fraction)1/1, framerate=(fraction){ 30/1, 15/1 }; "
    "video/x-h264, stream-format=(string)byte-stream, width=(int)1920, height=(int)1080, framerate=(fraction)30/1"
)
MJPEG_1080 = CameraMode(MJPEG, None, 1920, 1080, Fraction(30))
YUY2_480 = CameraMode(RAW, "YUY2", 640, 480, Fraction(30))


def parses(description: str) -> bool:
    from destseg.runtime.gst import gst

    pipeline = gst().parse_launch(description)
    return pipeline.get_by_name("model") is not None or pipeline.get_by_name("src") is not None


# --- source URIs ---------------------------------------------------------------------------

def test_source_uris_name_their_kind(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded here")
    write_image(tmp_path / "a.png", __import__("numpy").zeros((8, 8, 3), "uint8"))
    cases = {
        "/dev/video0": ("v4l2", "/dev/video0", True),
        "v4l2:///dev/video2": ("v4l2", "/dev/video2", True),
        "csi://1": ("csi", "1", True),
        "rtsp://cam.local:8554/line1": ("rtsp", "rtsp://cam.local:8554/line1", True),
        "https://example.com/line.mp4": ("uri", "https://example.com/line.mp4", False),
        str(video): ("uri", video.resolve().as_uri(), False),
        video.resolve().as_uri(): ("uri", video.resolve().as_uri(), False),
        str(tmp_path): ("folder", str(tmp_path), False),
        "test://": ("test", "smpte", True),
        "test://ball?live=0&frames=5": ("test", "ball", False),
    }
    for text, expected in cases.items():
        spec = parse_source(text)
        assert (spec.kind, spec.location, spec.live) == expected, text


@pytest.mark.parametrize("text, message", [
    ("ftp://host/video.mp4", "unsupported source ftp://host/video.mp4"),
    ("test://plaid", "unknown test pattern 'plaid'"),
    ("test://ball?speed=2", "unknown option 'speed'"),
    ("csi://left", "write csi://0"),
    ("v4l2://video0", "write v4l2:///dev/video0"),
    ("rtsp://", "write rtsp://HOST"),
    ("no/such/clip.mp4", "input no/such/clip.mp4 does not exist"),
])
def test_bad_source_uris_are_refused_with_what_to_write(text, message):
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_source(text)


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(SourceError, match="holds no images"):
        parse_source(str(tmp_path))


# --- source pipelines ------------------------------------------------------------------------

def test_v4l2_raw_camera_pipeline_converts_scales_and_keeps_the_newest_frame():
    text = source_pipeline(parse_source("/dev/video0"), 256, "generic", mode=YUY2_480)
    assert text.startswith('v4l2src device="/dev/video0" ! video/x-raw,format=YUY2,width=640,height=480,framerate=30/1 ! '
                           "queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 name=decoded leaky=downstream ! "
                           "videoconvert ! video/x-raw,format=RGB ! tee name=t ")
    assert "videoscale method=lanczos add-borders=false ! video/x-raw,width=256,height=256 ! appsink name=model" in text
    assert "appsink name=model sync=false drop=true max-buffers=1" in text
    assert "appsink name=frame sync=false drop=true" in text
    assert parses(text)


def test_mjpeg_camera_is_decoded_with_jpegdec_or_the_jetson_decoder():
    spec = parse_source("/dev/video1")
    generic = source_pipeline(spec, 256, "generic", mode=MJPEG_1080)
    assert 'v4l2src device="/dev/video1" ! image/jpeg,width=1920,height=1080,framerate=30/1 ! jpegdec ! queue ' in generic
    assert parses(generic)
    jetson = source_pipeline(spec, 256, "jetson", mode=MJPEG_1080)
    assert "image/jpeg,width=1920,height=1080,framerate=30/1 ! jpegparse ! nvv4l2decoder mjpeg=1 ! queue " in jetson
    assert "nvvidconv interpolation-method=5 ! video/x-raw,format=RGBA,width=256,height=256 ! appsink name=model" in jetson
    assert "jpegdec" not in jetson and "videoconvert" not in jetson


def test_csi_camera_uses_nvargus_with_nvmm_on_jetson_only():
    spec = parse_source("csi://0")
    text = source_pipeline(spec, 256, "jetson", width=1920, height=1080, fps=30)
    assert text.startswith("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1920,height=1080,"
                           "framerate=30/1,format=NV12 ! queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 "
                           "name=decoded leaky=downstream ! tee name=t ")
    assert "t. ! queue max-size-buffers=2 max-size-bytes=0 max-size-time=0 ! nvvidconv ! video/x-raw,format=RGBA ! appsink name=frame" in text
    with pytest.raises(SourceError, match="csi://0 needs a Jetson"):
        source_pipeline(spec, 256, "generic")


def test_rtsp_pipeline_is_low_latency_and_live():
    text = source_pipeline(parse_source("rtsp://10.0.0.5:8554/line1"), 256, "generic", latency_ms=50)
    assert text.startswith('rtspsrc location="rtsp://10.0.0.5:8554/line1" latency=50 drop-on-latency=true ! decodebin ! ')
    assert "appsink name=model sync=false drop=true max-buffers=1" in text
    assert parses(text)
    assert "nvvidconv" in source_pipeline(parse_source("rtsp://10.0.0.5/x"), 256, "jetson")


def test_files_deliver_every_frame_unless_realtime(tmp_path):
    video = tmp_path / "clip.mkv"
    video.write_bytes(b"x")
    spec = parse_source(str(video))
    every = source_pipeline(spec, 64, "generic")
    assert every.startswith(f'uridecodebin uri="{video.resolve().as_uri()}" ! ')
    # Two frames wait in the model's sink (the next is converted while this one is inferred); nothing leaks.
    assert "appsink name=model sync=false drop=false max-buffers=2" in every
    assert "leaky" not in every
    realtime = source_pipeline(spec, 64, "generic", realtime=True)
    assert "appsink name=model sync=true drop=true max-buffers=1" in realtime
    assert "name=decoded leaky=downstream" in realtime
    assert parses(every) and parses(realtime)


@pytest.mark.parametrize("uri", ["test://ball?live=0", "test://ball", "/dev/video0"])
def test_without_the_full_frame_only_the_models_input_leaves_gstreamer(uri):
    mode = YUY2_480 if uri.startswith("/dev/") else None
    spec = parse_source(uri)
    generic = source_pipeline(spec, 64, "generic", mode=mode, full_frame=False)
    assert "tee" not in generic and "appsink name=frame" not in generic
    assert generic.endswith("name=decoded" + (" leaky=downstream" if spec.live else "") + " ! videoconvert ! "
                            "video/x-raw,format=RGB ! videoscale method=lanczos add-borders=false ! "
                            "video/x-raw,width=64,height=64 ! appsink name=model sync=false "
                            f"drop={'true' if spec.live else 'false'} max-buffers={1 if spec.live else 2} "
                            "enable-last-sample=false")
    assert parses(generic)
    jetson = source_pipeline(parse_source("csi://0"), 64, "jetson", full_frame=False)
    assert jetson.endswith("name=decoded leaky=downstream ! nvvidconv interpolation-method=5 ! "
                           "video/x-raw,format=RGBA,width=64,height=64 ! appsink name=model sync=false drop=true "
                           "max-buffers=1 enable-last-sample=false")
    assert "tee" not in jetson


def test_converters_are_threaded_where_asked():
    spec = parse_source("test://ball?live=0&format=I420")
    for full_frame in (True, False):
        text = source_pipeline(spec, 64, "generic", full_frame=full_frame, threads=2)
        assert "videoconvert n-threads=2 ! video/x-raw,format=RGB" in text
        assert "videoscale method=lanczos add-borders=false n-threads=2 ! video/x-raw,width=64,height=64" in text
        if converter_threads() is not None:  # GStreamer 1.20+ (Debian 12 has 1.22): the property exists
            assert parses(text)
    assert "n-threads" not in source_pipeline(spec, 64, "generic")
    assert "n-threads" not in source_pipeline(parse_source("csi://0"), 64, "jetson", threads=2)


def test_test_pattern_pipeline_takes_size_rate_length_and_format():
    text = source_pipeline(parse_source("test://ball?frames=9"), 64, "generic", 160, 120, 15)
    assert text.startswith("videotestsrc pattern=ball is-live=true num-buffers=9 ! video/x-raw,width=160,height=120,framerate=15/1 ! ")
    assert parses(text)
    yuv = source_pipeline(parse_source("test://ball?format=YUY2"), 64, "generic", 160, 120, 15)
    assert yuv.startswith("videotestsrc pattern=ball is-live=true ! video/x-raw,format=YUY2,width=160,height=120,framerate=15/1 ! ")
    assert parses(yuv)
    with pytest.raises(SourceError, match="unknown format 'MJPG' in test://ball\\?format=MJPG; choose one of RGB, "):
        parse_source("test://ball?format=MJPG")


def read_all(reader) -> list:
    """Every frame until the source ends (a None is a stalled source: failed here)."""
    frames = []
    try:
        while True:
            frame = reader.read(10.0)
            assert frame is not None, "no frame for 10 s"
            frames.append(frame)
    except SourceEnded:
        return frames
    finally:
        reader.close()


@pytest.mark.parametrize("full_frame", [True, False])
def test_a_file_like_source_delivers_every_frame_in_order(full_frame):
    # I420, as a decoder hands it over: the conversion runs, in its own thread behind the queue.
    reader = open_source("test://ball?live=0&frames=40&format=I420", 32, "generic", 160, 120, 30.0, full_frame=full_frame)
    frames = read_all(reader)
    assert [round(f.pts_s * 30) for f in frames] == list(range(40))
    assert all(f.size == (120, 160) and f.model_rgb.shape == (32, 32, 3) for f in frames)
    assert all((f.rgb is not None) == full_frame for f in frames)
    assert full_frame is False or frames[0].rgb.shape == (120, 160, 3)
    assert reader.dropped() == 0


@pytest.mark.parametrize("full_frame", [True, False])
def test_a_live_source_counts_every_frame_it_did_not_deliver(full_frame):
    reader = open_source("test://ball?live=1&frames=20", 32, "generic", 160, 120, 30.0, full_frame=full_frame)
    frames = read_all(reader)
    assert frames and len(frames) + reader.dropped() == 20
    assert np.all(np.diff([f.pts_s for f in frames]) > 0)


def test_missing_camera_is_one_line_listing_the_cameras_present():
    assert missing_camera_message("/dev/video4", ["/dev/video0", "/dev/video2"]) == (
        "camera /dev/video4 not found; cameras here: /dev/video0, /dev/video2 (pass one with --camera)")
    assert "no /dev/video* exists" in missing_camera_message("/dev/video0", [])
    with pytest.raises(SourceError, match="camera /dev/video77 not found"):
        open_source("/dev/video77", 64)


# --- camera modes ----------------------------------------------------------------------------

def test_camera_modes_are_read_from_caps_text():
    modes = parse_modes(C920_CAPS)
    assert CameraMode(RAW, "YUY2", 1920, 1080, Fraction(5)) in modes
    assert YUY2_480 in modes and CameraMode(RAW, "YUY2", 640, 480, Fraction(24)) in modes
    assert MJPEG_1080 in modes
    assert not any(m.media == "video/x-h264" for m in modes)
    ranged = parse_modes("video/x-raw, format=(string)GRAY8, width=(int)[ 16, 2592 ], height=(int)[ 16, 1944 ], "
                         "framerate=(fraction)[ 1/1, 60/1 ]", 1280, 720, 30)
    assert ranged == [CameraMode(RAW, "GRAY8", 1280, 720, Fraction(30))]


def test_mode_choice_reaches_the_frame_rate_before_the_resolution():
    modes = parse_modes(C920_CAPS)
    assert pick_mode(modes, 1920, 1080, 30) == MJPEG_1080  # raw 1080p is 5 fps
    assert pick_mode(modes, 640, 480, 30) == YUY2_480  # raw beats MJPEG at the same mode
    assert pick_mode(modes, 1280, 720, 30).fps == 30
    assert MJPEG_1080.caps() == "image/jpeg,width=1920,height=1080,framerate=30/1"
    with pytest.raises(SourceError, match="no raw or MJPEG mode"):
        pick_mode([], 640, 480, 30)


# --- sinks -------------------------------------------------------------------------------------

def test_output_uris_name_their_sink(tmp_path):
    assert parse_sink("display").kind == "display"
    rtp = parse_sink("rtp://192.168.1.10:5000")
    assert (rtp.kind, rtp.location, rtp.port) == ("rtp", "192.168.1.10", 5000)
    for suffix, container in ((".mp4", "mp4"), (".MKV", "mkv"), (".avi", "avi")):
        spec = parse_sink(str(tmp_path / f"out{suffix}"))
        assert (spec.kind, spec.container) == ("file", container)
    for bad, message in (("out.webm", "unsupported output"), ("rtp://host", "write rtp://HOST:PORT"),
                         (str(tmp_path / "missing" / "o.mp4"), "does not exist")):
        with pytest.raises(SinkError, match=message):
            parse_sink(bad)


def _works(encoder: str):
    return None


def test_encoder_choice_prefers_hardware_h264_and_falls_back_per_container():
    assert choose_encoder("mp4", lambda e: e in ("nvv4l2h264enc", "x264enc"), _works) == EncoderChoice("nvv4l2h264enc")
    assert choose_encoder("mp4", lambda e: e in ("x264enc", "jpegenc"), _works).name == "x264enc"
    assert choose_encoder("mp4", lambda e: e == "avenc_mpeg4", _works).name == "avenc_mpeg4"
    assert choose_encoder("mkv", lambda e: e == "jpegenc", _works).name == "jpegenc"
    assert choose_encoder("avi", lambda e: True, _works).name == "jpegenc"
    with pytest.raises(SinkError, match="no encoder for rtp"):
        choose_encoder("rtp", lambda e: e == "jpegenc", _works)


def test_a_registered_encoder_that_cannot_start_is_passed_over_and_said_so():
    """Orin Nano: nvv4l2h264enc is registered but there is no NVENC (dusty-nv/jetson-utils#197)."""
    no_nvenc = {"nvv4l2h264enc": "nvv4l2h264enc0: Cannot identify device '/dev/v4l2-nvenc'."}
    choice = choose_encoder("mp4", lambda e: True, no_nvenc.get)
    assert choice.name == "x264enc"
    assert choice.note == ("encoding with x264enc: nvv4l2h264enc is installed but cannot encode here "
                           "(nvv4l2h264enc0: Cannot identify device '/dev/v4l2-nvenc'.)")
    assert choose_encoder("mp4", lambda e: True, _works).note is None
    with pytest.raises(SinkError, match="nvv4l2h264enc is installed but cannot encode here .*install gstreamer1.0-plugins-ugly"):
        choose_encoder("rtp", lambda e: e == "nvv4l2h264enc", no_nvenc.get)


def test_encoders_are_probed_with_real_gstreamer():
    """x264enc encodes a frame here; an element that fails to open its device (what nvv4l2h264enc does without
    NVENC, through the same gst-v4l2 code) is passed over with GStreamer's own message."""
    assert encoder_problem("x264enc") is None
    if not _installed("nvv4l2h264enc"):
        assert encoder_problem("nvv4l2h264enc") is not None
    missing_device = "v4l2src device=/dev/nonexistent-nvenc num-buffers=1 ! fakesink"

    def probe(encoder):
        return play_to_end(missing_device, 5.0) if encoder == "nvv4l2h264enc" else encoder_problem(encoder)

    choice = choose_encoder("mp4", lambda e: e in ("nvv4l2h264enc", "x264enc"), probe)
    assert choice.name == "x264enc"
    assert "nvv4l2h264enc is installed but cannot encode here" in choice.note
    assert "Cannot identify device '/dev/nonexistent-nvenc'" in choice.note
    assert check_sink(parse_sink("rtp://h:5000"), "generic", lambda e: e == "x264enc", {}, probe).name == "x264enc"


def _installed(element: str) -> bool:
    from destseg.runtime.gst import has_element

    return has_element(element)


def test_display_needs_a_display_server():
    display = parse_sink("display")
    assert check_sink(display, "jetson", lambda e: True, {"DISPLAY": ":0"}) is None
    with pytest.raises(SinkError, match="no display here"):
        check_sink(display, "generic", lambda e: True, {})
    with pytest.raises(SinkError, match="no nveglglessink element"):
        check_sink(display, "jetson", lambda e: e != "nveglglessink", {"WAYLAND_DISPLAY": "wayland-0"})
    assert check_sink(parse_sink("rtp://h:5000"), "generic", lambda e: e == "x264enc", {}, _works).name == "x264enc"


def test_sink_pipelines_for_jetson_and_generic(tmp_path):
    mp4 = parse_sink(str(tmp_path / "o.mp4"))
    jetson = sink_pipeline(mp4, 1920, 1080, 30, "jetson", "nvv4l2h264enc")
    assert jetson.startswith('appsrc name=src format=time is-live=false caps="video/x-raw,format=RGBA,width=1920,height=1080,'
                             'framerate=30/1" block=true')
    assert "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc" in jetson
    assert jetson.endswith(f'h264parse ! mp4mux ! filesink location="{tmp_path / "o.mp4"}"')
    display = sink_pipeline(parse_sink("display"), 1920, 1080, 30, "jetson")
    assert "queue leaky=downstream" in display and display.endswith("nvvidconv ! video/x-raw(memory:NVMM) ! nveglglessink sync=false")
    rtp = sink_pipeline(parse_sink("rtp://10.0.0.9:5004"), 640, 480, 30, "generic", "x264enc")
    assert "x264enc tune=zerolatency" in rtp and rtp.endswith("rtph264pay config-interval=1 pt=96 ! udpsink host=10.0.0.9 port=5004 sync=false async=false")
    avi = sink_pipeline(parse_sink(str(tmp_path / "o.avi")), 640, 480, 30, "generic", "jpegenc")
    assert "jpegenc" in avi and "avimux" in avi
    for text in (rtp, avi, sink_pipeline(parse_sink("display"), 64, 48, 30, "generic")):
        assert parses(text)


def test_frames_are_pushed_as_rgba_whatever_the_width():
    import numpy as np

    odd = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)  # 15-byte RGB rows: RGBA needs no padding
    data = np.frombuffer(rgba_bytes(odd[:, :, :]), np.uint8).reshape(2, 5, 4)
    assert (data[:, :, :3] == odd).all() and (data[:, :, 3] == 255).all()


def test_file_outputs_encode_rgba_frames_with_real_gstreamer(tmp_path):
    """RGBA from appsrc through videoconvert into the software encoders, to finalised files (38 x 22:
    RGB rows of 114 bytes, which needed padding when frames went in as RGB)."""
    import numpy as np

    from destseg.runtime.sinks import open_sink

    for name in ("o.avi", "o.mkv"):
        sink = open_sink(str(tmp_path / name), 38, 22, 10.0, "generic")
        for i in range(3):
            sink.write(np.full((22, 38, 3), 40 * i, np.uint8), i / 10.0)
        assert sink.close() is None
        assert (tmp_path / name).stat().st_size > 0


# --- reconnect backoff --------------------------------------------------------------------------

def test_backoff_doubles_up_to_the_cap():
    assert [backoff_delay(a, 0.5, 10.0) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(10_000, 0.5, 10.0) == 10.0


def test_reopen_retries_failed_opens_and_stops_when_asked():
    outcomes = [SourceError("camera /dev/video0 not found"), SourceError("busy"), "reader"]
    messages = []

    def open_camera():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    source, failures = reopen(open_camera, threading.Event(), "unplugged", messages.append, first_s=0.0)
    assert (source, failures) == ("reader", 3)
    assert [m.split(";")[0] for m in messages] == ["source lost (unplugged)", "source lost (camera /dev/video0 not found)",
                                                   "source lost (busy)"]
    stopped = threading.Event()
    stopped.set()
    assert reopen(open_camera, stopped, "gone", messages.append, first_s=0.0) == (None, 0)


# --- imports -------------------------------------------------------------------------------------

def test_the_runtime_does_not_import_torch():
    modules = ["destseg.runtime", "destseg.runtime.cli", "destseg.runtime.sources", "destseg.runtime.sinks",
               "destseg.runtime.profiler", "destseg.runtime.stream", "destseg.runtime.backends",
               "destseg.runtime.backends.onnxruntime"]
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nassert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_runtime_and_the_bench_import_no_other_stage():
    """Stages meet only through files: the runtime (TensorRT backend included) and destseg-bench read the
    bundle, never export's, calibration's or training's code."""
    modules = ["destseg.runtime.cli", "destseg.runtime.stream", "destseg.runtime.backends.onnxruntime",
               "destseg.runtime.backends.tensorrt", "destseg.runtime.doctor", "destseg.benchmarks.bench"]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "bad = [m for m in sys.modules if m.startswith(('destseg.export', 'destseg.calibration', 'destseg.train'))]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_converters_take_the_cores_inference_leaves_free():
    if converter_threads() is None:
        pytest.skip("this GStreamer's converters have no n-threads (before 1.20)")
    assert converter_threads(1, cores=2) == 1
    assert converter_threads(2, cores=8) == 4  # at most MAX_CONVERTER_THREADS
    assert converter_threads(6, cores=8) == 2
    assert converter_threads(None, cores=8) == 1  # the backend's default takes every core
    assert converter_threads(4, cores=2) == 1
