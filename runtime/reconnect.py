"""Reopening a live source that went away (camera unplugged, RTSP server restarted).

Exponential backoff from ``first_s`` doubling up to ``max_s``: a camera that is plugged
back in is found within a second, and one that stays away costs a retry every few seconds,
not a busy loop. The wait ends early when the run is stopped (SIGINT/SIGTERM).
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, Tuple, TypeVar

from destseg.runtime.errors import SourceError

T = TypeVar("T")


def backoff_delay(attempt: int, first_s: float = 0.5, max_s: float = 10.0) -> float:
    """Seconds to wait before reopening attempt ``attempt`` (0-based): first_s * 2**attempt, capped."""
    if attempt < 0 or first_s < 0 or max_s < 0:
        raise ValueError("backoff needs attempt >= 0 and non-negative delays")
    return min(max_s, first_s * 2.0 ** min(attempt, 60))


def reopen(
    open_source: Callable[[], T],
    stop: threading.Event,
    reason: str,
    log: Callable[[str], None],
    first_s: float = 0.5,
    max_s: float = 10.0,
    attempt: int = 0,
) -> Tuple[Optional[T], int]:
    """Call ``open_source`` with backoff until it succeeds or ``stop`` is set.

    ``attempt`` counts the failures since the last good frame (a camera that opens and fails
    at once keeps backing off); returns (source or None when stopped, the new count).
    """
    while True:
        delay = backoff_delay(attempt, first_s, max_s)
        log(f"source lost ({reason}); reopening in {delay:.1f} s (attempt {attempt + 1})")
        if stop.wait(delay):
            return None, attempt
        try:
            return open_source(), attempt + 1
        except SourceError as exc:
            reason = str(exc)
            attempt += 1
