"""Signals that arrive before the event loop takes them over.

The process can be sent SIGTERM, SIGINT or SIGHUP at any moment after exec: an
init system stopping a service that is still starting, a supervisor replacing a
worker. With the default actions those kill the process (SIGHUP too) without a
word, in the middle of whatever it was doing. :class:`PendingSignals` records
them from the first moment instead; once the app serves, it hands them over
(a stop is then a graceful shutdown, a SIGHUP a reload).
Imports: the standard library only.
"""

from __future__ import annotations

import signal
from types import FrameType

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP = (signal.SIGTERM, signal.SIGINT)


class PendingSignals:
    """Records SIGTERM, SIGINT and SIGHUP until :meth:`take` hands them over."""

    def __init__(self) -> None:
        self._received: list[int] = []

    def install(self) -> PendingSignals:
        """Record the handled signals from now on (main thread only)."""
        for sig in HANDLED:
            signal.signal(sig, self._record)
        return self

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self._received.append(signum)

    def take(self) -> list[int]:
        """The signals received so far, oldest first; forgets them."""
        received, self._received = self._received, []
        return received
