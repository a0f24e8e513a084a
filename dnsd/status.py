"""Where sources report: the :class:`~dnsd.sources.base.Sink` that feeds the
table, and what each source's reports say about readiness.

``publish`` hands a source's whole view to the table (and measures how long the
change took to become answerable); ``set_state`` records whether the source is
syncing, up or stale, and why. ``ready`` is true once every source has served a
view, live or restored from ``--state-dir``: before that, answers could be
missing names a registry holds. Imports: ``model``, ``sources.base``, ``stats``,
``table``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from dnsd.model import View
from dnsd.sources.base import SourceState
from dnsd.stats import QueryStats
from dnsd.table import Snapshot, Table

log = logging.getLogger("dnsd")


@dataclass
class SourceStatus:
    state: SourceState = SourceState.SYNCING
    reason: str = ""
    has_data: bool = False  # a view (live or restored from --state-dir) is being served


class StatusBoard:
    """The Sink of every source: feeds ``table``, keeps each source's status.

    Call on the event loop thread only (sources hop there first)."""

    def __init__(self, table: Table, stats: QueryStats) -> None:
        self.table = table
        self.stats = stats
        self.statuses: dict[str, SourceStatus] = {}
        table.subscribe(self._swapped)

    def add(self, name: str) -> None:
        """Expect views from source ``name``: not ready until it serves one."""
        self.statuses.setdefault(name, SourceStatus())

    def remove(self, name: str) -> None:
        """Forget source ``name`` and take its view out of the table."""
        self.statuses.pop(name, None)
        self.table.remove(name)

    def restored(self, views: Mapping[str, View]) -> None:
        """Serve views saved by an earlier run until their sources sync."""
        for name in views:
            self.statuses.setdefault(name, SourceStatus()).has_data = True
        self.table.publish_many(views)

    # --- the Sink ---------------------------------------------------------------

    def publish(self, source: str, view: View, observed_at: float | None = None) -> None:
        status = self.statuses.setdefault(source, SourceStatus())
        status.has_data = True
        self.table.publish(source, view)
        if observed_at is not None:
            lag = asyncio.get_running_loop().time() - observed_at
            self.stats.observe_propagation(max(0.0, lag))

    def set_state(self, source: str, state: SourceState, reason: str = "") -> None:
        status = self.statuses.setdefault(source, SourceStatus())
        if status.state is state and status.reason == reason:
            return
        status.state, status.reason = state, reason
        # Each source logs its own state changes, with the detail it knows;
        # a second line here would say the same thing twice.
        log.debug("source %s is %s%s", source, state.value, f": {reason}" if reason else "")

    # --- what the reports add up to ------------------------------------------------

    @property
    def ready(self) -> tuple[bool, str]:
        """Ready once every source has served a view (live or restored)."""
        waiting = [name for name, s in self.statuses.items() if not s.has_data]
        if waiting:
            return False, "waiting for " + ", ".join(sorted(waiting))
        return True, "ok"

    @staticmethod
    def _swapped(snapshot: Snapshot) -> None:
        log.info("table version %d: %d services, %d instances, %d nodes",
                 snapshot.version, len(snapshot.services), snapshot.instance_count,
                 len(snapshot.nodes))
