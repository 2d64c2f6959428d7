"""Every Jetson pipeline the runtime builds hands NVIDIA's elements only formats NVIDIA documents they take.

Nothing here has nvvidconv or nvv4l2h264enc, so the strings are walked instead: the caps in
force before each NVIDIA element (from a capsfilter, appsrc's caps or a tee's input) are
checked against :data:`destseg.runtime.jetson_caps.ACCEPTS`, and the caps right after one
against :data:`~destseg.runtime.jetson_caps.PRODUCES`. The walker is checked too: the sink
string that fed nvvidconv packed RGB (what the runtime built before) is refused.
"""
from __future__ import annotations

import re
import shlex
from fractions import Fraction
from typing import Dict, List, Optional, Tuple

import pytest

from destseg.runtime.cameras import MJPEG, RAW, CameraMode
from destseg.runtime.jetson_caps import ACCEPTS, NVMM, PRODUCES, SYSTEM, accepts
from destseg.runtime.sinks import encoder_probe, parse_sink, sink_pipeline
from destseg.runtime.sources import parse_source, source_pipeline

# Elements that hand their input caps through unchanged.
PASSTHROUGH = {"queue", "tee"}
Caps = Tuple[str, Optional[str]]  # (memory, format or None when negotiated)


def _caps(text: str) -> Caps:
    memory = NVMM if "(memory:NVMM)" in text else SYSTEM
    match = re.search(r"format=(?:\(string\))?([A-Za-z0-9_]+)", text)
    return memory, match.group(1) if match else None


def _links(description: str) -> List[List[str]]:
    """The description's links (split on '!' outside quotes), each as its shell-style words."""
    links, current, quoted, escaped = [], "", False, False
    for ch in description:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            current += ch
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current += ch
        elif ch == "!" and not quoted:
            links.append(shlex.split(current))
            current = ""
        else:
            current += ch
    links.append(shlex.split(current))
    return links


def caps_problems(description: str) -> List[str]:
    """What in a gst-launch description hands an NVIDIA element a format it does not take or give."""
    problems: List[str] = []
    caps: Optional[Caps] = None
    previous: Optional[str] = None
    tees: Dict[str, Optional[Caps]] = {}
    for words in _links(description):
        while words:
            word = words.pop(0)
            if re.fullmatch(r"\w+\.", word):  # "t." starts a branch of tee t
                caps, previous = tees[word[:-1]], None
                continue
            if word.startswith(("video/", "image/")):
                caps = _caps(word)
                memory, fmt = caps
                if previous in PRODUCES and fmt is not None and fmt not in PRODUCES[previous].get(memory, ()):
                    problems.append(f"{previous} gives no {fmt} in {memory} memory")
                previous = None
                continue
            props = dict(w.split("=", 1) for w in words if "=" in w)
            words = [w for w in words if re.fullmatch(r"\w+\.", w)]  # only branch starts remain
            if word == "appsrc":
                caps = _caps(props["caps"])
            elif word in ACCEPTS and caps is not None and caps[1] is not None:
                memory, fmt = caps
                if not accepts(word, fmt, memory):
                    problems.append(f"{word} takes no {fmt} in {memory} memory")
            if word == "tee":
                tees[props["name"]] = caps
            elif word not in PASSTHROUGH and word != "appsrc":
                caps = None
            previous = word
    return problems


YUY2 = CameraMode(RAW, "YUY2", 640, 480, Fraction(30))
RGB_CAMERA = CameraMode(RAW, "RGB", 640, 480, Fraction(30))
MJPEG_720 = CameraMode(MJPEG, None, 1280, 720, Fraction(30))


def test_the_walker_refuses_packed_rgb_into_nvvidconv():
    old_display = ('appsrc name=src format=time is-live=false caps="video/x-raw,format=RGB,width=64,height=48,'
                   'framerate=30/1" block=false ! queue leaky=downstream ! nvvidconv ! video/x-raw(memory:NVMM) ! '
                   'nveglglessink sync=false')
    assert caps_problems(old_display) == ["nvvidconv takes no RGB in system memory"]
    assert caps_problems("videotestsrc ! video/x-raw,format=NV12 ! nvv4l2h264enc ! fakesink") == [
        "nvv4l2h264enc takes no NV12 in system memory"]
    assert caps_problems("tee name=t t. ! queue ! nvvidconv ! video/x-raw,format=RGB ! appsink") == [
        "nvvidconv gives no RGB in system memory"]


@pytest.mark.parametrize("output, encoder", [
    ("display", None), ("clip.mp4", "nvv4l2h264enc"), ("clip.mkv", "nvv4l2h264enc"),
    ("rtp://10.0.0.9:5004", "nvv4l2h264enc"), ("clip.mp4", "x264enc"), ("clip.avi", "jpegenc"),
])
def test_jetson_sink_pipelines_fit_the_documented_formats(tmp_path, output, encoder):
    spec = parse_sink(output if "://" in output or output == "display" else str(tmp_path / output))
    text = sink_pipeline(spec, 1920, 1080, 30, "jetson", encoder)
    assert 'caps="video/x-raw,format=RGBA,' in text
    assert caps_problems(text) == []


@pytest.mark.parametrize("encoder", ["nvv4l2h264enc", "x264enc", "jpegenc"])
def test_encoder_probes_feed_what_appsrc_feeds(encoder):
    assert "format=RGBA" in encoder_probe(encoder)
    assert caps_problems(encoder_probe(encoder)) == []


@pytest.mark.parametrize("uri, mode", [
    ("/dev/video0", YUY2), ("/dev/video0", MJPEG_720), ("/dev/video0", RGB_CAMERA), ("csi://0", None),
    ("rtsp://cam/stream", None), ("test://ball", None),
])
def test_jetson_source_pipelines_fit_the_documented_formats(uri, mode):
    for full_frame in (True, False):
        text = source_pipeline(parse_source(uri), 256, "jetson", 1280, 720, 30, mode, full_frame=full_frame)
        assert caps_problems(text) == []


def test_a_camera_format_nvvidconv_cannot_take_is_converted_first():
    rgb = source_pipeline(parse_source("/dev/video0"), 256, "jetson", mode=RGB_CAMERA)
    assert "format=RGB,width=640,height=480,framerate=30/1 ! videoconvert ! queue " in rgb
    yuy2 = source_pipeline(parse_source("/dev/video0"), 256, "jetson", mode=YUY2)
    assert "videoconvert" not in yuy2
    without_the_conversion = rgb.replace(" ! videoconvert", "")
    assert caps_problems(without_the_conversion) == ["nvvidconv takes no RGB in system memory"] * 2
