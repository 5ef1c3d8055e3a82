"""Cancellation of work on the model worker.

A :class:`CancelToken` is made per request by the server and set from the event loop
(``$/cancelRequest``, a newer request, an edit, a close); the worker checks it between
steps, and the engine before every model forward (:meth:`CancelToken.check` raises
:class:`Cancelled`). Bound to a forward counter, a token also says how many forwards ran
after its cancel arrived, for ``pie/stats``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Cancelled(Exception):
    """The request was cancelled or superseded."""


class CancelToken:
    """A flag that a worker checks between steps (and the engine before every forward)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"
        self._forwards: Callable[[], int] | None = None
        self._cancelled_at: int | None = None

    def bind(self, forwards: Callable[[], int]) -> None:
        """Count the work's forwards with ``forwards`` (see :meth:`forwards_since`)."""
        self._forwards = forwards
        if self._event.is_set() and self._cancelled_at is None:
            self._cancelled_at = forwards()

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the work to stop at its next check."""
        self.reason = reason
        if self._forwards is not None and self._cancelled_at is None:
            self._cancelled_at = self._forwards()
        self._event.set()

    def forwards_since(self) -> int:
        """Forwards the bound work ran after :meth:`cancel` (0 if not cancelled or bound)."""
        if self._forwards is None or self._cancelled_at is None:
            return 0
        return self._forwards() - self._cancelled_at

    @property
    def cancelled(self) -> bool:
        """Whether cancel() was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancelled."""
        if self._event.is_set():
            raise Cancelled(self.reason)
