"""The Consul source: watches a Consul catalog with blocking queries and
publishes every service instance (and node) it sees as one whole view.

How the watch scales. Consul's HTTP API has no "what changed since index N"
across services, so there are two classic shapes: one long-poll per service
(consul-template, Prometheus; N open connections and N/wait idle requests) or a
few catalog-wide long-polls, which cannot say which service gained or lost an
instance. dnsd combines them, per datacenter:

- three catalog-wide long-polls, whatever the service count:
  ``/v1/catalog/services`` (names and tag sets), ``/v1/catalog/nodes`` (node
  addresses), ``/v1/health/state/any`` (every check, with its node and service);
- one long-poll on ``/v1/health/service/<name>`` for each of at most
  ``watch_limit`` services (256 by default). Consul moves that endpoint's index
  on anything touching the service (its instances, their checks, their nodes),
  so a watched service is followed exactly, whatever the change;
- the other services (beyond the bound) are followed through the catalog-wide
  diffs: added, removed or re-tagged services, services whose checks changed,
  services on a node whose address or node-level check changed are re-read with
  ``/v1/health/service/<name>``, ``fetch_concurrency`` (8) at a time. A catalog
  index move that no diff explains (an instance added to or removed from a
  service whose tag set stays the same, a port change) is in a watched service
  (its own watch sees it) or in an unwatched one: the unwatched services are
  then re-read (a "sweep", on its own pool of 8, so targeted reads never queue
  behind it). A sweep starts 10 ms late, so the watches returning with the same
  write publish first; it reads the likeliest services first (those last seen
  changing, new ones), publishes each change as its read lands, and a new
  sweep request restarts it rather than queueing behind it.

Which services are watched: at first those with the most instances (then by
name); new services fill free slots; a service a sweep finds changed is
promoted, displacing the watched service that changed least recently (its
watch is stopped and it is re-read once, so no change falls between the two).
Churning services thus end up watched, and a sweep is paid once per newly
churning service. With 256 or
fewer services everything is watched and no sweep ever happens: every change
is seen by the one long-poll of the service it touches.

Request rate. Every long-poll expires on its own slot of a ``wait``-long cycle
(a random phase per watch; the first wait runs to the next slot, each later
one to the next slot at least wait/2 away, plus Consul's own jitter of up to
wait/16). Expiries therefore stay spread evenly however they were bunched
(after a resync, or a node change that woke 200 watches at once): idle, each
watch makes exactly one request per ``wait``. With ``wait`` = 5 minutes (Consul's default) that is
(3 + min(N, 256)) / 300 s per datacenter: about 21 requests a minute for 100
services, 52 for 256, and 52 for 1,000 or 10,000 services. A change costs one
read of each service it touches; an unexplained catalog move costs N - 256
reads when N > 256 (about N/8 round trips, in the background) and nothing
otherwise. The trade-off of the bound: each watch is one open connection (and
here one thread; Consul's servers hold a goroutine per blocking query), so 256
keeps the idle rate under one request a second and the thread count modest,
while services past it pay sweeps. Threads for the service watches are started
on demand, up to twice the bound (a stopped watch's thread stays in its
long-poll until it returns).

Index rules follow Consul's documentation on blocking queries: a return is no
promise of change (an unchanged index is ignored), an index that goes backwards
resets to 0 (the next read is a full one), an index below 1 is treated as 1,
and a watcher whose queries keep returning at once without progress slows down.
A read of a service older (by its index) than what is already known is dropped,
so a slow read never undoes a newer one.

Outage: any failed request (refused, timed out, 5xx such as "No cluster leader",
403, unparsable reply) ends that datacenter's session; the source reports
``STALE`` (the table keeps its last view), logs once, retries with capped
exponential backoff with jitter, and on success resyncs that datacenter fully
before reporting ``UP``. Health: every instance is published with the worst of
its checks (node and service); the answer side drops critical ones and, with
``--only-passing``, warning ones. Publishes triggered in the same loop
iteration (many watches returning together) coalesce into one.

python-consul2's synchronous client runs in daemon threads, one client (and so
one ``requests`` session, which is not meant to be shared across threads) per
thread; its asyncio client opens a new HTTP session for every request, so it is
not used. python-consul2 is imported here only. Imports: ``model``, ``sources``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import consul
import requests

from dnsd.model import Health, Instance, Node, View
from dnsd.sources.backoff import Backoff
from dnsd.sources.base import Sink, SourceState
from dnsd.sources.threads import ClientThreads

log = logging.getLogger("dnsd.consul")

T = TypeVar("T")

DEFAULT_WAIT = 300.0        # seconds a blocking query may hang (Consul's default)
FETCH_TIMEOUT = 10.0        # seconds for a non-blocking request
FETCH_CONCURRENCY = 8       # service reads in flight per datacenter (and as many for sweeps)
SWEEP_DELAY = 0.01          # seconds a sweep waits for the watches to report first
WATCH_LIMIT = 256           # services per datacenter followed by their own long-poll
QUICK_RETURN = 1.0          # a blocking query back faster than this made no progress...
QUICK_RETURN_PAUSE = 0.5    # ...so the next one waits this long first


class ConsulUnavailable(Exception):
    """Consul could not be read; the message says why, in one line."""


def parse_index(raw: object) -> int:
    """An ``X-Consul-Index`` header as an int; below 1 counts as 1 (Consul's advice)."""
    if raw is None:
        raise ConsulUnavailable("reply has no X-Consul-Index")
    try:
        value = int(str(raw))
    except ValueError:
        raise ConsulUnavailable(f"bad X-Consul-Index {raw!r}") from None
    return max(value, 1)


def next_index(previous: int, returned: int) -> tuple[int, bool]:
    """(index for the next blocking query, whether the data may have changed).

    Unchanged: no change. Backwards: reset to 0 so the next read is a full,
    non-blocking one, and treat the data as changed (a snapshot restore).
    """
    if returned == previous:
        return previous, False
    if returned < previous:
        return 0, True
    return returned, True


def slot_wait(now: float, phase: float, wait: float, first: bool = False) -> float:
    """Seconds a blocking query should wait to expire on this watch's next slot.

    Slots are ``phase + k * wait``; the next one at least ``wait / 2`` away is
    taken, so the result is in [wait/2, 3*wait/2) (a ``first`` query takes the
    very next slot, so a new set of watches expires evenly from the start). A
    watch that returns early (a change) or late (Consul's jitter) falls back
    onto its own slot, so the expiries of many watches stay as spread as their
    random phases.
    """
    if wait <= 0:
        return 0.0
    slots = math.ceil((now + (0.0 if first else wait / 2) - phase) / wait)
    return max(phase + slots * wait - now, 0.0)


Rank = Callable[[str], tuple[Any, ...]]


def plan_watches(watched: Iterable[str], known: Iterable[str], limit: int, rank: Rank,
                 promote: Iterable[str] = ()) -> tuple[set[str], set[str]]:
    """(services to start watching, services to stop watching).

    Watches of services no longer ``known`` stop. Each ``promote`` name (hottest
    first by ``rank``, lowest sorts first) takes a free slot or displaces the
    coldest watched service when that one ranks below it. Free slots left are
    filled with the best-ranked unwatched services. At most ``limit`` watched.
    """
    known = set(known)
    keep = set(watched) & known
    stop = set(watched) - known
    start: set[str] = set()
    limit = max(0, limit)
    for name in sorted(keep, key=rank)[limit:]:  # over the limit: the coldest go
        keep.discard(name)
        stop.add(name)
    for name in sorted((set(promote) & known) - keep, key=rank):
        if len(keep) + len(start) >= limit:
            coldest = max(keep, key=rank, default=None)
            if coldest is None or rank(coldest) <= rank(name):
                break
            keep.discard(coldest)
            stop.add(coldest)
        start.add(name)
    free = limit - len(keep) - len(start)
    if free > 0:
        start.update(heapq.nsmallest(free, known - keep - start, key=rank))
    return start, stop


# --- mapping Consul's JSON to model values -------------------------------------


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _weight(weights: object, key: str) -> int:
    if isinstance(weights, Mapping):
        value = weights.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
            return value
    return 1


def instance_from_entry(entry: object, datacenter: str) -> Instance:
    """One ``/v1/health/service/<name>`` entry as an Instance.

    Raises ``ValueError`` naming the problem for an entry dnsd cannot serve
    (a service name that is no DNS label, a bad address...).
    """
    if not isinstance(entry, Mapping):
        raise ValueError("entry is not an object")
    node, service, checks = entry.get("Node"), entry.get("Service"), entry.get("Checks")
    if not isinstance(node, Mapping) or not isinstance(service, Mapping):
        raise ValueError("entry lacks Node or Service")
    statuses = [_str(c.get("Status")) for c in checks if isinstance(c, Mapping)] \
        if isinstance(checks, list) else []
    port = service.get("Port", 0)
    tags = service.get("Tags") or []
    meta = service.get("Meta") or {}
    if not isinstance(port, int) or isinstance(port, bool):
        raise ValueError(f"port {port!r} is not a number")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("Tags is not a list of strings")
    if not isinstance(meta, Mapping):
        raise ValueError("Meta is not an object")
    weights = service.get("Weights")
    return Instance(
        service=_str(service.get("Service")),
        node=_str(node.get("Node")),
        datacenter=datacenter,
        id=_str(service.get("ID")),
        address=_str(service.get("Address")),
        node_address=_str(node.get("Address")),
        port=port,
        tags=tuple(tags),
        health=Health.worst(statuses),
        weight_passing=_weight(weights, "Passing"),
        weight_warning=_weight(weights, "Warning"),
        meta={str(k): str(v) for k, v in meta.items()},
    )


# --- threads that run the synchronous client -----------------------------------


Client = Any  # consul.Consul: python-consul2 ships no type hints


def _describe(exc: BaseException) -> str:
    """One line for an error from python-consul2 or requests."""
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, consul.base.ACLPermissionDenied):
        return "permission denied (check --consul-token)"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# --- one datacenter -------------------------------------------------------------


@dataclass
class DcState:
    """What one datacenter's watch knows; mutated on the loop thread only."""

    slot: str = ""  # "" for the agent's own datacenter, else the remote one asked for
    name: str = ""
    services_index: int = 0
    nodes_index: int = 0
    checks_index: int = 0
    tags: dict[str, frozenset[str]] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    checks: dict[tuple[str, str], tuple[str, str, str]] = field(default_factory=dict)
    instances: dict[str, tuple[Instance, ...]] = field(default_factory=dict)
    indexes: dict[str, int] = field(default_factory=dict)  # per service, of the read kept
    changed_at: dict[str, int] = field(default_factory=dict)  # per service: sweep that saw it
    sweeps: int = 0
    synced: bool = False

    def store(self, name: str, index: int, group: tuple[Instance, ...],
              force: bool = False) -> bool:
        """Keep a read of one service unless a newer one is known; True if it changed."""
        if not force and index < self.indexes.get(name, 0):
            return False  # a slow read overtaken by a newer one
        self.indexes[name] = index
        before = self.instances.get(name, ())
        if group:
            self.instances[name] = group
        else:
            self.instances.pop(name, None)
        return before != group

    def rank(self, name: str) -> tuple[int, int, str]:
        """Watch priority (lowest first): most recently swept-and-changed, then
        most instances, then by name."""
        return (-self.changed_at.get(name, 0), -len(self.instances.get(name, ())), name)

    def services_on(self, node_names: Iterable[str]) -> set[str]:
        wanted = set(node_names)
        return {name for name, group in self.instances.items()
                if any(inst.node in wanted for inst in group)}


def diff_services(old: Mapping[str, frozenset[str]], new: Mapping[str, frozenset[str]]
                  ) -> set[str] | None:
    """Services to re-read after the catalog moved; None when no diff explains it."""
    changed = {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}
    return changed or None


def diff_checks(old: Mapping[tuple[str, str], tuple[str, str, str]],
                new: Mapping[tuple[str, str], tuple[str, str, str]]
                ) -> tuple[set[str], set[str]]:
    """(services whose own checks changed, nodes whose node-level checks changed)."""
    services: set[str] = set()
    nodes: set[str] = set()
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        for value in (before, after):
            if value is None:
                continue
            _, service_id, service_name = value
            if service_id:
                services.add(service_name)
            else:
                nodes.add(key[0])
    services.discard("")
    return services, nodes


def parse_service_list(data: object) -> dict[str, frozenset[str]]:
    if not isinstance(data, Mapping):
        raise ConsulUnavailable("catalog/services reply is not an object")
    return {str(k): frozenset(t for t in (v or []) if isinstance(t, str))
            for k, v in data.items()}


def parse_nodes(data: object) -> dict[str, str]:
    if not isinstance(data, list):
        raise ConsulUnavailable("catalog/nodes reply is not a list")
    return {_str(n.get("Node")): _str(n.get("Address")) for n in data
            if isinstance(n, Mapping) and _str(n.get("Node"))}


def parse_checks(data: object) -> dict[tuple[str, str], tuple[str, str, str]]:
    if not isinstance(data, list):
        raise ConsulUnavailable("health/state reply is not a list")
    return {(_str(c.get("Node")), _str(c.get("CheckID"))):
            (_str(c.get("Status")), _str(c.get("ServiceID")), _str(c.get("ServiceName")))
            for c in data if isinstance(c, Mapping)}


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


class ConsulSource:
    """Watches one Consul agent (and, through it, remote datacenters)."""

    def __init__(self, settings: ConsulSettings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.url = settings.url
        parsed = urlparse(self.url)
        self._scheme = parsed.scheme or "http"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (443 if self._scheme == "https" else 8500)
        self._verify: bool | str = settings.ca or True
        self._token = settings.token or None
        self.wait = settings.wait
        self.fetch_concurrency = max(1, settings.fetch_concurrency)
        self.watch_limit = max(0, settings.watch_limit)
        self._backoff_base, self._backoff_cap = settings.backoff_base, settings.backoff_cap
        self._rng = rng or random.Random()
        self._sink: Sink | None = None
        self._dcs: dict[str, DcState] = {}
        self._errors: dict[str, str] = {}
        self._reported: tuple[SourceState, frozenset[str]] = (SourceState.SYNCING, frozenset())
        self._warned: set[tuple[str, str]] = set()
        self._agent_dc: str | None = None
        self._publish_due = False
        self._observed_at: float | None = None
        self.counters: dict[str, int] = {"requests": 0, "errors": 0, "resyncs": 0,
                                         "publishes": 0, "sweeps": 0,
                                         "swept_changes": 0}

    @property
    def name(self) -> str:
        return f"consul:{self.url}"

    # --- clients ----------------------------------------------------------------

    def _client(self, timeout: float) -> Client:
        with warnings.catch_warnings():
            # python-consul2 warns about legacy APIs whenever a client is built,
            # whichever endpoints are used; dnsd uses none of them.
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.Consul(host=self._host, port=self._port, scheme=self._scheme,
                                   verify=self._verify)
        # python-consul2 lets CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN override its
        # arguments; dnsd's own precedence (flag > env) was applied in config, so
        # rebuild the connection and the token from what dnsd decided.
        client.http = client.http_connect(self._host, self._port, self._scheme,
                                          self._verify, None, timeout)
        client.token = self._token
        client.dc = None
        return client

    def _threads(self, size: int, timeout: float, label: str,
                 limit: int | None = None) -> ClientThreads[Client]:
        return ClientThreads(lambda: self._client(timeout), f"consul-{label}", size, limit)

    async def _call(self, threads: ClientThreads[Client], fn: Callable[[Client], T]) -> T:
        self.counters["requests"] += 1
        try:
            return await threads.call(fn)
        except (consul.base.ConsulException, requests.exceptions.RequestException,
                ValueError, KeyError, TypeError) as exc:
            self.counters["errors"] += 1
            raise ConsulUnavailable(_describe(exc)) from None

    # --- the run loop -----------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        self._sink = sink
        remotes = list(self.settings.datacenters)
        slots = ["", *dict.fromkeys(remotes)]  # "" is the agent's own datacenter
        for slot in slots:
            self._dcs[slot] = DcState(slot=slot, name=slot)
        await asyncio.gather(*(self._run_dc(slot) for slot in slots))

    async def _run_dc(self, slot: str) -> None:
        backoff = Backoff(self._backoff_base, self._backoff_cap, self._rng)
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
        assert self._sink is not None
        if self._errors:
            reason = "; ".join(f"{self._label(s)}: {r}" for s, r in sorted(self._errors.items()))
            state = SourceState.STALE
        elif all(dc.synced for dc in self._dcs.values()):
            state, reason = SourceState.UP, ""
        else:
            return
        # Report (and so log) a change of state or of the failing datacenters,
        # not every retry's slightly different error.
        key = (state, frozenset(self._errors))
        if key != self._reported:
            self._reported = key
            self._sink.set_state(self.name, state, reason)

    async def _session(self, slot: str, backoff: Backoff) -> None:
        """Resync one datacenter fully, then follow it until a request fails."""
        # A long-poll may wait up to 1.5 wait (slot_wait), plus Consul's wait/16.
        poll_timeout = self.wait * 1.5 * 17 / 16 + FETCH_TIMEOUT
        pools = Pools(
            catalog=self._threads(3, poll_timeout, "watch"),
            services=self._threads(0, poll_timeout, "service", 2 * self.watch_limit),
            fetch=self._threads(self.fetch_concurrency, FETCH_TIMEOUT, "fetch"),
            sweep=self._threads(0, FETCH_TIMEOUT, "sweep", self.fetch_concurrency))
        try:
            state = await self._resync(slot, pools.fetch)
            recovered = slot in self._errors
            self._errors.pop(slot, None)
            backoff.reset()
            self._publish()
            if recovered:
                log.info("consul %s (%s): back; resynced %d services", self.url,
                         self._label(slot), len(state.instances))
            self._report()
            await self._follow(state, pools)
        finally:
            pools.close()

    async def _resync(self, slot: str, fetchers: ClientThreads[Client]) -> DcState:
        self.counters["resyncs"] += 1
        dc_param = slot or None
        if not slot:
            agent = await self._call(fetchers, lambda c: c.agent.self())
            config = agent.get("Config") if isinstance(agent, Mapping) else None
            name = config.get("Datacenter") if isinstance(config, Mapping) else None
            if not isinstance(name, str) or not name:
                raise ConsulUnavailable("agent/self names no datacenter")
            self._agent_dc = name.lower()
        services_raw, nodes_raw, checks_raw = await asyncio.gather(
            self._call(fetchers, lambda c: c.catalog.services(dc=dc_param)),
            self._call(fetchers, lambda c: c.catalog.nodes(dc=dc_param)),
            self._call(fetchers, lambda c: c.health.state("any", dc=dc_param)))
        fresh = DcState(slot=slot, name=slot or (self._agent_dc or ""))
        fresh.services_index = parse_index(services_raw[0])
        fresh.tags = parse_service_list(services_raw[1])
        fresh.nodes_index = parse_index(nodes_raw[0])
        fresh.nodes = parse_nodes(nodes_raw[1])
        fresh.checks_index = parse_index(checks_raw[0])
        fresh.checks = parse_checks(checks_raw[1])
        for name, (index, group) in (await self._fetch(fresh, set(fresh.tags), fetchers)).items():
            fresh.store(name, index, group)
        fresh.synced = True
        # Swap in the new state only once it is complete: until then the last
        # view keeps serving (the resync may fail half way).
        self._dcs[slot] = fresh
        return fresh

    async def _fetch(self, state: DcState, names: set[str], fetchers: ClientThreads[Client]
                     ) -> dict[str, tuple[int, tuple[Instance, ...]]]:
        """Read ``/v1/health/service/<name>`` for each name, bounded by the pool size:
        name -> (the service's index, its instances)."""
        dc_param = state.slot or None
        ordered = sorted(names)

        def read(name: str) -> Callable[[Client], Any]:
            return lambda c: c.health.service(name, dc=dc_param)

        replies = await asyncio.gather(*(self._call(fetchers, read(n)) for n in ordered))
        return {name: (parse_index(raw), self._instances(state.name, name, entries or []))
                for name, (raw, entries) in zip(ordered, replies, strict=True)}

    async def _fetch_each(self, state: DcState, ordered: list[str], fetchers: ClientThreads[Client],
                          found: Callable[[str, int, tuple[Instance, ...]], None]) -> None:
        """Read each service in order (bounded by the pool), calling ``found`` as
        each reply lands rather than once all have."""
        dc_param = state.slot or None

        async def read(name: str) -> None:
            raw, entries = await self._call(
                fetchers, lambda c: c.health.service(name, dc=dc_param))
            found(name, parse_index(raw), self._instances(state.name, name, entries or []))

        await asyncio.gather(*(read(n) for n in ordered))

    def _instances(self, dc: str, name: str, entries: object) -> tuple[Instance, ...]:
        if not isinstance(entries, list):
            raise ConsulUnavailable(f"health/service/{name} reply is not a list")
        group = []
        for entry in entries:
            try:
                group.append(instance_from_entry(entry, dc))
            except ValueError as exc:
                key = (dc, f"{name}:{exc}")
                if key not in self._warned:  # once per problem, not per poll
                    self._warned.add(key)
                    log.warning("consul %s: skipping an instance of %r in %s: %s",
                                self.url, name, dc, exc)
        return tuple(group)

    # --- following changes --------------------------------------------------------

    async def _follow(self, state: DcState, pools: Pools) -> None:
        pending: set[str] = set()
        wake = asyncio.Event()
        sweep_wake = asyncio.Event()
        watched: dict[str, asyncio.Task[None]] = {}
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        dc_param = state.slot or None

        def want(names: Iterable[str]) -> None:
            pending.update(names)
            if pending:
                wake.set()

        def reconcile(promote: Iterable[str] = ()) -> set[str]:
            """Start and stop service watches; returns the stopped ones still known."""
            start, stop = plan_watches(watched, state.tags, self.watch_limit, state.rank,
                                       promote)
            for name in stop:
                watched.pop(name).cancel()
            for name in start:
                task = asyncio.create_task(watch_service(name))
                task.add_done_callback(on_watch_done)
                watched[name] = task
            # A stopped watch may have missed a change already made: read it once.
            return stop & set(state.tags)

        def on_watch_done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None and not failed.done():
                failed.set_exception(task.exception())  # type: ignore[arg-type]

        def forget_indexes(reset: bool) -> None:
            # The catalog went backwards (a snapshot restore): per-service indexes
            # known so far say nothing about the new history.
            if reset:
                state.indexes.clear()

        def on_services(index: int, data: object, reset: bool) -> None:
            forget_indexes(reset)
            new = parse_service_list(data)
            changed = diff_services(state.tags, new)
            appeared = new.keys() - state.tags.keys()
            state.tags = new
            if appeared:
                # A new service is the likeliest to gain instances next (a
                # deployment scaling up): swept first, and first to fill a slot.
                state.sweeps += 1
                for name in appeared:
                    state.changed_at[name] = state.sweeps
            want((changed or set()) | reconcile())
            if changed is None:
                # No visible diff: an instance came, went or changed inside a
                # service whose tag set stayed the same. A watched service's own
                # long-poll sees it; the unwatched ones must be re-read.
                sweep_wake.set()

        def on_nodes(index: int, data: object, reset: bool) -> None:
            forget_indexes(reset)
            new = parse_nodes(data)
            moved = {n for n in state.nodes.keys() | new.keys()
                     if state.nodes.get(n) != new.get(n)}
            state.nodes = new
            want(state.services_on(moved))
            if moved:
                self._publish_soon()  # the nodes themselves are published too

        def on_checks(index: int, data: object, reset: bool) -> None:
            forget_indexes(reset)
            new = parse_checks(data)
            services, nodes = diff_checks(state.checks, new)
            state.checks = new
            want(services | state.services_on(nodes))

        async def watch_service(name: str) -> None:
            def on_service(index: int, data: object, reset: bool) -> None:
                group = self._instances(state.name, name, data or [])
                if state.store(name, index, group, force=reset):
                    self._publish_soon()

            await self._watch(
                pools.services,
                lambda c, i, w: c.health.service(name, index=i, wait=w, dc=dc_param),
                state.indexes.get(name, 0), on_service)

        async def refresher() -> None:
            """Re-read the services the diffs named (watched ones follow themselves)."""
            while True:
                await wake.wait()
                wake.clear()
                names = pending - watched.keys()
                pending.clear()
                if not names:
                    continue
                fetched = await self._fetch(state, names, pools.fetch)
                if any([state.store(n, i, g) for n, (i, g) in fetched.items()]):
                    self._publish_soon()

        sweeping: list[asyncio.Task[None]] = []  # the sweep under way, if any

        async def sweep() -> None:
            names = (set(state.tags) | set(state.instances)) - watched.keys()
            if not names:
                return
            self.counters["sweeps"] += 1
            state.sweeps += 1

            def found(name: str, index: int, group: tuple[Instance, ...]) -> None:
                if state.store(name, index, group):
                    self.counters["swept_changes"] += 1
                    state.changed_at[name] = state.sweeps
                    # What changed unannounced is likely to again: watch it.
                    want(reconcile(promote=[name]))
                    self._publish_soon()

            await self._fetch_each(state, sorted(names, key=state.rank), pools.sweep, found)

        async def sweeper() -> None:
            """Re-read every unwatched service after a catalog move no diff explained,
            hottest first, publishing (and promoting) each change as its read lands.
            A new request restarts a sweep under way (its unread services are read
            by the new one, in the new order): a newly changed service never waits
            behind a whole sweep."""
            while True:
                await sweep_wake.wait()
                # Let the watched services' own long-polls, which return with the
                # same write, publish first: the sweep's reads would delay them.
                await asyncio.sleep(SWEEP_DELAY)
                sweep_wake.clear()
                for task in sweeping:
                    task.cancel()
                await asyncio.gather(*sweeping, return_exceptions=True)
                sweeping[:] = [asyncio.create_task(sweep())]
                sweeping[0].add_done_callback(on_watch_done)

        reconcile()
        tasks = [
            asyncio.create_task(self._watch(
                pools.catalog,
                lambda c, i, w: c.catalog.services(index=i, wait=w, dc=dc_param),
                state.services_index, on_services)),
            asyncio.create_task(self._watch(
                pools.catalog, lambda c, i, w: c.catalog.nodes(index=i, wait=w, dc=dc_param),
                state.nodes_index, on_nodes)),
            asyncio.create_task(self._watch(
                pools.catalog,
                lambda c, i, w: c.health.state("any", index=i, wait=w, dc=dc_param),
                state.checks_index, on_checks)),
            asyncio.create_task(refresher()),
            asyncio.create_task(sweeper()),
        ]
        try:
            done, _ = await asyncio.wait([*tasks, failed], return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the failure that ended the session
        finally:
            every = [*tasks, *watched.values(), *sweeping]
            for task in every:
                task.cancel()
            if failed.done():
                failed.exception()  # retrieved: a second failure is not worth a log line
            failed.cancel()
            await asyncio.gather(*every, return_exceptions=True)

    async def _watch(self, threads: ClientThreads[Client],
                     query: Callable[[Client, int | None, str], tuple[object, object]],
                     index: int, apply: Callable[[int, object, bool], None]) -> None:
        """Follow one endpoint with blocking queries, calling
        ``apply(index, data, reset)`` on change (``reset``: the index went backwards)."""
        loop = asyncio.get_running_loop()
        phase = self._rng.uniform(0, self.wait)  # this watch's slot in the wait cycle
        first = True
        while True:
            wait_ms = max(1, int(slot_wait(loop.time(), phase, self.wait, first) * 1000))
            first = False
            started = loop.time()

            def poll(c: Client, i: int = index, w: str = f"{wait_ms}ms") -> tuple[object, object]:
                return query(c, i or None, w)

            raw, data = await self._call(threads, poll)
            returned = parse_index(raw)
            index, changed = next_index(index, returned)
            if changed:
                if self._observed_at is None:  # the change this next view will carry
                    self._observed_at = loop.time()
                apply(returned, data, index == 0)
                if index:  # moved forward: follow at once
                    continue
            if loop.time() - started < min(QUICK_RETURN, self.wait / 2):
                # Back at once with nothing new (or an index that keeps going
                # backwards): don't turn a misbehaving server into a busy loop.
                await asyncio.sleep(min(QUICK_RETURN_PAUSE, self.wait / 4))

    # --- publishing ---------------------------------------------------------------

    def _publish_soon(self) -> None:
        """Publish once the loop has run what is ready: watches that return
        together make one new view, not one each."""
        if not self._publish_due:
            self._publish_due = True
            asyncio.get_running_loop().call_soon(self._publish)

    def _publish(self) -> None:
        assert self._sink is not None
        self._publish_due = False
        instances: list[Instance] = []
        nodes: list[Node] = []
        for dc in self._dcs.values():
            if not dc.synced:
                continue
            for name in sorted(dc.instances):
                instances.extend(dc.instances[name])
            for node_name, address in sorted(dc.nodes.items()):
                try:
                    nodes.append(Node(node_name, dc.name, address))
                except ValueError as exc:
                    key = (dc.name, f"node:{node_name}")
                    if key not in self._warned:
                        self._warned.add(key)
                        log.warning("consul %s: skipping node %r in %s: %s", self.url,
                                    node_name, dc.name, exc)
        local = self._agent_dc if self.settings.agent_names_local else None
        self.counters["publishes"] += 1
        observed_at, self._observed_at = self._observed_at, None
        self._sink.publish(self.name, View(tuple(instances), tuple(nodes), local), observed_at)
