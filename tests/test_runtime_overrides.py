"""The threshold override beside the bundle: precedence, persistence, going back, and damaged files.

The end-to-end path (the dashboard writes it, the next start reads it) is in test_runtime_dashboard;
these pin the rules a line engineer relies on without a runtime around them.
"""
from __future__ import annotations

import json

import pytest

from destseg.bundle import load_bundle
from destseg.runtime.errors import RuntimeInputError
from destseg.runtime.overrides import ThresholdControl, initial_thresholds, override_path
from tests.test_runtime_backends import write_brightness_bundle

BUNDLE = {"image": 0.5, "pixel": 0.4}


def test_changes_persist_beside_the_bundle_and_apply_from_the_next_frame(tmp_path):
    bundle = write_brightness_bundle(tmp_path / "bundle")
    logged = []
    control = ThresholdControl(bundle, initial_thresholds(bundle, BUNDLE, None, None, logged.append), logged.append)
    assert control.take(0) == (0.5, 0.4, [])
    answer = control.set(0.7)  # the pixel threshold stays
    assert answer["persisted"] and (answer["image"], answer["pixel"], answer["origin"]) == (0.7, 0.4, "dashboard")
    image, pixel, events = control.take(12)
    assert (image, pixel) == (0.7, 0.4)
    assert [(e["image"], e["previous"], e["next_frame"]) for e in events] == [(0.7, {"image": 0.5, "pixel": 0.4}, 12)]
    assert control.take(13)[2] == []  # each change is emitted once
    path = override_path(bundle)
    assert path == tmp_path / "bundle.thresholds.json" and json.loads(path.read_text())["image"] == 0.7
    load_bundle(bundle)  # hashes intact: nothing was written inside
    restarted = initial_thresholds(bundle, BUNDLE, None, None, logged.append)
    assert (restarted.image, restarted.pixel, restarted.origin) == (0.7, 0.4, "override")
    assert any("using threshold override bundle.thresholds.json" in line for line in logged)
    ThresholdControl(bundle, restarted, logged.append).reset()
    assert not path.exists()
    assert initial_thresholds(bundle, BUNDLE, None, None, logged.append).origin == "bundle"


def test_the_command_line_wins_and_bad_values_are_refused(tmp_path):
    bundle = write_brightness_bundle(tmp_path / "bundle")
    control = ThresholdControl(bundle, initial_thresholds(bundle, BUNDLE, None, None, print), print)
    control.set(0.9, 0.8)
    chosen = initial_thresholds(bundle, BUNDLE, 0.3, None, print)
    assert (chosen.image, chosen.pixel, chosen.origin) == (0.3, 0.4, "command line")
    for bad in ("0.5", float("nan"), float("inf"), True, None):
        with pytest.raises(ValueError):
            control.set(bad)
    assert control.snapshot()["image"] == 0.9  # a refused change changes nothing


def test_a_damaged_or_foreign_override_is_a_one_line_error(tmp_path):
    bundle = write_brightness_bundle(tmp_path / "bundle")
    path = override_path(bundle)
    path.write_text("{ not json")
    with pytest.raises(RuntimeInputError, match="cannot be read.*delete it to use the bundle's thresholds"):
        initial_thresholds(bundle, BUNDLE, None, None, print)
    path.write_text(json.dumps({"image": 0.1}))
    with pytest.raises(RuntimeInputError, match="is not a destseg threshold override"):
        initial_thresholds(bundle, BUNDLE, None, None, print)
    control = ThresholdControl(bundle, initial_thresholds(bundle, BUNDLE, 0.5, None, print), print)
    assert not control.reset()["persisted"] and path.exists()  # a file the runtime did not write is left alone
