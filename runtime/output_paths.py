"""Every file the runtime will write, checked before the first frame.

A profile path that cannot be written used to fail at exit, after every frame; an output
that is the input video destroyed it. Here, before the source opens, each output path
(``--output`` files, ``--events``, ``--profile``, ``--profile-csv``, ``--save-anomalies``) must be
writable, must differ from the others, and must not be the input or lie inside the input
folder or the model folder (links resolved: two spellings of one file are one file).
"""
from __future__ import annotations

import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from destseg.atomic import same_or_inside
from destseg.runtime.errors import SinkError


def _local_input(kind: str, location: str) -> Optional[Path]:
    """The input as a local path (a file or a folder), or None for cameras, streams and test patterns."""
    if kind == "folder":
        return Path(location)
    if location.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(location).path))
    return None


def _output_files(opts: Any) -> List[Tuple[str, str]]:
    files = [("--output", o) for o in opts.outputs if o != "display" and "://" not in o]
    files += [(flag, value) for flag, value in (("--events", opts.events), ("--profile", opts.profile),
                                                 ("--profile-csv", opts.profile_csv)) if value]
    return files


def _check_writable(flag: str, path: Path, folder: bool) -> None:
    """The path can be created or replaced by us: not the wrong kind, under a writable folder."""
    if path.exists() and path.is_dir() != folder:
        raise SinkError(f"{flag} {path} is {'a file' if folder else 'a folder'}; "
                        f"pass a {'folder' if folder else 'file'} path")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SinkError(f"cannot write {flag} {path}: {existing} is a file, not a folder; pick another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SinkError(f"cannot write {flag} {path}: {existing} is not writable; pick a writable path")


def check_output_paths(opts: Any, source_kind: str, source_location: str) -> None:
    """Refuse, in one line, any output that cannot be written or would overwrite the input, the model or another output."""
    source = _local_input(source_kind, source_location)
    model = Path(opts.model)
    paths = [(flag, Path(value), False) for flag, value in _output_files(opts)]
    if opts.save_anomalies:
        paths.append(("--save-anomalies", Path(opts.save_anomalies), True))
    seen: Dict[Path, str] = {}
    for flag, path, folder in paths:
        if source is not None and (same_or_inside(path, source) or (folder and same_or_inside(source, path))):
            raise SinkError(f"{flag} {path} is the input {source} or inside it; write outputs somewhere else")
        if model.exists() and same_or_inside(path, model):
            raise SinkError(f"{flag} {path} is inside the model folder {model}; write outputs somewhere else")
        _check_writable(flag, path, folder)
        key = path.resolve()
        if key in seen:
            raise SinkError(f"{flag} {path} is also {seen[key]}; give each output its own path")
        seen[key] = flag
