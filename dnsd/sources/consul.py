"""The Consul source: watches a Consul catalog with blocking queries and
publishes every service instance (and node) it sees as one whole view.

How the watch scales. Consul's HTTP API has no "what changed since index N"
across services, so there are two classic shapes: one long-poll per service
(consul-template, Prometheus; N open connections and N/wait idle requests) or a
few catalog-wide long-polls. dnsd takes the second, per datacenter:

- ``/v1/catalog/services`` (the service table: names and tag sets),
- ``/v1/catalog/nodes`` (node names and addresses),
- ``/v1/health/state/any`` (every check, with its node and service),

three long-polls whatever the service count. When one returns with a new
index, the diff against the previous answer names the services to re-read:
added, removed or re-tagged services; services whose checks changed; services
on a node whose address or node-level check changed. Those (and only those) are
fetched with ``/v1/health/service/<name>``, at most ``fetch_concurrency`` at a
time, in batches: a name is never fetched twice at once, and changes arriving
during a batch go into the next one. Only a catalog index move that no diff
explains (an instance added to a service with the same tags, a port change)
re-reads every service of that datacenter, still ``fetch_concurrency`` at a
time; several such moves during one sweep coalesce into one more sweep. Idle,
the cost is 3 requests per datacenter per ``wait`` (5 minutes, Consul's default,
each spread by a random tenth and by Consul's own wait/16 jitter) however many
services there are.

Index rules follow Consul's documentation on blocking queries: a return is no
promise of change (an unchanged index is ignored), an index that goes backwards
resets to 0 (the next read is a full one), an index below 1 is treated as 1,
and a watcher whose queries keep returning at once without progress slows down.

Outage: any failed request (refused, timed out, 5xx such as "No cluster leader",
403, unparsable reply) ends that datacenter's session; the source reports
``STALE`` (the table keeps its last view), logs once, retries with capped
exponential backoff with jitter, and on success resyncs that datacenter fully
before reporting ``UP``. Health: every instance is published with the worst of
its checks (node and service); the answer side drops critical ones and, with
``--only-passing``, warning ones.

python-consul2's synchronous client runs in daemon threads, one client (and so
one ``requests`` session, which is not meant to be shared across threads) per
thread; its asyncio client opens a new HTTP session for every request, so it is
not used. python-consul2 is imported here only. Imports: ``config``, ``model``,
``sources.base``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import consul
import requests

from dnsd.config import Config
from dnsd.model import Health, Instance, Node, View
from dnsd.sources.base import Sink, SourceState

log = logging.getLogger("dnsd.consul")

T = TypeVar("T")

DEFAULT_WAIT = 300.0        # seconds a blocking query may hang (Consul's default)
FETCH_TIMEOUT = 10.0        # seconds for a non-blocking request
FETCH_CONCURRENCY = 8       # service reads in flight per datacenter
QUICK_RETURN = 1.0          # a blocking query back faster than this made no progress...
QUICK_RETURN_PAUSE = 0.5    # ...so the next one waits this long first


class ConsulUnavailable(Exception):
    """Consul could not be read; the message says why, in one line."""


@dataclass
class Backoff:
    """Capped exponential backoff with jitter ("equal jitter": half fixed, half random).

    ``rng`` is injected so tests can pin the sequence.
    """

    base: float = 0.25
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * float(2 ** min(self.attempts, 30)))
        self.attempts += 1
        return ceiling / 2 + float(self.rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.attempts = 0


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


class ClientThreads:
    """Daemon threads, each owning one python-consul2 client, fed by one queue.

    Daemon, because a thread blocked in a long-poll cannot be interrupted and
    must not hold up process exit. ``call`` bounds concurrency to ``size``.
    """

    def __init__(self, clients: list[Client], name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._size = len(clients)
        self._closed = False
        for number, client in enumerate(clients):
            threading.Thread(target=self._work, args=(client,), daemon=True,
                             name=f"{name}-{number}").start()

    def _work(self, client: Client) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._closed:  # closed: drop queued work, nobody awaits it
                return
            fn, loop, future = job
            try:
                result, error = fn(client), None
            except BaseException as exc:
                result, error = None, exc
            # A closed loop (RuntimeError) means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, result, error)

    async def call(self, fn: Callable[[Client], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, loop, future))
        return await future

    def close(self) -> None:
        """Let the threads exit once their current request returns."""
        self._closed = True
        for _ in range(self._size):
            self._jobs.put(None)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


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
    synced: bool = False

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


class ConsulSource:
    """Watches one Consul agent (and, through it, remote datacenters)."""

    def __init__(self, config: Config, *, wait: float = DEFAULT_WAIT,
                 fetch_concurrency: int = FETCH_CONCURRENCY,
                 backoff_base: float = 0.25, backoff_cap: float = 30.0,
                 rng: random.Random | None = None) -> None:
        if config.consul is None:
            raise ValueError("ConsulSource needs config.consul")
        self.config = config
        self.url = config.consul
        parsed = urlparse(self.url)
        self._scheme = parsed.scheme or "http"
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or (443 if self._scheme == "https" else 8500)
        self._verify: bool | str = config.consul_ca or True
        self._token = config.consul_token or None
        self.wait = wait
        self.fetch_concurrency = max(1, fetch_concurrency)
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._rng = rng or random.Random()
        self._sink: Sink | None = None
        self._dcs: dict[str, DcState] = {}
        self._errors: dict[str, str] = {}
        self._reported: tuple[SourceState, frozenset[str]] = (SourceState.SYNCING, frozenset())
        self._warned: set[tuple[str, str]] = set()
        self._agent_dc: str | None = None
        self.counters: dict[str, int] = {"requests": 0, "errors": 0, "resyncs": 0,
                                         "publishes": 0}

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

    def _threads(self, size: int, timeout: float, label: str) -> ClientThreads:
        # Built here, on the loop thread; each is then used by its one thread only.
        return ClientThreads([self._client(timeout) for _ in range(size)], f"consul-{label}")

    async def _call(self, threads: ClientThreads, fn: Callable[[Client], T]) -> T:
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
        remotes = [dc for dc in self.config.consul_datacenters]
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
        watchers = self._threads(3, self.wait * 17 / 16 + FETCH_TIMEOUT, "watch")
        fetchers = self._threads(self.fetch_concurrency, FETCH_TIMEOUT, "fetch")
        try:
            state = await self._resync(slot, fetchers)
            recovered = slot in self._errors
            self._errors.pop(slot, None)
            backoff.reset()
            self._publish()
            if recovered:
                log.info("consul %s (%s): back; resynced %d services", self.url,
                         self._label(slot), len(state.instances))
            self._report()
            await self._follow(state, watchers, fetchers)
        finally:
            watchers.close()
            fetchers.close()

    async def _resync(self, slot: str, fetchers: ClientThreads) -> DcState:
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
        fresh.instances = await self._fetch(fresh, set(fresh.tags), fetchers)
        fresh.synced = True
        # Swap in the new state only once it is complete: until then the last
        # view keeps serving (the resync may fail half way).
        self._dcs[slot] = fresh
        return fresh

    async def _fetch(self, state: DcState, names: set[str], fetchers: ClientThreads
                     ) -> dict[str, tuple[Instance, ...]]:
        """Read ``/v1/health/service/<name>`` for each name, bounded by the pool size."""
        dc_param = state.slot or None
        ordered = sorted(names)

        def read(name: str) -> Callable[[Client], Any]:
            return lambda c: c.health.service(name, dc=dc_param)

        replies = await asyncio.gather(*(self._call(fetchers, read(n)) for n in ordered))
        result: dict[str, tuple[Instance, ...]] = {}
        for name, (_, entries) in zip(ordered, replies, strict=True):
            group = self._instances(state.name, name, entries or [])
            if group:
                result[name] = group
        return result

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

    async def _follow(self, state: DcState, watchers: ClientThreads,
                      fetchers: ClientThreads) -> None:
        pending: set[str] = set()
        wake = asyncio.Event()
        sweep = False
        dc_param = state.slot or None

        def want(names: Iterable[str], everything: bool = False) -> None:
            nonlocal sweep
            pending.update(names)
            sweep = sweep or everything
            wake.set()

        def on_services(data: object) -> None:
            new = parse_service_list(data)
            changed = diff_services(state.tags, new)
            state.tags = new
            # No visible diff: an instance came, went or changed inside a service
            # whose tag set stayed the same. Only a full read can say which.
            want(changed or (), everything=changed is None)

        def on_nodes(data: object) -> None:
            new = parse_nodes(data)
            moved = {n for n in state.nodes.keys() | new.keys()
                     if state.nodes.get(n) != new.get(n)}
            state.nodes = new
            want(state.services_on(moved))

        def on_checks(data: object) -> None:
            new = parse_checks(data)
            services, nodes = diff_checks(state.checks, new)
            state.checks = new
            want(services | state.services_on(nodes))

        async def refresher() -> None:
            nonlocal sweep
            while True:
                await wake.wait()
                wake.clear()
                names = set(state.tags) | set(state.instances) if sweep else set(pending)
                pending.clear()
                sweep = False
                fetched = await self._fetch(state, names, fetchers)
                for name in names:
                    group = fetched.get(name)
                    if group:
                        state.instances[name] = group
                    else:
                        state.instances.pop(name, None)
                self._publish()

        tasks = [
            asyncio.create_task(self._watch(
                watchers, lambda c, i, w: c.catalog.services(index=i, wait=w, dc=dc_param),
                state.services_index, on_services)),
            asyncio.create_task(self._watch(
                watchers, lambda c, i, w: c.catalog.nodes(index=i, wait=w, dc=dc_param),
                state.nodes_index, on_nodes)),
            asyncio.create_task(self._watch(
                watchers, lambda c, i, w: c.health.state("any", index=i, wait=w, dc=dc_param),
                state.checks_index, on_checks)),
            asyncio.create_task(refresher()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the failure that ended the session
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, watchers: ClientThreads,
                     query: Callable[[Client, int | None, str], tuple[object, object]],
                     index: int, apply: Callable[[object], None]) -> None:
        """Follow one endpoint with blocking queries, calling ``apply`` on change."""
        loop = asyncio.get_running_loop()
        while True:
            # Spread the expiries of many watchers (and dnsd processes) apart.
            wait_ms = int(self.wait * 1000 * self._rng.uniform(0.9, 1.0))
            started = loop.time()

            def poll(c: Client, i: int = index, w: str = f"{wait_ms}ms") -> tuple[object, object]:
                return query(c, i or None, w)

            raw, data = await self._call(watchers, poll)
            returned = parse_index(raw)
            index, changed = next_index(index, returned)
            if changed:
                apply(data)
                if index:  # moved forward: follow at once
                    continue
            if loop.time() - started < min(QUICK_RETURN, self.wait / 2):
                # Back at once with nothing new (or an index that keeps going
                # backwards): don't turn a misbehaving server into a busy loop.
                await asyncio.sleep(min(QUICK_RETURN_PAUSE, self.wait / 4))

    # --- publishing ---------------------------------------------------------------

    def _publish(self) -> None:
        assert self._sink is not None
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
        local = None if self.config.datacenter_set else self._agent_dc
        self.counters["publishes"] += 1
        self._sink.publish(self.name, View(tuple(instances), tuple(nodes), local))
