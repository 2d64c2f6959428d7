"""The event JSON's versioned schema (runtime/event.schema.json): valid itself, matched by real events, not vacuous.

Every test that produces real events (decision, publishers, dashboard) validates them too;
here the schema is checked as a schema, against the code's version number, and against
events it must refuse, so a schema that accepted anything would fail.
"""
from __future__ import annotations

import json

import jsonschema
import pytest

from destseg.runtime.events import EVENT_SCHEMA_VERSION, frame_event, threshold_event
from tests.line_helpers import SCHEMA, validate_events

STAGES = {s: 1.0 for s in ("capture", "preprocess", "h2d", "infer", "d2h", "postprocess", "output", "end_to_end")}


def test_the_schema_is_a_valid_draft_2020_12_schema_of_this_version():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == EVENT_SCHEMA_VERSION
    assert schema["$id"].endswith(f":{EVENT_SCHEMA_VERSION}")


def test_the_events_the_runtime_builds_match_it():
    validate_events([
        frame_event(0, 0.7, "NG", 1.7e9, 0.0, STAGES),
        frame_event(1, float("nan"), "NG", 1.7e9, None, STAGES, "part.png", threshold=0.5, pixel_threshold=None),
        frame_event(2, 0.1, None, 1.7e9, 0.1, STAGES),
        frame_event(3, 0.7, "OK", 1.7e9, 0.2, STAGES, defect_area=12, min_defect_area=40, roi=True,
                    age_ms=3.5, late=False),
        threshold_event(0.6, 0.5, {"image": 0.5, "pixel": 0.5}, "dashboard", 4, 1.7e9),
    ])


@pytest.mark.parametrize("change", [
    {"verdict": "MAYBE"},
    {"frame": -1},
    {"score": "high"},
    {"schema_version": 2},
    {"event": "status"},
    {"defect_area": 1.5},
    {"ms": {"capture": 1.0}},
])
def test_it_refuses_what_a_consumer_could_not_read(change):
    event = {**frame_event(0, 0.7, "NG", 1.7e9, 0.0, STAGES), **change}
    with pytest.raises(jsonschema.ValidationError):
        validate_events([event])


def test_a_threshold_change_needs_its_fields():
    event = threshold_event(0.6, 0.5, {"image": 0.5, "pixel": 0.5}, "dashboard", 4, 1.7e9)
    del event["next_frame"]
    with pytest.raises(jsonschema.ValidationError):
        validate_events([event])
