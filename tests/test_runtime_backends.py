"""Inference backends: what open_backend gives, the auto choice, variants, and refusals of bad bundles.

``write_brightness_bundle`` builds a real (tiny) model with the ONNX helper API and a valid
bundle around it: anomaly map = the pixel's mean brightness, score = the map's mean. It keeps
the runtime tests independent of torch and makes verdicts predictable (white is NG, black OK).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from destseg.bundle import BundleError, write_meta
from destseg.preprocess import IMAGENET_MEAN, IMAGENET_STD
from destseg.runtime.backends import choose_backend, is_run, open_backend
from destseg.cpu import physical_cores
from destseg.runtime.backends.onnxruntime import choose_variant
from destseg.runtime.errors import BackendError


def brightness_onnx(path: Path, size: int, batch: Optional[int] = 1) -> None:
    """uint8 N x S x S x 3 -> anomaly_map N x 1 x S x S (mean brightness in [0, 1]) and score N (its mean)."""
    import onnx
    from onnx import TensorProto, helper

    n = batch if batch is not None else "batch"
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["gray"], axes=[3], keepdims=1),
        helper.make_node("Transpose", ["gray"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Mul", ["nchw", "inv255"], ["anomaly_map"]),
        helper.make_node("ReduceMean", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "brightness",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [n, size, size, 3])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [n, 1, size, size]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, [n])],
        [helper.make_tensor("inv255", TensorProto.FLOAT, [], [1.0 / 255.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_brightness_bundle(folder: Path, size: int = 64, onnx_size: Optional[int] = None,
                            thresholds: Optional[dict] = None, dynamic: bool = False) -> Path:
    """A valid bundle (destseg.json with hashes) around the brightness model; ``onnx_size`` may differ to break it."""
    folder.mkdir(parents=True, exist_ok=True)
    brightness_onnx(folder / "model.onnx", onnx_size or size, None if dynamic else 1)
    batch = "batch" if dynamic else 1
    meta = {
        "model": {"backbone": "brightness", "image_size": size, "category": None, "weights_sha256": "0" * 64, "config": {}},
        "preprocessing": {"size": size, "layout": "NHWC", "dtype": "uint8", "color": "RGB", "resize": "area",
                          "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "normalisation": "inside-graph"},
        "thresholds": {"image": 0.5, "pixel": 0.5, "method": "f1"} if thresholds is None else thresholds,
        "io": {"inputs": [{"name": "image", "shape": [batch, size, size, 3], "dtype": "uint8"}],
               "outputs": [{"name": "anomaly_map", "shape": [batch, 1, size, size], "dtype": "float32"},
                           {"name": "score", "shape": [batch], "dtype": "float32"}],
               "dynamic_batch": dynamic},
        "models": {"fp32": {"file": "model.onnx", "precision": "fp32", "target": "any"}},
    }
    write_meta(folder, meta)
    return folder


@pytest.fixture
def bundle(tmp_path) -> Path:
    return write_brightness_bundle(tmp_path / "bundle")


@pytest.fixture(scope="session")
def destseg_run(tmp_path_factory) -> Path:
    """A real, untrained resnet18 DeSTSeg run folder at 64 x 64 (written by the checkpoint code, no dataset needed)."""
    from destseg.train.checkpoint import save_checkpoint
    from destseg.train.model import DeSTSeg

    model = DeSTSeg("resnet18").eval()
    config = {"backbone": "resnet18", "teacher": "random", "image_size": 64, "category": None, "seed": 0,
              "mean": list(model.spec.mean), "std": list(model.spec.std)}
    run = tmp_path_factory.mktemp("runtime") / "run"
    save_checkpoint(run, model, config, {"step": 0, "phase": "student"})
    return run


def test_onnxruntime_backend_returns_maps_and_scores_of_the_bundle_model(bundle):
    backend = open_backend("onnxruntime", bundle, "auto")
    assert (backend.name, backend.precision, backend.image_size, backend.batch_size) == ("onnxruntime", "fp32", 64, 1)
    assert backend.thresholds["image"] == 0.5
    assert "fp32 (model.onnx) on CPUExecutionProvider" in backend.detail
    frame = np.zeros((1, 64, 64, 3), np.uint8)
    frame[0, :32] = 255
    maps, scores = backend.infer(frame)
    assert maps.shape == (1, 64, 64) and maps.dtype == np.float32 and scores.shape == (1,)
    assert maps[0, 0, 0] == pytest.approx(1.0) and maps[0, 63, 0] == pytest.approx(0.0)
    assert scores[0] == pytest.approx(0.5)
    assert set(backend.last_timings()) == {"h2d", "infer", "d2h"} and backend.last_timings()["infer"] > 0
    with pytest.raises(BackendError, match="64 x 64 x 3 uint8"):
        backend.infer(np.zeros((1, 32, 32, 3), np.uint8))


def write_nchw_bundle(folder: Path, size: int = 16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0)) -> Path:
    """A bundle exported for callers that normalise (float32 N x 3 x S x S in): map = the channel
    mean of the normalised input, score = its mean; so the map shows the normalisation used."""
    import onnx
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["anomaly_map"], axes=[1], keepdims=1),
         helper.make_node("ReduceMean", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0)],
        "channel-mean",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, size, size]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    write_meta(folder, {
        "model": {"backbone": "channel-mean", "image_size": size, "category": None, "weights_sha256": "0" * 64, "config": {}},
        "preprocessing": {"size": size, "layout": "NCHW", "dtype": "float32", "color": "RGB", "resize": "area",
                          "mean": list(mean), "std": list(std), "normalisation": "by-caller"},
        "thresholds": {},
        "io": {"inputs": [{"name": "image", "shape": [1, 3, size, size], "dtype": "float32"}],
               "outputs": [{"name": "anomaly_map", "shape": [1, 1, size, size], "dtype": "float32"},
                           {"name": "score", "shape": [1], "dtype": "float32"}],
               "dynamic_batch": False},
        "models": {"fp32": {"file": "model.onnx", "precision": "fp32", "target": "any"}},
    })
    return folder


def test_a_float_nchw_bundle_gets_frames_normalised_with_its_own_mean_and_std(tmp_path):
    backend = open_backend("onnxruntime", write_nchw_bundle(tmp_path / "b"), "fp32")
    assert (backend.variant, backend.layout, backend.thresholds) == ("fp32", "NCHW", {})
    frame = np.zeros((1, 16, 16, 3), np.uint8)
    frame[0, :, :, 0] = 255  # R = 1.0 -> (1 - 0.5) / 0.5 = 1; G = 0 -> -1; B = 0 -> 0
    maps, scores = backend.infer(frame)
    np.testing.assert_allclose(maps, 0.0, atol=1e-6)
    frame[0, :, :, 1] = 255  # G = 1.0 -> (1 - 0.25) / 0.25 = 3
    maps, _ = backend.infer(frame)
    np.testing.assert_allclose(maps, (1.0 + 3.0 + 0.0) / 3, atol=1e-6)


def test_the_variant_that_runs_is_an_attribute_not_a_string_to_parse(bundle):
    backend = open_backend("onnxruntime", bundle, "auto")
    assert backend.variant == "fp32" and backend.detail.startswith("fp32 ")


def test_dynamic_batch_bundle_takes_several_frames(tmp_path):
    backend = open_backend("onnxruntime", write_brightness_bundle(tmp_path / "b", dynamic=True), "fp32", batch_size=3)
    maps, scores = backend.infer(np.full((3, 64, 64, 3), 51, np.uint8))
    assert maps.shape == (3, 64, 64) and np.allclose(scores, 0.2)


def test_a_model_whose_size_differs_from_the_bundle_is_refused(tmp_path):
    broken = write_brightness_bundle(tmp_path / "b", size=64, onnx_size=32)
    with pytest.raises(BackendError, match="takes 32 x 32 images but destseg.json says 64"):
        open_backend("onnxruntime", broken, "fp32")


def test_int8_without_an_int8_model_names_the_variants_present(bundle):
    with pytest.raises(BundleError, match=r"no int8_cpu model \(has: fp32\)"):
        open_backend("onnxruntime", bundle, "int8")


def test_an_edited_bundle_is_refused(bundle):
    with open(bundle / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="does not match its sha256"):
        open_backend("onnxruntime", bundle, "fp32")


def test_variant_follows_precision_and_providers():
    cpu, trt = ["CPUExecutionProvider"], ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    everything = ["fp32", "int8_trt", "int8_cpu"]
    assert choose_variant("auto", everything, cpu) == ("int8_cpu", "int8")
    assert choose_variant("auto", everything, trt) == ("int8_trt", "int8")
    assert choose_variant("auto", ["fp32"], cpu) == ("fp32", "fp32")
    assert choose_variant("fp16", ["fp32"], trt) == ("fp32", "fp16")
    with pytest.raises(BackendError, match="TensorRT execution provider"):
        choose_variant("fp16", everything, cpu)


def test_auto_picks_onnxruntime_without_openvino_and_says_why(bundle, monkeypatch):
    from destseg.runtime import backends
    from destseg.tensorrt import why_no_tensorrt

    if why_no_tensorrt() is None:
        pytest.skip("TensorRT and a GPU are present: auto picks tensorrt")
    have = backends._have
    monkeypatch.setattr(backends, "_have", lambda module: module != "openvino" and have(module))
    name, why = choose_backend(bundle)
    assert name == "onnxruntime" and why.startswith("TensorRT is not usable here: ")
    assert ("OpenVINO is not installed" if backends.is_x86() else "OpenVINO is for x86") in why
    assert choose_backend(bundle, "torch") == ("torch", "as asked (--backend)")
    with pytest.raises(BackendError, match="unknown backend"):
        choose_backend(bundle, "tflite")


def test_physical_cores_counts_cores_not_threads():
    assert 1 <= physical_cores() <= len(__import__("os").sched_getaffinity(0))


def test_importing_the_onnxruntime_backend_does_not_import_torch():
    code = "import destseg.runtime.backends.onnxruntime, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_backend_runs_a_training_run(destseg_run):
    assert is_run(destseg_run)
    name, why = choose_backend(destseg_run)
    assert name == "torch" and "training run" in why
    backend = open_backend("torch", destseg_run, "fp32")
    assert (backend.precision, backend.image_size) == ("fp32", 64)
    rng = np.random.default_rng(0)
    maps, scores = backend.infer(rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    assert maps.shape == (2, 64, 64) and scores.shape == (2,)
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    with pytest.raises(BackendError, match="fp32 or bf16, not int8"):
        open_backend("torch", destseg_run, "int8")


def test_torch_backend_matches_the_bundle_exported_from_the_same_run(tmp_path):
    """The torch backend normalises outside the graph and runs the model's own forward; the
    bundle normalises inside: both must give the same maps and scores."""
    from destseg.export.bundle_writer import export_bundle
    from tests.conftest import untrained_run

    run = untrained_run(tmp_path / "run")
    export_bundle(run, tmp_path / "bundle")
    frames = np.random.default_rng(2).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    torch_map, torch_score = open_backend("torch", run, "fp32").infer(frames)
    ort_map, ort_score = open_backend("onnxruntime", tmp_path / "bundle", "fp32").infer(frames)
    assert np.ptp(ort_map) > 1e-3  # not a comparison of constants
    np.testing.assert_allclose(torch_map, ort_map, atol=1e-4)
    np.testing.assert_allclose(torch_score, ort_score, atol=1e-4)


def test_bf16_is_used_only_where_the_cpu_has_it():
    from destseg.runtime.backends.torch import resolve_precision

    assert resolve_precision("auto", True) == "bf16"
    assert resolve_precision("auto", False) == "fp32"
    assert resolve_precision("fp32", True) == "fp32"


# tensorrt.DataType's members and their itemsize in bytes, as NVIDIA documents them (Python API
# "DataType" pages; the bindings' python/src/infer/pyFoundationalTypes.cpp on the release/8.5,
# release/10.3 and release/10.13 branches of NVIDIA/TensorRT). JetPack 5.1 ships 8.5.2,
# JetPack 6.1/6.2 10.3, JetPack 7 10.13.
TRT_DATA_TYPES = {
    "8.5": {"FLOAT": 4, "HALF": 2, "INT8": 1, "INT32": 4, "BOOL": 1, "UINT8": 1},
    "10.3": {"FLOAT": 4, "HALF": 2, "BF16": 2, "INT8": 1, "INT32": 4, "INT64": 8, "BOOL": 1, "UINT8": 1,
             "FP8": 1, "INT4": 0.5},
    "10.13": {"FLOAT": 4, "HALF": 2, "BF16": 2, "INT8": 1, "INT32": 4, "INT64": 8, "BOOL": 1, "UINT8": 1,
              "FP8": 1, "INT4": 0.5, "FP4": 0.5, "E8M0": 1},
}
NUMPY_KIND = {"FLOAT": "f", "HALF": "f", "INT8": "i", "INT32": "i", "INT64": "i", "BOOL": "b", "UINT8": "u"}


@pytest.mark.parametrize("version", sorted(TRT_DATA_TYPES))
def test_every_tensorrt_data_type_has_a_numpy_dtype_or_a_clear_refusal(version):
    """Our table replaces trt.nptype, whose TensorRT 8.5.2 version (JetPack 5.1) uses np.bool, gone in NumPy 1.24."""
    from destseg.runtime.backends.tensorrt import numpy_dtype

    for name, itemsize in TRT_DATA_TYPES[version].items():
        if name in NUMPY_KIND:
            dtype = numpy_dtype(name)
            assert (dtype.itemsize, dtype.kind) == (itemsize, NUMPY_KIND[name]), name
        else:  # BF16 and the 8/4-bit floats: NumPy has no such type
            with pytest.raises(BackendError, match=f"anomaly_map is {name}, which has no NumPy type"):
                numpy_dtype(name, "anomaly_map")
    assert numpy_dtype("UINT8") == np.uint8 and numpy_dtype("FLOAT") == np.float32  # the bundle's input and outputs


def test_tensorrt_backend_matches_onnxruntime(bundle):
    from destseg.runtime.backends import why_no_tensorrt_backend

    reason = why_no_tensorrt_backend()
    if reason:
        pytest.skip(f"tensorrt backend not usable here: {reason}")
    frame = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    trt_backend = open_backend("tensorrt", bundle, "fp32")
    try:
        maps, scores = trt_backend.infer(frame)
        assert set(trt_backend.last_timings()) == {"h2d", "infer", "d2h"}
    finally:
        trt_backend.close()
    ref_maps, ref_scores = open_backend("onnxruntime", bundle, "fp32").infer(frame)
    np.testing.assert_allclose(maps, ref_maps, atol=1e-5)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
