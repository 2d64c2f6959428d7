"""TensorRT engines from a bundle's ONNX: one builder, for destseg-export --engine and the runtime.

An engine (and its timing cache) is only valid for the GPU and TensorRT version that built
it, so engines are files in a cache keyed by GPU name, compute capability, TensorRT
version, precision, ONNX hash and batch profile, each with a sidecar JSON saying what it
is. The workstation exports ONNX; the Jetson builds its own engine at first start with
this same code (:func:`engine_for_bundle`) and reuses it afterwards, which is why it lives
in ``destseg`` beside the bundle format rather than in either stage.

Everything that differs between TensorRT 8.5 (JetPack 5), 10.x (JetPack 6/7) and 11.x
lives in :func:`build_recipe`, a pure function of the version string, so it is tested on
machines without TensorRT. This module never imports torch, and imports tensorrt only
inside the functions that build.

Implicit INT8 (TensorRT before 11) reads a bundle's ``calibration.cache``. TensorRT only
accepts a cache whose header names its own version ("TRT-8502-EntropyCalibration2" for
8.5.2, "TRT-100300-..." for 10.3.0; any other is refused as "Calibration table does not
match calibrator algorithm type" and it tries to calibrate without data), while the cache
is written on a workstation that may have another TensorRT or none. So the builder reads
the cache through a calibrator that rewrites the header for the TensorRT building
(:func:`with_cache_header`); the scales, per tensor name, are what carry over.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import destseg
from destseg.atomic import atomic_path, write_json
from destseg.bundle import Bundle, load_bundle, sha256_file
from destseg.inference import VARIANTS_FOR, variant_for

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE_GB = 1.0
MIN_VERSION = (8, 5)  # JetPack 5.1
ENGINE_SUFFIX = ".engine"
ENGINES_DIR = "engines"  # where a bundle keeps the engines destseg-export built into it
SIDECAR_SUFFIX = ".json"


class TensorRTError(ValueError):
    """TensorRT is missing, too old, or rejected the model; the message says what to do."""


@dataclass(frozen=True)
class DeviceInfo:
    """What makes an engine portable or not: the GPU and the TensorRT that built it."""

    gpu_name: str
    compute_capability: str  # "8.7"
    tensorrt_version: str  # "10.3.0.30"


@dataclass(frozen=True)
class BuildRecipe:
    """Names of the flags one TensorRT version needs to build one precision."""

    network_flags: Tuple[str, ...]  # trt.NetworkDefinitionCreationFlag members
    builder_flags: Tuple[str, ...]  # trt.BuilderFlag members
    uses_calibrator: bool  # implicit INT8 (an IInt8Calibrator on the builder config)
    calibration_cache_header: str = ""  # the first line this TensorRT wants in a calibration cache


def default_cache_dir() -> Path:
    """$DESTSEG_ENGINE_CACHE, else $XDG_CACHE_HOME/destseg/engines, else ~/.cache/destseg/engines."""
    if os.environ.get("DESTSEG_ENGINE_CACHE"):
        return Path(os.environ["DESTSEG_ENGINE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "destseg" / "engines"


PRECISIONS = tuple(VARIANTS_FOR["tensorrt"])  # what an engine is built in (bf16 is OpenVINO's and torch's)


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise TensorRTError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def parse_version(text: str) -> Tuple[int, int]:
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text))
    if not match:
        raise TensorRTError(f"cannot read a TensorRT version from {text!r}; expected MAJOR.MINOR[.PATCH]")
    return int(match.group(1)), int(match.group(2))


def build_recipe(tensorrt_version: str, precision: str, calibrator: bool = False) -> BuildRecipe:
    """The one place that knows how TensorRT versions differ when building.

    - before 10, networks need EXPLICIT_BATCH (it is the default and deprecated from 10);
    - 10.x has weak typing (FP16/INT8 builder flags) and STRONGLY_TYPED networks, which is
      how a Q/DQ graph must be built to keep the exporter's precisions;
    - 11.x removed weak typing: every network is strongly typed, the precision flags and
      the implicit INT8 calibrator are gone (an FP16 engine needs an FP16-typed ONNX);
    - 8.5 builds a Q/DQ graph with the INT8 flag, and is the last that needs the implicit
      calibrator's cache for the INT8 path of older JetPacks;
    - the calibration cache's header carries NV_TENSORRT_VERSION, which is
      major * 1000 + minor * 100 + patch before 10 and major * 10000 + minor * 100 + patch
      from 10 (NvInferRuntimeCommon.h / NvInferRuntimeBase.h).
    """
    _check_precision(precision)
    major, minor = parse_version(tensorrt_version)
    if (major, minor) < MIN_VERSION:
        raise TensorRTError(
            f"TensorRT {tensorrt_version} is too old: destseg-edge needs 8.5 (JetPack 5.1) or newer; "
            f"upgrade JetPack or use the onnxruntime backend"
        )
    explicit_batch = ("EXPLICIT_BATCH",) if major < 10 else ()
    if precision == "fp32":
        return BuildRecipe(explicit_batch, (), False)
    if precision == "fp16":
        if major >= 11:
            raise TensorRTError(
                f"TensorRT {tensorrt_version} has no FP16 builder flag (weak typing was removed in 11); "
                f"convert model.onnx to FP16 with ModelOpt AutoCast first, or build fp32 or int8"
            )
        return BuildRecipe(explicit_batch, ("FP16",), False)
    if calibrator:
        if major >= 11:
            raise TensorRTError(
                f"TensorRT {tensorrt_version} removed implicit INT8 calibration; build the bundle's "
                f"Q/DQ model (int8_trt variant) without a calibrator"
            )
        patch = int(re.match(r"^\s*\d+\.\d+(?:\.(\d+))?", str(tensorrt_version)).group(1) or 0)
        number = major * (1000 if major < 10 else 10000) + minor * 100 + patch
        return BuildRecipe(explicit_batch, ("INT8",), True, f"TRT-{number}-EntropyCalibration2")
    if major >= 11:
        return BuildRecipe((), (), False)  # strongly typed is the only mode
    if major >= 10:
        return BuildRecipe(("STRONGLY_TYPED",), (), False)
    return BuildRecipe(explicit_batch, ("INT8",), False)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def device_prefix(device: DeviceInfo) -> str:
    """GPU, compute capability and TensorRT version as a file-name prefix (shared by the timing cache)."""
    cc = device.compute_capability.replace(".", "")
    return f"{_slug(device.gpu_name)}-sm{cc}-trt{device.tensorrt_version}"


def engine_key(
    onnx_sha256: str,
    precision: str,
    device: DeviceInfo,
    batch: Optional[Tuple[int, int, int]] = None,
    calibration_sha256: Optional[str] = None,
) -> str:
    """A file-name-safe key that changes whenever the engine would be invalid.

    ``batch`` is the (min, opt, max) profile of a dynamic-batch graph; a static graph has none.
    ``calibration_sha256`` is the calibration cache of an implicit-INT8 engine (new scales, new engine).
    """
    _check_precision(precision)
    for digest in (onnx_sha256, calibration_sha256 or "0" * 64):
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise TensorRTError(f"{digest!r} is not a sha256 hex digest of the ONNX file or calibration cache")
    key = f"{device_prefix(device)}-{precision}-{onnx_sha256[:16]}"
    if batch is not None:
        key += "-b{}-{}-{}".format(*batch)
    if calibration_sha256 is not None:
        key += f"-c{calibration_sha256[:8]}"
    return key


def engine_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"{key}{ENGINE_SUFFIX}"


def sidecar_path(engine: str | os.PathLike) -> Path:
    return Path(engine).with_suffix(SIDECAR_SUFFIX)


def timing_cache_path(cache_dir: str | os.PathLike, device: DeviceInfo) -> Path:
    """One timing cache per GPU and TensorRT version: it speeds up every later build there."""
    return Path(cache_dir) / f"{device_prefix(device)}.timing-cache"


def batch_profile(min_batch: Optional[int], opt_batch: Optional[int], max_batch: Optional[int]) -> Optional[Tuple[int, int, int]]:
    """(min, opt, max) from the three optional numbers, or None for a static graph."""
    given = [b for b in (min_batch, opt_batch, max_batch) if b is not None]
    if not given:
        return None
    lo = min_batch if min_batch is not None else 1
    hi = max_batch if max_batch is not None else max(given)
    opt = opt_batch if opt_batch is not None else lo
    if not 1 <= lo <= opt <= hi:
        raise TensorRTError(f"batch profile must satisfy 1 <= min <= opt <= max, got {lo}, {opt}, {hi}")
    return lo, opt, hi


def format_parser_errors(errors: Sequence[Any], onnx_name: str, node_names: Optional[Sequence[str]] = None) -> str:
    """One line naming each node TensorRT's ONNX parser rejected and why.

    ``errors`` are parser.get_error(i) objects: desc() and node() everywhere; TensorRT 10
    adds node_name() and node_operator(), and for 8.5 the names come from ``node_names``
    (the ONNX graph's node list) when the onnx package is there to read them.
    """
    parts = []
    for err in errors:
        index = err.node()
        name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        if not name and node_names is not None and 0 <= index < len(node_names):
            name = node_names[index]
        where = f"node {index}" if index >= 0 else "graph"
        label = " ".join(p for p in (op, repr(name) if name else "") if p)
        parts.append(f"{where}{' ' + label if label else ''}: {err.desc()}")
    if not parts:
        return f"TensorRT's ONNX parser rejected {onnx_name} without saying why; rerun with TensorRT verbose logging"
    return f"TensorRT's ONNX parser rejected {onnx_name} ({len(parts)} error{'s' if len(parts) > 1 else ''}): " + "; ".join(parts)


def installed_tensorrt_version() -> Optional[str]:
    """The TensorRT Python bindings' version, or None where there are none (read, not imported,
    where pip metadata exists; JetPack's apt package has none, so it is imported there)."""
    try:
        return importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        pass
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - bindings that do not import (a NumPy ABI clash, say) have no usable version
        return None
    return getattr(tensorrt, "__version__", None)


def with_cache_header(cache: str, header: str) -> str:
    """A calibration cache's text with its first (``TRT-<version>-<algorithm>``) line set to ``header``."""
    first, _, scales = cache.partition("\n")
    if not first.startswith("TRT-"):
        raise TensorRTError("the calibration cache has no TRT- header line; re-export the bundle with destseg-export --int8")
    return f"{header}\n{scales}"


def _import_trt():
    try:
        import tensorrt
    except ImportError as exc:
        raise TensorRTError(
            "TensorRT is not installed here (import tensorrt failed); on a Jetson it comes with JetPack, "
            "elsewhere pip install tensorrt, or use the onnxruntime backend"
        ) from exc
    return tensorrt


def _cuda_driver():
    """libcuda through ctypes: the driver API is on every machine that can run TensorRT
    (desktop drivers and JetPack alike), so no pycuda, cuda-python or torch is needed."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.cuInit(0) == 0:
            return lib
        raise TensorRTError(f"the NVIDIA driver ({name}) is there but cuInit failed: no usable GPU (check nvidia-smi or tegrastats)")
    raise TensorRTError("no NVIDIA driver (libcuda) found: TensorRT needs an NVIDIA GPU; use the onnxruntime backend here")


def cuda_driver_version() -> str:
    """The CUDA driver API version ("12.6") of this machine's driver, or a TensorRTError saying why there is none."""
    lib = _cuda_driver()
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:
        raise TensorRTError("the NVIDIA driver does not say its CUDA version; check it with nvidia-smi or tegrastats")
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def cuda_device(ordinal: int = 0) -> Tuple[str, str]:
    """(name, compute capability "8.7") of GPU ``ordinal``, through the driver API."""
    lib = _cuda_driver()

    def call(what: str, rc: int) -> None:
        if rc != 0:
            raise TensorRTError(f"CUDA driver call {what} failed with error {rc} for GPU {ordinal}; check the driver with nvidia-smi or tegrastats")

    count = ctypes.c_int(0)
    call("cuDeviceGetCount", lib.cuDeviceGetCount(ctypes.byref(count)))
    if count.value <= ordinal:
        raise TensorRTError(f"GPU {ordinal} not found (the driver sees {count.value}); pick another device")
    dev = ctypes.c_int(0)
    call("cuDeviceGet", lib.cuDeviceGet(ctypes.byref(dev), ordinal))
    name = ctypes.create_string_buffer(256)
    call("cuDeviceGetName", lib.cuDeviceGetName(name, 256, dev))
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    call("cuDeviceGetAttribute", lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev))  # COMPUTE_CAPABILITY_MAJOR
    call("cuDeviceGetAttribute", lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev))  # COMPUTE_CAPABILITY_MINOR
    return name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}"


def device_info(ordinal: int = 0) -> DeviceInfo:
    """This machine's GPU and TensorRT, or a TensorRTError saying which is missing."""
    trt = _import_trt()
    name, cc = cuda_device(ordinal)
    return DeviceInfo(name, cc, trt.__version__)


def why_no_tensorrt() -> Optional[str]:
    """None when engines can be built here, else the reason (for logs, skips and the CLI)."""
    try:
        device_info()
    except TensorRTError as exc:
        return str(exc)
    return None


def trt_available() -> bool:
    return why_no_tensorrt() is None


def _make_logger(trt):
    """A TensorRT logger that forwards to logging and keeps errors for the exception message."""

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity, msg) -> None:
            level = int(severity)
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif level == int(trt.ILogger.Severity.WARNING):
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return CollectingLogger()


def _onnx_node_names(onnx_path: Path) -> Optional[List[str]]:
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    return [n.name or n.op_type for n in model.graph.node]


def write_sidecar(engine: Path, key: str, onnx_path: str | os.PathLike, onnx_sha256: str, precision: str,
                  device: DeviceInfo, profile: Optional[Tuple[int, int, int]], build_seconds: float, **how: Any) -> None:
    """The JSON beside an engine: its key and hashes (what :func:`cached_engine` checks), what it was
    built for and from, and ``how`` (the builder's flags, or torch-tensorrt's version)."""
    write_json(sidecar_path(engine), {
        "key": key,
        "engine": engine.name,
        "engine_sha256": sha256_file(engine),
        "onnx": Path(onnx_path).name,
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "device": asdict(device),
        "batch_profile": list(profile) if profile else None,
        **how,
        "build_seconds": round(build_seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "destseg_edge_version": destseg.__version__,
    })


def read_sidecar(engine: str | os.PathLike) -> Optional[Dict[str, Any]]:
    path = sidecar_path(engine)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def cached_engine(engine: Path, key: str, onnx_sha256: str) -> bool:
    """True when ``engine`` is a complete build of exactly this key (a half-copied cache is rebuilt)."""
    side = read_sidecar(engine)
    return (
        engine.is_file()
        and side is not None
        and side.get("key") == key
        and side.get("onnx_sha256") == onnx_sha256
        and side.get("engine_sha256") == sha256_file(engine)
    )


def build_engine(
    onnx_path: str | os.PathLike,
    precision: str = "fp32",
    out_dir: str | os.PathLike | None = None,
    workspace_gb: float = DEFAULT_WORKSPACE_GB,
    min_batch: Optional[int] = None,
    opt_batch: Optional[int] = None,
    max_batch: Optional[int] = None,
    calibration_cache: str | os.PathLike | None = None,
    device: Optional[DeviceInfo] = None,
    force: bool = False,
) -> Path:
    """Build (or find in ``out_dir``) the serialised engine for this ONNX, precision and GPU.

    Pass min/opt/max batch for a dynamic-batch graph. ``calibration_cache`` (a bundle's
    calibration.cache) makes an implicit-INT8 engine from a float graph on TensorRT before 11,
    its scales read through a calibrator that gives this TensorRT's header and no data (the
    Q/DQ graph needs none). Returns the plan's path; its sidecar JSON sits beside it, the
    timing cache in the same folder.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise TensorRTError(f"ONNX file {onnx_path} does not exist; export a bundle with destseg-export first")
    cache_path = Path(calibration_cache) if calibration_cache is not None else None
    if cache_path is not None and not cache_path.is_file():
        raise TensorRTError(f"calibration cache {cache_path} does not exist; re-export the bundle with destseg-export --int8")
    device = device or device_info()
    recipe = build_recipe(device.tensorrt_version, precision, cache_path is not None)
    profile = batch_profile(min_batch, opt_batch, max_batch)
    onnx_sha = sha256_file(onnx_path)
    cache_sha = sha256_file(cache_path) if cache_path is not None else None
    out_dir = Path(out_dir) if out_dir is not None else default_cache_dir()
    key = engine_key(onnx_sha, precision, device, profile, cache_sha)
    engine = engine_path(out_dir, key)
    if not force and cached_engine(engine, key, onnx_sha):
        log.info("using cached TensorRT engine %s", engine)
        return engine

    trt = _import_trt()
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in recipe.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise TensorRTError(format_parser_errors(errors, onnx_path.name, _onnx_node_names(onnx_path)))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    for name in recipe.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    opt_profile = _add_profile(builder, network, config, profile, onnx_path.name)
    if recipe.uses_calibrator:
        cache = with_cache_header(cache_path.read_text(), recipe.calibration_cache_header)
        config.int8_calibrator = _cache_calibrator(trt, cache.encode(), profile[1] if opt_profile is not None else 1)
        if opt_profile is not None:  # "must be set if int8 calibration is used ... with runtime dimensions"
            config.set_calibration_profile(opt_profile)

    out_dir.mkdir(parents=True, exist_ok=True)
    timing_file = timing_cache_path(out_dir, device)
    timing = config.create_timing_cache(timing_file.read_bytes() if timing_file.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)

    log.info("building TensorRT %s engine for %s on %s (minutes on a Jetson)", precision, onnx_path.name, device.gpu_name)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = logger.errors[-1] if logger.errors else "no error was logged"
        raise TensorRTError(f"TensorRT could not build a {precision} engine from {onnx_path.name}: {detail}")
    seconds = time.perf_counter() - start

    with atomic_path(engine) as tmp:
        tmp.write_bytes(memoryview(plan))
    with atomic_path(timing_file) as tmp:
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    write_sidecar(engine, key, onnx_path, onnx_sha, precision, device, profile, seconds,
                  workspace_gb=workspace_gb, network_flags=list(recipe.network_flags),
                  builder_flags=list(recipe.builder_flags), implicit_int8_calibrator=recipe.uses_calibrator,
                  calibration_cache_sha256=cache_sha, timing_cache=timing_file.name)
    log.info("TensorRT engine %s built in %.0f s", engine, seconds)
    return engine


def _cache_calibrator(trt, cache: bytes, batch: int):
    """An entropy calibrator that hands TensorRT ``cache`` and never a batch: every scale is in the
    cache, and the device has no calibration images (the workstation calibrated)."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            return None  # asked only if TensorRT rejects the cache; the build then fails with its message

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data) -> None:
            pass  # the bundle's cache stays as exported

    return CacheCalibrator()


def _add_profile(builder, network, config, profile: Optional[Tuple[int, int, int]], onnx_name: str) -> Any:
    """An optimisation profile for a dynamic batch (returned), None for a static graph; only the
    batch dimension may be dynamic."""
    dynamic = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise TensorRTError(f"{onnx_name}: input {tensor.name} has dynamic non-batch dims {shape}; re-export with a fixed image size")
        if shape and shape[0] < 0:
            dynamic.append((tensor.name, shape[1:]))
    if dynamic and profile is None:
        raise TensorRTError(f"{onnx_name} has a dynamic batch: pass min/opt/max batch (destseg.json io.batch_profile)")
    if not dynamic:
        if profile is not None:
            log.warning("%s has a static batch; ignoring the batch profile %s", onnx_name, profile)
        return None
    opt_profile = builder.create_optimization_profile()
    for name, rest in dynamic:
        lo, opt, hi = profile
        opt_profile.set_shape(name, (lo, *rest), (opt, *rest), (hi, *rest))
    config.add_optimization_profile(opt_profile)
    return opt_profile


def bundle_batch_profile(bundle: Bundle, batch_size: int = 1) -> Optional[Tuple[int, int, int]]:
    """The (min, opt, max) batch profile of a dynamic-batch bundle, None for a static one.

    destseg.json's ``io.batch_profile``; a bundle without one is built for 1 to ``batch_size``,
    optimised for ``batch_size`` (the batch the runtime feeds).
    """
    if not bundle.dynamic_batch:
        return None
    profile = bundle.meta["io"].get("batch_profile") or [1, batch_size, batch_size]
    return batch_profile(*profile)


def engine_for_bundle(
    bundle: Bundle | str | os.PathLike,
    precision: str = "fp32",
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 1,
    device: Optional[DeviceInfo] = None,
    **build_options: Any,
) -> Path:
    """The engine of a bundle (a path or a loaded :class:`destseg.bundle.Bundle`) at ``precision``.

    Picks the variant's ONNX (:func:`destseg.inference.variant_for`, FP16 from the FP32 graph
    when the bundle has no FP16 variant) and the batch profile (:func:`bundle_batch_profile`),
    reuses an engine that destseg-export built into BUNDLE/engines when its sidecar matches this
    GPU, TensorRT, ONNX and profile, else builds (or finds) one in ``out_dir`` (default:
    :func:`default_cache_dir`). ``build_options`` go to :func:`build_engine`.
    """
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    _check_precision(precision)
    variant = variant_for(precision, loaded.variants, "tensorrt")
    onnx_path = loaded.model_path(variant)
    onnx_sha = loaded.meta["files"][loaded.meta["models"][variant]["file"]]  # checked by load_bundle
    profile = bundle_batch_profile(loaded, batch_size)
    device = device or device_info()
    key = engine_key(onnx_sha, precision, device, profile)
    shipped = engine_path(loaded.path / ENGINES_DIR, key)
    if cached_engine(shipped, key, onnx_sha):
        return shipped
    batch = dict(zip(("min_batch", "opt_batch", "max_batch"), profile)) if profile else {}
    return build_engine(onnx_path, precision, out_dir, device=device, **batch, **build_options)
