"""Real tiny training runs: checkpoints, determinism, resume, tiny datasets, CLI errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from destseg.train import trainer
from destseg.train.checkpoint import load_run
from destseg.train.cli import main as train_main
from tests.conftest import CATEGORY, train_tiny


def _weights(run):
    return load_file(str(run / "model.safetensors"))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_reloads_into_a_working_model(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["backbone"] == "resnet18" and config["image_size"] == 64
    assert config["progress"] == {"phase": "done", "step": 3}
    assert (tiny_run / "train.log").read_text().count("step") >= 2
    assert not (tiny_run / "trainer_state.pt").exists()
    model, _ = load_run(tiny_run)
    out = model.predict(torch.zeros(2, 3, 64, 64))
    assert out["anomaly_map"].shape == (2, 1, 64, 64) and out["score"].shape == (2,)


def test_training_changes_student_and_segmentation_but_not_the_teacher(synthetic_root, tmp_path):
    run = train_tiny(synthetic_root, tmp_path / "r", steps_student=2, steps_seg=2)
    model, _ = load_run(run)
    torch.manual_seed(0)
    fresh = type(model)("resnet18")
    trained = model.state_dict()
    assert not torch.equal(trained["student.decoder.stage0.0.conv1.weight"], fresh.state_dict()["student.decoder.stage0.0.conv1.weight"])
    assert not torch.equal(trained["segmentation.head.2.weight"], fresh.state_dict()["segmentation.head.2.weight"])


def _cli_train(data, out, workers: int, seed: int = 0):
    """A tiny destseg-train in its own process, as a user runs it: DataLoader workers fork, and this
    test process holds GStreamer, OpenVINO and ORT threads from earlier tests (forking it segfaulted
    the suite) and their thread settings (which change float sums)."""
    subprocess.run([sys.executable, "-m", "destseg.train.cli", "--data", str(data), "--category", CATEGORY,
                    "--out", str(out), "--teacher", "random", "--image-size", "64", "--batch-size", "4",
                    "--steps-student", "2", "--steps-seg", "2", "--workers", str(workers), "--seed", str(seed),
                    "--no-eval"], check=True, capture_output=True)
    return out


def test_same_seed_gives_the_same_weights_whatever_the_worker_count(synthetic_root, tmp_path):
    a = _cli_train(synthetic_root, tmp_path / "a", workers=0)
    b = _cli_train(synthetic_root, tmp_path / "b", workers=2)
    c = _cli_train(synthetic_root, tmp_path / "c", workers=0, seed=1)
    assert _same(_weights(a), _weights(b))
    assert not _same(_weights(a), _weights(c))


def test_interrupted_run_resumes_to_the_same_weights(synthetic_root, tmp_path, monkeypatch):
    straight = train_tiny(synthetic_root, tmp_path / "straight", steps_student=2, steps_seg=4)

    real_save, calls = trainer.save_checkpoint, []

    def save_then_ctrl_c(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # the student phase's checkpoint, then segmentation step 2
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(synthetic_root, tmp_path / "resumed", steps_student=2, steps_seg=4, checkpoint_every=2)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)

    interrupted = json.loads((tmp_path / "resumed" / "config.json").read_text())["progress"]
    assert interrupted == {"phase": "segmentation", "step": 2}
    load_run(tmp_path / "resumed", allow_unfinished=True)  # the last good checkpoint is intact
    train_tiny(synthetic_root, tmp_path / "resumed", steps_student=2, steps_seg=4, resume=True)
    assert _same(_weights(straight), _weights(tmp_path / "resumed"))


def test_dataset_smaller_than_the_batch_trains(tmp_path):
    from destseg.images import write_image
    import numpy as np

    folder = tmp_path / "good"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(folder / f"{i}.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    run = train_tiny(folder, tmp_path / "run", category=None, batch_size=8, steps_student=1, steps_seg=1)
    assert json.loads((run / "config.json").read_text())["train_images"] == 3


def test_plain_folder_converts_gray_rgba_and_16_bit_and_skips_broken_files(tmp_path):
    import numpy as np
    import cv2

    from destseg.datasets import good_images
    from destseg.images import read_rgb

    folder = tmp_path / "good"
    folder.mkdir()
    cv2.imwrite(str(folder / "gray.png"), np.full((20, 30), 128, np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), np.full((20, 30, 4), 200, np.uint8))
    cv2.imwrite(str(folder / "deep.png"), np.full((20, 30, 3), 65535, np.uint16))
    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        paths = good_images(folder)
    assert [p.name for p in paths] == ["deep.png", "gray.png", "rgba.png"]
    for p in paths:
        img = read_rgb(p)
        assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    assert read_rgb(folder / "deep.png").max() == 255


def test_cli_reports_an_empty_folder_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train_main(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no readable images" in err


def test_cli_reports_a_missing_category(synthetic_root, tmp_path, capsys):
    assert train_main(["--data", str(synthetic_root), "--category", "nope", "--out", str(tmp_path / "run")]) == 2
    assert CATEGORY in capsys.readouterr().err


def test_seg_head_option_is_recorded_and_rebuilds_the_light_head(synthetic_root, tmp_path):
    out = tmp_path / "light"
    assert train_main(["--data", str(synthetic_root), "--category", CATEGORY, "--out", str(out), "--teacher", "random",
                       "--image-size", "64", "--batch-size", "4", "--steps-student", "1", "--steps-seg", "1",
                       "--workers", "0", "--seg-width", "16", "--seg-head", "light", "--no-eval"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["seg_head"] == "light" and config["options"]["seg_head"] == "light"
    model, _ = load_run(out)
    assert model.seg_head == "light" and model.segmentation.head[0][0].groups == 64  # depthwise over 4 x 16 channels
