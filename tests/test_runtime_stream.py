"""destseg-runtime end to end: real GStreamer pipelines through ONNX Runtime, outputs, errors, SIGINT.

The model is the brightness bundle of test_runtime_backends (white frames score 1.0 and
are NG at the 0.5 threshold, black ones 0.0 and OK), so verdicts are known in advance;
one test streams a real exported DeSTSeg.
"""
from __future__ import annotations

import json
from dataclasses import replace
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import pytest

from destseg.images import write_image
from destseg.runtime.cli import main
from destseg.runtime.stream import StreamOptions, needs_full_frame
from destseg.runtime.gst import gst, has_element, parse_pipeline, stop, wait_for_eos
from destseg.runtime.errors import SourceError
from destseg.runtime.profiler import STAGES, STATISTICS
from tests.test_runtime_backends import write_brightness_bundle

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--width", "160", "--height", "120"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_brightness_bundle(tmp_path_factory.mktemp("runtime") / "bundle")


def run(argv: List[str], capsys) -> Tuple[int, List[dict], str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def make_video(path: Path, pattern: str, frames: int) -> Path:
    """A 160 x 120, 30 fps clip written by GStreamer (H.264 in MP4 where x264enc exists, else MJPEG in AVI)."""
    encode = "x264enc ! mp4mux" if path.suffix == ".mp4" else "jpegenc ! avimux"
    pipeline = parse_pipeline(
        f"videotestsrc pattern={pattern} num-buffers={frames} ! video/x-raw,width=160,height=120,framerate=30/1 ! "
        f"videoconvert ! {encode} ! filesink location={path}", SourceError, "test clip")
    pipeline.set_state(gst().State.PLAYING)
    error = wait_for_eos(pipeline, 30)
    stop(pipeline)
    assert error is None, error
    return path


def decoded_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


def test_test_source_end_to_end_with_json_lines_and_profile(bundle, tmp_path, capsys):
    profile, frames_csv = tmp_path / "profile.json", tmp_path / "frames.csv"
    code, events, err = run(["--input", "test://white", *SMALL, "--bundle", str(bundle), "--headless", "--max-frames", "6",
                             "--backend", "onnxruntime", "--profile", str(profile), "--profile-csv", str(frames_csv)], capsys)
    assert code == 0, err
    assert [e["frame"] for e in events] == list(range(6))
    for e in events:
        assert e["score"] == pytest.approx(1.0) and e["verdict"] == "NG"
        assert set(e["ms"]) == set(STAGES) and e["ms"]["end_to_end"] >= e["ms"]["infer"] > 0
        assert e["captured_at"] > 1.6e9 and e["pts"] is not None
    summary = json.loads(profile.read_text())
    assert summary["frames"] == 6 and summary["backend"] == "onnxruntime" and summary["reconnects"] == 0
    assert list(summary["stages_ms"]) == list(STAGES)
    assert all(list(stats) == list(STATISTICS) for stats in summary["stages_ms"].values())
    assert len(frames_csv.read_text().splitlines()) == 1 + 6
    assert "backend onnxruntime" in err and "=== profile: 6 frames" in err


def test_a_video_file_is_processed_frame_by_frame_into_an_output_file(bundle, tmp_path, capsys):
    clip = make_video(tmp_path / ("clip.mp4" if has_element("x264enc") else "clip.avi"), "black", 12)
    out = tmp_path / "overlay.avi"
    code, events, err = run(["--input", str(clip), "--bundle", str(bundle), "--headless", "--output", str(out),
                             "--profile", str(tmp_path / "p.json")], capsys)
    assert code == 0, err
    assert len(events) == 12 and {e["verdict"] for e in events} == {"OK"}
    assert np.diff([e["pts"] for e in events]) == pytest.approx(np.full(11, 1 / 30), abs=2e-3)  # none skipped
    assert json.loads((tmp_path / "p.json").read_text())["dropped"] == 0
    assert decoded_frames(out) == 12


def test_realtime_plays_a_file_once_at_its_rate(bundle, tmp_path, capsys):
    clip = make_video(tmp_path / "clip.avi", "white", 12)
    code, events, err = run(["--input", str(clip), "--realtime", "--bundle", str(bundle), "--headless",
                             "--duration", "20", "--profile", str(tmp_path / "p.json")], capsys)
    assert code == 0, err
    assert len(events) <= 12 and {e["verdict"] for e in events} == {"NG"}  # a file is not reopened at its end
    summary = json.loads((tmp_path / "p.json").read_text())
    assert summary["reconnects"] == 0 and summary["frames"] + summary["dropped"] <= 12


def test_a_truncated_file_streams_what_it_has_and_an_empty_one_is_an_error(bundle, tmp_path, capsys):
    clip = make_video(tmp_path / "clip.avi", "black", 30)
    data = clip.read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    code, events, err = run(["--input", str(tmp_path / "half.avi"), "--bundle", str(bundle), "--headless"], capsys)
    assert code == 0, err
    assert 5 < len(events) < 30
    (tmp_path / "head.avi").write_bytes(data[:300])  # the header, no frame
    code, events, err = run(["--input", str(tmp_path / "head.avi"), "--bundle", str(bundle), "--headless",
                             "--stall-timeout", "3"], capsys)  # GStreamer rarely loses the demuxer's error
    assert code == 2 and events == [] and f"cannot read {tmp_path / 'head.avi'}" in err


def test_a_folder_of_images_is_a_source(bundle, tmp_path, capsys):
    for name, value in (("a.png", 255), ("b.jpg", 0), ("c.png", 255)):
        write_image(tmp_path / "imgs" / name, np.full((90, 120, 3), value, np.uint8))
    code, events, err = run(["--input", str(tmp_path / "imgs"), "--bundle", str(bundle), "--headless",
                             "--save-anomalies", str(tmp_path / "ng")], capsys)
    assert code == 0, err
    assert [(e["file"], e["verdict"]) for e in events] == [("a.png", "NG"), ("b.jpg", "OK"), ("c.png", "NG")]
    saved = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "ng").iterdir())  # after the run id
    assert saved == ["000000_frame.png", "000000_heatmap.jpg", "000002_frame.png", "000002_heatmap.jpg"]


def test_sigint_finalises_the_output_file_and_the_profile(bundle, tmp_path):
    out, profile, log = tmp_path / "out.mkv", tmp_path / "profile.json", tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "destseg.runtime.cli", "--input", "test://ball", *SMALL, "--bundle", str(bundle),
             "--headless", "--output", str(out), "--profile", str(profile)],
            stdout=subprocess.PIPE, stderr=err, text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        try:
            first = json.loads(proc.stdout.readline())
            assert first["frame"] == 0
            proc.send_signal(signal.SIGINT)
            rest = proc.stdout.read()  # to EOF: the process has exited or closed stdout
            proc.wait(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0, log.read_text()
    processed = 1 + len(rest.splitlines())
    assert json.loads(profile.read_text())["frames"] == processed
    assert decoded_frames(out) == processed


def test_a_live_source_that_ends_is_reopened_and_counted(bundle, tmp_path, capsys):
    code, events, err = run(["--input", "test://ball?frames=3", *SMALL, "--bundle", str(bundle), "--headless",
                             "--max-frames", "7", "--reconnect-delay", "0", "--profile", str(tmp_path / "p.json")], capsys)
    assert code == 0, err
    assert [e["frame"] for e in events] == list(range(7))
    reconnects = json.loads((tmp_path / "p.json").read_text())["reconnects"]
    assert reconnects >= 2  # 3 frames per opening at most (a slow frame may drop one)
    assert err.count("source lost (the stream ended); reopening in 0.0 s") == reconnects


def test_a_frozen_camera_counts_as_lost_and_is_reopened(bundle, tmp_path, capsys):
    # One frame every 10 s looks, to a 0.5 s stall timeout, like a camera that froze after each frame.
    code, events, err = run(["--input", "test://ball", *SMALL, "--fps", "0.1", "--bundle", str(bundle), "--headless",
                             "--max-frames", "3", "--stall-timeout", "0.5", "--reconnect-delay", "0",
                             "--profile", str(tmp_path / "p.json")], capsys)
    assert code == 0, err
    assert len(events) == 3 and err.count("source lost (no frame for 0.5 s)") == 2
    assert json.loads((tmp_path / "p.json").read_text())["reconnects"] == 2


def test_duration_also_ends_the_wait_for_a_lost_camera(bundle, tmp_path, capsys):
    code, events, err = run(["--input", "test://ball?frames=2", *SMALL, "--bundle", str(bundle), "--headless",
                             "--duration", "3", "--reconnect-delay", "600", "--reconnect-max-delay", "600", "--profile", str(tmp_path / "p.json")], capsys)
    assert code == 0, err
    assert 1 <= len(events) <= 2 and "reopening in 600.0 s" in err
    assert json.loads((tmp_path / "p.json").read_text())["reconnects"] == 1


@pytest.mark.parametrize("args, message", [
    (["--input", "ftp://host/line.mp4"], "unsupported source ftp://host/line.mp4"),
    (["--input", "missing.mp4"], "input missing.mp4 does not exist"),
    (["--camera", "/dev/video99"], "camera /dev/video99 not found"),
    (["--input", "test://", "--output", "out.webm"], "unsupported output out.webm"),
    (["--input", "test://", "--output", "display"], "--headless and --output display contradict"),
    (["--input", "test://", "--max-frames", "0"], "--max-frames must be positive"),
])
def test_bad_input_is_one_line_and_exit_2(bundle, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, events, err = run([*args, "--bundle", str(bundle), "--headless"], capsys)
    assert code == 2 and events == []
    assert err.count("\n") == 1 and err.startswith("destseg-runtime: error: ") and message in err


def test_a_bundle_whose_model_size_differs_is_refused_before_streaming(tmp_path, capsys):
    broken = write_brightness_bundle(tmp_path / "broken", size=64, onnx_size=32)
    code, events, err = run(["--input", "test://", "--bundle", str(broken), "--headless"], capsys)
    assert code == 2 and events == []
    assert "takes 32 x 32 images but destseg.json says 64" in err


def test_a_missing_bundle_says_how_to_make_one(tmp_path, capsys):
    code, _, err = run(["--input", "test://", "--bundle", str(tmp_path / "nope"), "--headless"], capsys)
    assert code == 2 and "run destseg-export RUN --out" in err


def test_a_real_destseg_bundle_streams(tiny_bundle, capsys):
    code, events, err = run(["--input", "test://smpte", *SMALL, "--bundle", str(tiny_bundle), "--headless",
                             "--max-frames", "3", "--threshold", "2"], capsys)
    assert code == 0, err
    assert len(events) == 3
    for e in events:
        assert 0.0 <= e["score"] <= 1.0 and e["verdict"] == "OK"


def test_only_what_shows_the_picture_asks_the_source_for_the_full_frame(bundle):
    opts = StreamOptions(source="test://", model=str(bundle), headless=True)
    assert not needs_full_frame([], opts)
    assert needs_full_frame(["out.avi"], opts)
    assert needs_full_frame([], replace(opts, save_anomalies="ng"))
    assert needs_full_frame([], replace(opts, serve="127.0.0.1:8080"))
