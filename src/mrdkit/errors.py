"""User-facing errors.

A :class:`MrdkitError` means the user gave something we cannot use (a missing file, a bad field, an unknown
name). The CLI prints its message on one line and exits with code 2; it never shows a traceback for these.
"""

from __future__ import annotations


class MrdkitError(ValueError):
    """An error caused by user input; the message names the file, field or value at fault."""


class NonFiniteLossError(MrdkitError):
    """Training produced a NaN or Inf loss; the run stops and keeps its last good checkpoint."""
