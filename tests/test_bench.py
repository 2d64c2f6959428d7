"""destseg-bench on a tiny real bundle: every configuration measured or skipped with a reason,
trtexec-style statistics, baseline ratios, INT8 accuracy from the quantisation report, the
machine record, and the JSON / CSV / Markdown / PNG outputs."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from destseg.images import write_image
from destseg.benchmarks.bench import main
from destseg.benchmarks.bench_report import accuracy_for
from destseg.benchmarks.bench_results import BenchError, Config
from destseg.benchmarks.machine import cpu_info
from destseg.hardware import jetson_info
from destseg.latency import STATISTICS, latency_statistics

SIZE = 64


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    """(bundle with fp32, int8_trt and int8_cpu models and a quantisation report, its training run)."""
    from destseg.calibration.cli import run as add_int8
    from destseg.export.bundle_writer import ExportOptions, export_bundle
    from destseg.train.checkpoint import save_checkpoint
    from destseg.train.model import DeSTSeg

    root = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    model = DeSTSeg("resnet18")
    config = {"backbone": "resnet18", "teacher": "random", "image_size": SIZE, "category": "widget",
              "mean": list(model.spec.mean), "std": list(model.spec.std)}
    save_checkpoint(root / "run", model, config, {"phase": "done", "step": 0})
    export_bundle(root / "run", root / "bundle", ExportOptions(dynamic_batch=True))
    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(root / "calib" / f"{i}.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # six calibration images: the warning about too few is expected
        add_int8(root / "bundle", ["--calib-dir", str(root / "calib"), "--calib-count", "6"])
    return root / "bundle", root / "run"


def test_summary_is_trtexec_style_with_interpolated_percentiles():
    stats = latency_statistics(list(range(1, 101)))
    assert list(stats) == list(STATISTICS)
    assert stats == pytest.approx({"min": 1, "mean": 50.5, "median": 50.5, "p90": 90.1, "p95": 95.05, "p99": 99.01, "max": 100})


def test_config_labels_round_trip_and_bad_ones_say_the_format():
    assert Config.parse("onnxruntime/int8/b4") == Config("onnxruntime", "int8", 4)
    assert Config.parse("tensorrt/fp16/8").label == "tensorrt/fp16/b8"
    with pytest.raises(BenchError, match="BACKEND/PRECISION/bBATCH"):
        Config.parse("cuda/fp32/b1")


def test_bench_measures_what_runs_here_and_explains_the_rest(int8_bundle, tmp_path, capsys):
    bundle, run = int8_bundle
    out = tmp_path / "bench"
    code = main([str(bundle), "--backends", "onnxruntime,tensorrt,torch", "--precisions", "fp32,int8", "--batch", "1,2",
                 "--runs", "3", "--warmup", "1", "--threads", "1", "--run", str(run),
                 "--baseline", "onnxruntime/fp32/b1", "--out", str(out)])
    assert code == 0
    record = json.loads((out / "bench.json").read_text())
    results = {r["config"]: r for r in record["results"]}
    skipped = {s["config"]: s["reason"] for s in record["skipped"]}
    for label in ("onnxruntime/fp32/b1", "onnxruntime/fp32/b2", "onnxruntime/int8/b1", "onnxruntime/int8/b2",
                  "torch/fp32/b1", "torch/fp32/b2"):
        assert label in results, (label, skipped)
    # every requested configuration is accounted for: measured, or skipped with a reason
    for backend in ("onnxruntime", "tensorrt", "torch"):
        for precision in ("fp32", "int8"):
            for batch in (1, 2):
                label = f"{backend}/{precision}/b{batch}"
                assert label in results or skipped.get(label), label
    if "tensorrt/fp32/b1" in skipped:
        assert "TensorRT" in skipped["tensorrt/fp32/b1"] or "pycuda" in skipped["tensorrt/fp32/b1"]
    assert "int8" in skipped["torch/int8/b1"]

    for r in results.values():
        lat = r["latency_ms"]
        assert r["runs"] == 3 and len(r["samples_ms"]) == 3
        assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert lat["min"] == min(r["samples_ms"]) and lat["max"] == max(r["samples_ms"])
        assert r["throughput_images_per_s"] == pytest.approx(1e3 * r["batch"] * 3 / sum(r["samples_ms"]))
    base = results["onnxruntime/fp32/b1"]
    assert base["baseline"]["throughput_ratio"] == pytest.approx(1.0)
    b2 = results["onnxruntime/fp32/b2"]
    assert b2["baseline"]["throughput_ratio"] == pytest.approx(b2["throughput_images_per_s"] / base["throughput_images_per_s"])

    report = json.loads((bundle / "quantization_report.json").read_text())
    int8 = results["onnxruntime/int8/b1"]
    assert int8["variant"] == "int8_cpu"
    assert int8["accuracy"]["normal_images"] == report["normal_images"]["int8_cpu"]
    assert base["accuracy"] is None

    machine = record["machine"]
    assert machine["cpu"]["logical_cores"] >= 1 and machine["libraries"]["onnxruntime"]
    rows = list(csv.DictReader((out / "bench.csv").read_text().splitlines()))
    assert [row["config"] for row in rows] == [r["config"] for r in record["results"]]
    assert float(rows[0]["median_ms"]) == pytest.approx(base["latency_ms"]["median"], abs=1e-3)
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "| onnxruntime/int8/b2 |" in table and "score rho" in table
    assert table in (out / "bench.md").read_text()


def test_bench_times_openvino_beside_onnx_runtime_in_one_run(int8_bundle, tmp_path):
    pytest.importorskip("openvino")
    bundle, run = int8_bundle
    assert main([str(bundle), "--backends", "openvino,onnxruntime,torch", "--precisions", "fp32,bf16,int8",
                 "--runs", "2", "--warmup", "1", "--threads", "1", "--run", str(run), "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    results = {r["config"]: r for r in record["results"]}
    skipped = {s["config"]: s["reason"] for s in record["skipped"]}
    assert {"openvino/fp32/b1", "openvino/int8/b1", "onnxruntime/fp32/b1", "onnxruntime/int8/b1", "torch/fp32/b1"} <= set(results)
    assert results["openvino/int8/b1"]["variant"] == "int8_cpu" and "u8" in results["openvino/int8/b1"]["detail"]
    report = json.loads((bundle / "quantization_report.json").read_text())
    assert results["openvino/int8/b1"]["accuracy"]["normal_images"] == report["normal_images"]["int8_cpu@openvino"]
    assert "openvino/bf16/b1" in results or "native bf16" in skipped["openvino/bf16/b1"]
    assert "bf16" in skipped["onnxruntime/bf16/b1"]
    assert record["machine"]["libraries"]["openvino"]


def test_a_static_batch_bundle_skips_larger_batches_with_the_reason(tiny_bundle, tmp_path):
    assert main([str(tiny_bundle), "--backends", "onnxruntime", "--precisions", "fp32", "--batch", "1,2",
                 "--runs", "2", "--warmup", "0", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "bench.json").read_text())
    assert [r["config"] for r in record["results"]] == ["onnxruntime/fp32/b1"]
    (skip,) = record["skipped"]
    assert skip["config"] == "onnxruntime/fp32/b2" and "--dynamic-batch" in skip["reason"]


def test_accuracy_deltas_come_from_the_report_for_the_variant_that_ran():
    report = {"normal_images": {"int8_trt": {"score_spearman": 0.99}},
              "metrics": {"fp32": {"image_auroc": 98.0}, "delta_int8_trt": {"image_auroc": -0.4, "pixel_ap": -1.1}}}
    assert accuracy_for(report, "int8_trt") == {"normal_images": {"score_spearman": 0.99},
                                                "metric_deltas": {"image_auroc": -0.4, "pixel_ap": -1.1}}
    assert accuracy_for(report, "int8_cpu") is None
    assert accuracy_for(report, "fp32") is None
    openvino = {"normal_images": {"int8_trt": {"score_spearman": 0.99}, "int8_trt@openvino": {"score_spearman": 0.97}}}
    assert accuracy_for(openvino, "int8_trt", "openvino") == {"normal_images": {"score_spearman": 0.97}}


@pytest.mark.parametrize("args, message", [
    (["--batch", "0"], "--batch '0': pass positive batch sizes"),
    (["--backends", "cuda"], "--backends 'cuda': choose from tensorrt, openvino, onnxruntime, torch"),
    (["--baseline", "onnxruntime/fp32"], "is not BACKEND/PRECISION/bBATCH"),
])
def test_bad_options_are_one_line_errors(int8_bundle, capsys, args, message):
    assert main([str(int8_bundle[0]), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_folder_that_is_not_a_bundle_is_refused(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "destseg.json is missing" in capsys.readouterr().err


def test_the_bench_and_machine_record_do_not_import_torch():
    code = ("import sys; from destseg.benchmarks.bench import main; from destseg.benchmarks.machine import machine_record; "
            "machine_record(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


ORIN_CPUINFO = """processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
CPU part\t: 0xd42

processor\t: 1
model name\t: ARMv8 Processor rev 1 (v8l)
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg
"""


def test_cpu_info_reads_arm_features():
    info = cpu_info(ORIN_CPUINFO)
    assert info["model"] == "ARMv8 Processor rev 1 (v8l)"
    assert "asimddp" in info["flags"]


def test_jetson_power_mode_and_clocks_are_read_from_sys(tmp_path):
    assert jetson_info(str(tmp_path)) is None  # not a Jetson
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\n")
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson Orin Nano Developer Kit\x00")
    cpufreq = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq"
    cpufreq.mkdir(parents=True)
    for name, value in (("scaling_cur_freq", "1510400"), ("scaling_max_freq", "1510400"), ("scaling_governor", "schedutil")):
        (cpufreq / name).write_text(value + "\n")
    gpu = tmp_path / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    (gpu / "cur_freq").write_text("624750000\n")
    (gpu / "max_freq").write_text("624750000\n")
    info = jetson_info(str(tmp_path))
    assert info["l4t_release"].startswith("# R36 (release), REVISION: 4.0")
    assert info["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert info["cpu_clocks"]["cpu0"] == {"cur_khz": "1510400", "max_khz": "1510400", "governor": "schedutil"}
    assert info["devfreq"]["17000000.ga10b"]["cur_freq"] == "624750000"
    assert info["devfreq"]["17000000.ga10b"]["governor"] is None
