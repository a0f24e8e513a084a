"""Following one engine in one session: the running containers as known, which
to inspect again, and when the session has failed.

:class:`Follower` holds a session's state and reacts one step at a time (a
method per step: ``sync``, ``on_event``, ``refresh``, ``landed``, ``recheck``,
``fail``), so the unit tests drive it with a fake engine. All of it runs on
the event loop thread; the engine's requests run on client threads and come
back as futures.

How an event is handled: an event that concerns a container (its id in
``Actor.ID``, or ``Actor.Attributes.container`` for a network's connect or
disconnect) asks for that container to be inspected again. Requests coalesce:
while an inspect of a container is in flight, later events only mark it
outdated, and an outdated reply is dropped and the container inspected once
more, so what is applied is always data read after the last event. A ``die``
or ``destroy`` takes the container's instances out at once, without waiting
for the inspect (the container no longer serves; the inspect that follows
still settles where it ends up, say restarted).

Imports: ``sources.docker.engine``, ``sources.docker.naming``.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dnsd.sources.docker.engine import (
    CONTAINER_ACTIONS,
    NETWORK_ACTIONS,
    ContainerUnreadable,
    Engine,
    EngineUnavailable,
    Inspected,
)
from dnsd.sources.docker.naming import ContainerInstances, Problem

RECHECK_BATCH = 8
"""Containers re-read per recheck interval, at most (they are a safety net)."""
GONE_ACTIONS = frozenset({"die", "destroy"})
"""Actions after which a container serves nothing, whatever an inspect says later."""


def event_target(event: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(container id, action, type) of an engine event the source acts on, else None.

    ``health_status: healthy`` is the action ``health_status``. Never raises:
    an event of an unexpected shape is none the source acts on."""
    if not isinstance(event, Mapping):
        return None
    kind = event.get("Type")
    action = event.get("Action")
    actor = event.get("Actor")
    if not isinstance(action, str) or not isinstance(actor, Mapping):
        return None
    action = action.partition(":")[0].strip()
    if kind == "container" and action in CONTAINER_ACTIONS:
        container_id = actor.get("ID")
    elif kind == "network" and action in NETWORK_ACTIONS:
        attributes = actor.get("Attributes")
        container_id = attributes.get("container") if isinstance(attributes, Mapping) else None
    else:
        return None
    if not isinstance(container_id, str) or not container_id:
        return None
    return container_id, action, kind


class Follower:
    """One session's knowledge of the engine's running containers.

    ``changed`` is called whenever what the containers serve changed, with
    the loop time the engine's event that led to it arrived (None for what no
    event asked for: the listing, a recheck);
    ``report`` with every container's named result as it lands (for its
    warnings). ``counters`` is the source's, counted into.
    """

    def __init__(self, engine: Engine, *, changed: Callable[[float | None], None],
                 report: Callable[[ContainerInstances], None],
                 counters: dict[str, int], recheck_interval: float = 1.0,
                 recheck_batch: int = RECHECK_BATCH) -> None:
        self._engine = engine
        self._changed = changed
        self._report = report
        self._counters = counters
        self._recheck_interval = recheck_interval
        self._recheck_batch = max(1, recheck_batch)
        self._loop = asyncio.get_running_loop()
        self.containers: dict[str, ContainerInstances] = {}  # running ones, by id
        # ids whose health may change without an event -> when last read (loop time)
        self._rechecks: dict[str, float] = {}
        self._wanted: dict[str, int] = {}    # id -> generation of the latest request
        self._sent: dict[str, int] = {}      # id -> generation of the inspect in flight
        self._since: dict[str, float] = {}   # id -> when the first event not yet applied came
        self._idle: asyncio.Future[None] | None = None
        self._recheck_timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[str] = self._loop.create_future()
        self.synced = False
        self._closed = False

    # --- the session's life ---------------------------------------------------------

    async def sync(self, container_ids: Iterable[str]) -> None:
        """Inspect every listed container (and any an event names meanwhile)
        and return once none is in flight; EngineUnavailable if the session
        fails first. Subscribe before listing, so nothing falls in between."""
        for container_id in container_ids:
            self.refresh(container_id)
        if self._sent:
            idle = self._idle = self._loop.create_future()
            waited: list[asyncio.Future[Any]] = [idle, self.lost]
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        if self.lost.done():
            raise EngineUnavailable(self.lost.result())
        self.synced = True

    def fail(self, reason: str) -> None:
        """The session cannot go on (the stream ended, a request failed)."""
        if not self.lost.done():
            self.lost.set_result(reason)

    def close(self) -> None:
        self._closed = True
        if self._recheck_timer is not None:
            self._recheck_timer.cancel()
            self._recheck_timer = None
        if not self.lost.done():
            self.lost.set_result("closed")

    # --- events ----------------------------------------------------------------------

    def on_event(self, event: Mapping[str, Any]) -> None:
        """One engine event, in stream order."""
        if self._closed:
            return
        self._counters["events"] += 1
        target = event_target(event)
        if target is None:
            return
        container_id, action, kind = target
        if kind == "network" and container_id not in self.containers \
                and container_id not in self._wanted:
            # A container being created joins its networks before it starts;
            # its start event reads it then. Only running ones move networks.
            return
        now = self._loop.time()
        if action in GONE_ACTIONS:
            self._drop(container_id, now)
        self._since.setdefault(container_id, now)
        self.refresh(container_id)

    def refresh(self, container_id: str) -> None:
        """Inspect ``container_id`` again; coalesced with one in flight."""
        if self._closed:
            return
        self._wanted[container_id] = self._wanted.get(container_id, 0) + 1
        if container_id not in self._sent:
            self._send(container_id)

    def _send(self, container_id: str) -> None:
        generation = self._sent[container_id] = self._wanted[container_id]
        self._counters["inspects"] += 1
        future = self._engine.inspect(container_id)
        future.add_done_callback(lambda done: self.landed(container_id, generation, done))

    def landed(self, container_id: str, generation: int,
               done: asyncio.Future[Inspected]) -> None:
        """An inspect came back: apply it, or ask again if an event came since."""
        # Retrieved even when closed: asyncio would log every failure of a
        # lost session's reads as never retrieved.
        error = done.exception() if not done.cancelled() else EngineUnavailable("cancelled")
        if self._closed:
            return
        del self._sent[container_id]
        if isinstance(error, EngineUnavailable):
            self.fail(str(error))
            return
        if self._wanted.get(container_id) != generation:
            self._send(container_id)  # outdated: the container changed since it was read
            return
        del self._wanted[container_id]
        since = self._since.pop(container_id, None)
        if isinstance(error, ContainerUnreadable):
            # Keep what it had; the recheck reads it again later.
            self._counters["unreadable"] += 1
            self._rechecks[container_id] = self._loop.time()
            name = container_id[:12]
            known = self.containers.get(container_id)
            if known is not None:
                name = known.container
            self._report(ContainerInstances(container_id, name, problems=(
                Problem(name, "inspect", f"cannot be read ({error}); keeping what it had"),)))
        elif error is not None:
            self.fail(f"inspecting {container_id[:12]}: {error!r}")
            return
        else:
            self._apply(container_id, done.result(), since)
        self._schedule_recheck()
        if not self._sent and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _apply(self, container_id: str, inspected: Inspected, since: float | None) -> None:
        before = self.containers.get(container_id)
        result = inspected.result
        if result is None or not inspected.running:
            self.containers.pop(container_id, None)
            self._rechecks.pop(container_id, None)
        else:
            self.containers[container_id] = result
            if inspected.recheck:
                self._rechecks[container_id] = self._loop.time()
            else:
                self._rechecks.pop(container_id, None)
        if result is not None:
            self._report(result)
        had = before.instances if before is not None else ()
        now = result.instances if result is not None and inspected.running else ()
        if had != now:
            self._changed(since)

    def _drop(self, container_id: str, at: float) -> None:
        before = self.containers.pop(container_id, None)
        self._rechecks.pop(container_id, None)
        if before is not None and before.instances:
            self._changed(at)

    # --- rechecks ----------------------------------------------------------------------

    def _schedule_recheck(self) -> None:
        if self._rechecks and self._recheck_timer is None and not self._closed:
            self._recheck_timer = self._loop.call_later(self._recheck_interval, self.recheck)

    def recheck(self) -> None:
        """Inspect again the containers whose state may change with no event
        (Docker sends none when pausing turns a container unhealthy): those
        read longest ago, a batch at a time, so that a host full of paused
        containers does not queue its events' reads behind them."""
        self._recheck_timer = None
        if self._closed:
            return
        idle = ((read_at, container_id) for container_id, read_at in self._rechecks.items()
                if container_id not in self._sent)
        for _, container_id in heapq.nsmallest(self._recheck_batch, idle):
            self._counters["rechecks"] += 1
            self.refresh(container_id)
        self._schedule_recheck()
