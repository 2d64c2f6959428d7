"""Live threshold changes and the override file beside the bundle that keeps them across restarts.

The dashboard's threshold control changes the image (and pixel) threshold while parts go by.
The bundle itself is never touched (its files are hashed in destseg.json, and a device must be
able to prove it runs what was exported): the new values go to ``NAME.thresholds.json`` in the
bundle's parent folder, written atomically, and every start reads it and says so. The override
records the sha256 of the bundle's destseg.json, so a re-exported bundle (with new thresholds
of its own) is not silently overruled by an old override. ``--threshold`` / ``--pixel-threshold``
on the command line win over both. Going back to the bundle's thresholds deletes the override.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from destseg.atomic import write_json
from destseg.bundle import BUNDLE_FILE, sha256_file
from destseg.runtime.errors import RuntimeInputError
from destseg.runtime.events import threshold_event

OVERRIDE_SUFFIX = ".thresholds.json"
OVERRIDE_KIND = "destseg-threshold-override"
RUN_CONFIG = "config.json"  # what a training run (--run) is identified by


def override_path(model: str | Path) -> Path:
    """``PARENT/NAME.thresholds.json`` for the bundle (or run) folder ``PARENT/NAME``."""
    model = Path(model).resolve()
    return model.parent / f"{model.name}{OVERRIDE_SUFFIX}"


def model_fingerprint(model: str | Path) -> Optional[str]:
    """The sha256 of the bundle's destseg.json (a run's config.json): which export an override was set for."""
    for name in (BUNDLE_FILE, RUN_CONFIG):
        path = Path(model) / name
        if path.is_file():
            return sha256_file(path)
    return None


def read_override(model: str | Path) -> Optional[Dict[str, Any]]:
    """The override for ``model``, None when there is none; a damaged one is a one-line error."""
    path = override_path(model)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeInputError(f"threshold override {path} cannot be read ({exc}); fix it, or delete it to use the bundle's thresholds") from exc
    if not isinstance(data, dict) or data.get("kind") != OVERRIDE_KIND:
        raise RuntimeInputError(f"{path} is not a destseg threshold override; move it away (the runtime keeps its override there)")
    return data


def _number(value: Any, name: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass
class Thresholds:
    """The thresholds in force and where they came from."""

    image: Optional[float]
    pixel: Optional[float]
    bundle_image: Optional[float]
    bundle_pixel: Optional[float]
    origin: str  # "bundle" | "override" | "command line" | "dashboard"

    def as_dict(self) -> Dict[str, Any]:
        return {"image": self.image, "pixel": self.pixel, "bundle_image": self.bundle_image,
                "bundle_pixel": self.bundle_pixel, "origin": self.origin}


def initial_thresholds(model: str | Path, bundle: Dict[str, Any], image: Optional[float], pixel: Optional[float],
                       log: Callable[[str], None]) -> Thresholds:
    """The thresholds of a start: command line, else the override beside the bundle, else the bundle's."""
    own_image, own_pixel = bundle.get("image"), bundle.get("pixel")
    if image is not None or pixel is not None:
        return Thresholds(image if image is not None else own_image, pixel if pixel is not None else own_pixel,
                          own_image, own_pixel, "command line")
    override = read_override(model)
    if override is None:
        return Thresholds(own_image, own_pixel, own_image, own_pixel, "bundle")
    name = override_path(model).name
    if override.get("model_sha256") != model_fingerprint(model):
        log(f"ignoring threshold override {name}: it was set for an earlier export of this bundle; delete it")
        return Thresholds(own_image, own_pixel, own_image, own_pixel, "bundle")
    try:
        over_image, over_pixel = _number(override.get("image"), "image"), _number(override.get("pixel"), "pixel")
    except ValueError as exc:
        raise RuntimeInputError(f"threshold override {name}: {exc}; fix it or delete it") from exc
    log(f"using threshold override {name} beside the bundle: image {over_image}, pixel {over_pixel} "
        f"(the bundle's: image {own_image}, pixel {own_pixel}); the dashboard's 'bundle threshold' or deleting the file goes back")
    return Thresholds(over_image, over_pixel, own_image, own_pixel, "override")


@dataclass
class ThresholdControl:
    """The thresholds shared by the frame loop and the dashboard.

    The dashboard's thread calls :meth:`set` or :meth:`reset` (which persist at once); the loop
    calls :meth:`take` before each frame and gets the values to judge it with plus the change
    events to emit first, in one step, so a change applies from exactly the frame it names.
    """

    model: Path
    current: Thresholds
    log: Callable[[str], None]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: List[Tuple[Optional[float], Optional[float], Dict[str, Optional[float]], str, float]] = field(default_factory=list)

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return self.current.as_dict()

    def set(self, image: Any, pixel: Any = None, origin: str = "dashboard") -> Dict[str, Any]:
        """New thresholds (pixel None keeps the current one); ValueError for a value that is not a number."""
        image_value = _number(image, "image")
        pixel_value = _number(pixel, "pixel")
        if image_value is None:
            raise ValueError("image threshold missing")
        with self._lock:
            new_pixel = pixel_value if pixel_value is not None else self.current.pixel
            self._change(image_value, new_pixel, origin)
            persisted = self._persist()
            return dict(self.current.as_dict(), persisted=persisted)

    def reset(self, origin: str = "dashboard") -> Dict[str, Any]:
        """Back to the bundle's thresholds; the override file goes (it is ours), so the next start uses the bundle's too."""
        with self._lock:
            self._change(self.current.bundle_image, self.current.bundle_pixel, origin)
            self.current.origin = "bundle"
            path = override_path(self.model)
            persisted = True
            try:
                if read_override(self.model) is not None:
                    path.unlink()
            except (OSError, RuntimeInputError) as exc:
                self.log(f"could not remove the threshold override {path.name}: {exc}")
                persisted = False
            return dict(self.current.as_dict(), persisted=persisted)

    def _change(self, image: Optional[float], pixel: Optional[float], origin: str) -> None:
        previous = {"image": self.current.image, "pixel": self.current.pixel}
        self.current.image, self.current.pixel, self.current.origin = image, pixel, origin
        self._pending.append((image, pixel, previous, origin, time.time()))
        self.log(f"threshold set to image {image}, pixel {pixel} from the {origin} (was image {previous['image']}, pixel {previous['pixel']})")

    def _persist(self) -> bool:
        path = override_path(self.model)
        record = {"kind": OVERRIDE_KIND, "schema_version": 1, "bundle": path.name[: -len(OVERRIDE_SUFFIX)],
                  "model_sha256": model_fingerprint(self.model), "image": self.current.image, "pixel": self.current.pixel,
                  "bundle_image": self.current.bundle_image, "bundle_pixel": self.current.bundle_pixel,
                  "changed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            write_json(path, record)
        except OSError as exc:
            self.log(f"threshold change not saved: cannot write {path} ({exc.strerror}); it holds until the runtime stops")
            return False
        return True

    def take(self, next_frame: int) -> Tuple[Optional[float], Optional[float], List[Dict[str, Any]]]:
        """(image, pixel, change events) for the frame about to be judged."""
        with self._lock:
            pending, self._pending = self._pending, []
            events = [threshold_event(image, pixel, previous, origin, next_frame, at)
                      for image, pixel, previous, origin, at in pending]
            return self.current.image, self.current.pixel, events
