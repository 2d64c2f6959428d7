"""benchmarks/quality.py runs the user's own commands end to end and writes one comparable table."""
from __future__ import annotations

import importlib.util
import json

import pytest

from destseg.benchmarks.head_tradeoff import main as tradeoff_main
from destseg.benchmarks.quality import METRICS, main

TINY = ["--kinds", "object", "--seeds", "0", "--synth-args", "--train 8 --test 8 --size 64",
        "--train-args", "--backbone resnet18 --teacher random --image-size 64 --batch-size 4 "
                        "--steps-student 2 --steps-seg 2",
        "--int8-args", "--calib-count 8 --search-budget-s 0 --analysis-images 1 --allow-degraded", "--workers", "0"]


def test_quality_benchmark_writes_fp32_and_int8_rows_with_the_machine(tmp_path):
    out = tmp_path / "q"
    assert main(["--out", str(out), *TINY]) == 0
    result = json.loads((out / "quality.json").read_text())
    assert result["machine"]["cpu"]["usable_cores"] >= 1 and result["machine"]["cpu"]["model"]
    (row,) = result["rows"]
    assert row["kind"] == "object" and row["seed"] == 0 and row["train_s"] > 0 and row["train_images_per_s"] > 0
    for form in ("fp32", "int8_trt", "int8_cpu"):
        assert set(row[form]) >= set(METRICS), form
        assert all(0.0 <= row[form][m] <= 1.0 for m in METRICS if row[form][m] == row[form][m]), (form, row[form])
    assert row["gate"] in ("passed", "degraded-allowed")
    table = (out / "quality.md").read_text()
    assert "| object s0 | FP32 |" in table and "| **mean** | INT8 CPU form |" in table
    if importlib.util.find_spec("openvino") is not None:  # OpenVINO rounds its own way: its own row
        assert set(row["int8_cpu@openvino"]) >= set(METRICS) and "| INT8 CPU form on OpenVINO |" in table
    assert main(["--out", str(out), *TINY, "--no-int8"]) == 0  # its own folder: rewritten
    assert "int8_trt" not in json.loads((out / "quality.json").read_text())["rows"][0]


def test_quality_benchmark_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["--out", str(tmp_path), *TINY]) == 2
    assert "not a quality benchmark folder" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep" and len(list(tmp_path.iterdir())) == 1


def test_quality_benchmark_reuses_trained_runs_read_only(tmp_path):
    first = tmp_path / "first"
    assert main(["--out", str(first), *TINY, "--no-int8"]) == 0
    run = first / "object-s0" / "run"
    before = sorted(p.name for p in run.rglob("*"))
    again = tmp_path / "again"
    assert main(["--out", str(again), *TINY, "--reuse", str(first)]) == 0
    (row,) = json.loads((again / "quality.json").read_text())["rows"]
    assert row["reused"] == str(run) and row["train_s"] is None and "int8_trt" in row
    assert (again / "object-s0" / "bundle" / "quantization_report.json").is_file()
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written into the reused run
    with pytest.raises(SystemExit, match="no evaluated run"):
        main(["--out", str(tmp_path / "none"), *TINY, "--reuse", str(tmp_path / "missing")])


def test_head_tradeoff_reads_quality_runs_and_times_each_configuration_in_one_run(tmp_path):
    out = tmp_path / "q"
    assert main(["--out", str(out), *TINY, "--no-int8"]) == 0
    assert tradeoff_main(["--out", str(tmp_path / "t"), "--config", f"ref={out}", "--config", f"same={out}",
                          "--runs", "1", "--warmup", "0", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "t" / "head_tradeoff.json").read_text())
    ref = result["configs"]["ref"]
    assert ref["seg_head"] == "paper" and ref["gmacs"] > ref["seg_gmacs"] > 0 and len(ref["runs"]) == 1
    assert set(ref["quality"]) == set(METRICS)
    assert {"ORT FP32", "ORT INT8"} <= set(ref["latency_ms"]) and all(v["median"] > 0 for v in ref["latency_ms"].values())
    assert "int8_cpu" in ref["int8_normal_images"]
    table = (tmp_path / "t" / "head_tradeoff.md").read_text()
    assert "| same | 1.00 fewer | +0.0 | +0.0 |" in table
    assert (tmp_path / "t" / "head_tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tradeoff_main(["--out", str(tmp_path / "t2"), "--config", f"ref={out}", "--config", f"same={out}",
                          "--latency-from", str(tmp_path / "t" / "head_tradeoff.json")]) == 0
    again = json.loads((tmp_path / "t2" / "head_tradeoff.json").read_text())
    assert again["configs"]["ref"]["latency_ms"] == ref["latency_ms"] and again["runs"] == 1
