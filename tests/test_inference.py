"""The shared way into a bundle's models: the precision-to-variant table, the normalisation in
its two forms, the ONNX Runtime session, the verdict rule and the latency statistics."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from destseg.bundle import BundleError
from destseg.inference import choose_variant, onnx_session, variant_for
from destseg.latency import latency_statistics
from destseg.preprocess import folded_normalization, model_input, normalize
from destseg.verdict import verdict
from tests.test_runtime_backends import write_brightness_bundle

EVERYTHING = ["fp32", "fp16", "int8_trt", "int8_cpu"]


def test_tensorrt_runs_int8_from_the_qdq_form_and_fp16_from_fp32_when_there_is_no_fp16_graph():
    assert choose_variant("auto", EVERYTHING, "tensorrt") == ("int8_trt", "int8")
    assert choose_variant("auto", ["fp32", "int8_cpu"], "tensorrt") == ("fp32", "fp16")
    assert choose_variant("fp16", ["fp32"], "tensorrt") == ("fp32", "fp16")
    assert choose_variant("fp16", EVERYTHING, "tensorrt") == ("fp16", "fp16")
    # never the CPU form: TensorRT cannot build its unsigned activations; model_path says what is missing
    assert variant_for("int8", ["fp32", "int8_cpu"], "tensorrt") == "int8_trt"


def test_onnx_runtime_picks_the_form_its_provider_runs():
    assert choose_variant("auto", EVERYTHING, "onnxruntime") == ("int8_cpu", "int8")
    assert choose_variant("int8", ["fp32", "int8_cpu"], "onnxruntime+tensorrt") == ("int8_cpu", "int8")
    assert choose_variant("auto", ["fp32"], "onnxruntime+tensorrt") == ("fp32", "fp32")
    with pytest.raises(BundleError, match="onnxruntime does not run fp16"):
        variant_for("fp16", EVERYTHING, "onnxruntime")


def test_normalize_takes_uint8_batches_and_float_images_alike():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = normalize(frames, mean, std)
    assert x.shape == (2, 3, 8, 8) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = (frames[1, 3, 5, 2] / 255.0 - mean[2]) / std[2]
    assert x[1, 2, 3, 5] == pytest.approx(expected, rel=1e-6)
    np.testing.assert_array_equal(normalize(frames[0].astype(np.float32) / 255.0, mean, std), x[0])


def test_the_graphs_folded_normalisation_is_the_same_normalisation():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    scale, shift = folded_normalization(mean, std)
    folded = np.moveaxis(frames.astype(np.float32) * scale - shift, -1, 1)
    np.testing.assert_allclose(folded, normalize(frames, mean, std), atol=2e-6)


def test_model_input_passes_nhwc_frames_through_and_normalises_for_nchw():
    frames = np.full((1, 4, 4, 3), 255, np.uint8)
    assert model_input(frames, "NHWC", None, None) is frames
    np.testing.assert_allclose(model_input(frames, "NCHW", (0.5,) * 3, (0.5,) * 3), 1.0)
    with pytest.raises(ValueError, match="unknown input layout"):
        model_input(frames, "CHW", None, None)


def test_the_session_factory_takes_any_onnx_file_and_the_thread_count(tmp_path):
    bundle = write_brightness_bundle(tmp_path / "b", size=8)
    session = onnx_session(bundle / "model.onnx", threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
    anomaly_map, score = session.run(None, {"image": np.full((1, 8, 8, 3), 255, np.uint8)})
    assert score[0] == pytest.approx(1.0)


@pytest.mark.parametrize("score, threshold, expected", [
    (0.7, 0.5, "NG"), (0.5, 0.5, "NG"), (0.49, 0.5, "OK"), (math.nan, 0.5, "NG"), (0.9, None, None),
])
def test_the_verdict_rule(score, threshold, expected):
    assert verdict(score, threshold) == expected


def test_latency_statistics_round_only_when_asked_and_refuse_nothing():
    samples = [1.00049, 2.0, 3.0]
    assert latency_statistics(samples)["min"] == 1.00049
    assert latency_statistics(samples, digits=3)["min"] == 1.0
    with pytest.raises(ValueError, match="at least one run"):
        latency_statistics([])


def test_the_shared_modules_import_neither_torch_nor_a_stage():
    code = ("import sys, destseg.inference, destseg.tensorrt, destseg.preprocess, destseg.latency, destseg.verdict, destseg.cpu; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('destseg.train', 'destseg.export', "
            "'destseg.calibration', 'destseg.runtime'))]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
