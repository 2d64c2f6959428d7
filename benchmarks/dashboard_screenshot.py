"""The README's dashboard screenshot: a real runtime on a folder of images, photographed by headless Chromium.

Runs ``destseg-runtime --input FOLDER --serve 127.0.0.1:0`` (the dashboard stays up when the
folder ends), opens the page in Debian's Chromium through /usr/bin/chromedriver (nothing is
downloaded), waits until the timeline holds every frame and the NG gallery has loaded, and
saves the page as PNG. Needs the dev extra (selenium) and ``make system-deps``.

    python benchmarks/dashboard_screenshot.py --bundle demo_out/bundle --input demo_out/line \\
        --out benchmarks/dashboard.png [--roi roi.png --min-defect-area 40]
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
WAIT_S = 120


def dashboard_url(proc: subprocess.Popen) -> str:
    """The URL the runtime logs once its server listens (read from its stderr)."""
    for line in proc.stderr:
        sys.stderr.write(line)
        if "dashboard at http" in line:
            return line.split("dashboard at ", 1)[1].split()[0]
    raise SystemExit("the runtime exited before serving the dashboard")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--input", required=True, help="a folder of images (the dashboard stays up when it ends)")
    p.add_argument("--out", default="benchmarks/dashboard.png")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=2000)
    p.add_argument("runtime_args", nargs="*", help="more destseg-runtime options, after --")
    args = p.parse_args()
    frames = len([f for f in Path(args.input).iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")])

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    command: List[str] = [sys.executable, "-m", "destseg.runtime.cli", "--bundle", args.bundle, "--input", args.input,
                          "--headless", "--events", "/dev/null", "--serve", "127.0.0.1:0", *args.runtime_args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = dashboard_url(proc)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={args.width},{args.height}")
        with tempfile.TemporaryDirectory() as profile:
            options.add_argument(f"--user-data-dir={profile}")
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            try:
                driver.get(url)
                wait = WebDriverWait(driver, WAIT_S)
                wait.until(lambda d: d.find_element("id", "timeline-count").text == str(frames))
                wait.until(lambda d: d.execute_script("return document.getElementById('stream').naturalWidth") > 0)
                wait.until(lambda d: d.find_element("id", "state").text == "source ended")  # status after the last frame
                wait.until(lambda d: d.execute_script(
                    "const imgs = [...document.querySelectorAll('#gallery img')];"
                    "return imgs.length === Math.min(12, parseInt(document.getElementById('count-ng').textContent))"
                    " && imgs.every(i => i.complete && i.naturalWidth > 0)"))
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(args.out)
            finally:
                driver.quit()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    print(f"wrote {args.out} ({frames} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
