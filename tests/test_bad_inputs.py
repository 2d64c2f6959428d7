"""Issue 11: a hostile but ordinary user. The tool never deletes or overwrites what it did not
create, a failure leaves every earlier file as it was, and bad input is one line, not a traceback.

One test per case of the README's "What happens when things go wrong" table, each on a tiny
real model: an untrained seeded run (tests.conftest.untrained_run) for training, evaluation and
export, and the brightness bundle (tests.test_runtime_backends) for the runtime.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from destseg.images import read_rgb, write_image
from tests.conftest import CATEGORY, TINY, train_tiny, untrained_run
from tests.test_runtime_backends import write_brightness_bundle


def _tree(folder: Path) -> Dict[str, str]:
    """Every file under ``folder`` and its sha256: what "left as it was" compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: str, prefix: str) -> str:
    """The one error line in ``err`` (the runtime's progress lines before it aside), with no traceback."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("destseg-runtime: backend ")]
    assert len(lines) == 1 and lines[0].startswith(prefix) and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def run(synthetic_root, tmp_path_factory) -> Path:
    """A finished run with thresholds, trained (as far as its config says) on ``synthetic_root``."""
    return untrained_run(tmp_path_factory.mktemp("bad") / "run", data=str(synthetic_root.resolve()),
                         thresholds={"image": 0.5, "pixel": 0.5, "method": "test"})


@pytest.fixture()
def run_copy(run, tmp_path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.fixture(scope="module")
def int8_bundle(run, synthetic_root, tmp_path_factory) -> Tuple[Path, Dict[str, str]]:
    """An INT8 bundle exported into an empty folder, and its files' hashes."""
    from destseg.export.cli import main as export_main

    out = tmp_path_factory.mktemp("int8") / "bundle"
    out.mkdir()  # an empty folder is a fine --out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few calibration images
        assert export_main([str(run), "--out", str(out), "--int8", "--calib-dir", str(synthetic_root),
                            "--calib-category", CATEGORY, "--calib-count", "8"]) == 0
    return out, _tree(out)


@pytest.fixture(scope="module")
def bright(tmp_path_factory) -> Path:
    return write_brightness_bundle(tmp_path_factory.mktemp("bright") / "bundle")


def _runtime(argv: List[str], capsys) -> Tuple[int, str, str]:
    from destseg.runtime.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# 1. export --out must be a bundle, an empty folder or new; never the run, never a user's folder.
def test_export_refuses_an_out_that_is_not_a_bundle(run_copy, tmp_path, capsys):
    from destseg.export.cli import main as export_main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work")
    (tmp_path / "file.txt").write_text("a file")
    before = _tree(run_copy)
    for out, message in ((run_copy, "lies inside the run"), (run_copy / "bundle", "lies inside the run"), (mine, "not a bundle"),
                         (tmp_path / "file.txt", "not a folder")):
        assert export_main([str(run_copy), "--out", str(out)]) == 2
        assert message in _one_line(capsys.readouterr().err, "destseg-export: error: ")
    assert (mine / "thesis.txt").read_text() == "years of work" and (tmp_path / "file.txt").read_text() == "a file"
    assert _tree(run_copy) == before and not (run_copy / "bundle").exists()


# 2. A failed --int8 export leaves the previous INT8 bundle, not a new FP32-only one.
def test_a_failed_int8_export_leaves_the_previous_int8_bundle(run, int8_bundle, tmp_path, capsys):
    from destseg.export.cli import main as export_main

    out, before = int8_bundle
    (tmp_path / "empty").mkdir()
    code = export_main([str(run), "--out", str(out), "--int8", "--calib-dir", str(tmp_path / "empty")])
    assert code == 2 and "no readable images" in capsys.readouterr().err
    assert _tree(out) == before and "model.int8.cpu.onnx" in before
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary folder left behind


# 3. --events appends whole lines and refuses a second writer.
def test_events_are_appended_and_a_second_writer_is_refused(bright, tmp_path, capsys):
    from destseg.runtime.events import EventWriter

    log = tmp_path / "verdicts.jsonl"
    log.write_text('{"yesterday": true}\n')
    argv = ["--input", "test://white", "--width", "160", "--height", "120", "--bundle", str(bright), "--headless",
            "--max-frames", "2", "--events", str(log)]
    for _ in range(2):
        assert _runtime(argv, capsys)[0] == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0] == {"yesterday": True} and [e["frame"] for e in lines[1:]] == [0, 1, 0, 1]
    holder = EventWriter(log)
    try:
        code, _, err = _runtime(argv, capsys)
    finally:
        holder.close()
    assert code == 2 and "being written by another process" in _one_line(err, "destseg-runtime: error: ")
    assert len(log.read_text().splitlines()) == 5


# 4. --save-anomalies: a second run into the same folder keeps the first run's evidence.
def test_saved_anomalies_of_two_runs_never_collide(bright, tmp_path, capsys):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "imgs" / name, np.full((90, 120, 3), 255, np.uint8))
    argv = ["--input", str(tmp_path / "imgs"), "--bundle", str(bright), "--headless", "--save-anomalies", str(tmp_path / "ng")]
    for _ in range(2):
        assert _runtime(argv, capsys)[0] == 0
    names = sorted(p.name for p in (tmp_path / "ng").iterdir())
    assert len(names) == 2 * 2 * 2  # two runs, two NG frames, frame and heatmap
    assert len({n.split("_")[0] for n in names}) == 2  # each run's id


# 5. No output may be the input (links resolved), or lie inside the input folder.
def test_an_output_that_is_the_input_is_refused(bright, tmp_path, capsys):
    from tests.test_runtime_stream import make_video

    clip = make_video(tmp_path / "clip.avi", "white", 3)
    write_image(tmp_path / "photo.png", np.zeros((8, 8, 3), np.uint8))  # the folder is a source too
    data = clip.read_bytes()
    (tmp_path / "link.avi").symlink_to(clip)
    base = ["--bundle", str(bright), "--headless"]
    for extra in (["--input", str(clip), "--output", str(tmp_path / "link.avi")],
                  ["--input", str(clip), "--profile", str(tmp_path / "link.avi")],
                  ["--input", str(clip), "--events", str(clip)],
                  ["--input", str(tmp_path), "--save-anomalies", str(tmp_path)]):
        code, out, err = _runtime(base + extra, capsys)
        assert code == 2 and out == "" and "is the input" in _one_line(err, "destseg-runtime: error: ")
    assert clip.read_bytes() == data


# 6. Training into a run needs --resume or --overwrite; --resume needs a checkpoint and the run's settings.
def test_training_never_silently_replaces_a_run(run_copy, synthetic_root, tmp_path, capsys):
    from destseg.train.checkpoint import RunError
    from destseg.train.cli import main as train_main

    before = _tree(run_copy)
    with pytest.raises(RunError, match="already holds a run.*--resume.*--overwrite"):
        train_tiny(synthetic_root, run_copy)
    with pytest.raises(RunError, match="no checkpoint to continue"):
        train_tiny(synthetic_root, tmp_path / "new", resume=True)
    assert not (tmp_path / "new").exists()
    code = train_main(["--data", str(synthetic_root), "--category", CATEGORY, "--out", str(run_copy), "--resume",
                       "--image-size", "96", "--backbone", "efficientnet_lite0"])
    line = _one_line(capsys.readouterr().err, "destseg-train: ")
    assert code == 2 and "--image-size 96 (the run has 64)" in line and "--backbone efficientnet_lite0" in line
    assert _tree(run_copy) == before
    train_tiny(synthetic_root, run_copy, overwrite=True, steps_student=0, steps_seg=0)
    assert _tree(run_copy)["model.safetensors"] != before["model.safetensors"]


# 7. Ctrl-C while a checkpoint is written: --resume still gives an uninterrupted run's weights.
def test_ctrl_c_while_a_checkpoint_is_written_keeps_one_whole_generation(synthetic_root, tmp_path, monkeypatch):
    import destseg.train.checkpoint as checkpoint
    from safetensors.torch import load_file

    schedule = dict(steps_student=2, steps_seg=3, checkpoint_every=1)
    straight = train_tiny(synthetic_root, tmp_path / "straight", **schedule)
    real_save_file = checkpoint.save_file

    def interrupted_save_file(tensors, path, metadata=None):
        if metadata == {"step": "2", "phase": "segmentation"}:  # the optimiser state of this step is already written
            raise KeyboardInterrupt
        real_save_file(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", interrupted_save_file)
    with pytest.raises(KeyboardInterrupt):
        train_tiny(synthetic_root, tmp_path / "resumed", **schedule)
    monkeypatch.undo()
    train_tiny(synthetic_root, tmp_path / "resumed", resume=True, **schedule)
    a, b = (load_file(str(folder / "model.safetensors")) for folder in (straight, tmp_path / "resumed"))
    assert all(bool((a[k] == b[k]).all()) for k in a)


# 8. --resume on a finished run says so instead of crashing.
def test_resume_on_a_finished_run_does_not_crash(run_copy, synthetic_root, capsys):
    before = _tree(run_copy)
    assert train_tiny(synthetic_root, run_copy, resume=True) == run_copy
    assert "already finished" in capsys.readouterr().out
    assert _tree(run_copy) == before


# 9. Damaged weights: every reader names the file, no traceback, nothing exported.
@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_damaged_weights_are_named_by_every_reader(run_copy, synthetic_root, tmp_path, capsys, damage):
    from destseg.export.cli import main as export_main
    from destseg.train.evaluate import main as eval_main

    weights = run_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flipped byte":
        data[-3] ^= 0x40  # inside the last tensor: safetensors itself loads it
    else:
        data = data[: len(data) // 2]
    weights.write_bytes(bytes(data))
    for name, call in (("destseg-eval", lambda: eval_main([str(run_copy), "--data", str(synthetic_root)])),
                       ("destseg-export", lambda: export_main([str(run_copy), "--out", str(tmp_path / "bundle")]))):
        assert call() == 2
        assert f"{weights} is damaged" in _one_line(capsys.readouterr().err, f"{name}: ")
    code, _, err = _runtime(["--input", "test://white", "--run", str(run_copy), "--headless", "--max-frames", "1"], capsys)
    assert code == 2 and f"{weights} is damaged" in _one_line(err, "destseg-runtime: error: ")
    assert not (tmp_path / "bundle").exists()


# 10. An unfinished run is refused by eval and export unless --allow-unfinished.
def test_an_unfinished_run_is_refused_unless_allowed(run_copy, synthetic_root, tmp_path, capsys):
    from destseg.export.cli import main as export_main
    from destseg.train.checkpoint import update_config
    from destseg.train.evaluate import main as eval_main

    update_config(run_copy, progress={"phase": "student", "step": 1})
    for name, call in (("destseg-eval", lambda: eval_main([str(run_copy), "--data", str(synthetic_root)])),
                       ("destseg-export", lambda: export_main([str(run_copy), "--out", str(tmp_path / "bundle")]))):
        assert call() == 2
        line = _one_line(capsys.readouterr().err, f"{name}: ")
        assert "unfinished" in line and "step 1 (student), iteration 1" in line and "--resume" in line
    assert not (run_copy / "eval").exists() and not (tmp_path / "bundle").exists()
    assert eval_main([str(run_copy), "--data", str(synthetic_root), "--allow-unfinished"]) == 0
    assert (run_copy / "eval" / "metrics.json").is_file()


# 11. Output paths are checked before the first frame.
@pytest.mark.parametrize("flag", ["--profile", "--profile-csv"])
def test_an_unwritable_output_fails_before_the_first_frame(bright, tmp_path, capsys, flag):
    (tmp_path / "file.txt").write_text("not a folder")
    code, out, err = _runtime(["--input", "test://white", "--bundle", str(bright), "--headless", "--max-frames", "3",
                               flag, str(tmp_path / "file.txt" / "out.json")], capsys)
    assert code == 2 and out == ""  # not one frame ran
    assert "is a file, not a folder" in _one_line(err, "destseg-runtime: error: ")


# 12. An invalid config.json names the file.
def test_an_invalid_run_config_names_the_file(run_copy, synthetic_root, tmp_path, capsys):
    from destseg.export.cli import main as export_main
    from destseg.train.evaluate import main as eval_main

    config = run_copy / "config.json"
    config.write_text('{\n')
    for name, call in (("destseg-eval", lambda: eval_main([str(run_copy), "--data", str(synthetic_root)])),
                       ("destseg-export", lambda: export_main([str(run_copy), "--out", str(tmp_path / "bundle")]))):
        assert call() == 2
        assert f"{config} is not valid JSON" in _one_line(capsys.readouterr().err, f"{name}: ")


# 13. Calibration images the FP32 model calls defective are refused unless --force-calib.
def test_calibration_images_that_score_above_the_threshold_are_refused(run, synthetic_root, tmp_path):
    from destseg.calibration.cli import run as run_int8
    from destseg.calibration.images import CalibrationError, check_scores
    from destseg.export.bundle_writer import export_bundle
    from destseg.train.checkpoint import update_config

    low = Path(shutil.copytree(run, tmp_path / "run"))
    update_config(low, thresholds={"image": 0.0, "pixel": 0.0, "method": "test"})  # every image scores above it
    bundle = tmp_path / "bundle"
    export_bundle(low, bundle)
    before = _tree(bundle)
    photos = tmp_path / "photos"  # a folder of the user's, not the run's training split
    for image in sorted((synthetic_root / CATEGORY / "train" / "good").iterdir())[:8]:
        write_image(photos / image.name, read_rgb(image))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few calibration images
        with pytest.raises(CalibrationError, match="8 of 8 calibration images score at or above.*--force-calib"):
            run_int8(bundle, ["--calib-dir", str(photos), "--calib-count", "8"])
    assert _tree(bundle) == before
    with pytest.warns(UserWarning, match="5 of 8 calibration images.*anyway"):
        check_scores(np.array([0.9] * 5 + [0.1] * 3), 0.5, force=True)
    check_scores(np.array([0.9] * 3 + [0.1] * 5), 0.5)  # a few false alarms are normal


# 14a. --bundle pointing at a training run says so and points at --run.
def test_bundle_pointing_at_a_run_points_at_run(run, capsys):
    code, out, err = _runtime(["--input", "test://white", "--bundle", str(run), "--headless", "--max-frames", "1"], capsys)
    assert code == 2 and out == ""
    assert f"--run {run}" in _one_line(err, "destseg-runtime: error: --bundle ")


# 14b. --threshold nan is refused.
@pytest.mark.parametrize("flag", ["--threshold", "--pixel-threshold"])
def test_a_nan_threshold_is_refused(bright, capsys, flag):
    code, out, err = _runtime(["--input", "test://white", "--bundle", str(bright), "--headless", "--max-frames", "1",
                               flag, "nan"], capsys)
    assert code == 2 and out == "" and f"{flag} must be a number" in _one_line(err, "destseg-runtime: error: ")


# 14c. Ctrl-C in export: one line, no traceback, the previous bundle intact.
def test_ctrl_c_in_export_is_one_line_and_keeps_the_bundle(run, int8_bundle, capsys, monkeypatch):
    import destseg.calibration.cli as calibration_cli
    from destseg.export.cli import main as export_main

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    out, before = int8_bundle
    monkeypatch.setattr(calibration_cli, "run_args", ctrl_c)
    assert export_main([str(run), "--out", str(out), "--int8"]) == 130
    assert "interrupted" in _one_line(capsys.readouterr().err, "destseg-export: ")
    assert _tree(out) == before


# 14d. A 1 x 1 or a 6000 x 4000 training image warns.
def test_tiny_and_huge_training_images_warn(tmp_path):
    from destseg.train.trainer import TrainOptions, train

    for i in range(3):
        write_image(tmp_path / "good" / f"{i}.png", np.full((64, 64, 3), 40 * i, np.uint8))
    write_image(tmp_path / "good" / "dot.png", np.zeros((1, 1, 3), np.uint8))
    write_image(tmp_path / "good" / "huge.png", np.zeros((4000, 6000, 3), np.uint8))
    opts = dict(TINY, data=str(tmp_path / "good"), out=str(tmp_path / "run"), steps_student=0, steps_seg=0)
    with pytest.warns(UserWarning) as caught:
        train(TrainOptions(**opts))
    messages = [str(w.message) for w in caught]
    assert any("much smaller than --image-size 64" in m and "dot.png, 1 x 1" in m for m in messages)
    assert any("over 8x --image-size 64" in m and "huge.png, 6000 x 4000" in m for m in messages)


# destseg-synth replaces only a dataset it wrote.
def test_synth_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    from destseg.train.synthetic_dataset import main as synth_main

    (tmp_path / "widget" / "train" / "good").mkdir(parents=True)
    (tmp_path / "widget" / "train" / "good" / "real_photo.png").write_bytes(b"a real photo")
    assert synth_main([str(tmp_path), "--category", "widget", "--train", "2", "--test", "2", "--size", "32"]) == 2
    assert "not a destseg-synth dataset" in _one_line(capsys.readouterr().err, "destseg-synth: ")
    assert (tmp_path / "widget" / "train" / "good" / "real_photo.png").read_bytes() == b"a real photo"
    assert synth_main([str(tmp_path / "new"), "--category", "widget", "--train", "2", "--test", "2", "--size", "32"]) == 0
    assert synth_main([str(tmp_path / "new"), "--category", "widget", "--train", "3", "--test", "2", "--size", "32"]) == 0
    assert len(list((tmp_path / "new" / "widget" / "train" / "good").iterdir())) == 3
