"""The export bundle: the one folder a device needs, and the contract between stages.

``BUNDLE/destseg.json`` describes the model (config, preprocessing, thresholds, input and
output names and shapes) and lists every file with its sha256, so the runtime can refuse a
bundle that was copied half-way or edited by hand before it opens a camera. Export writes
it (inside :func:`destseg.atomic.atomic_dir`); every later stage reads it through
:func:`load_bundle`.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

BUNDLE_FILE = "destseg.json"
SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "model", "preprocessing", "io", "models", "files")
# Model variants a bundle may hold; the runtime picks one by backend and precision.
VARIANTS = ("fp32", "fp16", "int8_trt", "int8_cpu")


class BundleError(ValueError):
    """A bundle that is missing, incomplete, edited or from an incompatible version."""


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    meta: Dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.meta["preprocessing"]["size"])

    @property
    def input_name(self) -> str:
        return self.meta["io"]["inputs"][0]["name"]

    @property
    def output_names(self) -> List[str]:
        return [o["name"] for o in self.meta["io"]["outputs"]]

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.meta["io"].get("dynamic_batch", False))

    @property
    def thresholds(self) -> Dict[str, Any]:
        return self.meta.get("thresholds") or {}

    @property
    def variants(self) -> List[str]:
        return [v for v in VARIANTS if v in self.meta["models"]]

    def model_path(self, variant: str) -> Path:
        """The ONNX file of a variant, or a BundleError that lists the ones present."""
        entry = self.meta["models"].get(variant)
        if entry is None:
            raise BundleError(
                f"bundle {self.path} has no {variant} model (has: {', '.join(self.variants)}); "
                f"re-export with the matching option (e.g. destseg-export --int8)"
            )
        return self.path / entry["file"]


def read_meta(path: str | os.PathLike) -> Dict[str, Any]:
    """Parse destseg.json without checking files (for tools that only need the description)."""
    path = Path(path)
    meta_file = path / BUNDLE_FILE
    if not path.is_dir():
        raise BundleError(f"bundle folder {path} does not exist; run destseg-export RUN --out {path} first")
    if not meta_file.is_file():
        raise BundleError(f"{path} is not a bundle: {BUNDLE_FILE} is missing; point --bundle at a destseg-export output")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_file} is not valid JSON ({exc.msg} at line {exc.lineno}); re-export the bundle") from exc
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{meta_file} lacks {', '.join(missing)}; re-export the bundle with this version")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"{meta_file} has schema version {meta['schema_version']}, this destseg-edge reads {SCHEMA_VERSION}; "
            f"re-export the bundle or install the matching destseg-edge"
        )
    return meta


def load_bundle(path: str | os.PathLike, verify_hashes: bool = True) -> Bundle:
    """Read and validate a bundle: schema, every listed file present, and (by default) its hash."""
    path = Path(path)
    meta = read_meta(path)
    for name, digest in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"bundle {path} is incomplete: {name} is missing; copy the whole bundle folder")
        if verify_hashes and sha256_file(file) != digest:
            raise BundleError(f"bundle {path}: {name} does not match its sha256 in {BUNDLE_FILE}; it was modified or copied incompletely")
    for variant, entry in meta["models"].items():
        if entry["file"] not in meta["files"]:
            raise BundleError(f"bundle {path}: model {variant} file {entry['file']} is not listed in files")
    return Bundle(path, meta)


def write_meta(folder: str | os.PathLike, meta: Dict[str, Any], extra_files: Optional[List[str]] = None) -> Dict[str, Any]:
    """Hash the model files (and ``extra_files``) in ``folder`` and write destseg.json there.

    Called on the temporary folder of an atomic bundle write, so hashes and metadata
    always describe exactly the files that get renamed into place together.
    """
    from destseg.atomic import write_json

    folder = Path(folder)
    names = sorted({e["file"] for e in meta["models"].values()} | set(extra_files or []) | set(meta.get("files", {})))
    meta = dict(meta, schema_version=SCHEMA_VERSION, files={n: sha256_file(folder / n) for n in names})
    write_json(folder / BUNDLE_FILE, meta)
    return meta
