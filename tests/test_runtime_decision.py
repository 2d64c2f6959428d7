"""The verdict's narrowing: --roi, --min-defect-area and --deadline-ms, on maps and in real runs.

The unit tests use hand-made maps whose regions are known exactly; the runs use the brightness
bundle of test_runtime_backends on images with white squares, so each region's area in frame
pixels is known in advance.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from destseg.runtime.cli import main
from destseg.runtime.decision import Inspection, apply_deadline, decide, largest_defect, load_roi
from destseg.runtime.errors import RuntimeInputError
from tests.line_helpers import square_image, validate_events
from tests.test_runtime_backends import write_brightness_bundle

FRAME = (128, 128, 3)  # frames twice the 64 x 64 map: one map pixel is four frame pixels


def two_blobs() -> np.ndarray:
    """A 64 x 64 map with a 3 x 3 blob on the left (0.9) and a 5 x 5 blob on the right (0.8)."""
    m = np.full((64, 64), 0.1, np.float32)
    m[10:13, 10:13] = 0.9
    m[30:35, 45:50] = 0.8
    return m


def left_half() -> np.ndarray:
    roi = np.zeros((64, 64), bool)
    roi[:, :32] = True
    return roi


def test_the_largest_region_is_measured_in_frame_pixels_inside_the_roi():
    assert largest_defect(two_blobs(), 0.5, None, FRAME) == 25 * 4
    assert largest_defect(two_blobs(), 0.85, None, FRAME) == 9 * 4  # only the hotter blob is above
    assert largest_defect(two_blobs(), 0.5, left_half(), FRAME) == 9 * 4
    assert largest_defect(two_blobs()[np.newaxis], 0.5, None, (64, 64, 3)) == 25  # 1 x S x S maps too
    assert largest_defect(np.zeros((64, 64), np.float32), 0.5, None, FRAME) == 0


def test_roi_and_minimum_area_only_turn_ng_into_ok():
    m = two_blobs()
    plain = Inspection()
    assert decide(0.7, m, 0.5, 0.5, plain, FRAME) == ("NG", None)  # without them: the image rule alone
    assert decide(0.3, m, 0.5, 0.5, Inspection(min_defect_area=1), FRAME) == ("OK", 100)  # never OK -> NG
    assert decide(0.7, m, 0.5, 0.5, Inspection(min_defect_area=100), FRAME) == ("NG", 100)
    assert decide(0.7, m, 0.5, 0.5, Inspection(min_defect_area=101), FRAME) == ("OK", 100)
    assert decide(0.7, m, 0.5, 0.5, Inspection(roi=left_half(), min_defect_area=40), FRAME) == ("OK", 36)
    assert decide(0.7, m, 0.5, 0.5, Inspection(roi=left_half()), FRAME) == ("NG", 36)
    roi = np.zeros((64, 64), bool)
    roi[50:, 50:] = True  # a corner with no defect
    assert decide(0.7, m, 0.5, 0.5, Inspection(roi=roi), FRAME) == ("OK", 0)
    assert decide(float("nan"), m, 0.5, 0.5, Inspection(roi=roi), FRAME)[0] == "NG"  # a broken model never passes
    assert decide(0.7, m, None, None, Inspection(roi=roi), FRAME) == (None, None)  # never evaluated: no verdict


def test_the_roi_mask_is_white_for_inspect_and_checked(tmp_path):
    mask = np.zeros((96, 128), np.uint8)
    mask[:, :64] = 255
    cv2.imwrite(str(tmp_path / "roi.png"), mask)
    roi = load_roi(str(tmp_path / "roi.png"), 64)
    assert roi.shape == (64, 64) and roi[:, :32].all() and not roi[:, 32:].any()  # stretched like the frame
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(RuntimeInputError, match="all black"):
        load_roi(str(tmp_path / "black.png"), 64)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    for name in ("broken.png", "missing.png"):
        with pytest.raises(RuntimeInputError, match="not a readable image"):
            load_roi(str(tmp_path / name), 64)


def test_a_late_verdict_becomes_unknown_and_keeps_what_the_model_said():
    on_time = {"verdict": "OK"}
    assert not apply_deadline(on_time, captured_at=100.0, deadline_ms=50, now=100.04)
    assert on_time == {"verdict": "OK", "age_ms": 40.0, "late": False}
    late = {"verdict": "OK"}
    assert apply_deadline(late, captured_at=100.0, deadline_ms=50, now=100.06)
    assert late == {"verdict": "UNKNOWN", "age_ms": 60.0, "late": True, "late_verdict": "OK"}
    untouched = {"verdict": "NG"}
    assert not apply_deadline(untouched, captured_at=0.0, deadline_ms=None) and untouched == {"verdict": "NG"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_brightness_bundle(tmp_path_factory.mktemp("decision") / "bundle")


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_a_run_with_roi_and_minimum_area_judges_by_regions(bundle, tmp_path, capsys):
    parts = tmp_path / "parts"
    square_image(parts / "a.png", ((8, 40, 40),))  # 1600 px inside the ROI
    square_image(parts / "b.png", ((80, 40, 40),))  # outside
    square_image(parts / "c.png", ((8, 8, 16), (80, 40, 40)))  # 256 px inside, a big one outside
    mask = np.zeros((128, 128), np.uint8)
    mask[:, :64] = 255
    cv2.imwrite(str(tmp_path / "roi.png"), mask)
    base = ["--input", str(parts), "--bundle", str(bundle), "--headless", "--threshold", "0.05"]
    code, plain, err = run(base, capsys)
    assert code == 0, err
    assert [e["verdict"] for e in plain] == ["NG", "NG", "NG"] and "defect_area" not in plain[0]
    code, events, err = run([*base, "--roi", str(tmp_path / "roi.png"), "--min-defect-area", "300",
                             "--save-anomalies", str(tmp_path / "ng")], capsys)
    assert code == 0, err
    assert [(e["verdict"], e["defect_area"], e["roi"], e["min_defect_area"]) for e in events] == [
        ("NG", 1600, True, 300), ("OK", 0, True, 300), ("OK", 256, True, 300)]
    saved = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "ng").iterdir())  # after the run id
    assert saved == ["000000_frame.png", "000000_heatmap.jpg"]
    validate_events(plain + events)


def test_a_deadline_turns_late_verdicts_into_counted_unknowns(bundle, tmp_path, capsys):
    source = ["--input", "test://white?live=0&frames=4", "--width", "160", "--height", "120", "--bundle", str(bundle), "--headless"]
    code, events, err = run([*source, "--deadline-ms", "0.001", "--profile", str(tmp_path / "late.json")], capsys)
    assert code == 0, err
    assert [(e["verdict"], e["late"], e["late_verdict"]) for e in events] == [("UNKNOWN", True, "NG")] * 4
    assert all(e["age_ms"] > 0.001 for e in events)
    assert json.loads((tmp_path / "late.json").read_text())["late"] == 4
    code, events, err = run([*source, "--deadline-ms", "60000", "--profile", str(tmp_path / "on_time.json")], capsys)
    assert code == 0, err
    assert [(e["verdict"], e["late"]) for e in events] == [("NG", False)] * 4 and "late_verdict" not in events[0]
    assert json.loads((tmp_path / "on_time.json").read_text())["late"] == 0
    validate_events(events)


@pytest.mark.parametrize("args, message", [
    (["--min-defect-area", "0"], "--min-defect-area must be at least 1 pixel"),
    (["--deadline-ms", "0"], "--deadline-ms must be positive"),
    (["--roi", "missing.png"], "--roi missing.png: not a readable image"),
])
def test_bad_inspection_options_are_errors_before_streaming(bundle, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, events, err = run(["--input", "test://", "--bundle", str(bundle), "--headless", *args], capsys)
    assert code == 2 and events == [] and f"destseg-runtime: error: {message}" in err


def test_regions_need_a_pixel_threshold(tmp_path, capsys):
    no_pixel = write_brightness_bundle(tmp_path / "bundle", thresholds={"image": 0.5, "method": "f1"})
    code, events, err = run(["--input", "test://", "--bundle", str(no_pixel), "--headless", "--min-defect-area", "10"], capsys)
    assert code == 2 and "need a pixel threshold" in err


def test_without_the_full_frame_areas_are_still_in_camera_pixels(bundle, capsys):
    # Headless with events only: the source delivers no full-resolution frame, its size comes from the caps.
    code, events, err = run(["--input", "test://white?live=0&frames=2", "--width", "160", "--height", "120",
                             "--bundle", str(bundle), "--headless", "--threshold", "0.5", "--pixel-threshold", "0.5",
                             "--min-defect-area", "19200"], capsys)
    assert code == 0, err
    assert [(e["verdict"], e["defect_area"]) for e in events] == [("NG", 160 * 120)] * 2
