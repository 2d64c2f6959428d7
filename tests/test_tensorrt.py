"""The TensorRT engine builder: version branching, cache keys, error reporting, caching.

Everything but the real builds runs without TensorRT; those are skipped with the reason
unless TensorRT and an NVIDIA GPU are present.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from destseg import tensorrt as trt_builder
from destseg.tensorrt import (
    DeviceInfo,
    TensorRTError,
    batch_profile,
    build_engine,
    build_recipe,
    engine_key,
    engine_path,
    format_parser_errors,
    sidecar_path,
    timing_cache_path,
    with_cache_header,
)

ORIN = DeviceInfo("Orin (nvgpu)", "8.7", "10.3.0.30")
SHA = "ab" * 32


@pytest.mark.parametrize(
    "version, precision, network, builder",
    [
        ("8.5.2.2", "fp32", ("EXPLICIT_BATCH",), ()),
        ("8.5.2.2", "fp16", ("EXPLICIT_BATCH",), ("FP16",)),
        ("8.5.2.2", "int8", ("EXPLICIT_BATCH",), ("INT8",)),  # Q/DQ graph with the INT8 flag
        ("10.3.0.30", "fp32", (), ()),
        ("10.3.0.30", "fp16", (), ("FP16",)),
        ("10.13.3", "int8", ("STRONGLY_TYPED",), ()),
        ("11.0.0", "fp32", (), ()),
        ("11.2.1", "int8", (), ()),  # strongly typed is the only mode
    ],
)
def test_build_recipe_follows_the_tensorrt_version(version, precision, network, builder):
    recipe = build_recipe(version, precision)
    assert recipe.network_flags == network
    assert recipe.builder_flags == builder
    assert not recipe.uses_calibrator


def test_implicit_int8_calibrator_only_before_tensorrt_11():
    assert build_recipe("8.5.2", "int8", calibrator=True).uses_calibrator
    assert build_recipe("10.3", "int8", calibrator=True).builder_flags == ("INT8",)
    with pytest.raises(TensorRTError, match="removed implicit INT8"):
        build_recipe("11.0.0", "int8", calibrator=True)


@pytest.mark.parametrize("version, header", [
    ("8.5.2.2", "TRT-8502-EntropyCalibration2"),  # JetPack 5.1.x
    ("8.6.2", "TRT-8602-EntropyCalibration2"),  # JetPack 6.0
    ("10.3.0.30", "TRT-100300-EntropyCalibration2"),  # JetPack 6.1/6.2: NV_TENSORRT_VERSION is major * 10000 from 10
    ("10.13", "TRT-101300-EntropyCalibration2"),
])
def test_the_calibration_cache_header_follows_the_tensorrt_version(version, header):
    assert build_recipe(version, "int8", calibrator=True).calibration_cache_header == header
    assert build_recipe(version, "int8").calibration_cache_header == ""  # the Q/DQ graph reads no cache


def test_the_device_builder_rewrites_a_cache_header_for_its_own_tensorrt(tmp_path):
    from destseg.calibration import trt_cache

    cache = trt_cache.render({"image": (0.0, 255.0), "/conv1/Conv_output_0": (-3.0, 2.0)}, "8.5.2")
    assert cache.splitlines()[0] == "TRT-8502-EntropyCalibration2"
    rewritten = with_cache_header(cache, build_recipe("10.3.0.30", "int8", calibrator=True).calibration_cache_header)
    (tmp_path / "device.cache").write_text(rewritten)
    header, scales = trt_cache.parse(tmp_path / "device.cache")
    assert header == "TRT-100300-EntropyCalibration2"
    assert scales == pytest.approx({"image": 255.0 / 127, "/conv1/Conv_output_0": 3.0 / 127})
    with pytest.raises(TensorRTError, match="no TRT- header"):
        with_cache_header("image: 3f800000\n", "TRT-8502-EntropyCalibration2")


def test_a_cache_for_a_tensorrt_without_implicit_int8_names_jetpack_5s():
    from destseg.calibration.trt_cache import TARGET_TENSORRT, cache_header

    assert TARGET_TENSORRT == "8.5.2"
    assert cache_header(None) == cache_header("11.0.0") == cache_header("8.4.1") == "TRT-8502-EntropyCalibration2"
    assert cache_header("10.3.0.30") == "TRT-100300-EntropyCalibration2"


def test_fp16_on_tensorrt_11_says_what_to_do():
    with pytest.raises(TensorRTError, match="AutoCast"):
        build_recipe("11.0.0.1", "fp16")


@pytest.mark.parametrize("version, message", [("8.4.3.1", "too old"), ("7.1", "too old"), ("tensorrt", "cannot read")])
def test_unusable_versions_are_refused(version, message):
    with pytest.raises(TensorRTError, match=message):
        build_recipe(version, "fp32")


def test_unknown_precision_is_refused():
    with pytest.raises(TensorRTError, match="fp32, fp16, int8"):
        build_recipe("10.3", "bf16")


def test_engine_key_changes_with_everything_that_invalidates_an_engine():
    base = engine_key(SHA, "fp16", ORIN)
    assert base == engine_key(SHA, "fp16", ORIN)
    variants = {
        engine_key("cd" * 32, "fp16", ORIN),
        engine_key(SHA, "fp32", ORIN),
        engine_key(SHA, "fp16", DeviceInfo("NVIDIA H200", "9.0", "10.3.0.30")),
        engine_key(SHA, "fp16", DeviceInfo("Orin (nvgpu)", "8.6", "10.3.0.30")),
        engine_key(SHA, "fp16", DeviceInfo("Orin (nvgpu)", "8.7", "10.13.0")),
        engine_key(SHA, "fp16", ORIN, batch=(1, 1, 8)),
        engine_key(SHA, "fp16", ORIN, calibration_sha256="ef" * 32),
    }
    assert base not in variants and len(variants) == 7
    assert base == "orin-nvgpu-sm87-trt10.3.0.30-fp16-abababababababab"
    assert engine_key(SHA, "fp16", ORIN, batch=(1, 2, 8)).endswith("-b1-2-8")


def test_engine_key_rejects_what_is_not_a_hash_or_precision():
    with pytest.raises(TensorRTError, match="sha256"):
        engine_key("model.onnx", "fp32", ORIN)
    with pytest.raises(TensorRTError, match="precision"):
        engine_key(SHA, "int4", ORIN)


def test_engine_sidecar_and_timing_cache_live_together(tmp_path):
    key = engine_key(SHA, "fp32", ORIN)
    engine = engine_path(tmp_path, key)
    assert engine == tmp_path / f"{key}.engine"
    assert sidecar_path(engine) == tmp_path / f"{key}.json"
    # One timing cache per GPU and TensorRT version, shared by every model and precision.
    assert timing_cache_path(tmp_path, ORIN) == tmp_path / "orin-nvgpu-sm87-trt10.3.0.30.timing-cache"


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DESTSEG_ENGINE_CACHE", str(tmp_path / "engines"))
    assert trt_builder.default_cache_dir() == tmp_path / "engines"
    monkeypatch.delenv("DESTSEG_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert trt_builder.default_cache_dir() == tmp_path / "destseg" / "engines"


def test_batch_profile():
    assert batch_profile(None, None, None) is None
    assert batch_profile(1, 2, 8) == (1, 2, 8)
    assert batch_profile(None, None, 4) == (1, 1, 4)
    with pytest.raises(TensorRTError, match="min <= opt <= max"):
        batch_profile(1, 9, 8)


class ParserError10:
    """The shape of TensorRT 10's ParserError (names come with the error)."""

    def __init__(self, node, name, op, desc):
        self._node, self._name, self._op, self._desc = node, name, op, desc

    def node(self):
        return self._node

    def node_name(self):
        return self._name

    def node_operator(self):
        return self._op

    def desc(self):
        return self._desc


class ParserError85:
    """TensorRT 8.5's ParserError: a node index and a description only."""

    def __init__(self, node, desc):
        self._node, self._desc = node, desc

    def node(self):
        return self._node

    def desc(self):
        return self._desc


def test_parser_errors_name_each_node_on_one_line():
    text = format_parser_errors(
        [ParserError10(12, "/seg/Conv", "Conv", "weights must be an initializer"),
         ParserError10(-1, "", "", "unsupported opset")],
        "model.onnx",
    )
    assert "\n" not in text
    assert "rejected model.onnx (2 errors)" in text
    assert "node 12 Conv '/seg/Conv': weights must be an initializer" in text
    assert "graph: unsupported opset" in text


def test_parser_errors_of_tensorrt_8_5_take_names_from_the_onnx_graph():
    text = format_parser_errors([ParserError85(1, "UINT8 not supported")], "model.onnx", ["/Cast", "/Add"])
    assert "node 1 '/Add': UINT8 not supported" in text


def _fake_cached_engine(folder, onnx_file, device, precision="fp32", batch=None):
    """An engine entry as build_engine leaves it: plan, and a sidecar naming key and hashes."""
    onnx_sha = trt_builder.sha256_file(onnx_file)
    key = engine_key(onnx_sha, precision, device, batch)
    folder.mkdir(parents=True, exist_ok=True)
    engine = engine_path(folder, key)
    engine.write_bytes(b"serialized plan")
    sidecar_path(engine).write_text(json.dumps(
        {"key": key, "onnx_sha256": onnx_sha, "engine_sha256": trt_builder.sha256_file(engine)}))
    return engine


def test_a_complete_cached_engine_is_reused_without_tensorrt(tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"graph")
    engine = _fake_cached_engine(tmp_path, onnx_file, ORIN)
    assert build_engine(onnx_file, "fp32", tmp_path, device=ORIN) == engine


@pytest.mark.skipif(trt_builder.trt_available(), reason="checks the message given where TensorRT is absent")
def test_a_half_copied_engine_is_rebuilt_not_trusted(tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"graph")
    engine = _fake_cached_engine(tmp_path, onnx_file, ORIN)
    engine.write_bytes(b"serialized pl")  # truncated copy: the sidecar's hash no longer matches
    with pytest.raises(TensorRTError, match="TensorRT is not installed"):
        build_engine(onnx_file, "fp32", tmp_path, device=ORIN)


def test_a_changed_onnx_does_not_hit_the_old_engine(tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"graph")
    engine = _fake_cached_engine(tmp_path, onnx_file, ORIN)
    onnx_file.write_bytes(b"graph v2")
    assert not trt_builder.cached_engine(engine, engine_key(trt_builder.sha256_file(onnx_file), "fp32", ORIN),
                                         trt_builder.sha256_file(onnx_file))


def _tiny_bundle(folder):
    """A real bundle around the tiny graph below, dynamic batch with profile 1/1/4."""
    from destseg.bundle import write_meta

    folder.mkdir()
    _tiny_onnx(folder / "model.onnx")
    write_meta(folder, {
        "model": {"backbone": "tiny"},
        "preprocessing": {"size": 8},
        "io": {"inputs": [{"name": "image", "shape": ["batch", 8, 8, 3], "dtype": "uint8"}],
               "outputs": [{"name": "anomaly_map", "shape": ["batch", 1, 8, 8], "dtype": "float32"},
                           {"name": "score", "shape": ["batch"], "dtype": "float32"}],
               "dynamic_batch": True, "batch_profile": [1, 1, 4]},
        "models": {"fp32": {"file": "model.onnx", "precision": "fp32", "target": "any"}},
    })
    return folder


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_for_bundle_reuses_the_engine_export_built_for_this_gpu(tmp_path, precision):
    bundle = _tiny_bundle(tmp_path / "bundle")
    # FP16 is built from the FP32 graph, and the key carries the bundle's batch profile.
    engine = _fake_cached_engine(bundle / "engines", bundle / "model.onnx", ORIN, precision, batch=(1, 1, 4))
    assert trt_builder.engine_for_bundle(bundle, precision, tmp_path / "cache", device=ORIN) == engine


def test_engine_for_bundle_finds_the_device_cache(tmp_path):
    bundle = _tiny_bundle(tmp_path / "bundle")
    engine = _fake_cached_engine(tmp_path / "cache", bundle / "model.onnx", ORIN, "fp32", batch=(1, 1, 4))
    assert trt_builder.engine_for_bundle(bundle, "fp32", tmp_path / "cache", device=ORIN) == engine


def test_engine_for_bundle_without_int8_model_says_how_to_get_one(tmp_path):
    from destseg.bundle import BundleError

    with pytest.raises(BundleError, match="--int8"):
        trt_builder.engine_for_bundle(_tiny_bundle(tmp_path / "bundle"), "int8", tmp_path / "cache", device=ORIN)


def test_engine_for_bundle_gives_a_dynamic_bundle_without_a_profile_the_runtime_batch(tmp_path):
    """An older bundle with a dynamic batch but no io.batch_profile: built for 1 to the batch the runtime
    feeds, optimised for it (the runtime's behaviour, now the one lookup's)."""
    bundle = _tiny_bundle(tmp_path / "bundle")
    meta = json.loads((bundle / "destseg.json").read_text())
    del meta["io"]["batch_profile"]
    (bundle / "destseg.json").write_text(json.dumps(meta))
    engine = _fake_cached_engine(tmp_path / "cache", bundle / "model.onnx", ORIN, "fp32", batch=(1, 2, 2))
    assert trt_builder.engine_for_bundle(bundle, "fp32", tmp_path / "cache", batch_size=2, device=ORIN) == engine


def test_engine_for_bundle_prefers_the_bundles_own_engine_to_the_cache(tmp_path):
    bundle = _tiny_bundle(tmp_path / "bundle")
    shipped = _fake_cached_engine(bundle / "engines", bundle / "model.onnx", ORIN, "fp32", batch=(1, 1, 4))
    _fake_cached_engine(tmp_path / "cache", bundle / "model.onnx", ORIN, "fp32", batch=(1, 1, 4))
    assert trt_builder.engine_for_bundle(bundle, "fp32", tmp_path / "cache", device=ORIN) == shipped


def test_missing_onnx_is_a_clear_error(tmp_path):
    with pytest.raises(TensorRTError, match="destseg-export"):
        build_engine(tmp_path / "nope.onnx", "fp32", tmp_path, device=ORIN)


def test_builder_module_imports_neither_torch_nor_tensorrt():
    code = ("import sys, destseg.tensorrt; "
            "assert 'torch' not in sys.modules, 'torch'; assert 'tensorrt' not in sys.modules, 'tensorrt'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_availability_gives_a_reason_or_none():
    reason = trt_builder.why_no_tensorrt()
    assert (reason is None) == trt_builder.trt_available()
    if reason is not None:
        assert "TensorRT" in reason or "GPU" in reason or "driver" in reason


# ---- real builds: only where TensorRT and a GPU are present ---------------------------------

needs_trt = pytest.mark.skipif(not trt_builder.trt_available(), reason=f"no TensorRT build here: {trt_builder.why_no_tensorrt()}")


def _tiny_onnx(path, dynamic=True, custom_op=False):
    """uint8 N x 8 x 8 x 3 -> Cast -> Transpose -> Sigmoid map and ReduceMean score (a real graph)."""
    import onnx
    from onnx import TensorProto, helper

    batch = "batch" if dynamic else 1
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("ReduceMean", ["nchw"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sigmoid", ["mean"], ["anomaly_map"]),
        helper.make_node("ReduceMean", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
    ]
    if custom_op:
        nodes[3] = helper.make_node("FancySigmoid", ["mean"], ["anomaly_map"], name="fancy", domain="com.example")
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, 8, 8, 3])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [batch, 1, 8, 8]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch])],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom_op else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_build_writes_engine_sidecar_and_timing_cache_then_reuses_them(tmp_path, precision):
    onnx_file = _tiny_onnx(tmp_path / "model.onnx")
    engine = build_engine(onnx_file, precision, tmp_path / "engines", min_batch=1, opt_batch=2, max_batch=4)
    side = json.loads(sidecar_path(engine).read_text())
    assert side["precision"] == precision and side["batch_profile"] == [1, 2, 4]
    assert (tmp_path / "engines" / side["timing_cache"]).stat().st_size > 0
    mtime = engine.stat().st_mtime_ns
    assert build_engine(onnx_file, precision, tmp_path / "engines", min_batch=1, opt_batch=2, max_batch=4) == engine
    assert engine.stat().st_mtime_ns == mtime


@needs_trt
def test_real_parser_error_names_the_node(tmp_path):
    onnx_file = _tiny_onnx(tmp_path / "model.onnx", dynamic=False, custom_op=True)
    with pytest.raises(TensorRTError, match="FancySigmoid|fancy"):
        build_engine(onnx_file, "fp32", tmp_path / "engines")


@needs_trt
def test_real_dynamic_graph_without_profile_says_what_to_pass(tmp_path):
    with pytest.raises(TensorRTError, match="min/opt/max batch"):
        build_engine(_tiny_onnx(tmp_path / "model.onnx"), "fp32", tmp_path / "engines")


@needs_trt
def test_real_implicit_int8_build_reads_another_versions_cache_with_a_dynamic_batch(tmp_path):
    """The calibrator path: the cache's header is rewritten for this TensorRT and a dynamic batch gets
    its calibration profile (without one TensorRT 8.5 refuses to calibrate a network with runtime dims)."""
    from destseg.bundle import sha256_file
    from destseg.calibration import trt_cache

    if trt_builder.parse_version(trt_builder.device_info().tensorrt_version) >= (11, 0):
        pytest.skip("TensorRT 11 has no implicit INT8")
    onnx_file = _tiny_onnx(tmp_path / "model.onnx")
    ranges = {"x": (0.0, 255.0), "nchw": (0.0, 255.0), "mean": (0.0, 255.0), "anomaly_map": (0.0, 1.0), "score": (0.0, 1.0)}
    cache = tmp_path / "calibration.cache"
    cache.write_text(trt_cache.render(ranges, "8.6.1"))  # 8.6.1's header: refused as is by any other TensorRT
    engine = build_engine(onnx_file, "int8", tmp_path / "engines", min_batch=1, opt_batch=2, max_batch=4,
                          calibration_cache=cache)
    side = json.loads(sidecar_path(engine).read_text())
    assert side["implicit_int8_calibrator"] and side["calibration_cache_sha256"] == sha256_file(cache)
