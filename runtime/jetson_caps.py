"""The raw video formats NVIDIA's Jetson GStreamer elements take and give, with where that is written.

A Jetson element handed a format it does not take fails only once the pipeline starts, on
the device ("not-negotiated", or "could not link"), so the runtime's pipeline strings are
checked against this table on machines without the elements (tests/test_jetson_caps.py),
and a camera whose raw format nvvidconv cannot take gets a videoconvert in front of it
(runtime/sources.py).

Sources, per element (memory "system" is plain ``video/x-raw``, "NVMM" is
``video/x-raw(memory:NVMM)``):

- nvvidconv: NVIDIA Jetson Linux Developer Guide, "Accelerated GStreamer", video format
  conversion with nvvidconv (its raw-yuv, raw-gray and raw-rgb input and output formats:
  BGRx and RGBA, no packed RGB or BGR), and the pad templates of gst-nvvidconv/gstnvvconv.c
  in the L4T public sources. The sets here are those present in both the r32 (NvBuffer) and
  the r35/r36 (NvBufSurface) versions of that file; r35/r36 add Y444.
- nvv4l2h264enc: the sink template of gst-v4l2/gstv4l2videoenc.c (L4T public sources,
  gst-nvvideo4linux2): NVMM only, I420, NV12 and P010_10LE.
- nveglglessink: the sink template of gst-egl/ext/eglgles/gsteglglessink.c (L4T public
  sources); its NVMM formats are BGRx, RGBA, I420, NV12, BGR and RGB.
- nvarguscamerasrc: CAPTURE_CAPS of gst-nvarguscamera/gstnvarguscamerasrc.cpp: NVMM NV12.
"""
from __future__ import annotations

from typing import Dict, FrozenSet

SYSTEM = "system"
NVMM = "NVMM"

_NVVIDCONV_SYSTEM_IN = frozenset(
    {"I420", "UYVY", "YUY2", "YVYU", "NV12", "NV16", "NV24", "P010_10LE", "GRAY8", "BGRx", "RGBA", "Y42B"})
_NVVIDCONV_NVMM_IN = frozenset(
    {"I420", "I420_10LE", "P010_10LE", "I420_12LE", "UYVY", "YUY2", "YVYU", "NV12", "NV16", "NV24", "GRAY8",
     "BGRx", "RGBA", "Y42B"})
_EGL_SYSTEM_IN = frozenset(
    {"RGBA", "BGRA", "ARGB", "ABGR", "RGBx", "BGRx", "xRGB", "xBGR", "AYUV", "Y444", "I420", "YV12", "NV12",
     "NV21", "Y42B", "Y41B", "RGB", "BGR", "RGB16"})

# element -> memory -> the formats its sink pad takes
ACCEPTS: Dict[str, Dict[str, FrozenSet[str]]] = {
    "nvvidconv": {SYSTEM: _NVVIDCONV_SYSTEM_IN, NVMM: _NVVIDCONV_NVMM_IN},
    "nvv4l2h264enc": {NVMM: frozenset({"I420", "NV12", "P010_10LE"})},
    "nveglglessink": {SYSTEM: _EGL_SYSTEM_IN, NVMM: frozenset({"BGRx", "RGBA", "I420", "NV12", "BGR", "RGB"})},
}
# element -> memory -> the formats its source pad gives
PRODUCES: Dict[str, Dict[str, FrozenSet[str]]] = {
    "nvvidconv": {SYSTEM: _NVVIDCONV_SYSTEM_IN - {"P010_10LE"}, NVMM: _NVVIDCONV_NVMM_IN - {"I420_12LE"}},
    "nvarguscamerasrc": {NVMM: frozenset({"NV12"})},
}


def accepts(element: str, fmt: str, memory: str = SYSTEM) -> bool:
    """Whether ``element``'s sink pad takes raw ``fmt`` frames in ``memory`` (per :data:`ACCEPTS`)."""
    return fmt in ACCEPTS[element].get(memory, frozenset())
