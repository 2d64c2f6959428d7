"""The OpenVINO backend on a tiny real INT8 bundle: FP32 matches ONNX Runtime, the Q/DQ graphs run
as INT8 kernels, bf16 is a named precision, the auto choice, devices, and the report's OpenVINO row.

Skipped where openvino is not installed (it is an extra: ``pip install destseg-edge[openvino]``).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from destseg.cpu import native_bf16, physical_cores
from destseg.runtime.backends import choose_backend, is_x86, open_backend
from destseg.runtime.backends.openvino import check_device, resolve_precision
from destseg.runtime.errors import BackendError
from tests.conftest import CATEGORY, untrained_run

REPO = Path(__file__).resolve().parents[1]
SIZE = 64
EVERYTHING = ["fp32", "int8_trt", "int8_cpu"]


@pytest.fixture(scope="module")
def int8_bundle(synthetic_root, tmp_path_factory):
    """A seeded untrained resnet18 bundle (dynamic batch) with both INT8 forms, gated on the synthetic test split."""
    from destseg.calibration.cli import run as run_int8
    from destseg.export.bundle_writer import ExportOptions, export_bundle

    run = untrained_run(tmp_path_factory.mktemp("openvino") / "run", data=str(synthetic_root))
    bundle = run.parent / "bundle"
    export_bundle(run, bundle, ExportOptions(dynamic_batch=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few calibration images: expected here
        run_int8(bundle, ["--calib-dir", str(synthetic_root), "--calib-category", CATEGORY, "--calib-count", "8",
                          "--eval-data", str(synthetic_root), "--category", CATEGORY, "--allow-degraded"])
    return bundle


def _frames(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def test_fp32_matches_onnx_runtime_and_says_what_runs(int8_bundle):
    ref_maps, ref_scores = open_backend("onnxruntime", int8_bundle, "fp32", batch_size=2).infer(_frames())
    backend = open_backend("openvino", int8_bundle, "fp32", batch_size=2)
    maps, scores = backend.infer(_frames())
    assert (backend.name, backend.variant, backend.precision) == ("openvino", "fp32", "fp32")
    assert maps.shape == (2, SIZE, SIZE) and scores.shape == (2,)
    np.testing.assert_allclose(maps, ref_maps, atol=1e-4)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4)
    # FP32 is asked for: OpenVINO's own CPU default is bf16 wherever the CPU has it
    assert set(backend.conv_precisions) == {"f32"}
    assert f"{physical_cores()} threads" in backend.detail and "on OpenVINO" in backend.detail
    assert set(backend.last_timings()) == {"h2d", "infer", "d2h"} and backend.last_timings()["infer"] > 0


@pytest.mark.parametrize("variant", ["int8_cpu", "int8_trt"])
def test_int8_runs_either_q_dq_graph_as_int8_kernels(int8_bundle, tmp_path, variant):
    if variant == "int8_trt":  # a bundle with the TensorRT form only: OpenVINO runs that one
        import shutil

        shutil.copytree(int8_bundle, tmp_path / "b")
        meta = json.loads((tmp_path / "b" / "destseg.json").read_text())
        meta["models"].pop("int8_cpu")
        meta["files"].pop("model.int8.cpu.onnx")
        from destseg.bundle import write_meta

        (tmp_path / "b" / "model.int8.cpu.onnx").unlink()
        write_meta(tmp_path / "b", meta)
        backend = open_backend("openvino", tmp_path / "b", "int8", threads=1)
    else:
        backend = open_backend("openvino", int8_bundle, "int8", threads=1)
    assert (backend.variant, backend.precision) == (variant, "int8")
    int8_convs = sum(n for p, n in backend.conv_precisions.items() if p in ("u8", "i8"))
    # every convolution but the ones calibration keeps in float (the logit conv at least)
    assert int8_convs > 0.9 * sum(backend.conv_precisions.values())
    assert "1 threads" in backend.detail and re.search(r"\d+ u8", backend.detail)
    ref_maps, _ = open_backend("onnxruntime", int8_bundle, "fp32").infer(_frames(1))
    maps, _ = backend.infer(_frames(1))
    assert np.abs(maps - ref_maps).mean() < 0.02  # INT8 rounding, not another model


def test_auto_is_int8_where_the_bundle_has_it_else_bf16_only_where_native():
    assert resolve_precision("auto", EVERYTHING, "CPU", bf16_native=False) == ("int8_cpu", "int8")
    assert resolve_precision("auto", ["fp32"], "CPU", bf16_native=True) == ("fp32", "bf16")
    assert resolve_precision("auto", ["fp32"], "CPU", bf16_native=False) == ("fp32", "fp32")
    assert resolve_precision("bf16", EVERYTHING, "CPU", bf16_native=True) == ("fp32", "bf16")
    assert resolve_precision("int8", ["fp32", "int8_trt"], "CPU", bf16_native=False) == ("int8_trt", "int8")
    with pytest.raises(BackendError, match="no native bf16"):
        resolve_precision("bf16", EVERYTHING, "CPU", bf16_native=False)
    assert resolve_precision("auto", ["fp32"], "GPU", bf16_native=True) == ("fp32", "fp32")
    with pytest.raises(BackendError, match="not GPU"):
        resolve_precision("bf16", EVERYTHING, "GPU", bf16_native=True)
    with pytest.raises(BackendError, match="fp16 is TensorRT's"):
        resolve_precision("fp16", EVERYTHING, "CPU", bf16_native=True)


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16")
def test_bf16_is_the_fp32_graph_under_the_bf16_hint(int8_bundle):
    backend = open_backend("openvino", int8_bundle, "bf16")
    assert (backend.variant, backend.precision) == ("fp32", "bf16") and set(backend.conv_precisions) == {"bf16"}
    ref_maps, _ = open_backend("onnxruntime", int8_bundle, "fp32").infer(_frames(1))
    assert np.abs(backend.infer(_frames(1))[0] - ref_maps).max() < 0.05


def test_devices_openvino_does_not_list_are_refused_in_one_line(int8_bundle):
    check_device("GPU", ["CPU", "GPU.0"])  # OpenVINO numbers its GPUs
    with pytest.raises(BackendError, match="no NPU device here .*lists CPU.*--device"):
        check_device("NPU", ["CPU"])
    import openvino as ov

    missing = next(d for d in ("NPU", "GPU") if not any(a.startswith(d) for a in ov.Core().available_devices))
    with pytest.raises(BackendError, match=f"no {missing} device"):
        open_backend("openvino", int8_bundle, "fp32", device=missing.lower())
    with pytest.raises(BackendError, match="runs on the CPU"):
        open_backend("onnxruntime", int8_bundle, "fp32", device="GPU")


def test_auto_prefers_openvino_on_x86_and_says_why(int8_bundle):
    from destseg.tensorrt import why_no_tensorrt

    if why_no_tensorrt() is None:
        pytest.skip("TensorRT and a GPU are present: auto picks tensorrt")
    assert is_x86("x86_64") and is_x86("AMD64") and not is_x86("aarch64")
    name, why = choose_backend(int8_bundle)
    if is_x86():
        assert name == "openvino" and why.startswith("an x86 CPU with OpenVINO installed; TensorRT is not usable here")
    else:
        assert name == "onnxruntime" and "OpenVINO is for x86" in why


def test_quantisation_report_and_gate_have_the_row_openvino_runs(int8_bundle):
    report = json.loads((int8_bundle / "quantization_report.json").read_text())
    assert set(report["normal_images"]) == {"int8_trt", "int8_cpu", "int8_cpu@openvino"}
    metrics = report["metrics"]
    assert {"fp32", "int8_cpu@openvino", "delta_int8_cpu@openvino"} <= set(metrics)
    assert metrics["delta_int8_cpu@openvino"]["pixel_ap"] == pytest.approx(
        metrics["int8_cpu@openvino"]["pixel_ap"] - metrics["fp32"]["pixel_ap"])
    assert "| int8_cpu@openvino |" in (int8_bundle / "quantization_report.md").read_text()


def test_importing_the_openvino_backend_does_not_import_torch():
    code = "import destseg.runtime.backends.openvino, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_openvino_is_an_extra_that_make_install_adds_on_x86_only():
    setup = (REPO / "setup.py").read_text()
    assert '"openvino": ["openvino"]' in setup
    makefile = (REPO / "Makefile").read_text()
    assert "$(filter x86_64 amd64 i686,$(shell uname -m))" in makefile and "dev$(OPENVINO_EXTRA)]" in makefile
    assert "openvino" not in (REPO / "docker" / "jetson" / "Dockerfile").read_text().lower()


def test_runtime_passes_device_and_streams_on_openvino(int8_bundle, tmp_path, capsys):
    from destseg.runtime.cli import main

    assert main(["--bundle", str(int8_bundle), "--backend", "openvino", "--device", "NPU", "--input", "test://ball",
                 "--max-frames", "1", "--headless"]) == 2
    assert "no NPU device" in capsys.readouterr().err
    events = tmp_path / "events.jsonl"
    assert main(["--bundle", str(int8_bundle), "--device", "CPU", "--input", "test://ball", "--max-frames", "3",
                 "--headless", "--events", str(events)]) == 0
    err = capsys.readouterr().err
    if is_x86():
        assert "backend openvino (an x86 CPU with OpenVINO installed" in err and "int8_cpu (model.int8.cpu.onnx)" in err
    assert len(events.read_text().splitlines()) == 3
