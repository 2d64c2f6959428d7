"""The compute budget counts MACs exactly and agrees with the spec's figures for the paper's model."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from destseg.benchmarks.compute_budget import PARTS, WHOLE, budget, count_macs, main


def test_conv_and_linear_macs_match_the_hand_count():
    conv = nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1, groups=2)
    # output 16 x 5 x 5 = 400 elements, each (8 / 2) x 3 x 3 = 36 MACs
    assert count_macs(conv, torch.randn(1, 8, 10, 10)) == 400 * 36
    linear = nn.Linear(16, 4)
    # 3 rows x 4 outputs, 16 MACs each
    assert count_macs(linear, torch.randn(3, 16)) == 3 * 4 * 16
    # counting twice gives the same number: the hooks are removed after each count
    assert count_macs(linear, torch.randn(3, 16)) == 3 * 4 * 16


def test_resnet18_budget_at_256_matches_the_spec():
    rows = {r.part: r for r in budget("resnet18", 256, measure=False)}
    parts = [rows[p] for p in PARTS]
    total_gmacs = sum(r.macs for r in parts) / 1e9
    assert total_gmacs == pytest.approx(38, rel=0.05)
    assert rows["segmentation"].macs / 1e9 == pytest.approx(31, rel=0.05)
    assert sum(r.params for r in parts) / 1e6 == pytest.approx(35, rel=0.02)
    # the parts add up to the model run as one piece: nothing is counted twice or missed
    assert rows[WHOLE].macs == sum(r.macs for r in parts)
    assert rows[WHOLE].params == sum(r.params for r in parts)


def test_a_narrower_segmentation_network_cuts_its_macs_and_nothing_else():
    full = {r.part: r.macs for r in budget("resnet18", 256, measure=False)}
    narrow = {r.part: r.macs for r in budget("resnet18", 256, measure=False, seg_width=128)}
    assert narrow["segmentation"] < 0.35 * full["segmentation"]
    assert all(narrow[p] == full[p] for p in PARTS if p != "segmentation")


def test_the_light_head_cuts_the_segmentation_macs_and_the_table_names_it(capsys):
    paper = {r.part: r for r in budget("efficientnet_lite0", 128, measure=False, seg_width=64)}
    light = {r.part: r for r in budget("efficientnet_lite0", 128, measure=False, seg_width=64, seg_head="light")}
    assert light["segmentation"].macs < 0.55 * paper["segmentation"].macs
    assert light["segmentation"].params < 0.55 * paper["segmentation"].params
    assert all(light[p].macs == paper[p].macs for p in PARTS if p != "segmentation")
    assert main(["--backbones", "efficientnet_lite0", "--sizes", "128", "--seg-widths", "64",
                 "--seg-heads", "paper,light", "--no-latency"]) == 0
    table = capsys.readouterr().out
    assert "| efficientnet_lite0 | 128 | 64 | segmentation |" in table
    assert "| efficientnet_lite0 | 128 | 64 light | segmentation |" in table
    assert main(["--seg-heads", "tiny", "--no-latency"]) == 2


def test_cli_writes_table_json_and_chart_with_measured_latency(tmp_path, capsys):
    assert main(["--backbones", "resnet18", "--sizes", "64", "--runs", "1", "--warmup", "0", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "compute_budget.json").read_text())
    assert [r["part"] for r in report["rows"]] == [*PARTS, WHOLE]
    assert all(r["latency_ms"] > 0 for r in report["rows"])
    assert (tmp_path / "compute_budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "compute_budget.md").read_text()
    assert "| resnet18 | 64 | 256 | segmentation |" in table
    assert "| resnet18 | 64 | 256 | segmentation |" in capsys.readouterr().out


def test_a_size_the_model_cannot_take_is_one_clear_error(capsys):
    assert main(["--sizes", "250", "--no-latency"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: image size 250 is not a positive multiple of 32; pass e.g. --sizes 128,256,320"
