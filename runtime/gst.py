"""GStreamer through PyGObject: the one module that imports ``gi``.

Sources and sinks describe their pipelines as strings (pure functions, testable without the
elements); this module turns a string into a running pipeline, answers which elements exist
(Jetson or generic desktop) and whether a finite pipeline runs to its end here
(:func:`play_to_end`: an element can be registered and still fail at start, like
nvv4l2h264enc on an Orin Nano, which has no NVENC), and reads errors off the bus as
one-line messages.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, Optional, Type

from destseg.runtime.errors import RuntimeInputError

PLATFORMS = ("auto", "jetson", "generic")
# nvvidconv ships with every JetPack's GStreamer and nowhere else: it decides "auto".
JETSON_MARKER = "nvvidconv"

_GST: Any = None


def _prefer_gcc_unwinder() -> None:
    """Put GCC's unwinder in the global symbol scope before libgstreamer brings in libunwind.

    Debian's libgstreamer links libunwind, whose _Unwind_* functions can then win the symbol
    lookup: a C++ exception thrown later by another extension in the same process (PyTorch's
    JIT tracer, say, in the torch backend or a test suite) unwinds through the wrong runtime
    and aborts ("terminate called after throwing an instance of ..."). Loading libgcc_s
    first, globally, keeps the C++ runtime's own unwinder in front.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libgcc_s.so.1", mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass  # a libc without libgcc_s (musl): libunwind is its unwinder anyway


def gst() -> Any:
    """The initialised ``Gst`` module (imported on first use, so importing the runtime is cheap)."""
    global _GST
    if _GST is None:
        _prefer_gcc_unwinder()
        try:
            import gi

            gi.require_version("Gst", "1.0")
            from gi.repository import Gst
        except (ImportError, ValueError) as exc:
            raise RuntimeInputError(
                "GStreamer for Python is missing (gi / Gst 1.0); install it with `make system-deps` "
                "or apt-get install gir1.2-gstreamer-1.0 and pip install pygobject"
            ) from exc
        Gst.init(None)
        _GST = Gst
    return _GST


def has_element(name: str) -> bool:
    return gst().ElementFactory.find(name) is not None


def has_property(element: str, prop: str) -> bool:
    """Whether this GStreamer's ``element`` has ``prop`` (videoscale's n-threads came with 1.20)."""
    factory = gst().ElementFactory.find(element)
    if factory is None:
        return False
    return factory.create(None).find_property(prop) is not None


# Slices for videoconvert/videoscale: beyond four the threads wait on memory more than they convert.
MAX_CONVERTER_THREADS = 4


def converter_threads(inference_threads: Optional[int] = None, cores: Optional[int] = None) -> Optional[int]:
    """n-threads for the generic converters: the cores inference leaves free (at least 1, at most
    MAX_CONVERTER_THREADS); None where this GStreamer lacks the property (before 1.20).

    ``inference_threads`` None means the backend's default, all physical cores, so 1. More
    converter threads than free cores compete with the loop's own thread each frame (measured on
    2 shared cores, 320 x 240 test source, the loop pausing 20 ms between frames: taking a frame
    that was already waiting in the appsink took 0.42 ms with n-threads=2, 0.09 ms with 1).
    """
    if not (has_property("videoconvert", "n-threads") and has_property("videoscale", "n-threads")):
        return None
    cores = cores or os.cpu_count() or 1
    free = cores - (inference_threads if inference_threads is not None else cores)
    return max(1, min(MAX_CONVERTER_THREADS, free))


def resolve_platform(requested: str = "auto") -> str:
    """``jetson`` or ``generic``: forced by the caller, else detected from the installed elements."""
    if requested not in PLATFORMS:
        raise RuntimeInputError(f"unknown platform {requested!r}; choose one of {', '.join(PLATFORMS)}")
    if requested != "auto":
        return requested
    return "jetson" if has_element(JETSON_MARKER) else "generic"


def parse_pipeline(description: str, error: Type[RuntimeInputError], what: str) -> Any:
    """``Gst.parse_launch`` with its GLib.Error turned into ``error`` naming ``what`` failed."""
    Gst = gst()
    from gi.repository import GLib

    try:
        pipeline = Gst.parse_launch(description)
    except GLib.Error as exc:
        raise error(
            f"cannot build the {what} pipeline: {exc.message}; check the GStreamer plugins "
            f"(gst-inspect-1.0) or choose --platform generic|jetson"
        ) from exc
    return pipeline


def message_text(message: Any) -> str:
    """An ERROR or WARNING bus message as ``element: text`` (the debug detail is for GST_DEBUG)."""
    Gst = gst()
    err, _debug = message.parse_error() if message.type == Gst.MessageType.ERROR else message.parse_warning()
    source = message.src.get_name() if message.src is not None else "pipeline"
    return f"{source}: {err.message}"


def pop_error(pipeline: Any, timeout_ns: int = 0) -> Optional[str]:
    """The first error waiting on the pipeline's bus (waiting up to ``timeout_ns``), or None."""
    Gst = gst()
    message = pipeline.get_bus().timed_pop_filtered(timeout_ns, Gst.MessageType.ERROR)
    return message_text(message) if message is not None else None


def wait_for_eos(pipeline: Any, timeout_s: float) -> Optional[str]:
    """Block until EOS (None) or an error (its text); a timeout is reported as an error."""
    Gst = gst()
    message = pipeline.get_bus().timed_pop_filtered(
        int(timeout_s * Gst.SECOND), Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    if message is None:
        return f"no end of stream after {timeout_s:.0f} s"
    if message.type == Gst.MessageType.ERROR:
        return message_text(message)
    return None


def play_to_end(description: str, timeout_s: float) -> Optional[str]:
    """Run a finite pipeline (a source with num-buffers) to EOS: None when it got there, else why not.

    Parsing, the state change to PLAYING and the bus are all checked, so a missing element,
    a device that cannot be opened and a caps mismatch each come back as one line.
    """
    Gst = gst()
    from gi.repository import GLib

    try:
        pipeline = Gst.parse_launch(description)
    except GLib.Error as exc:
        return exc.message
    try:
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            return pop_error(pipeline) or "the pipeline refused to start"
        return wait_for_eos(pipeline, timeout_s)
    finally:
        stop(pipeline)


def stop(pipeline: Any) -> None:
    """Set a pipeline to NULL, which frees its threads and buffers."""
    pipeline.set_state(gst().State.NULL)
