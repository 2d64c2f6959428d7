"""The per-layer INT8 error analysis and the ranked search, on a tiny real model."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest

from destseg.calibration import int8
from destseg.calibration.analysis import Probe, analyse, fake_quant, sites
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
def test_probe_is_fp32_with_gates_off_and_rounds_as_the_int8_form(quantized, form, tmp_path):
    """Gates off: exactly FP32. On: each site rounds as the form's QuantizeLinear/DequantizeLinear
    pair does (checked on the first activation, which no other rounding precedes; the tiny random
    model is chaotic, so its end outputs cannot be compared, and on the trained benchmark models the
    probe's map is 10 to 40 times closer to the INT8 form's than FP32's is, see BENCHMARKS.md)."""
    prepared, bundle, images = quantized
    probe = Probe(prepared, bundle / form, images)
    fp32_map = run_onnx(prepared, images)[0]
    (off,) = probe.run(probe.gates(), ["anomaly_map"])
    assert np.abs(off[:, 0] - fp32_map).max() < 1e-5
    site = next(s for s in probe.sites if s.kind == "activation")
    quantized_model = onnx.load(str(bundle / form))
    q = next(n for n in quantized_model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == site.name)
    dq = next(n for n in quantized_model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    quantized_model.graph.output.append(onnx.helper.make_tensor_value_info(dq.output[0], onnx.TensorProto.FLOAT, None))
    onnx.save(quantized_model, str(tmp_path / "exposed.onnx"))
    from destseg.inference import onnx_session

    expected = onnx_session(tmp_path / "exposed.onnx").run([dq.output[0]], {"image": images[:1]})[0]
    (x,) = probe.run(probe.gates(), [site.name])
    got = fake_quant(x[:1], site)
    assert np.mean(np.isclose(got, expected, atol=1e-6)) > 0.999  # ties may round the other way
    assert np.abs(got - expected).max() <= float(site.scale) * 1.001


def test_sites_mirror_every_quantize_node_and_quantised_weight(quantized):
    prepared, bundle, _ = quantized
    q = onnx.load(str(bundle / "model.int8.onnx"))
    fp32 = onnx.load(str(prepared))
    found = sites(fp32, q)
    activations = {s.name for s in found if s.kind == "activation"}
    assert activations == {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    weights = [s for s in found if s.kind == "weight"]
    shapes = {i.name: tuple(i.dims) for i in fp32.graph.initializer}
    assert weights and all(s.dequantized.shape == shapes[s.name] for s in weights)
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
    weighted = [r for r in ranking if r["weight_sqnr_db"] is not None]
    assert weighted and np.median([r["weight_sqnr_db"] for r in weighted]) > 20  # per-channel int8 weights
    assert sum(r["gmacs"] for r in ranking) > 0
    seg_input = result["suspects"]["segmentation input (concat of -T_hat*S_hat)"]
    assert len(seg_input) == 1 and seg_input[0]["tensor"].startswith("/model/Concat")
    assert result["all_output_sqnr_db"] < min(outputs) + 1e-6  # everything at once is worse than any node alone


def test_report_carries_the_analysis(quantized):
    _, bundle, _ = quantized
    report = json.loads((bundle / "quantization_report.json").read_text())
    assert set(report["analysis"]) == {"int8_trt", "int8_cpu"}
    assert "## Per-layer error analysis" in (bundle / "quantization_report.md").read_text()


def test_ranked_search_keeps_a_prefix_of_the_ranking_in_a_logarithmic_number_of_builds(quantized, synthetic_root,
                                                                                       tmp_path, monkeypatch):
    from destseg.export.bundle_writer import export_bundle

    _, bundle, _ = quantized
    target = tmp_path / "bundle"
    export_bundle(bundle.parent / "run", target)
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


def test_nodes_kept_out_of_int8_are_fp16_in_the_tensorrt_form_and_fp32_in_the_cpu_form(quantized, tmp_path):
    from destseg.calibration.quantize import QuantOptions, quantize_both

    prepared, bundle, images = quantized
    keep = quantizable_nodes(onnx.load(str(prepared)))[:2]
    paths = quantize_both(bundle / "model.onnx", tmp_path, iter(()), QuantOptions(keep_float=keep), "image",
                          bundle / "calibration_ranges.json")
    trt = onnx.load(str(paths["int8_trt"]))
    inits = {i.name: i for i in trt.graph.initializer}
    producers = {o: n for n in trt.graph.node for o in n.output}
    for node in (n for n in trt.graph.node if n.name in keep):
        assert inits[node.input[1]].data_type == onnx.TensorProto.FLOAT16
        assert producers[node.input[0]].op_type == "Cast"  # float32 activation cast to float16 on the way in
    cpu = onnx.load(str(paths["int8_cpu"]))
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in cpu.graph.initializer)
    onnx.checker.check_model(trt)
    full = run_onnx(bundle / "model.int8.onnx", images)[0]
    fp32 = run_onnx(prepared, images)[0]
    mixed = run_onnx(paths["int8_trt"], images)[0]
    assert np.isfinite(mixed).all() and np.abs(mixed - fp32).mean() < 2 * np.abs(full - fp32).mean() + 1e-3
