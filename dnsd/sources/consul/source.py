"""The Consul source: one session per datacenter (the agent's own and each
remote one asked for), each resynced in full and then followed, and all of
them published as one view.

Outage: any failed request (refused, timed out, 5xx such as "No cluster
leader", 403, unparsable reply) ends that datacenter's session; the source
reports ``STALE`` (the table keeps its last view), logs once, retries with
capped exponential backoff with jitter, and on success resyncs that
datacenter fully before reporting ``UP``. README.md has the whole design.
Imports: ``model``, ``sources`` (base, backoff, threads, publisher, consul.*).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from dnsd.model import Instance, Node, View
from dnsd.sources.backoff import Backoff
from dnsd.sources.base import Sink, SourceState
from dnsd.sources.consul import client as consul_client
from dnsd.sources.consul.client import Client, Endpoint, Query
from dnsd.sources.consul.follow import DcState, Follower
from dnsd.sources.consul.parse import Checks, ConsulUnavailable, NodeList, ServiceRead, Tags
from dnsd.sources.consul.watch import Apply, follow
from dnsd.sources.publisher import Publisher
from dnsd.sources.threads import ClientThreads

log = logging.getLogger("dnsd.consul")

T = TypeVar("T")

DEFAULT_WAIT = 300.0        # seconds a blocking query may hang (Consul's default)
FETCH_TIMEOUT = 10.0        # seconds for a non-blocking request
FETCH_CONCURRENCY = 8       # service reads in flight per datacenter (and as many for sweeps)
WATCH_LIMIT = 256           # services per datacenter followed by their own long-poll
SLOW_SYNC = 10.0            # seconds after which a sync still under way is worth a warning


@dataclass(frozen=True, slots=True)
class ConsulSettings:
    """Everything the Consul source runs with (built from the configuration
    by ``sources.registry``; tests shorten the waits)."""

    url: str
    token: str | None = None
    ca: str | None = None              # CA bundle for https; None: the system's
    datacenters: tuple[str, ...] = ()  # remote datacenters also watched
    agent_names_local: bool = True     # the agent's datacenter is the local one
    wait: float = DEFAULT_WAIT
    fetch_concurrency: int = FETCH_CONCURRENCY
    watch_limit: int = WATCH_LIMIT
    backoff_base: float = 0.25
    backoff_cap: float = 30.0
    max_reply_bytes: int = consul_client.MAX_REPLY_BYTES
    slow_sync: float = SLOW_SYNC


@dataclass
class Pools:
    """The thread pools of one datacenter session."""

    catalog: ClientThreads[Client]   # the three catalog-wide long-polls
    services: ClientThreads[Client]  # per-service long-polls, grown on demand
    fetch: ClientThreads[Client]     # resync and targeted reads
    sweep: ClientThreads[Client]     # re-reads of every unwatched service

    def close(self) -> None:
        for pool in (self.catalog, self.services, self.fetch, self.sweep):
            pool.close()


class ConsulSource:
    """Watches one Consul agent (and, through it, remote datacenters)."""

    def __init__(self, settings: ConsulSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.url = settings.url
        self.endpoint = Endpoint.from_url(settings.url, settings.token, settings.ca,
                                          settings.max_reply_bytes)
        self.wait = settings.wait
        self.fetch_concurrency = max(1, settings.fetch_concurrency)
        self.watch_limit = max(0, settings.watch_limit)
        self.rng = rng or random.Random()
        self._publisher: Publisher | None = None
        self._dcs: dict[str, DcState] = {}
        self._errors: dict[str, str] = {}
        self._agent_dc: str | None = None
        self._counters: dict[str, int] = {"requests": 0, "errors": 0, "resyncs": 0,
                                          "sweeps": 0, "swept_changes": 0}

    @property
    def name(self) -> str:
        return f"consul:{self.url}"

    @property
    def counters(self) -> dict[str, int]:
        """Event counts for ``dnsd_source_events`` (read at scrape time)."""
        publishes = 0 if self._publisher is None else self._publisher.publishes
        return {**self._counters, "publishes": publishes}

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "not running"
        return self._publisher

    # --- requests -----------------------------------------------------------------

    def _threads(self, size: int, timeout: float, label: str,
                 limit: int | None = None) -> ClientThreads[Client]:
        endpoint = self.endpoint
        return ClientThreads(lambda: consul_client.connect(endpoint, timeout),
                             f"consul-{label}", size, limit)

    async def call(self, threads: ClientThreads[Client], fn: Callable[[Client], T]) -> T:
        """Run one request (and the mapping of its reply) on a client thread."""
        self._counters["requests"] += 1
        try:
            return await threads.call(fn)
        except ConsulUnavailable:
            self._counters["errors"] += 1
            raise
        except consul_client.ERRORS as exc:
            self._counters["errors"] += 1
            raise ConsulUnavailable(consul_client.describe(exc)) from None

    # --- the run loop -----------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        self._publisher = Publisher(sink, self.name, self._view, log=log)
        slots = ["", *dict.fromkeys(self.settings.datacenters)]  # "": the agent's own
        for slot in slots:
            self._dcs[slot] = DcState(slot=slot, name=slot)
        try:
            await asyncio.gather(*(self._run_dc(slot) for slot in slots))
        finally:
            self._publisher.close()

    async def _run_dc(self, slot: str) -> None:
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap, self.rng)
        while True:
            try:
                await self._session(slot, backoff)
            except ConsulUnavailable as exc:
                self._failed(slot, str(exc))
                await asyncio.sleep(backoff.next())

    def _label(self, slot: str) -> str:
        return f"datacenter {slot}" if slot else "local datacenter"

    def _failed(self, slot: str, reason: str) -> None:
        if slot not in self._errors:
            log.warning("consul %s (%s): %s; serving the last table and retrying",
                        self.url, self._label(slot), reason)
        else:
            log.debug("consul %s (%s): still failing: %s", self.url, self._label(slot), reason)
        self._errors[slot] = reason
        self._report()

    def _report(self) -> None:
        if self._errors:
            reason = "; ".join(f"{self._label(s)}: {r}" for s, r in sorted(self._errors.items()))
            state = SourceState.STALE
        elif all(dc.synced for dc in self._dcs.values()):
            state, reason = SourceState.UP, ""
        else:
            return
        # Report (and so log) a change of state or of the failing datacenters,
        # not every retry's slightly different error.
        self.publisher.report(state, reason, key=frozenset(self._errors))

    async def _session(self, slot: str, backoff: Backoff) -> None:
        """Resync one datacenter fully, then follow it until a request fails."""
        # A long-poll may wait up to 1.5 wait (slot_wait), plus Consul's wait/16.
        poll_timeout = self.wait * 1.5 * 17 / 16 + FETCH_TIMEOUT
        pools = Pools(
            catalog=self._threads(3, poll_timeout, "watch"),
            services=self._threads(0, poll_timeout, "service", 2 * self.watch_limit),
            fetch=self._threads(self.fetch_concurrency, FETCH_TIMEOUT, "fetch"),
            sweep=self._threads(0, FETCH_TIMEOUT, "sweep", self.fetch_concurrency))
        loop = asyncio.get_running_loop()
        started = loop.time()
        # A read can take forever without failing (a Consul that trickles its
        # replies never trips the per-read timeout): say so while it lasts.
        slow = loop.call_later(self.settings.slow_sync, self._slow, slot)
        try:
            state, reads = await self._resync(slot, pools)
            slow.cancel()
            if loop.time() - started > self.settings.slow_sync:
                log.info("consul %s (%s): synced after %.1f s", self.url, self._label(slot),
                         loop.time() - started)
            recovered = slot in self._errors
            self._errors.pop(slot, None)
            backoff.reset()
            self.publisher.flush()
            if recovered:
                log.info("consul %s (%s): back; resynced %d services", self.url,
                         self._label(slot), len(state.instances))
            self._report()
            await Follower(state, reads, watch_limit=self.watch_limit,
                           changed=self.publisher.changed, counters=self._counters).run()
        finally:
            slow.cancel()
            pools.close()

    def _slow(self, slot: str) -> None:
        log.warning("consul %s (%s): sync not done after %.0f s (a slow or stalled Consul?); "
                    "still waiting", self.url, self._label(slot), self.settings.slow_sync)

    async def _resync(self, slot: str, pools: Pools) -> tuple[DcState, DcReads]:
        """Read one datacenter whole: its catalog-wide listings, then every service."""
        self._counters["resyncs"] += 1
        if not slot:
            self._agent_dc = await self.call(pools.fetch, consul_client.agent_datacenter)
        fresh = DcState(slot=slot, name=slot or (self._agent_dc or ""))
        reads = DcReads(self, fresh, pools)
        (fresh.services_index, fresh.tags), (fresh.nodes_index, nodes), \
            (fresh.checks_index, fresh.checks) = await asyncio.gather(
                reads.once(reads.services), reads.once(reads.nodes), reads.once(reads.checks))
        fresh.nodes, fresh.node_values = nodes.addresses, nodes.nodes
        self.warn_nodes(fresh.name, nodes)
        for name, read in (await reads.fetch(set(fresh.tags))).items():
            fresh.store(name, read.index, read.instances)
        fresh.synced = True
        # Swap in the new state only once it is complete: until then the last
        # view keeps serving (the resync may fail half way).
        self._dcs[slot] = fresh
        return fresh, reads

    # --- publishing ---------------------------------------------------------------

    def _view(self) -> View:
        instances: list[Instance] = []
        nodes: list[Node] = []
        for dc in self._dcs.values():
            if not dc.synced:
                continue
            for name in sorted(dc.instances):
                instances.extend(dc.instances[name])
            nodes.extend(dc.node_values)
        local = self._agent_dc if self.settings.agent_names_local else None
        return View(tuple(instances), tuple(nodes), local)

    def warn_nodes(self, dc: str, listing: NodeList) -> None:
        """Log each node dnsd cannot serve, once per problem."""
        for node_name, problem in listing.problems:
            self.publisher.warn_once((dc, f"node:{node_name}"),
                                     "consul %s: skipping node %r in %s: %s", self.url,
                                     node_name, dc, problem)

    def warn_skipped(self, dc: str, name: str, read: ServiceRead) -> None:
        """Log each entry of a service dnsd cannot serve, once per problem."""
        for problem in read.problems:
            self.publisher.warn_once(
                (dc, f"{name}:{problem}"),
                "consul %s: skipping an instance of %r in %s: %s", self.url, name, dc, problem)


class DcReads:
    """The reads of one datacenter session (the :class:`Reads` a follower
    uses): each runs on a client thread and hands the loop its reply already
    mapped to model values."""

    def __init__(self, source: ConsulSource, state: DcState, pools: Pools) -> None:
        self.source = source
        self.state = state
        self.pools = pools
        dc = state.slot or None  # None: the agent's own datacenter
        self.services = consul_client.catalog_services(dc)
        self.nodes = consul_client.catalog_nodes(dc, state.name)
        self.checks = consul_client.health_checks(dc)

    def _service(self, name: str) -> Query[ServiceRead]:
        return consul_client.health_service(name, self.state.slot or None, self.state.name)

    def _landed(self, name: str, read: ServiceRead | None) -> ServiceRead:
        if read is None:  # only an unchanged blocking read comes back unmapped
            raise ConsulUnavailable(f"health/service/{name}: a full read came back unmapped")
        self.source.warn_skipped(self.state.name, name, read)
        return read

    async def once(self, query: Query[T]) -> tuple[int, T]:
        """A full (non-blocking) read, on the fetch pool."""
        index, data = await self.source.call(self.pools.fetch, query.job())
        if data is None:
            raise ConsulUnavailable("a full read came back unmapped")
        return index, data

    async def fetch(self, names: Iterable[str]) -> dict[str, ServiceRead]:
        """Read ``/v1/health/service/<name>`` for each name, bounded by the pool size."""
        ordered = sorted(names)
        replies = await asyncio.gather(*(self.source.call(self.pools.fetch,
                                                          self._service(name).job())
                                         for name in ordered))
        return {name: self._landed(name, read)
                for name, (_, read) in zip(ordered, replies, strict=True)}

    async def fetch_each(self, names: Sequence[str],
                         found: Callable[[str, ServiceRead], None]) -> None:
        async def one(name: str) -> None:
            _, read = await self.source.call(self.pools.sweep, self._service(name).job())
            found(name, self._landed(name, read))

        await asyncio.gather(*(one(n) for n in names))

    async def _follow(self, threads: ClientThreads[Client], query: Query[T], index: int,
                      apply: Apply[T]) -> None:
        source = self.source

        async def read(i: int, wait: str) -> tuple[int, T | None]:
            return await source.call(threads, query.job(i, wait))

        await follow(read, index, apply, wait=source.wait,
                     phase=source.rng.uniform(0, source.wait),  # its slot in the cycle
                     observe=source.publisher.observe)

    async def watch_services(self, index: int, apply: Apply[Tags]) -> None:
        await self._follow(self.pools.catalog, self.services, index, apply)

    async def watch_nodes(self, index: int, apply: Apply[NodeList]) -> None:
        def landed(i: int, listing: NodeList, reset: bool) -> None:
            self.source.warn_nodes(self.state.name, listing)
            apply(i, listing, reset)

        await self._follow(self.pools.catalog, self.nodes, index, landed)

    async def watch_checks(self, index: int, apply: Apply[Checks]) -> None:
        await self._follow(self.pools.catalog, self.checks, index, apply)

    async def watch_service(self, name: str, index: int, apply: Apply[ServiceRead]) -> None:
        def landed(i: int, read: ServiceRead, reset: bool) -> None:
            apply(i, self._landed(name, read), reset)

        await self._follow(self.pools.services, self._service(name), index, landed)
