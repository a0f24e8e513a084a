"""The Consul source: one session per datacenter (the agent's own and each
remote one asked for), each resynced in full and then followed, and all of
them published as one view, with each datacenter's prepared query
definitions (re-read every few seconds: Consul cannot block on them).

Reads are stale by default (Consul's ``allow_stale``): any server answers, so
a cluster that lost its leader still feeds dnsd, and each reply says how long
ago its server heard from a leader (kept per datacenter for metrics, and
warned about once past a bound). With ``consistent``, plain reads: the leader
answers, and a cluster without one is an outage.

Outage: any failed catalog request (refused, timed out, 5xx such as "No
cluster leader", 403, unparsable reply) ends that datacenter's session; the
source reports ``STALE`` (the table keeps its last view), logs once, retries
with capped exponential backoff with jitter, and on success resyncs that
datacenter fully before reporting ``UP``. A failed read of prepared query
definitions only keeps the last ones read (logged once): the catalog, which
answers every other name, stays current. README.md has the whole design.
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
from dnsd.sources.base import Gauge, Sink, SourceState
from dnsd.sources.consul import client as consul_client
from dnsd.sources.consul.client import Client, Contact, Endpoint, Query, Reply
from dnsd.sources.consul.follow import DcState, Follower
from dnsd.sources.consul.parse import (
    Checks,
    ConsulUnavailable,
    Definitions,
    NodeList,
    ServiceRead,
    Tags,
)
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
PREPARED_INTERVAL = 5.0     # seconds between reads of the prepared query definitions
CONTACT_WARNING = 30.0
"""Seconds without contact with a leader (``X-Consul-LastContact``) after which
a stale read is worth a warning. Consul's own ``max_stale`` for DNS is ten
years (any answer beats none), which says nothing about when to tell anyone.
With Consul's default raft timing (a 5 s heartbeat timeout under its default
``raft_multiplier`` of 5) an ordinary leader election leaves followers out of
contact for up to about 10 s; 30 s is well past that, so the warning means a
cluster that has lost its quorum, and still comes within half a minute."""


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
    consistent: bool = False           # plain reads; False: ?stale (Consul's allow_stale)
    prepared_interval: float = PREPARED_INTERVAL
    contact_warning: float = CONTACT_WARNING


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
        self._prepared: dict[str, Definitions] = {}  # per slot: the last definitions read
        self._contacts: dict[str, Contact] = {}      # per datacenter: the latest reply's
        self._out_of_contact: set[str] = set()       # datacenters warned about
        self._counters: dict[str, int] = {"requests": 0, "errors": 0, "resyncs": 0,
                                          "sweeps": 0, "swept_changes": 0,
                                          "prepared_reads": 0, "prepared_errors": 0}

    @property
    def name(self) -> str:
        return f"consul:{self.url}"

    @property
    def counters(self) -> dict[str, int]:
        """Event counts for ``dnsd_source_events`` (read at scrape time)."""
        publishes = 0 if self._publisher is None else self._publisher.publishes
        return {**self._counters, "publishes": publishes}

    @property
    def gauges(self) -> list[Gauge]:
        """Per datacenter, what the latest reply said of its leader (read at scrape time)."""
        found: list[Gauge] = []
        for dc, contact in sorted(self._contacts.items()):
            labels = {"datacenter": dc}
            found.append(Gauge("dnsd_consul_last_contact_seconds",
                               "Seconds since the Consul server that answered dnsd's latest "
                               "read had heard from its leader (X-Consul-LastContact; 0 from "
                               "the leader)", labels, contact.last_contact))
            found.append(Gauge("dnsd_consul_known_leader",
                               "1 when the Consul server that answered dnsd's latest read "
                               "knew a leader (X-Consul-KnownLeader)", labels,
                               1.0 if contact.known_leader else 0.0))
        return found

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

    def contacted(self, dc: str, contact: Contact) -> None:
        """A reply from datacenter ``dc`` landed (on the loop): keep what it
        says of its leader; warn once when it passes the bound, and say once
        when a leader is heard from again."""
        self._contacts[dc] = contact
        if contact.last_contact > self.settings.contact_warning:
            if dc not in self._out_of_contact:
                self._out_of_contact.add(dc)
                log.warning("consul %s (%s): the answering server last heard from a leader "
                            "%.0f s ago%s; serving what it knows, which may be that old",
                            self.url, dc, contact.last_contact,
                            "" if contact.known_leader else " and knows none now")
        elif dc in self._out_of_contact and contact.known_leader:
            self._out_of_contact.discard(dc)
            log.info("consul %s (%s): in contact with a leader again", self.url, dc)

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
        # No reply, no word on the leader: the gauges of the datacenter go
        # (its source state says it is stale) rather than show the last one.
        self._contacts.pop(self._dcs[slot].name, None)
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
            self._check_prepared(slot)
            poller = asyncio.create_task(self._poll_prepared(slot, reads))
            try:
                await Follower(state, reads, watch_limit=self.watch_limit,
                               changed=self.publisher.changed, counters=self._counters).run()
            finally:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)
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
        # The definitions are read beside the listings, so that the first view
        # already answers prepared query names; they never fail the resync.
        prepared = asyncio.create_task(self._read_prepared(slot, reads))
        try:
            (fresh.services_index, fresh.tags), (fresh.nodes_index, nodes), \
                (fresh.checks_index, fresh.checks) = await asyncio.gather(
                    reads.once(reads.services), reads.once(reads.nodes),
                    reads.once(reads.checks))
            await prepared
        finally:
            prepared.cancel()
        fresh.nodes, fresh.node_values = nodes.addresses, nodes.nodes
        self.warn_nodes(fresh.name, nodes)
        for name, read in (await reads.fetch(set(fresh.tags))).items():
            fresh.store(name, read.index, read.instances, nodes=read.nodes)
        fresh.synced = True
        # Swap in the new state only once it is complete: until then the last
        # view keeps serving (the resync may fail half way).
        self._dcs[slot] = fresh
        return fresh, reads

    # --- prepared query definitions -------------------------------------------------

    async def _read_prepared(self, slot: str, reads: DcReads) -> None:
        """Read one datacenter's prepared query definitions; a change is
        published. A failure keeps the last ones read, logged once until a read
        works again: it never fails the session, whose catalog may be fine."""
        self._counters["prepared_reads"] += 1
        key = ("prepared-unreadable", slot)
        try:
            _, found = await reads.once(reads.prepared)
        except ConsulUnavailable as exc:
            self._counters["prepared_errors"] += 1
            self.publisher.warn_once(
                key, "consul %s (%s): cannot read prepared queries: %s; keeping the last "
                "ones read and trying again every %.0f s", self.url, self._label(slot), exc,
                self.settings.prepared_interval)
            return
        if self.publisher.forget(key):
            log.info("consul %s (%s): prepared queries read again", self.url,
                     self._label(slot))
        known = self._prepared.get(slot)
        self._prepared[slot] = found
        if known is None or known.text != found.text:
            self.publisher.changed()

    async def _poll_prepared(self, slot: str, reads: DcReads) -> None:
        """Re-read the definitions while the session lasts, each read starting
        ``prepared_interval`` after the one before it (Consul has no blocking
        query for them; the session's resync made the first read)."""
        loop = asyncio.get_running_loop()
        interval = self.settings.prepared_interval
        due = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = loop.time() + interval
            await self._read_prepared(slot, reads)
            self._check_prepared(slot)

    def _check_prepared(self, slot: str) -> None:
        """Warn once about each plain prepared query whose service is in the
        catalog of neither its datacenter nor a failover one dnsd watches: its
        name answers NXDOMAIN, as in Consul, and this says why."""
        found = self._prepared.get(slot)
        state = self._dcs.get(slot)
        if found is None or not found.named or state is None or not state.synced:
            return
        catalogs = {dc.name: dc for dc in self._dcs.values() if dc.synced}
        services: dict[str, set[str]] = {}

        def known(dc: str, service: str) -> bool:
            if dc not in catalogs:
                return False
            if dc not in services:
                services[dc] = {name.lower() for name in catalogs[dc].tags}
            return service in services[dc]

        for named in found.named:
            key = ("prepared-service", state.name, named.label, named.service)
            places = [state.name, *named.failover]
            if any(known(dc, named.service.lower()) for dc in places):
                self.publisher.forget(key)
                continue
            self.publisher.warn_once(
                key, "consul %s: %s in %s: service %r is in no catalog dnsd watches (%s); "
                "the query answers NXDOMAIN until it is", self.url, named.label, state.name,
                named.service, ", ".join(dict.fromkeys(places)))

    # --- publishing ---------------------------------------------------------------

    def _view(self) -> View | None:
        """The view of every synced datacenter; None before any has synced (a
        view then would say the catalog is empty)."""
        instances: list[Instance] = []
        nodes: list[Node] = []
        prepared: dict[str, str] = {}
        synced = False
        for slot, dc in self._dcs.items():
            if not dc.synced:
                continue
            synced = True
            for name in sorted(dc.instances):
                instances.extend(dc.instances[name])
            nodes.extend(dc.published_nodes())
            found = self._prepared.get(slot)
            if found is not None and found.text:
                prepared[dc.name] = found.text
        if not synced:
            return None
        local = self._agent_dc if self.settings.agent_names_local else None
        return View(tuple(instances), tuple(nodes), local, prepared)

    def warn_nodes(self, dc: str, listing: NodeList) -> None:
        """Log each node dnsd cannot serve, or serves in part, once per problem."""
        for node_name, problem in listing.problems:
            self.publisher.warn_once((dc, f"node:{node_name}"),
                                     "consul %s: skipping node %r in %s: %s", self.url,
                                     node_name, dc, problem)
        for node_name, note in listing.ignored:
            self.publisher.warn_once((dc, f"node:{node_name}:{note}"),
                                     "consul %s: node %r in %s: %s", self.url,
                                     node_name, dc, note)

    def warn_skipped(self, dc: str, name: str, read: ServiceRead) -> None:
        """Log each entry of a service dnsd cannot serve, or serves in part,
        once per problem."""
        for problem in read.problems:
            self.publisher.warn_once(
                (dc, f"{name}:{problem}"),
                "consul %s: skipping an instance of %r in %s: %s", self.url, name, dc, problem)
        for note in read.ignored:
            self.publisher.warn_once(
                (dc, f"{name}:{note}"),
                "consul %s: an instance of %r in %s: %s", self.url, name, dc, note)


class DcReads:
    """The reads of one datacenter session (the :class:`Reads` a follower
    uses): each runs on a client thread and hands the loop its reply already
    mapped to model values."""

    def __init__(self, source: ConsulSource, state: DcState, pools: Pools) -> None:
        self.source = source
        self.state = state
        self.pools = pools
        dc = state.slot or None  # None: the agent's own datacenter
        self.stale = not source.settings.consistent
        self.services = consul_client.catalog_services(dc, self.stale)
        self.nodes = consul_client.catalog_nodes(dc, state.name, self.stale)
        self.checks = consul_client.health_checks(dc, self.stale)
        self.prepared = consul_client.prepared_queries(dc, self.stale)

    def _service(self, name: str) -> Query[ServiceRead]:
        return consul_client.health_service(name, self.state.slot or None, self.state.name,
                                            self.stale)

    async def _call(self, threads: ClientThreads[Client], job: consul_client.Job[Reply[T]]
                    ) -> tuple[int, T | None]:
        """Run one read; its reply's word on the leader is kept on the way."""
        index, data, contact = await self.source.call(threads, job)
        self.source.contacted(self.state.name, contact)
        return index, data

    def _landed(self, name: str, read: ServiceRead | None) -> ServiceRead:
        if read is None:  # only an unchanged blocking read comes back unmapped
            raise ConsulUnavailable(f"health/service/{name}: a full read came back unmapped")
        self.source.warn_skipped(self.state.name, name, read)
        return read

    async def once(self, query: Query[T]) -> tuple[int, T]:
        """A full (non-blocking) read, on the fetch pool."""
        index, data = await self._call(self.pools.fetch, query.job())
        if data is None:
            raise ConsulUnavailable("a full read came back unmapped")
        return index, data

    async def fetch(self, names: Iterable[str]) -> dict[str, ServiceRead]:
        """Read ``/v1/health/service/<name>`` for each name, bounded by the pool size."""
        ordered = sorted(names)
        replies = await asyncio.gather(*(self._call(self.pools.fetch,
                                                    self._service(name).job())
                                         for name in ordered))
        return {name: self._landed(name, read)
                for name, (_, read) in zip(ordered, replies, strict=True)}

    async def fetch_each(self, names: Sequence[str],
                         found: Callable[[str, ServiceRead], None]) -> None:
        async def one(name: str) -> None:
            _, read = await self._call(self.pools.sweep, self._service(name).job())
            found(name, self._landed(name, read))

        await asyncio.gather(*(one(n) for n in names))

    async def _follow(self, threads: ClientThreads[Client], query: Query[T], index: int,
                      apply: Apply[T]) -> None:
        source = self.source

        async def read(i: int, wait: str) -> tuple[int, T | None]:
            return await self._call(threads, query.job(i, wait))

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
