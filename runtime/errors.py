"""The runtime's user-facing errors: each is one line that says what to do.

They subclass ValueError (the house convention), so ``destseg-runtime`` prints them and
exits 2 before any camera is opened, or exits 1 when the stream fails later.
"""
from __future__ import annotations


class RuntimeInputError(ValueError):
    """Any runtime error caused by the command line, the bundle or the machine."""


class SourceError(RuntimeInputError):
    """A source URI that is malformed, missing, or cannot be opened here."""


class SinkError(RuntimeInputError):
    """An output that cannot be written here (unknown suffix, no encoder, no display)."""


class BackendError(RuntimeInputError):
    """A model that cannot be loaded or does not match the pipeline."""


class StreamError(RuntimeError):
    """The stream failed after it started; outputs and the profile were still finalised."""
