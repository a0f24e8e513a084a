"""The narrow interface between a registry watcher and the rest of dnsd.

A :class:`Source` runs until cancelled and reports through a :class:`Sink`:
``publish`` with its complete current view (never a delta), and ``set_state``
when its connection changes state. Both must be called on the event loop
thread; a source whose library calls back on other threads (kazoo) hops to the
loop with ``loop.call_soon_threadsafe`` first. Imports: ``model`` only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple, Protocol

from dnsd.model import View


class SourceState(enum.Enum):
    """Where a source stands, as readiness and metrics report it."""

    SYNCING = "syncing"  # started, no complete view published yet
    UP = "up"            # connected; its last view is current
    STALE = "stale"      # registry unreachable; its last view is still served


class Gauge(NamedTuple):
    """One value a source offers ``/metrics`` beside its event counters (a
    source may have a ``gauges`` property listing them, read at scrape time);
    the metrics endpoint adds the ``source`` label."""

    name: str                   # e.g. dnsd_consul_last_contact_seconds
    help: str
    labels: Mapping[str, str]   # the same label names for every gauge of one name
    value: float


class Sink(Protocol):
    """Where sources report. Implemented by the app, which feeds the table."""

    def publish(self, source: str, view: View, observed_at: float | None = None) -> None:
        """Replace ``source``'s whole view. Call on the event loop thread.

        ``observed_at`` is the loop time (``loop.time()``) at which the source
        first learned of the change this view carries, when it knows: the sink
        measures from it how long a registry change takes to be answered."""

    def set_state(self, source: str, state: SourceState, reason: str = "") -> None:
        """Record a state change; the sink logs it once. Call on the loop thread."""


class Source(Protocol):
    """A registry watcher."""

    @property
    def name(self) -> str:
        """Unique, stable name, e.g. ``consul:http://127.0.0.1:8500``; keys saved state."""

    async def run(self, sink: Sink) -> None:
        """Watch the registry and publish views until cancelled.

        Must not raise on registry errors: it reports ``STALE``, keeps the last
        view in place (by publishing nothing) and retries with backoff.
        """
