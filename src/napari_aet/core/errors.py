"""Errors and progress reporting shared by every stage.

Bad input raises :class:`AETInputError` with one line that names the problem and the fix;
the command line prints that line and exits non-zero. Long work takes an optional
``progress(done, total, message)`` callback and an optional ``cancel`` object with an
``is_set()`` method (a :class:`threading.Event` works); when it is set the work stops
between steps by raising :class:`Cancelled`.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

__all__ = ["AETInputError", "Cancelled", "ProgressCallback", "CancelFlag", "Reporter"]

ProgressCallback = Callable[[int, int, str], None]


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


class AETInputError(ValueError):
    """Bad user input: the message is one line naming the problem and the fix."""


class Cancelled(RuntimeError):
    """Raised between steps when the user cancelled the work."""


class Reporter:
    """Wraps an optional progress callback and cancel flag for a loop of ``total`` steps."""

    def __init__(
        self,
        total: int,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelFlag] = None,
    ):
        self.total = int(total)
        self.done = 0
        self._progress = progress
        self._cancel = cancel

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled("cancelled by the user")

    def step(self, message: str = "", n: int = 1) -> None:
        """Mark ``n`` steps done, report, then honour a pending cancel."""
        self.done = min(self.total, self.done + n)
        if self._progress is not None:
            self._progress(self.done, self.total, message)
        self.check()
