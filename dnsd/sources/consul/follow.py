"""Following one datacenter once it is synced: what each catalog-wide watch's
change means, which services to re-read, when to sweep, which to watch.

:class:`Follower` holds one session's state; each reaction is a method
(``on_services``, ``on_nodes``, ``on_checks``, ``on_service``, ``refresh``,
``sweep``, ``reconcile``) that tests drive one at a time. All I/O goes
through :class:`Reads` (the session's thread pools in production, a fake in
tests), and a changed view is announced with ``changed()`` (the source's
publisher coalesces). Runs on the event loop thread only. README.md explains
the strategy. Imports: ``model``, ``sources.consul.parse``, ``sources.consul.watch``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dnsd.model import Instance, Node
from dnsd.sources.consul.parse import (
    Checks,
    NodeList,
    Nodes,
    ServiceRead,
    Tags,
    diff_checks,
    diff_services,
)
from dnsd.sources.consul.watch import Apply, plan_watches

SWEEP_DELAY = 0.01  # seconds a sweep waits for the watches to report first


@dataclass
class DcState:
    """What one datacenter's watch knows; mutated on the loop thread only."""

    slot: str = ""  # "" for the agent's own datacenter, else the remote one asked for
    name: str = ""
    services_index: int = 0
    nodes_index: int = 0
    checks_index: int = 0
    tags: Tags = field(default_factory=dict)
    nodes: Nodes = field(default_factory=dict)
    node_values: tuple[Node, ...] = ()  # the nodes as /v1/catalog/nodes lists them
    checks: Checks = field(default_factory=dict)
    instances: dict[str, tuple[Instance, ...]] = field(default_factory=dict)
    service_nodes: dict[str, tuple[Node, ...]] = field(default_factory=dict)  # per service read
    indexes: dict[str, int] = field(default_factory=dict)  # per service, of the read kept
    changed_at: dict[str, int] = field(default_factory=dict)  # per service: sweep that saw it
    sweeps: int = 0
    synced: bool = False

    def store(self, name: str, index: int, group: tuple[Instance, ...],
              force: bool = False, nodes: tuple[Node, ...] = ()) -> bool:
        """Keep a read of one service (its instances and their nodes) unless a
        newer one is known; True if it changed."""
        if not force and index < self.indexes.get(name, 0):
            return False  # a slow read overtaken by a newer one
        self.indexes[name] = index
        before = self.instances.get(name, ())
        before_nodes = self.service_nodes.get(name, ())
        if group:
            self.instances[name] = group
        else:
            self.instances.pop(name, None)
        if nodes:
            self.service_nodes[name] = nodes
        else:
            self.service_nodes.pop(name, None)
        return before != group or before_nodes != nodes

    def published_nodes(self) -> list[Node]:
        """The nodes to publish: as the node listing has them, then any node
        only a service read has shown so far (registered with its first
        service, the listing's long-poll not back yet), so that its meta and
        tagged addresses answer from the start."""
        nodes = list(self.node_values)
        listed = {node.name for node in nodes}
        for name in sorted(self.service_nodes):
            for node in self.service_nodes[name]:
                if node.name not in listed:
                    listed.add(node.name)
                    nodes.append(node)
        return nodes

    def rank(self, name: str) -> tuple[int, int, str]:
        """Watch priority (lowest first): most recently swept-and-changed, then
        most instances, then by name."""
        return (-self.changed_at.get(name, 0), -len(self.instances.get(name, ())), name)

    def services_on(self, node_names: Iterable[str]) -> set[str]:
        wanted = set(node_names)
        return {name for name, group in self.instances.items()
                if any(inst.node in wanted for inst in group)}


class Reads(Protocol):
    """The reads a follower needs, for one datacenter."""

    async def fetch(self, names: Iterable[str]) -> Mapping[str, ServiceRead]:
        """Read each named service now (non-blocking), bounded by a pool."""

    async def fetch_each(self, names: Sequence[str],
                         found: Callable[[str, ServiceRead], None]) -> None:
        """Read each service in order, on the sweep pool, calling ``found`` as
        each reply lands rather than once all have."""

    async def watch_services(self, index: int, apply: Apply[Tags]) -> None:
        """Follow ``/v1/catalog/services`` until cancelled."""

    async def watch_nodes(self, index: int, apply: Apply[NodeList]) -> None:
        """Follow ``/v1/catalog/nodes`` until cancelled."""

    async def watch_checks(self, index: int, apply: Apply[Checks]) -> None:
        """Follow ``/v1/health/state/any`` until cancelled."""

    async def watch_service(self, name: str, index: int, apply: Apply[ServiceRead]) -> None:
        """Follow ``/v1/health/service/<name>`` until cancelled."""


class Follower:
    """Follows one synced datacenter until a read fails (then ``run`` raises)."""

    def __init__(self, state: DcState, reads: Reads, *, watch_limit: int,
                 changed: Callable[[], None], counters: dict[str, int]) -> None:
        self.state = state
        self.reads = reads
        self.watch_limit = max(0, watch_limit)
        self.changed = changed                    # the view changed: publish soon
        self.counters = counters                  # the source's, for metrics
        self.pending: set[str] = set()            # services the diffs named, to re-read
        self.wake = asyncio.Event()               # pending has names
        self.sweep_wanted = asyncio.Event()       # a catalog move no diff explained
        self.watched: dict[str, asyncio.Task[None]] = {}
        self.sweeping: list[asyncio.Task[None]] = []  # the sweep under way, if any
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # --- what the catalog-wide watches report ----------------------------------

    def on_services(self, index: int, tags: Tags, reset: bool) -> None:
        """``/v1/catalog/services`` moved: re-read services whose tag set
        changed, start or stop service watches, sweep when nothing explains it."""
        self._forget_indexes(reset)
        state = self.state
        changed = diff_services(state.tags, tags)
        appeared = tags.keys() - state.tags.keys()
        state.tags = tags
        if appeared:
            # A new service is the likeliest to gain instances next (a
            # deployment scaling up): swept first, and first to fill a slot.
            state.sweeps += 1
            for name in appeared:
                state.changed_at[name] = state.sweeps
        self.want((changed or set()) | self.reconcile())
        if changed is None:
            # No visible diff: an instance came, went or changed inside a
            # service whose tag set stayed the same. A watched service's own
            # long-poll sees it; the unwatched ones must be re-read.
            self.sweep_wanted.set()

    def on_nodes(self, index: int, listing: NodeList, reset: bool) -> None:
        """``/v1/catalog/nodes`` moved: re-read the services on nodes whose
        address changed (instances carry it); publish the nodes when any
        changed (their meta and tagged addresses live on the nodes alone)."""
        self._forget_indexes(reset)
        state = self.state
        nodes = listing.addresses
        moved = {n for n in state.nodes.keys() | nodes.keys()
                 if state.nodes.get(n) != nodes.get(n)}
        changed = moved or state.node_values != listing.nodes
        state.nodes, state.node_values = nodes, listing.nodes
        self.want(state.services_on(moved))
        if changed:
            self.changed()

    def on_checks(self, index: int, checks: Checks, reset: bool) -> None:
        """``/v1/health/state/any`` moved: re-read the services whose checks,
        or whose nodes' checks, changed."""
        self._forget_indexes(reset)
        state = self.state
        services, nodes = diff_checks(state.checks, checks)
        state.checks = checks
        self.want(services | state.services_on(nodes))

    def on_service(self, name: str, index: int, read: ServiceRead, reset: bool) -> None:
        """A watched service's own long-poll returned with a change."""
        if self.state.store(name, index, read.instances, force=reset, nodes=read.nodes):
            self.changed()

    def _forget_indexes(self, reset: bool) -> None:
        # The catalog went backwards (a snapshot restore): per-service indexes
        # known so far say nothing about the new history.
        if reset:
            self.state.indexes.clear()

    # --- re-reading -------------------------------------------------------------

    def want(self, names: Iterable[str]) -> None:
        """Re-read these services (unless their own watch follows them)."""
        self.pending.update(names)
        if self.pending:
            self.wake.set()

    async def refresh(self) -> None:
        """Re-read the services the diffs named (watched ones follow themselves)."""
        names = self.pending - self.watched.keys()
        self.pending.clear()
        if not names:
            return
        fetched = await self.reads.fetch(names)
        if any([self.state.store(n, read.index, read.instances, nodes=read.nodes)
                for n, read in fetched.items()]):
            self.changed()

    async def sweep(self) -> None:
        """Re-read every unwatched service, hottest first, publishing (and
        promoting) each change as its read lands."""
        state = self.state
        names = (set(state.tags) | set(state.instances)) - self.watched.keys()
        if not names:
            return
        self.counters["sweeps"] += 1
        state.sweeps += 1

        def found(name: str, read: ServiceRead) -> None:
            if state.store(name, read.index, read.instances, nodes=read.nodes):
                self.counters["swept_changes"] += 1
                state.changed_at[name] = state.sweeps
                # What changed unannounced is likely to again: watch it.
                self.want(self.reconcile(promote=[name]))
                self.changed()

        await self.reads.fetch_each(sorted(names, key=state.rank), found)

    # --- which services have a watch of their own --------------------------------

    def reconcile(self, promote: Iterable[str] = ()) -> set[str]:
        """Start and stop service watches; returns the stopped ones still known."""
        start, stop = plan_watches(self.watched, self.state.tags, self.watch_limit,
                                   self.state.rank, promote)
        for name in stop:
            self.watched.pop(name).cancel()
        for name in start:
            self.watched[name] = self._start(self._watch_service(name))
        # A stopped watch may have missed a change already made: read it once.
        return stop & set(self.state.tags)

    async def _watch_service(self, name: str) -> None:
        def apply(index: int, read: ServiceRead, reset: bool) -> None:
            self.on_service(name, index, read, reset)

        await self.reads.watch_service(name, self.state.indexes.get(name, 0), apply)

    # --- running ------------------------------------------------------------------

    def _start(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self.failed.done():
            self.failed.set_exception(task.exception())  # type: ignore[arg-type]

    async def _refresher(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self.refresh()

    async def _sweeper(self) -> None:
        """Sweep after each catalog move no diff explained. A new request
        restarts a sweep under way (its unread services are read by the new
        one, in the new order): a newly changed service never waits behind a
        whole sweep."""
        while True:
            await self.sweep_wanted.wait()
            # Let the watched services' own long-polls, which return with the
            # same write, publish first: the sweep's reads would delay them.
            await asyncio.sleep(SWEEP_DELAY)
            self.sweep_wanted.clear()
            for task in self.sweeping:
                task.cancel()
            await asyncio.gather(*self.sweeping, return_exceptions=True)
            self.sweeping[:] = [self._start(self.sweep())]

    async def run(self) -> None:
        """Follow until a read fails; raises that failure. Cancel to stop."""
        state, reads = self.state, self.reads
        self.reconcile()
        tasks = [
            self._start(reads.watch_services(state.services_index, self.on_services)),
            self._start(reads.watch_nodes(state.nodes_index, self.on_nodes)),
            self._start(reads.watch_checks(state.checks_index, self.on_checks)),
            self._start(self._refresher()),
            self._start(self._sweeper()),
        ]
        try:
            await self.failed
        finally:
            every = [*tasks, *self.watched.values(), *self.sweeping]
            for task in every:
                task.cancel()
            if self.failed.done() and not self.failed.cancelled():
                self.failed.exception()  # retrieved: a second failure is not worth a log line
            self.failed.cancel()
            await asyncio.gather(*every, return_exceptions=True)
