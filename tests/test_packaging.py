"""The wheel installs the stage folders as destseg.* packages, with the console scripts."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_maps_the_stage_folders_and_declares_the_console_scripts(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("destseg_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("destseg/bundle.py", "destseg/train/model.py", "destseg/export/__init__.py",
                   "destseg/calibration/__init__.py", "destseg/runtime/__init__.py", "destseg/inference.py",
                   "destseg/tensorrt.py", "destseg/hardware.py", "destseg/benchmarks/bench.py",
                   "destseg/benchmarks/machine.py", "destseg/runtime/doctor.py", "destseg/runtime/doctor_bundle/destseg.json",
                   "destseg/runtime/doctor_bundle/model.onnx", "destseg/runtime/doctor_bundle/model.int8.onnx",
                   "destseg/runtime/doctor_bundle/model.int8.cpu.onnx", "destseg/runtime/dashboard.html",
                   "destseg/runtime/event.schema.json"):
        assert module in names, module
    assert not any(n.startswith(("train/", "tests/", "benchmarks/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "destseg-train = destseg.train.cli:main" in scripts
    assert "destseg-synth = destseg.train.synthetic_dataset:main" in scripts
    assert "destseg-bench = destseg.benchmarks.bench:main" in scripts
    assert "destseg-doctor = destseg.runtime.doctor:main" in scripts
