"""The per-layer INT8 error analysis and the ranked search, on a tiny real model."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import onnx
import pytest

from destseg.calibration import int8
from destseg.calibration.analysis import Probe, analyse, sites
from destseg.calibration.cli import run as run_int8
from destseg.calibration.images import batches, select_images
from destseg.calibration.quantize import prepare, quantizable_nodes
from destseg.calibration.report import run_onnx
from tests.conftest import CATEGORY, untrained_run


@pytest.fixture(scope="module")
def quantized(synthetic_root, tmp_path_factory):
    """(prepared FP32 graph, bundle with both INT8 forms, a few normal images) of an untrained lite0 model."""
    from destseg.export.bundle_writer import export_bundle

    run = untrained_run(tmp_path_factory.mktemp("an") / "run", backbone="efficientnet_lite0", data=str(synthetic_root))
    bundle = run.parent / "bundle"
    export_bundle(run, bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_int8(bundle, ["--calib-count", "8", "--calib-dir", str(synthetic_root), "--calib-category", CATEGORY])
        paths = select_images(synthetic_root, CATEGORY, 3, 0)
    prepared = run.parent / "prepared.onnx"
    prepare(bundle / "model.onnx", prepared)
    return prepared, bundle, np.concatenate(list(batches(paths, 64, 1)))


@pytest.mark.parametrize("form", ["model.int8.onnx", "model.int8.cpu.onnx"])
def test_probe_is_fp32_with_gates_off_and_the_int8_form_with_gates_on(quantized, form):
    prepared, bundle, images = quantized
    probe = Probe(prepared, bundle / form, images)
    fp32_map = run_onnx(prepared, images)[0]
    int8_map = run_onnx(bundle / form, images)[0]
    (off,) = probe.run(probe.gates(), ["anomaly_map"])
    (on,) = probe.run(probe.gates(range(len(probe.sites))), ["anomaly_map"])
    assert np.abs(off[:, 0] - fp32_map).max() < 1e-5
    quant_error = np.abs(int8_map - fp32_map).mean()
    assert quant_error > 0
    assert np.abs(on[:, 0] - int8_map).mean() < 0.25 * quant_error  # the probe rounds where the form does


def test_sites_mirror_every_quantize_node_and_quantised_weight(quantized):
    prepared, bundle, _ = quantized
    q = onnx.load(str(bundle / "model.int8.onnx"))
    found = sites(onnx.load(str(prepared)), q)
    activations = {s.name for s in found if s.kind == "activation"}
    assert activations == {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    weights = [s for s in found if s.kind == "weight"]
    assert weights and all(s.dequantized.shape == s.dequantized.shape for s in weights)
    assert all(s.qmin == -128 and s.qmax == 127 for s in found if s.kind == "activation")  # symmetric int8


def test_analysis_ranks_every_quantised_node_and_names_the_suspects(quantized):
    prepared, bundle, images = quantized
    result, _ = analyse(prepared, bundle / "model.int8.onnx", images)
    ranking = result["ranking"]
    model = onnx.load(str(prepared))
    assert {r["node"] for r in ranking} <= set(quantizable_nodes(model))
    assert len(ranking) == result["nodes"] > 10
    outputs = [r["output_sqnr_db"] for r in ranking]
    assert outputs == sorted(outputs) and [r["rank"] for r in ranking] == list(range(1, len(ranking) + 1))
    convs = [r for r in ranking if r["op"] == "Conv"]
    assert all(r["weight_sqnr_db"] > 20 and r["gmacs"] > 0 for r in convs)  # per-channel int8 weights
    seg_input = result["suspects"]["segmentation input (concat of -T_hat*S_hat)"]
    assert seg_input and seg_input[0]["tensor"].endswith("Concat_4_output_0") or seg_input[0]["tensor"].startswith("/model/Concat")
    assert result["all_output_sqnr_db"] < min(outputs) + 1e-6  # everything at once is worse than any node alone


def test_report_carries_the_analysis(quantized):
    _, bundle, _ = quantized
    report = json.loads((bundle / "quantization_report.json").read_text())
    assert set(report["analysis"]) == {"int8_trt", "int8_cpu"}
    assert "## Per-layer error analysis" in (bundle / "quantization_report.md").read_text()


def test_ranked_search_keeps_a_prefix_of_the_ranking_in_a_logarithmic_number_of_builds(quantized, synthetic_root,
                                                                                       tmp_path, monkeypatch):
    _, bundle, _ = quantized
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target, ignore=shutil.ignore_patterns("model.int8*", "calibration*", "quantization*"))
    meta = json.loads((target / "destseg.json").read_text())
    monkeypatch.setattr(int8, "MAX_PIXEL_AP_DROP", -1000.0)  # a gate nothing passes: the search runs to max_kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_int8(target, ["--calib-count", "8", "--calib-dir", str(synthetic_root), "--calib-category", CATEGORY,
                                   "--eval-data", str(synthetic_root), "--category", CATEGORY, "--max-kept", "8",
                                   "--allow-degraded"])
    search = report["gate"]["search"]
    assert search["trials"] == 4  # k = 1, 2, 4, 8
    ranking = [r["node"] for r in report["analysis"]["int8_trt"]["ranking"]]
    assert report["gate"]["kept_float"] == ranking[: search["k"]]
    assert set(search["probe_sqnr_db_by_k"]) == {"1", "2", "4", "8"}
    assert meta  # the FP32 bundle was there to start from
