"""destseg-eval on real tiny runs: metrics.json, plots, heatmaps, thresholds in config.json, the table."""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from destseg import metrics
from destseg.datasets import load_test_set
from destseg.images import read_rgb
from destseg.metrics import MetricWarning
from destseg.train.checkpoint import load_run, update_config
from destseg.train.evaluate import METRICS, evaluate_run, format_table, main
from destseg.train.model import top_k_score
from tests.conftest import CATEGORY, train_tiny


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy: evaluation writes thresholds into config.json, the session run stays as trained."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def _same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


def _in_unit_interval_or_null(value) -> bool:
    return value is None or 0.0 <= value <= 1.0


def test_scores_are_the_models_own_on_inputs_normalised_the_runs_way(run_copy, synthetic_root, tmp_path):
    """Each run says its input statistics (EfficientNet-Lite teachers use 0.5/0.5, not ImageNet's).

    The DeST score is compared too: a three-step run's segmentation can saturate at 1.0 and
    would then hide a wrong normalisation; the teacher-student distance cannot.
    """
    update_config(run_copy, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    report = evaluate_run(run_copy, synthetic_root, CATEGORY, out_dir=tmp_path / "eval")
    model, config = load_run(run_copy)
    images, _, masks = load_test_set(synthetic_root, CATEGORY, config["image_size"])
    x = torch.from_numpy(((images / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2)).float()
    with torch.inference_mode():
        out = model.predict(x)
    anomaly_map, score, dest_score = out["anomaly_map"], out["score"], top_k_score(out["dest_map"])
    assert [r["score"] for r in report["per_image"]] == pytest.approx(score.numpy().tolist(), abs=1e-5)
    assert [r["dest_score"] for r in report["per_image"]] == pytest.approx(dest_score.numpy().tolist(), rel=1e-4)
    assert len(set(np.round(dest_score.numpy(), 4))) > 1  # the comparison above can tell inputs apart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        expected = metrics.pixel_ap(masks, anomaly_map[:, 0].numpy())
    assert _same_number(report["destseg"]["pixel_ap"], expected)


def test_split_without_defects_gives_undefined_metrics_and_a_quantile_threshold(run_copy, synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root / CATEGORY / "train", root / CATEGORY / "train")
    shutil.copytree(synthetic_root / CATEGORY / "test" / "good", root / CATEGORY / "test" / "good")
    with pytest.warns(MetricWarning, match="no anomalous image"):
        report = evaluate_run(run_copy, root, CATEGORY, out_dir=tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["destseg"]["image_auroc"] is None and math.isnan(report["destseg"]["image_auroc"])
    assert any("no anomalous image" in w for w in saved["warnings"])
    assert saved["thresholds"]["method"] == "good-quantile"
    assert json.loads((run_copy / "config.json").read_text())["thresholds"]["method"] == "good-quantile"
    assert not (tmp_path / "eval" / "roc.png").exists()


def test_cli_writes_metrics_plots_heatmaps_thresholds_and_one_table(run_copy, synthetic_root, tmp_path, capsys):
    before = json.loads((run_copy / "config.json").read_text())
    second = shutil.copytree(run_copy, tmp_path / "run2")
    out = tmp_path / "out"
    argv = [str(run_copy), str(second), "--data", str(synthetic_root), "--out", str(out), "--save-heatmaps", "3"]
    assert main(argv) == 0  # no --category: each run's own

    printed = capsys.readouterr().out
    assert "| category | image AUROC | pixel AUROC | pixel AP | AUPRO | IAP | IAP90 |" in printed
    assert f"| {CATEGORY}-1 |" in printed and f"| {CATEGORY}-2 |" in printed and "| **mean** |" in printed
    assert (out / "table.md").read_text().strip() == printed.strip()

    evaluated = out / f"{CATEGORY}-1"
    saved = json.loads((evaluated / "metrics.json").read_text())
    _, labels, _ = load_test_set(synthetic_root, CATEGORY, 64)
    assert saved["images"] == len(labels) and saved["defective_images"] == labels.sum() > 0
    for key in ("destseg", "dest"):
        assert set(saved[key]) == set(METRICS)
        assert all(_in_unit_interval_or_null(v) for v in saved[key].values())
    assert read_rgb(evaluated / "roc.png").shape[2] == 3 and read_rgb(evaluated / "score_hist.png").shape[2] == 3
    panels = sorted((evaluated / "heatmaps").iterdir())
    assert len(panels) == 3 and all(read_rgb(p).shape[0] == 64 for p in panels)
    best_defect = max((r for r in saved["per_image"] if r["defective"]), key=lambda r: r["score"])
    assert panels[0].name == f"00_{best_defect['defect']}_{Path(best_defect['image']).stem}.png"

    for run in (run_copy, second):
        config = json.loads((run / "config.json").read_text())
        assert config["thresholds"] == saved["thresholds"] and config["thresholds"]["method"] == "f1"
        assert {k: v for k, v in config.items() if k != "thresholds"} == before  # read-modify-write kept the rest


def test_table_shows_percent_and_an_undefined_mean_as_a_dash():
    row_a = {m: 0.5 for m in METRICS}
    row_b = dict({m: 1.0 for m in METRICS}, iap=float("nan"))
    lines = format_table([("a", row_a), ("b", row_b)]).splitlines()
    assert lines[-1] == "| **mean** | 75.0 | 75.0 | 75.0 | 75.0 | - | 75.0 |"
    assert lines[-2] == "| b | 100.0 | 100.0 | 100.0 | 100.0 | - | 100.0 |"
    assert "mean" not in format_table([("a", row_a)])


@pytest.mark.parametrize(
    "args, message",
    [
        (["{run}", "--category", "a", "b"], "one per run"),
        (["{run}", "--category", "nope"], "no category folder"),
        (["{missing}", "--category", CATEGORY], "config.json is missing"),
        (["{run}", "--save-heatmaps", "-1"], "--save-heatmaps"),
    ],
)
def test_cli_misuse_is_one_clear_line_and_exit_2(args, message, run_copy, synthetic_root, tmp_path, capsys):
    argv = [a.format(run=run_copy, missing=tmp_path / "missing") for a in args] + ["--data", str(synthetic_root)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("destseg-eval: ") and message in err[0]


def test_training_evaluates_at_the_end_when_the_data_has_a_test_split(synthetic_root, tmp_path):
    run = train_tiny(synthetic_root, tmp_path / "r", steps_student=1, steps_seg=1, evaluate=True)
    assert (run / "eval" / "metrics.json").is_file()
    assert "thresholds" in json.loads((run / "config.json").read_text())
