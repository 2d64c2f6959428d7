"""destseg-doctor's checks of the installation: the machine, the libraries, GStreamer and the cameras.

Every check is one :class:`Check` line; the decisions (is a missing TensorRT a failure on
this box? which fix to name?) are pure functions of what was found, tested on the texts real
machines print (tests/fixtures/). A GStreamer element counts only if it works: those that
fail when they start rather than when they register (NVIDIA's converter, decoder and
encoders, the CSI camera) run one buffer to EOS (:func:`destseg.runtime.gst.play_to_end`).
"""
from __future__ import annotations

import importlib.util
import os
import platform as py_platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from destseg.cpu import this_cpu
from destseg.hardware import (L4tRelease, gpu_info, l4t_core_version, parse_nv_tegra_release, read_text,
                              run_command, tegrastats)
from destseg.tensorrt import DEFAULT_WORKSPACE_GB, MIN_VERSION, TensorRTError, installed_tensorrt_version, parse_version

OK, WARN, FAIL, ABSENT, SKIP = "ok", "warn", "FAIL", "not present", "skipped"
PROBE_TIMEOUT_S = 10.0
# RAM an engine build wants free on a Jetson: the builder's workspace plus room for the model.
BUILD_RAM_MB = int(DEFAULT_WORKSPACE_GB * 1024) + 512
# Device nodes the GPU needs (JetPack 5: nvhost-*, JetPack 6: nvgpu/igpu0); readable by the video group.
GPU_NODES = ("/dev/nvmap", "/dev/nvhost-ctrl-gpu", "/dev/nvhost-gpu", "/dev/nvgpu/igpu0/ctrl")
NVIDIA_PLUGIN = re.compile(r"^libgst(nv|omx)")
L4T_GST = "JetPack's nvidia-l4t-gstreamer (in Docker: --runtime nvidia, which mounts the host's)"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    section: str
    name: str
    status: str  # OK, WARN, FAIL, ABSENT or SKIP
    detail: str = ""
    fix: str = ""  # for WARN and FAIL (and an absent part that would help): what to install or change


# --- the machine ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Machine:
    """What this box is: a Jetson (its L4T release) or a PC (its NVIDIA GPUs, if any)."""

    architecture: str
    model: Optional[str]  # the Jetson's board name (device tree), else the CPU's
    l4t: Optional[L4tRelease]
    l4t_core: Optional[str]  # L4T release of the nvidia-l4t-core package (a container's image)
    gpus: Tuple[Dict[str, str], ...]  # nvidia-smi
    stats: Optional[Dict[str, Any]]  # one tegrastats sample
    container: bool

    @property
    def jetson(self) -> bool:
        return self.l4t is not None

    @property
    def nvidia_gpu(self) -> bool:
        return self.jetson or bool(self.gpus)


def read_machine(root: str = "/") -> Machine:
    base = Path(root)
    l4t = parse_nv_tegra_release(read_text(base / "etc/nv_tegra_release") or "")
    return Machine(
        architecture=py_platform.machine(),
        model=read_text(base / "proc/device-tree/model") if l4t else this_cpu().model,
        l4t=l4t,
        l4t_core=l4t_core_version() if l4t else None,
        gpus=tuple(gpu_info()),
        stats=tegrastats() if l4t else None,
        container=(base / ".dockerenv").exists(),
    )


def machine_check(m: Machine) -> Check:
    if m.jetson:
        return Check("platform", "machine", OK, f"Jetson: {m.model or 'board name unknown'} ({m.architecture})"
                     + (", in a container" if m.container else ""))
    if m.gpus:
        names = ", ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in m.gpus)
        return Check("platform", "machine", OK, f"PC: {m.architecture}, {m.model or 'CPU'}; NVIDIA GPU: {names}")
    return Check("platform", "machine", OK, f"PC: {m.architecture}, {m.model or 'CPU'}; no NVIDIA GPU (nvidia-smi lists none)")


def release_check(m: Machine) -> Check:
    """The L4T release, its JetPack and TensorRT, and whether a container's image matches the host."""
    name = "L4T / JetPack"
    if m.l4t is None:
        return Check("platform", name, ABSENT, "not a Jetson (no /etc/nv_tegra_release)")
    l4t = m.l4t
    if l4t.major < 35:
        return Check("platform", name, FAIL, f"L4T {l4t.version} (JetPack 4 or older) ships TensorRT before 8.5",
                     "flash JetPack 5.1 or later (destseg-edge needs TensorRT 8.5 or newer)")
    if m.l4t_core and m.l4t_core.split(".")[0] != str(l4t.major):
        return Check("platform", name, FAIL,
                     f"the host runs L4T {l4t.version} but this image's nvidia-l4t-core is {m.l4t_core}: its CUDA, "
                     f"TensorRT and GStreamer plugins do not match the host's driver",
                     "rebuild the image on this Jetson with docker/jetson/build.sh (it picks the base image from the host)")
    if l4t.jetpack is None:
        return Check("platform", name, WARN, f"L4T {l4t.version} (board {l4t.board}) is a release destseg-edge does not know",
                     "the checks below still apply; JetPack 5.1 to 7 are the ones tested against")
    return Check("platform", name, OK, f"L4T {l4t.version} = JetPack {l4t.jetpack} (ships TensorRT {l4t.tensorrt}), "
                 f"board {l4t.board}" + (f"; image built on L4T {m.l4t_core}" if m.container and m.l4t_core else ""))


def memory_check(stats: Optional[Dict[str, Any]]) -> Check:
    """Free RAM (a Jetson's GPU shares it) against what an engine build needs, and the GPU's load."""
    if stats is None:
        return Check("platform", "memory", SKIP, "tegrastats gave no sample")
    free = stats["ram_total_mb"] - stats["ram_used_mb"]
    hottest = max(stats["temperatures_c"].items(), key=lambda kv: kv[1], default=None)
    detail = (f"RAM {stats['ram_used_mb']}/{stats['ram_total_mb']} MB used (shared with the GPU), "
              f"GPU load {stats['gpu_load_percent']}%" + (f", hottest {hottest[0]} {hottest[1]:.0f} C" if hottest else ""))
    if free < BUILD_RAM_MB:
        return Check("platform", "memory", WARN, detail,
                     f"only {free} MB free: building an engine wants about {BUILD_RAM_MB} MB; stop other programs, "
                     f"add swap, or build with a smaller workspace (destseg-export --workspace-gb)")
    return Check("platform", "memory", OK, detail)


def device_access_check(accessible: Dict[str, bool]) -> Check:
    """Whether this user may open the GPU's device nodes (root:video on L4T; jetson-containers#71, nvidia-docker#1449)."""
    if not accessible:
        return Check("platform", "GPU device nodes", WARN, f"none of {', '.join(GPU_NODES)} exists",
                     "in Docker run with --runtime nvidia (docker/jetson/run.sh does)")
    denied = [node for node, ok in accessible.items() if not ok]
    if denied:
        return Check("platform", "GPU device nodes", FAIL, f"this user (uid {os.getuid()}) cannot open {', '.join(denied)}",
                     "add the user to the video group (sudo usermod -aG video $USER, then log in again); in Docker add "
                     "--group-add $(stat -c %g /dev/nvmap)")
    return Check("platform", "GPU device nodes", OK, f"{', '.join(accessible)} open to this user")


def platform_checks(m: Machine) -> List[Check]:
    checks = [machine_check(m), release_check(m)]
    if m.jetson:
        checks.append(memory_check(m.stats))
        checks.append(device_access_check({n: os.access(n, os.R_OK | os.W_OK) for n in GPU_NODES if os.path.exists(n)}))
    return checks


# --- the libraries ------------------------------------------------------------------------------

def _import_error(module: str) -> Optional[str]:
    """None when ``module`` imports, else the first line of why not (any exception: an ABI clash is not an ImportError)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - reported, whatever it is
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return None


def cuda_check(m: Machine, driver: Optional[str], device: Optional[Tuple[str, str]], error: Optional[str]) -> Check:
    if error is None:
        name, cc = device or ("?", "?")
        return Check("libraries", "CUDA driver", OK, f"CUDA {driver}, GPU 0: {name} (compute capability {cc})")
    if m.nvidia_gpu:
        fix = ("in Docker run with --runtime nvidia (docker/jetson/run.sh does); on the host reinstall JetPack's "
               "nvidia-l4t-cuda" if m.jetson else "install the NVIDIA driver that matches nvidia-smi's GPU")
        return Check("libraries", "CUDA driver", FAIL, error, fix)
    return Check("libraries", "CUDA driver", ABSENT, error)


NUMPY_ABI = re.compile(r"NumPy 1\.x|_ARRAY_API|numpy\.core\.multiarray failed|compiled using NumPy", re.IGNORECASE)


def tensorrt_check(m: Machine, version: Optional[str], error: Optional[str]) -> Check:
    """TensorRT's Python bindings: present, importable, new enough, and JetPack's own on a Jetson."""
    name = "TensorRT"
    if error is not None and NUMPY_ABI.search(error):
        return Check("libraries", name, FAIL, f"TensorRT {version or '(apt bindings)'} does not import: {error}",
                     "pip install 'numpy<2' (JetPack's TensorRT bindings are built against NumPy 1.x)")
    if error is not None or version is None:
        detail = f"import tensorrt failed ({error})" if error else "not installed"
        if m.jetson:
            return Check("libraries", name, FAIL, detail,
                         "sudo apt-get install python3-libnvinfer (JetPack's); a virtualenv needs --system-site-packages")
        if m.gpus:
            return Check("libraries", name, ABSENT, detail, "pip install tensorrt pycuda to run engines on this GPU")
        return Check("libraries", name, ABSENT, detail)
    if parse_version(version) < MIN_VERSION:
        return Check("libraries", name, FAIL, f"TensorRT {version} is older than 8.5",
                     "upgrade JetPack to 5.1 or later (or pip install a newer tensorrt)")
    shipped = m.l4t.tensorrt if m.l4t else None
    if shipped and parse_version(version) != parse_version(shipped):
        return Check("libraries", name, WARN, f"TensorRT {version}, but JetPack {m.l4t.jetpack} ships {shipped}",
                     "a pip-installed tensorrt may shadow JetPack's: pip uninstall tensorrt, unless you meant it")
    return Check("libraries", name, OK, f"TensorRT {version} (Python bindings import)")


def pycuda_check(m: Machine, version: Optional[str], error: Optional[str], tensorrt_ok: bool) -> Check:
    if error is None and version is not None:
        return Check("libraries", "pycuda", OK, f"pycuda {version}")
    detail = f"import pycuda.driver failed ({error})" if error else "not installed"
    fix = ("pip install pycuda (it compiles against CUDA: put nvcc on PATH, export PATH=/usr/local/cuda/bin:$PATH), "
           "or apt-get install python3-pycuda")
    if m.jetson or tensorrt_ok:
        return Check("libraries", "pycuda", FAIL, detail + "; the tensorrt backend needs it", fix)
    return Check("libraries", "pycuda", ABSENT, detail)


def onnxruntime_check(version: Optional[str], providers: Sequence[str], error: Optional[str]) -> Check:
    if error is not None or version is None:
        return Check("libraries", "ONNX Runtime", FAIL, f"import onnxruntime failed ({error})" if error else "not installed",
                     "pip install onnxruntime (the CPU backend, and the reference the smoke test compares with)")
    return Check("libraries", "ONNX Runtime", OK, f"onnxruntime {version}, providers: {', '.join(providers)}")


def openvino_check(version: Optional[str], devices: Sequence[str], error: Optional[str]) -> Check:
    if version is None:
        return Check("libraries", "OpenVINO", ABSENT, "not installed (optional: Intel CPUs, GPUs and NPUs)")
    if error is not None:
        return Check("libraries", "OpenVINO", WARN, f"OpenVINO {version} lists no devices ({error})",
                     "reinstall openvino for this Python")
    return Check("libraries", "OpenVINO", OK, f"OpenVINO {version}, devices: {', '.join(devices) or 'none'}")


def _version(module: str, attribute: str = "__version__") -> Optional[str]:
    mod = importlib.import_module(module)
    return str(getattr(mod, attribute, "unknown"))


def library_checks(m: Machine) -> List[Check]:
    from destseg.tensorrt import cuda_device, cuda_driver_version

    checks = []
    try:
        checks.append(cuda_check(m, cuda_driver_version(), cuda_device(0), None))
    except TensorRTError as exc:
        checks.append(cuda_check(m, None, None, str(exc)))
    trt_version = installed_tensorrt_version()
    trt_error = _import_error("tensorrt") if importlib.util.find_spec("tensorrt") else None
    trt = tensorrt_check(m, trt_version, trt_error)
    checks.append(trt)
    if importlib.util.find_spec("pycuda") is None:
        checks.append(pycuda_check(m, None, None, trt.status == OK))
    else:
        error = _import_error("pycuda.driver")
        checks.append(pycuda_check(m, _version("pycuda", "VERSION_TEXT") if error is None else None, error, trt.status == OK))
    import numpy

    checks.append(Check("libraries", "NumPy", OK, f"numpy {numpy.__version__}"))
    error = _import_error("onnxruntime") if importlib.util.find_spec("onnxruntime") else None
    if importlib.util.find_spec("onnxruntime") is not None and error is None:
        import onnxruntime

        checks.append(onnxruntime_check(onnxruntime.__version__, onnxruntime.get_available_providers(), None))
    else:
        checks.append(onnxruntime_check(None, (), error))
    checks.append(_openvino())
    return checks


def _openvino() -> Check:
    if importlib.util.find_spec("openvino") is None:
        return openvino_check(None, (), None)
    try:
        import openvino

        core = openvino.Core() if hasattr(openvino, "Core") else importlib.import_module("openvino.runtime").Core()
        return openvino_check(str(getattr(openvino, "__version__", "?")), core.available_devices, None)
    except Exception as exc:  # noqa: BLE001 - reported
        return openvino_check("?", (), str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


# --- GStreamer -----------------------------------------------------------------------------------

JETSON, GENERIC, BOTH = ("jetson",), ("generic",), ("jetson", "generic")
BASE, GOOD, BAD, UGLY, LIBAV = ("gstreamer1.0-plugins-base", "gstreamer1.0-plugins-good", "gstreamer1.0-plugins-bad",
                                "gstreamer1.0-plugins-ugly", "gstreamer1.0-libav")


@dataclass(frozen=True)
class Element:
    """A GStreamer element the runtime's pipelines use, what for, and where it comes from."""

    name: str
    purpose: str
    platforms: Tuple[str, ...]
    package: str
    core: bool = False  # nothing streams without it: missing or broken is a FAIL, else a warning
    alternative: bool = False  # one of several that do the same job (H.264 encoders): missing is "not present"


# Every element in the runtime's pipeline strings (tests/test_doctor.py holds the list to them).
ELEMENTS = (
    Element("appsrc", "every video output", BOTH, BASE, core=True),
    Element("appsink", "every source", BOTH, BASE, core=True),
    Element("tee", "every source", BOTH, "gstreamer1.0 (core)", core=True),
    Element("queue", "every source", BOTH, "gstreamer1.0 (core)", core=True),
    Element("videotestsrc", "test:// and the smoke test", BOTH, BASE, core=True),
    Element("fakesink", "the doctor's probes", BOTH, "gstreamer1.0 (core)", core=True),
    Element("videoconvert", "colour conversion", BOTH, BASE, core=True),
    Element("videoscale", "scaling frames to the model", GENERIC, BASE, core=True),
    Element("nvvidconv", "conversion and scaling on the VIC", JETSON, L4T_GST, core=True),
    Element("v4l2src", "USB cameras (/dev/video*)", BOTH, GOOD),
    Element("jpegdec", "MJPEG cameras", GENERIC, GOOD),
    Element("jpegparse", "MJPEG cameras (in front of nvv4l2decoder)", JETSON, BAD),
    Element("nvv4l2decoder", "MJPEG cameras on the hardware decoder", JETSON, L4T_GST),
    Element("nvarguscamerasrc", "CSI cameras (csi://N)", JETSON, L4T_GST),
    Element("uridecodebin", "video files and http(s):// inputs", BOTH, BASE),
    Element("rtspsrc", "rtsp:// inputs", BOTH, GOOD),
    Element("decodebin", "rtsp:// inputs", BOTH, BASE),
    Element("autovideosink", "--output display", GENERIC, GOOD),
    Element("nveglglessink", "--output display", JETSON, L4T_GST),
    Element("nvv4l2h264enc", "H.264 outputs on NVENC", JETSON, L4T_GST, alternative=True),
    Element("h264parse", "H.264 outputs from nvv4l2h264enc", JETSON, BAD),
    Element("x264enc", "H.264 outputs on the CPU", BOTH, UGLY, alternative=True),
    Element("openh264enc", "H.264 outputs on the CPU (when x264enc is missing)", BOTH, BAD, alternative=True),
    Element("avenc_mpeg4", ".mp4 outputs without an H.264 encoder", BOTH, LIBAV, alternative=True),
    Element("jpegenc", ".avi and .mkv outputs (MJPEG)", BOTH, GOOD),
    Element("filesink", "file outputs", BOTH, "gstreamer1.0 (core)"),
    Element("mp4mux", ".mp4 outputs", BOTH, GOOD),
    Element("matroskamux", ".mkv outputs", BOTH, GOOD),
    Element("avimux", ".avi outputs", BOTH, GOOD),
    Element("rtph264pay", "rtp:// outputs", BOTH, GOOD),
    Element("udpsink", "rtp:// outputs", BOTH, GOOD),
)
ENCODERS = ("nvv4l2h264enc", "x264enc", "openh264enc", "avenc_mpeg4", "jpegenc")


CSI_PROBE = "nvarguscamerasrc sensor-id=0 num-buffers=1 ! video/x-raw(memory:NVMM),format=NV12 ! fakesink"


def element_probes() -> Dict[str, str]:
    """Elements that can be registered and still fail at start, each with a pipeline that proves it runs:
    one buffer through the chains the runtime builds (the CSI camera is the cameras section's)."""
    from destseg.runtime.sinks import encoder_probe
    from destseg.runtime.sources import MJPEG_DECODERS

    small = "video/x-raw,format=RGBA,width=64,height=48,framerate=30/1"
    return {
        "nvvidconv": (f"videotestsrc num-buffers=1 ! {small} ! nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! "
                      f"nvvidconv ! video/x-raw,format=RGBA ! fakesink"),
        "nvv4l2decoder": (f"videotestsrc num-buffers=1 ! {small} ! jpegenc ! {MJPEG_DECODERS['jetson']} ! nvvidconv ! "
                          f"video/x-raw,format=RGBA ! fakesink"),
        **{name: encoder_probe(name) for name in ENCODERS},
    }


def element_check(element: Element, registered: bool, problem: Optional[str], probed: bool) -> Check:
    """One element: registered, and where probed, able to run; a missing optional one is a warning naming its package."""
    severity = FAIL if element.core else WARN
    if not registered:
        return Check("gstreamer", element.name, ABSENT if element.alternative else severity,
                     f"not installed: needed for {element.purpose}", f"install {element.package}")
    if problem is not None:
        fix = {"nvv4l2h264enc": "an Orin Nano has no NVENC: nothing to do, outputs encode on the CPU; elsewhere "
                                "check /dev/v4l2-nvenc (in Docker: --runtime nvidia)"}.get(
            element.name, "see the error; rerun with GST_DEBUG=3 for GStreamer's log")
        return Check("gstreamer", element.name, severity, f"registered but fails at start: {problem}", fix)
    return Check("gstreamer", element.name, OK, ("ran a frame to EOS: " if probed else "registered: ") + element.purpose)


def parse_blacklist(text: str) -> List[str]:
    """Plugin files ``gst-inspect-1.0 -b`` lists as blacklisted (they failed to load when the registry was built)."""
    names, listing = [], False
    for line in (text or "").splitlines():
        if line.strip() == "Blacklisted files:":
            listing = True
        elif listing and line.startswith("  ") and line.strip():
            names.append(line.strip())
        elif listing and line.strip():
            listing = False
    return names


def blacklist_check(names: Sequence[str], jetson: bool) -> Check:
    """Blacklisted plugins: NVIDIA's on a Jetson are the usual container failure (jetson-containers#71, #312)."""
    if not names:
        return Check("gstreamer", "blacklisted plugins", OK, "none")
    nvidia = [n for n in names if NVIDIA_PLUGIN.match(n)]
    if nvidia and jetson:
        return Check("gstreamer", "blacklisted plugins", FAIL,
                     f"NVIDIA's plugins failed to load: {', '.join(nvidia)}",
                     "export LD_PRELOAD=/usr/lib/aarch64-linux-gnu/libGLdispatch.so.0 (the image sets it), run Docker "
                     "with --runtime nvidia, be in the video group, then rm -rf ~/.cache/gstreamer-1.0 to rescan")
    return Check("gstreamer", "blacklisted plugins", WARN, ", ".join(names),
                 "rm -rf ~/.cache/gstreamer-1.0 and run gst-inspect-1.0 to see why they fail to load")


def encoder_summary(choice: Optional[Any], error: Optional[str]) -> Check:
    """What an .mp4 / rtp:// output will encode with (the runtime's own choice, sinks.choose_encoder)."""
    if error is not None:
        return Check("gstreamer", "H.264 outputs", WARN, error, "install gstreamer1.0-plugins-ugly (x264enc)")
    detail = f".mp4/.mkv/rtp:// outputs encode with {choice.name}"
    return Check("gstreamer", "H.264 outputs", WARN if choice.note else OK, detail + (f" ({choice.note})" if choice.note else ""),
                 "nothing to do if this box has no NVENC (Orin Nano); else see nvv4l2h264enc's line" if choice.note else "")


def gstreamer_checks(checked_platform: str, run: Callable[[str, float], Optional[str]]) -> List[Check]:
    from destseg.runtime.errors import RuntimeInputError, SinkError

    try:
        from destseg.runtime.gst import gst, has_element

        version = gst().version_string()
    except RuntimeInputError as exc:
        return [Check("gstreamer", "GStreamer", FAIL, str(exc), "make system-deps (or apt-get install python3-gi "
                      "gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base) and pip install pygobject")]
    from destseg.runtime.sinks import choose_encoder

    checks = [Check("gstreamer", "GStreamer", OK, f"{version} (PyGObject)")]
    blacklist = run_command(["gst-inspect-1.0", "-b"])
    checks.append(blacklist_check(parse_blacklist(blacklist or ""), checked_platform == "jetson")
                  if blacklist is not None else Check("gstreamer", "blacklisted plugins", SKIP, "gst-inspect-1.0 is not installed"))
    probes = element_probes()
    problems: Dict[str, Optional[str]] = {}
    for element in ELEMENTS:
        if checked_platform not in element.platforms:
            continue
        registered = has_element(element.name)
        probed = registered and element.name in probes
        problems[element.name] = run(probes[element.name], PROBE_TIMEOUT_S) if probed else None
        checks.append(element_check(element, registered, problems[element.name], probed))
    try:
        checks.append(encoder_summary(choose_encoder("mp4", has_element, lambda e: problems.get(e, "not checked")), None))
    except SinkError as exc:
        checks.append(encoder_summary(None, str(exc)))
    return checks


# --- cameras -------------------------------------------------------------------------------------

def summarize_modes(modes: Sequence[Any], limit: int = 6) -> str:
    """Camera modes as "YUY2 640x480@30, 1280x720@10; MJPEG 1920x1080@30" (the fastest rate per size)."""
    best: Dict[Tuple[str, int, int], float] = {}
    for mode in modes:
        key = (mode.format or "MJPEG", mode.width, mode.height)
        best[key] = max(best.get(key, 0.0), float(mode.fps))
    groups: Dict[str, List[str]] = {}
    for (fmt, w, h), fps in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1] * kv[0][2])):
        groups.setdefault(fmt, []).append(f"{w}x{h}@{fps:g}")
    parts = []
    for fmt, sizes in groups.items():
        shown = sizes[:limit] + ([f"+{len(sizes) - limit} more"] if len(sizes) > limit else [])
        parts.append(f"{fmt} {', '.join(shown)}")
    return "; ".join(parts)


def camera_check(device: str, name: Optional[str], caps_text: Optional[str], error: Optional[str]) -> Check:
    """One V4L2 node: the modes the runtime can read from it, or why it cannot."""
    from destseg.runtime.cameras import parse_modes

    label = f"{device}" + (f" ({name})" if name else "")
    if error is not None:
        return Check("cameras", label, WARN, error, "close the program that holds it, or check `v4l2-ctl -d "
                     f"{device} --all`")
    modes = parse_modes(caps_text or "")
    if not modes:
        return Check("cameras", label, WARN, "no raw or MJPEG mode (Bayer formats: a CSI sensor's node?)",
                     "read CSI sensors with --camera csi://N, not their /dev/video node")
    return Check("cameras", label, OK, summarize_modes(modes))


def camera_checks(checked_platform: str, run: Callable[[str, float], Optional[str]]) -> List[Check]:
    """Every V4L2 node with its modes; on a Jetson, whether CSI sensor 0 gives a frame."""
    from destseg.runtime.cameras import query_caps, video_devices
    from destseg.runtime.errors import RuntimeInputError
    from destseg.runtime.gst import has_element

    checks = []
    for device in video_devices():
        name = read_text(Path("/sys/class/video4linux") / Path(device).name / "name")
        try:
            checks.append(camera_check(device, name, query_caps(device), None))
        except RuntimeInputError as exc:
            checks.append(camera_check(device, name, None, str(exc)))
    if not checks:
        checks.append(Check("cameras", "USB cameras", ABSENT, "no /dev/video* here",
                            "plug a camera in; in Docker pass it with --device (docker/jetson/run.sh passes every /dev/video*)"))
    if checked_platform == "jetson" and has_element("nvarguscamerasrc"):
        checks.append(csi_check(run(CSI_PROBE, PROBE_TIMEOUT_S)))
    return checks


def csi_check(problem: Optional[str]) -> Check:
    if problem is None:
        return Check("cameras", "csi://0", OK, "nvarguscamerasrc delivered a frame from sensor 0")
    return Check("cameras", "csi://0", ABSENT, f"no frame from sensor 0: {problem}",
                 "only if you use a CSI camera: check its cable and `systemctl status nvargus-daemon`; in Docker mount "
                 "/tmp/argus_socket (docker/jetson/run.sh does when the host has it)")
