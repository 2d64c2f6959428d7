"""Atomic writes: a reader never sees a half-written file or folder.

Everything the stages hand each other (checkpoints, configs, bundles, reports) goes
through here: write to a temporary sibling, then ``os.replace`` it into place. A folder
replaced as a whole must first pass :func:`check_replaceable` (never a user's folder), and
a log that grows while it is read is a :class:`LineLog` (whole lines appended, one writer).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _plain_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the result the mode a plain open/mkdir would.

    A runtime service running as another user must be able to read a bundle.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _plain_mode(tmp_path, directory=False)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, keep: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and swap it in at the end.

    With ``keep`` the existing folder's files are copied in first, so a step that adds
    to a folder (an INT8 model to a bundle) never leaves it half updated either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        if keep and path.is_dir():
            shutil.rmtree(tmp)
            shutil.copytree(path, tmp)
        yield tmp
        _plain_mode(tmp, directory=True)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:  # Ctrl-C between the two renames: put the previous folder back
            if old is not None and not path.exists():
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class NotOursError(ValueError):
    """A folder the tool would replace holds something it did not write."""


def check_replaceable(path: str | os.PathLike, marker: str, what: str, flag: str) -> None:
    """Refuse to replace ``path`` unless it is missing, an empty folder, or one of ours (holds ``marker``).

    Every tool that swaps a whole folder in (bundles, datasets) calls this first: a typo in
    ``--out`` must never delete a user's files.
    """
    path = Path(path)
    if path.is_symlink():
        raise NotOursError(f"{flag} {path} is a link; pass the folder it points to, or a new folder, for the {what}")
    if not path.exists():
        return
    if not path.is_dir():
        raise NotOursError(f"{flag} {path} exists and is not a folder; pick a new folder for the {what}")
    if (path / marker).is_file() or not any(path.iterdir()):
        return
    raise NotOursError(f"{flag} {path} holds files that are not a {what} (no {marker}); "
                       f"pick a new or empty folder, it is replaced as a whole")


def same_or_inside(path: str | os.PathLike, other: str | os.PathLike) -> bool:
    """Whether ``path`` is ``other`` or lies inside it, links resolved (the file system's answer, not the spelling)."""
    a, b = Path(path).resolve(), Path(other).resolve()
    return a == b or b in a.parents


class LockedError(ValueError):
    """Another process holds the file's advisory lock."""


class LineLog:
    """A file that lines are appended to, each with one ``write`` (O_APPEND), by one writer at a time.

    A live log is read while it grows, so it is never renamed into place: instead every line
    lands whole at the end (a reader or a crash never sees half a line from us), nothing
    earlier is ever truncated, and an advisory lock refuses a second writer instead of
    interleaving two processes' lines.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import fcntl

        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise LockedError(f"{self.path} is being written by another process; "
                              "give each writer its own file") from None

    def write_line(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode()
        written = os.write(self._fd, data)
        if written != len(data):  # only a full disk does this to a regular file
            raise OSError(f"{self.path}: wrote {written} of {len(data)} bytes (disk full?)")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing releases the lock
            self._fd = -1
