"""The one Sink the source tests report to: it keeps everything a source said.

Every call must come on the event loop's thread (the main thread in tests),
which is the Sink contract: a source whose library calls back on other threads
must hop to the loop first, and this sink fails the test if it did not.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from dnsd.model import Instance, View
from dnsd.sources.base import SourceState


class Report(NamedTuple):
    """One ``set_state`` call: when (``time.monotonic()``), what, and why."""

    at: float
    state: SourceState
    reason: str


@dataclass
class RecordingSink:
    """A real Sink that records every publish and state report, in order."""

    views: list[tuple[float, View]] = field(default_factory=list)
    states: list[Report] = field(default_factory=list)
    observed: list[float | None] = field(default_factory=list)  # each publish's observed_at
    sources: set[str] = field(default_factory=set)  # the names that reported

    def publish(self, source: str, view: View, observed_at: float | None = None) -> None:
        assert threading.current_thread() is threading.main_thread(), "publish off the loop"
        self.sources.add(source)
        self.views.append((time.monotonic(), view))
        self.observed.append(observed_at)

    def set_state(self, source: str, state: SourceState, reason: str = "") -> None:
        assert threading.current_thread() is threading.main_thread(), "state off the loop"
        self.sources.add(source)
        self.states.append(Report(time.monotonic(), state, reason))

    @property
    def view(self) -> View | None:
        """The last view published, None before the first."""
        return self.views[-1][1] if self.views else None

    @property
    def state(self) -> SourceState:
        return self.states[-1].state if self.states else SourceState.SYNCING

    @property
    def reason(self) -> str:
        return self.states[-1].reason if self.states else ""

    def instances(self, service: str | None = None, dc: str | None = None) -> list[Instance]:
        """The last view's instances, of one service and datacenter when given."""
        view = self.view
        if view is None:
            return []
        return [i for i in view.instances
                if (service is None or i.service == service)
                and (dc is None or i.datacenter == dc)]

    def endpoints(self, service: str) -> set[tuple[str, int]]:
        return {(i.address, i.port) for i in self.instances(service)}
