"""INT8 on a tiny real model: Q/DQ placement, both forms run, report, gate, TensorRT cache."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import onnx
import pytest

from destseg.bundle import load_bundle
from destseg.calibration import trt_cache
from destseg.tensorrt import installed_tensorrt_version
from destseg.calibration.cli import run as run_int8
from destseg.calibration.images import CalibrationError, select_images
from destseg.calibration.int8 import Int8GateError
from destseg.calibration.report import gate, run_onnx
from tests.conftest import CATEGORY, untrained_run


@pytest.fixture(scope="module")
def untrained_bundle(synthetic_root, tmp_path_factory):
    """A seeded untrained model whose maps and scores vary from image to image (a 3-step run's
    map is nearly constant, and quantisation noise would decide its metrics)."""
    from destseg.export.bundle_writer import export_bundle

    run = untrained_run(tmp_path_factory.mktemp("untrained") / "run", data=str(synthetic_root))
    bundle = run.parent / "bundle"
    export_bundle(run, bundle)
    return bundle


@pytest.fixture(scope="module")
def int8_bundle(untrained_bundle, synthetic_root, tmp_path_factory):
    bundle = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(untrained_bundle, bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few calibration images: expected here
        report = run_int8(bundle, ["--calib-dir", str(synthetic_root), "--calib-category", CATEGORY,
                                   "--calib-count", "8", "--eval-data", str(synthetic_root), "--category", CATEGORY])
    return bundle, report


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _initializers(model):
    return {i.name: i for i in model.graph.initializer}


def test_tensorrt_form_has_symmetric_qdq_on_every_conv_and_a_float_tail(int8_bundle):
    bundle, _ = int8_bundle
    model = onnx.load(str(bundle / "model.int8.onnx"))
    prod, inits = _producers(model), _initializers(model)
    sigmoid_inputs = {n.input[0] for n in model.graph.node if n.op_type == "Sigmoid"}
    logit = [n for n in model.graph.node if n.op_type == "Conv" and n.output[0] in sigmoid_inputs]
    assert len(logit) == 1 and logit[0].input[1] in inits  # the logit conv keeps float weights
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n not in logit]
    assert convs
    for conv in convs:
        act, weight = prod[conv.input[0]], prod[conv.input[1]]
        assert act.op_type == "DequantizeLinear" and weight.op_type == "DequantizeLinear", conv.name
        zero_point = onnx.numpy_helper.to_array(inits[act.input[2]])
        assert zero_point.dtype == np.int8 and not zero_point.any()  # symmetric int8 activations
        w_scale = onnx.numpy_helper.to_array(inits[weight.input[1]])
        out_channels = onnx.numpy_helper.to_array(inits[weight.input[0]]).shape[0]
        assert w_scale.shape == (out_channels,)  # per-channel weights
        if len(conv.input) > 2:  # biases stay float for TensorRT to fuse
            assert conv.input[2] in inits and inits[conv.input[2]].data_type == onnx.TensorProto.FLOAT
    for node in model.graph.node:
        if node.op_type in ("Sigmoid", "TopK", "ReduceMean"):
            assert all(prod[i].op_type != "DequantizeLinear" for i in node.input if i in prod), node.op_type
    constants = set(inits) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    residual = [n for n in adds if not any(i in constants for i in n.input)]
    assert residual and all(all(prod[i].op_type == "DequantizeLinear" for i in n.input) for n in residual)
    epsilon_adds = [n for n in adds if any(i in constants for i in n.input)]
    assert epsilon_adds and all(all(i in constants or prod[i].op_type != "DequantizeLinear" for i in n.input)
                                for n in epsilon_adds)


def test_cpu_form_uses_unsigned_activations(int8_bundle):
    bundle, _ = int8_bundle
    model = onnx.load(str(bundle / "model.int8.cpu.onnx"))
    inits = _initializers(model)
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    assert onnx.numpy_helper.to_array(inits[q.input[2]]).dtype == np.uint8


def test_both_forms_run_and_stay_close_to_fp32(int8_bundle, synthetic_root):
    bundle, report = int8_bundle
    b = load_bundle(bundle)
    assert {"int8_trt", "int8_cpu"} <= set(b.variants)
    from destseg.datasets import load_test_set

    images, _, _ = load_test_set(synthetic_root, CATEGORY, b.image_size)
    ref_maps, _ = run_onnx(b.model_path("fp32"), images)
    for form in ("int8_trt", "int8_cpu"):
        maps, scores = run_onnx(b.model_path(form), images)
        assert maps.shape == ref_maps.shape and np.isfinite(scores).all()
        assert np.abs(maps - ref_maps).mean() < 0.05, form
        assert report["normal_images"][form]["map_mean_abs_diff"] < 0.05


def test_report_and_bundle_record_everything(int8_bundle):
    bundle, report = int8_bundle
    on_disk = json.loads((bundle / "quantization_report.json").read_text())
    assert on_disk["gate"]["status"] == "passed"
    for form in ("int8_trt", "int8_cpu"):
        row = on_disk["normal_images"][form]
        assert set(row) >= {"map_mean_abs_diff", "map_max_abs_diff", "score_pearson", "score_spearman"}
        assert set(on_disk["metrics"][form]) == {"image_auroc", "pixel_auroc", "pixel_ap", "aupro", "iap", "iap90"}
        assert f"delta_{form}" in on_disk["metrics"]
    assert "# INT8 quantisation report" in (bundle / "quantization_report.md").read_text()
    meta = load_bundle(bundle).meta
    cal = meta["calibration"]
    assert cal["method"] == "minmax" and cal["count"] == 8 and len(cal["images"]) == 8
    assert all(len(i["sha256"]) == 64 for i in cal["images"])
    assert meta["models"]["int8_trt"]["target"] == "tensorrt" and meta["models"]["int8_cpu"]["target"] == "cpu"


def test_tensorrt_calibration_cache_parses_with_the_same_ranges(int8_bundle):
    bundle, _ = int8_bundle
    header, scales = trt_cache.parse(bundle / "calibration.cache")
    assert header == trt_cache.cache_header(installed_tensorrt_version())  # TRT-8502-... where none is installed
    ranges = json.loads((bundle / "calibration_ranges.json").read_text())["data"]
    assert scales.keys() == ranges.keys()
    name, entry = next(iter(ranges.items()))
    amax = max(abs(entry["lowest"]["data"][0]), abs(entry["highest"]["data"][0]))
    assert scales[name] == pytest.approx(amax / 127, rel=1e-6)
    graph_tensors = {o for n in onnx.load(str(bundle / "model.onnx")).graph.node for o in n.output}
    graph_tensors |= {i.name for i in onnx.load(str(bundle / "model.onnx")).graph.input}
    assert set(scales) <= graph_tensors  # names TensorRT 8.5 will find when it parses model.onnx


def test_gate_fires_on_a_broken_calibration_and_leaves_the_bundle_alone(int8_bundle, untrained_bundle, synthetic_root, tmp_path):
    good, _ = int8_bundle
    ranges = json.loads((good / "calibration_ranges.json").read_text())
    for entry in ranges["data"].values():  # every range ~zero: activations saturate, the map goes flat
        for side in ("lowest", "highest"):
            entry[side]["data"] = [v * 1e-9 for v in entry[side]["data"]]
    (tmp_path / "broken.json").write_text(json.dumps(ranges))
    bundle = tmp_path / "bundle"
    shutil.copytree(untrained_bundle, bundle)
    before = sorted(p.name for p in bundle.iterdir())
    args = ["--calib-dir", str(synthetic_root), "--calib-category", CATEGORY, "--calib-count", "8",
            "--calib-ranges", str(tmp_path / "broken.json"), "--eval-data", str(synthetic_root),
            "--category", CATEGORY, "--search-budget-s", "4", "--analysis-images", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Int8GateError, match="allow-degraded"):
            run_int8(bundle, args)
        assert sorted(p.name for p in bundle.iterdir()) == before
        refused = json.loads((tmp_path / "bundle.int8-refused" / "quantization_report.json").read_text())
        assert refused["gate"]["status"] == "failed" and refused["gate"]["search"]["trials"] >= 1
        report = run_int8(bundle, args + ["--allow-degraded"])
    assert report["gate"]["status"] == "degraded-allowed"
    assert load_bundle(bundle).meta["calibration"]["gate"] == "degraded-allowed"


def test_gate_limits_are_half_a_point_auroc_and_one_point_ap():
    ref = {"image_auroc": 95.0, "pixel_ap": 60.0}
    assert gate(ref, {"image_auroc": 94.6, "pixel_ap": 59.1}).passed
    assert not gate(ref, {"image_auroc": 94.4, "pixel_ap": 60.0}).passed
    assert not gate(ref, {"image_auroc": 95.0, "pixel_ap": 58.9}).passed
    assert not gate(ref, {"image_auroc": float("nan"), "pixel_ap": 60.0}).passed


def test_calibration_images_are_normal_and_deterministic(synthetic_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = select_images(synthetic_root, CATEGORY, count=5, seed=3)
        assert a == select_images(synthetic_root, CATEGORY, count=5, seed=3)
        assert len(a) == 5 and all(p.parent.name == "good" for p in a)
    with pytest.warns(UserWarning, match="only 5 images"):
        select_images(synthetic_root, CATEGORY, count=5)
    defective = next(p for p in (synthetic_root / CATEGORY / "test").iterdir() if p.name != "good")
    with pytest.raises(CalibrationError, match="--force-calib"):
        select_images(defective)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert select_images(defective, force=True)
