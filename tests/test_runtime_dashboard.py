"""The dashboard (--serve): a real runtime, its JSON API, and the page in Debian's headless Chromium.

The model is the brightness bundle of test_runtime_backends (score = mean brightness, NG from
0.5), so every verdict is known: test://white is all NG, and a threshold of 1.5 set on the page
turns the following frames OK. Selenium drives /usr/bin/chromium through /usr/bin/chromedriver,
given explicitly so that Selenium Manager never looks for (or downloads) a browser.
"""
from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np
import pytest

from destseg.bundle import load_bundle
from destseg.runtime.cli import main
from tests.line_helpers import Runtime, chromium_available, free_port, square_image, validate_events
from tests.test_runtime_backends import write_brightness_bundle

SMALL = ["--width", "160", "--height", "120"]
TOKEN = "line-7-dashboard-token"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1300")
WAIT_S = 30


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = chromium_available()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def request(url: str, body: Optional[Dict[str, Any]] = None, token: Optional[str] = None,
            content_type: str = "application/json", host: Optional[str] = None) -> Tuple[int, Any]:
    """(HTTP status, decoded JSON or raw bytes) of a GET, or of a POST when ``body`` is given."""
    headers = {"Content-Type": content_type} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if host:
        headers["Host"] = host
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=WAIT_S) as r:
            raw, status, kind = r.read(), r.status, r.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        raw, status, kind = exc.read(), exc.code, exc.headers.get_content_type()
    return status, json.loads(raw) if kind == "application/json" else raw


def status_of(url: str) -> Dict[str, Any]:
    code, status = request(url + "api/status")
    assert code == 200
    return status


def until(driver: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message=f"waiting for {what}")


def text(driver: Any, element: str) -> str:
    return driver.find_element("id", element).text


def js(driver: Any, script: str) -> Any:
    return driver.execute_script(f"return {script}")


def test_the_live_page_streams_grows_its_timeline_and_its_threshold_control_changes_verdicts(browser, tmp_path):
    bundle = write_brightness_bundle(tmp_path / "line" / "bundle")
    files_before = sorted(p.name for p in bundle.iterdir())
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    with Runtime(["--input", "test://white", *SMALL, "--bundle", str(bundle), "--headless", "--serve", "127.0.0.1:0",
                  "--token-file", str(tmp_path / "token.txt")], tmp_path) as runtime:
        url = runtime.dashboard_url()
        browser.get(url + "#token=" + TOKEN)
        until(browser, lambda d: text(d, "bundle-name") == "bundle", "the bundle's name")
        until(browser, lambda d: js(d, "document.getElementById('stream').naturalWidth") == 160, "the stream's first frame")
        sent = status_of(url)["stream"]["frames_sent"]
        until(browser, lambda d: status_of(url)["stream"]["frames_sent"] >= sent + 3, "more streamed frames")
        shown = int(text(browser, "timeline-count"))
        until(browser, lambda d: int(text(browser, "timeline-count")) > shown > 0, "the timeline to grow")
        until(browser, lambda d: int(text(browser, "count-ng")) > 0, "NG counted")
        assert text(browser, "count-ok") == "0"

        assert request(url + "api/threshold", {"image": 2.0})[0] == 401  # no token: refused
        assert request(url + "api/threshold", {"image": 2.0}, token="wrong-token-0123")[0] == 401

        field = browser.find_element("id", "threshold-image")
        field.clear()
        field.send_keys("1.5")
        browser.find_element("id", "apply-threshold").click()
        until(browser, lambda d: "saved beside the bundle" in text(d, "threshold-message"), "the page's confirmation")
        change = runtime.wait_events(lambda ev: next((e for e in ev if e["event"] == "threshold"), None), "the change event")
        assert (change["image"], change["previous"]["image"], change["origin"]) == (1.5, 0.5, "dashboard")
        runtime.wait_events(lambda ev: any(e.get("frame", -1) > change["next_frame"] for e in ev), "frames after the change")
        override = bundle.parent / "bundle.thresholds.json"
        assert json.loads(override.read_text())["image"] == 1.5
        assert sorted(p.name for p in bundle.iterdir()) == files_before  # the bundle is untouched ...
        load_bundle(bundle)  # ... and its hashes still hold
        until(browser, lambda d: int(text(d, "count-ok")) > 0, "OK counted on the page")

        browser.find_element("id", "reset-threshold").click()
        back = runtime.wait_events(lambda ev: [e for e in ev if e["event"] == "threshold"][1:], "the reset event")[0]
        assert (back["image"], back["previous"]["image"]) == (0.5, 1.5)
        runtime.wait_events(lambda ev: any(e.get("frame", -1) > back["next_frame"] for e in ev), "frames after the reset")
        assert not override.exists()
        answers = [browser.page_source, json.dumps(status_of(url)), json.dumps(request(url + "api/events?since=0")[1])]
        assert runtime.stop() == 0, runtime.log()
    events = runtime.events()
    validate_events(events)
    for frame in (e for e in events if e["event"] == "frame"):
        judged_by = 1.5 if change["next_frame"] <= frame["frame"] < back["next_frame"] else 0.5
        assert frame["threshold"] == judged_by and frame["verdict"] == ("OK" if judged_by == 1.5 else "NG")
    assert not any(str(tmp_path) in answer for answer in answers)  # no file system path leaves the runtime


def test_a_folder_run_stays_up_for_review_with_its_gallery_roi_and_minimum_area(browser, tmp_path):
    bundle = write_brightness_bundle(tmp_path / "bundle")
    folder = tmp_path / "parts"
    square_image(folder / "a_inside.png", ((8, 40, 40),))  # 1600 px inside the ROI: NG
    square_image(folder / "b_outside.png", ((80, 40, 40),))  # only outside the ROI: OK
    square_image(folder / "c_speck.png", ((8, 8, 16), (80, 40, 40)))  # 256 px inside: below the minimum, OK
    square_image(folder / "d_clean.png", ())
    square_image(folder / "e_inside.png", ((16, 64, 40),))
    roi = np.zeros((128, 128), np.uint8)
    roi[:, :64] = 255  # inspect the left half
    cv2.imwrite(str(tmp_path / "roi.png"), roi)
    with Runtime(["--input", str(folder), "--bundle", str(bundle), "--headless", "--serve", "127.0.0.1:0",
                  "--threshold", "0.05", "--roi", str(tmp_path / "roi.png"), "--min-defect-area", "400"], tmp_path) as runtime:
        url = runtime.dashboard_url()
        runtime.err.wait_for(lambda lines: any("stays up until Ctrl-C" in l for l in lines), what="the end of the folder")
        browser.get(url)
        until(browser, lambda d: text(d, "timeline-count") == "5", "all five frames on the timeline")
        # The counts come with the status poll, the timeline with the events poll: wait for the status too.
        until(browser, lambda d: (text(d, "count-ok"), text(d, "count-ng"), text(d, "count-unknown")) == ("3", "2", "0"),
              "the counts of the five frames")
        until(browser, lambda d: js(d, "document.getElementById('stream').naturalWidth") == 128, "the last frame in the stream")
        until(browser, lambda d: js(d, "document.getElementById('roi').naturalWidth") == 64, "the ROI shade")
        assert text(browser, "state") == "source ended"
        inspection = text(browser, "inspection")
        assert "ROI: 50.0 % of the frame inspected" in inspection and "min defect area: 400 px" in inspection
        until(browser, lambda d: len(d.find_elements("css selector", "#gallery figure")) == 2, "the NG gallery")
        captions = [c.text for c in browser.find_elements("css selector", "#gallery figcaption")]
        assert captions == ["#4 · 0.098 · 1600 px · e_inside.png", "#0 · 0.098 · 1600 px · a_inside.png"]  # newest first
        browser.find_element("css selector", "#gallery figure").click()
        until(browser, lambda d: js(d, "document.getElementById('lightbox-overlay').naturalWidth") == 128, "the full-size NG frame")
        assert js(browser, "document.getElementById('lightbox').classList.contains('open')")
        assert runtime.stop() == 0, runtime.log()
    frames = runtime.frames()
    validate_events(frames)
    assert [(e["file"], e["verdict"], e["defect_area"]) for e in frames] == [
        ("a_inside.png", "NG", 1600), ("b_outside.png", "OK", 0), ("c_speck.png", "OK", 256),
        ("d_clean.png", "OK", 0), ("e_inside.png", "NG", 1600)]
    assert all(e["roi"] and e["min_defect_area"] == 400 for e in frames)


def test_the_api_pages_events_refuses_strangers_and_shows_no_paths(tmp_path):
    bundle = write_brightness_bundle(tmp_path / "bundle")
    with Runtime(["--input", "test://black", *SMALL, "--bundle", str(bundle), "--headless", "--serve", "127.0.0.1:0",
                  "--token", TOKEN], tmp_path) as runtime:
        url = runtime.dashboard_url()
        runtime.wait_events(lambda ev: len(ev) >= 5, "five frames")
        code, page = request(url)
        assert code == 200 and b"destseg" in page
        status = status_of(url)
        assert (status["bundle"], status["source"], status["token_required"]) == ("bundle", "test pattern black", True)
        assert status["counts"]["OK"] >= 5 and set(status["latency_ms"]["infer"]) == {"p50", "p99"}
        assert sum(status["histogram"]["counts"]) == status["histogram"]["frames"] >= 5
        code, first = request(url + "api/events?since=0&limit=2")
        assert code == 200 and [e["frame"] for e in first["events"]] == [0, 1] and first["next"] == 2
        code, rest = request(url + f"api/events?since={first['next']}&limit=3")
        assert [e["frame"] for e in rest["events"]] == [2, 3, 4] and rest["next"] == 5
        code, ahead = request(url + "api/events?since=1000000")
        assert code == 200 and ahead["events"] == [] and ahead["next"] <= 1000000
        assert request(url + "frame.jpg")[1][:2] == b"\xff\xd8"  # a JPEG
        assert request(url + "api/threshold", {"image": 0.1}, token=TOKEN, content_type="text/plain")[0] == 415
        assert request(url + "api/threshold", {"image": "high"}, token=TOKEN)[0] == 400
        assert request(url + "api/threshold", {"image": 0.1})[0] == 401
        assert request(url + "api/status", host="attacker.example:80")[0] == 403  # DNS rebinding
        answers = [page, json.dumps(status), json.dumps(first), json.dumps(request(url + "api/gallery")[1])]
        assert runtime.stop() == 0, runtime.log()
    assert not any(str(tmp_path).encode() in (a if isinstance(a, bytes) else a.encode()) for a in answers)
    assert not (tmp_path / "bundle.thresholds.json").exists()  # refused requests changed nothing


def test_a_threshold_set_live_is_used_at_the_next_start_until_the_bundle_changes(tmp_path, capsys):
    bundle = write_brightness_bundle(tmp_path / "bundle")
    with Runtime(["--input", "test://white", *SMALL, "--bundle", str(bundle), "--headless", "--serve", "127.0.0.1:0"], tmp_path) as runtime:
        url = runtime.dashboard_url()
        code, answer = request(url + "api/threshold", {"image": 1.5, "pixel": 0.9})  # 127.0.0.1 without a token: allowed
        assert code == 200 and answer["persisted"] and answer["origin"] == "dashboard"
        runtime.wait_events(lambda ev: any(e["event"] == "threshold" for e in ev), "the change in the events")
        assert runtime.stop() == 0, runtime.log()
    white = ["--input", "test://white?live=0&frames=2", *SMALL, "--bundle", str(bundle), "--headless"]
    assert main(white) == 0
    out, err = capsys.readouterr()
    assert "using threshold override bundle.thresholds.json beside the bundle: image 1.5, pixel 0.9" in err
    assert [(e["verdict"], e["threshold"], e["pixel_threshold"]) for e in map(json.loads, out.splitlines())] == [("OK", 1.5, 0.9)] * 2
    assert main([*white, "--threshold", "0.7"]) == 0  # the command line wins
    out, err = capsys.readouterr()
    assert "override" not in err and {json.loads(line)["threshold"] for line in out.splitlines()} == {0.7}
    write_brightness_bundle(bundle, thresholds={"image": 0.6, "pixel": 0.6, "method": "f1"})  # a new export
    assert main(white) == 0
    out, err = capsys.readouterr()
    assert "ignoring threshold override bundle.thresholds.json: it was set for an earlier export" in err
    assert {json.loads(line)["threshold"] for line in out.splitlines()} == {0.6}


@pytest.mark.parametrize("args, message", [
    (["--serve", "0.0.0.0:8080"], "listens beyond this machine; pass --token-file"),
    (["--serve", "127.0.0.1:8080", "--token", "short"], "at least 12 characters"),
    (["--serve", "127.0.0.1"], "bad --serve 127.0.0.1"),
    (["--serve", "127.0.0.1:8080", "--token-file", "missing.txt"], "cannot read --token-file missing.txt"),
])
def test_bad_serve_options_are_one_line_errors(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    bundle = write_brightness_bundle(tmp_path / "bundle")
    code = main(["--input", "test://", "--bundle", str(bundle), "--headless", *args])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_a_port_in_use_is_refused_before_streaming(tmp_path, capsys):
    bundle = write_brightness_bundle(tmp_path / "bundle")
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        code = main(["--input", "test://", "--bundle", str(bundle), "--headless", "--serve", f"127.0.0.1:{port}"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and f"cannot serve the dashboard on 127.0.0.1:{port}" in err
    assert not os.path.exists(tmp_path / "bundle.thresholds.json")
