"""The ZooKeeper source: serves what gliderlabs/registrator writes to ZooKeeper.

Registrator's zookeeper adapter (``zookeeper://host:2181/<base>``) writes::

    <base>/<name>               persistent, empty data, one per service
    <base>/<name>/<ip>:<port>   ephemeral, JSON {"Name", "IP", "PublicPort", "PrivatePort",
                                "ContainerID", "Tags", "Attrs"}

and deletes ``<base>/<name>`` once its last instance is gone. The base path is a
plain path, not a kazoo chroot: registrator itself uses it that way.

Node meta: registrator has no notion of it (its JSON carries the container's
``SERVICE_*`` settings as ``Attrs``, keys lower-cased, and nothing of the
host). dnsd's convention: an ``Attrs`` key ``node_meta_<key>`` (what
registrator writes for ``SERVICE_NODE_META_<KEY>``) sets node meta ``<key>``
on the instance's node, for node TXT answers and prepared queries'
``NodeMeta``. The attribute stays in the instance's meta too, so JSON that
already carried such keys is read as before. Instances of one node that
disagree on a key: the first (by service, then znode name) wins.

This module owns the kazoo client; no other module imports kazoo. kazoo calls
watches, request completions and state listeners on its own threads: those
callbacks do nothing but hop to the event loop with ``call_soon_threadsafe``.
Every piece of state below lives on the loop thread, and only the loop publishes.

The loop never calls kazoo itself: a kazoo request writes a byte to a
socketpair that only kazoo's connection thread drains, and only while it is
connected, so with ZooKeeper gone a few hundred requests fill it and the next
one blocks its caller for good (the whole server, were that the loop). Reads
are queued on the loop and handed to one submitting thread, at most
``max_reads_in_flight`` at a time, and none while the connection is down: the
socketpair never holds more than that many bytes.

Sync model: the tree (services -> children -> parsed data) is kept current by
one-shot ZooKeeper watches, each of which triggers a fresh read that sets the
next watch. A view is published (through the shared ``Publisher``) when no
read is outstanding, after a debounce of a few milliseconds, so a burst
becomes one swap. kazoo drops every watch when the connection is lost, so
after each (re)connection the whole tree is listed again under a new
*generation*; replies to reads of older generations are ignored, and the
fresh view is published only once that listing is complete. Imports:
``model``, ``sources`` (base, publisher, threads).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.protocol.states import (
    EventType,
    KazooState,
    WatchedEvent,
)
from kazoo.retry import KazooRetry

from dnsd.model import (
    NO_META,
    AddressKind,
    Instance,
    Node,
    View,
    classify_address,
    freeze_meta,
    is_hostname,
    is_label,
)
from dnsd.sources.base import Sink, SourceState
from dnsd.sources.publisher import Publisher
from dnsd.sources.threads import ClientThreads, LoopHop

log = logging.getLogger("dnsd.zookeeper")

# kazoo logs a warning on every failed reconnection attempt; this source logs
# once per state change instead, so kazoo's own chatter is kept to errors
# unless the user configures "dnsd.zookeeper.kazoo" otherwise.
_kazoo_log = logging.getLogger("dnsd.zookeeper.kazoo")
if _kazoo_log.level == logging.NOTSET:
    _kazoo_log.setLevel(logging.ERROR)

DEBOUNCE = 0.002
"""Seconds of quiet after the last reply before a view is published."""
MAX_DELAY = 0.03
"""Under steady churn (reads always outstanding) publish at least this often."""
SESSION_TIMEOUT = 10.0
"""Seconds; ZooKeeper expires the session (and its watches) after this without us."""
MAX_RETRY_DELAY = 2.0
"""Longest pause between reconnection attempts while ZooKeeper is down."""
CONNECT_GRACE = 3.0
"""Seconds to wait for the first connection before reporting the source stale."""
MAX_DATA_BYTES = 64 * 1024
"""Instance data larger than this is not parsed (registrator writes a few hundred
bytes); the child's name serves instead."""
NODE_META_PREFIX = "node_meta_"
"""An ``Attrs`` key with this prefix also sets the node's meta (the rest of the key)."""
MAX_READS_IN_FLIGHT = 128
"""Reads handed to kazoo and not yet answered; kazoo's wake-up socketpair holds
a few hundred requests, so this keeps its writer from ever blocking."""

_CONNECTION_ERRORS = (ConnectionLoss, SessionExpiredError, ConnectionClosedError)


def split_zookeeper(spec: str) -> tuple[str, str]:
    """``zk1:2181,zk2:2181/services`` -> (``zk1:2181,zk2:2181``, ``/services``).

    No path means the root, as registrator's ``zookeeper://host:2181`` does.
    """
    hosts, _, path = spec.partition("/")
    base = "/" + path.strip("/")
    return hosts, base


def node_name_for(address: str, kind: AddressKind) -> str:
    """The node an instance is put on when the JSON names none: its address.

    IPv4 stays dotted (``10.0.0.5.node.dc1.consul``); IPv6 has colons, which no
    DNS label may hold, so it becomes the 32 hex digits Consul's ``.addr.`` uses.
    """
    if kind is AddressKind.IPV6:
        return ipaddress.ip_address(address).packed.hex()
    return address


def endpoint_from_name(child: str) -> tuple[str, int] | None:
    """``10.0.0.5:8080``, ``fd00::5:8080`` or ``[fd00::5]:8080`` -> (address, port).

    Split on the last ':' (IPv6 addresses hold colons themselves); None when the
    name is not an address and a port from 1 to 65535.
    """
    host, sep, port_text = child.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit():
        return None
    port = int(port_text)
    if not 1 <= port <= 65535:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    address = _usable_address(host)
    return None if address is None else (address, port)


def _usable_address(text: str) -> str | None:
    """A normalised IP or host name an instance can be reached at, else None."""
    try:
        kind, address = classify_address(text)
    except ValueError:
        return None
    if kind is AddressKind.NONE:
        return None
    if kind in (AddressKind.IPV4, AddressKind.IPV6) and ipaddress.ip_address(
            address).is_unspecified:
        return None  # 0.0.0.0 is where a container listens, not where to reach it
    return address


def _json_port(value: Any) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        return None
    return value


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one instance znode yields: an instance, or None and why not.

    ``problem`` is set when something was ignored (bad JSON, a bad field) even
    though an instance could still be built from the rest.
    """

    instance: Instance | None
    problem: str = ""
    node_meta: Mapping[str, str] = NO_META  # what its ``node_meta_*`` attributes say


def parse_instance(service: str, child: str, data: bytes, datacenter: str) -> Parsed:
    """Turn ``<base>/<service>/<child>`` with its data into an instance.

    The JSON registrator writes is preferred; the child name ``ip:port`` is the
    fallback (older consumers read only the name). Tags come from ``Tags``,
    meta from ``Attrs``; the node is the JSON's ``Node`` or ``Attrs.node`` when
    given, else named after the address. Never raises.
    """
    if not is_label(service):
        return Parsed(None, f"service name {service!r} is not a valid DNS label")
    problems: list[str] = []
    body: dict[str, Any] = {}
    if len(data) > MAX_DATA_BYTES:
        problems.append(f"data is {len(data)} bytes, more than {MAX_DATA_BYTES}")
    elif data.strip():
        try:
            loaded = json.loads(data)
        except RecursionError:
            problems.append("data is JSON nested too deeply")
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"data is not JSON ({exc})")
        else:
            if isinstance(loaded, dict):
                body = loaded
            else:
                problems.append("data is JSON but not an object")

    endpoint: tuple[str, int] | None = None
    if body:
        ip = body.get("IP")
        address = _usable_address(ip) if isinstance(ip, str) else None
        port = _json_port(body.get("PublicPort"))
        if address is not None and port is not None:
            endpoint = (address, port)
        else:
            problems.append(f"JSON IP {ip!r} / PublicPort {body.get('PublicPort')!r} "
                            "is no endpoint")
    if endpoint is None:
        endpoint = endpoint_from_name(child)
    if endpoint is None:
        problems.append(f"name {child!r} is not ip:port")
        return Parsed(None, "; ".join(problems))
    address, port = endpoint

    raw_tags = body.get("Tags")
    tags: tuple[str, ...] = ()
    if isinstance(raw_tags, list):
        tags = tuple(t for t in raw_tags if isinstance(t, str) and t)
    elif raw_tags is not None:
        problems.append("Tags is not a list")
    raw_attrs = body.get("Attrs")
    meta: dict[str, str] = {}
    if isinstance(raw_attrs, dict):
        meta = {str(k): _meta_text(v) for k, v in raw_attrs.items()
                if isinstance(v, str | int | float | bool)}
    elif raw_attrs is not None:
        problems.append("Attrs is not an object")

    kind, _ = classify_address(address)
    node = node_name_for(address, kind)
    for wanted in (body.get("Node"), meta.get("node")):
        if isinstance(wanted, str) and wanted:
            if is_hostname(wanted):
                node = wanted.rstrip(".")
                break
            problems.append(f"node {wanted!r} is not a valid node name")
    try:
        instance = Instance(service=service, node=node, datacenter=datacenter, id=child,
                            address=address, node_address=address, port=port, tags=tags,
                            meta=meta)
    except ValueError as exc:  # the model's own checks (e.g. the datacenter)
        problems.append(str(exc))
        return Parsed(None, "; ".join(problems))
    node_meta = {key[len(NODE_META_PREFIX):]: value for key, value in meta.items()
                 if key.startswith(NODE_META_PREFIX) and len(key) > len(NODE_META_PREFIX)}
    return Parsed(instance, "; ".join(problems), freeze_meta(node_meta))


def _meta_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _close_client(client: Any) -> None:
    """Stop and close a kazoo client (blocking; run off the loop)."""
    try:
        client.stop()
        client.close()
    except Exception:  # shutting down: nothing useful to do with it
        log.debug("error closing the ZooKeeper client", exc_info=True)


@dataclass(frozen=True, slots=True)
class ZooKeeperSettings:
    """Everything the ZooKeeper source runs with (built from the configuration
    by ``sources.registry``)."""

    spec: str                      # HOSTS/PATH as given, e.g. zk1:2181,zk2:2181/services
    datacenter: str                # the datacenter its instances are served in
    session_timeout: float = SESSION_TIMEOUT
    max_retry_delay: float = MAX_RETRY_DELAY
    connect_grace: float = CONNECT_GRACE
    max_reads_in_flight: int = MAX_READS_IN_FLIGHT

    @property
    def hosts(self) -> str:
        return split_zookeeper(self.spec)[0]

    @property
    def base(self) -> str:
        return split_zookeeper(self.spec)[1]


class ZooKeeperSource:
    """Watches registrator's tree in ZooKeeper and publishes it as a view."""

    def __init__(self, settings: ZooKeeperSettings) -> None:
        self.settings = settings
        self.spec = settings.spec
        self.hosts, self.base = settings.hosts, settings.base
        self.datacenter = settings.datacenter
        self.session_timeout = settings.session_timeout
        self.max_retry_delay = settings.max_retry_delay
        self.connect_grace = settings.connect_grace
        # Counters for metrics; monotonic over the process lifetime.
        self.skipped_total = 0       # instance znodes that yielded no instance
        self.ignored_total = 0       # znodes whose JSON (or part of it) was ignored
        self.resyncs_total = 0       # full re-listings (one per (re)connection)
        self._publishes_before = 0   # by the publishers of runs that ended
        self._watcher: _Watcher | None = None

    @property
    def name(self) -> str:
        return f"zookeeper:{self.spec}"

    @property
    def publishes_total(self) -> int:
        current = self._watcher.publisher.publishes if self._watcher is not None else 0
        return self._publishes_before + current

    @property
    def counters(self) -> dict[str, int]:
        """Event counts for ``dnsd_source_events`` (read at scrape time)."""
        return {"skipped": self.skipped_total, "ignored": self.ignored_total,
                "resyncs": self.resyncs_total, "publishes": self.publishes_total}

    async def run(self, sink: Sink) -> None:
        # Each run gets its own client and watcher, so callbacks still queued
        # from a previous (crashed and restarted) run can only reach their own
        # closed watcher, never this one.
        loop = asyncio.get_running_loop()
        retry = KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_jitter=0.1,
                           max_delay=self.max_retry_delay)
        client = KazooClient(hosts=self.hosts, timeout=self.session_timeout,
                             connection_retry=retry, logger=_kazoo_log)
        submitter: ClientThreads[Any] = ClientThreads(lambda: client, "zookeeper-reads", 1)
        watcher = self._watcher = _Watcher(self, submitter, sink, loop)
        client.add_listener(watcher.kazoo_state)
        grace = loop.call_later(self.connect_grace, watcher.connect_overdue)
        try:
            log.info("connecting to ZooKeeper %s, watching %s", self.hosts, self.base)
            await submitter.call(lambda c: c.start_async())
            await loop.create_future()  # runs until cancelled
        finally:
            grace.cancel()
            watcher.close()
            submitter.close()
            self._publishes_before += watcher.publisher.publishes
            self._watcher = None
            await asyncio.shield(asyncio.to_thread(_close_client, client))


@dataclass(frozen=True, slots=True)
class _Read:
    """One read of a znode, with what to do with its outcome (on the loop)."""

    kind: str                  # "children", "data" or "exists"
    path: str
    generation: int            # the listing it belongs to
    on_result: Callable[[Any], None]
    on_missing: Callable[[], None]


class _Watcher:
    """One run's state: the tree as known, reads in flight, what was published.

    Touched only on the loop thread, except the ``kazoo_*`` entry points and
    the read completions, which only hop to the loop.
    """

    def __init__(self, source: ZooKeeperSource, submitter: ClientThreads[Any],
                 sink: Sink, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        self._submitter = submitter
        self._loop = loop
        self.base = source.base
        self._services: dict[str, dict[str, Parsed | None]] = {}  # None: data being read
        self._generation = 0
        self._outstanding = 0            # reads of the current generation not yet done
        self._queue: deque[_Read] = deque()  # reads waiting for a slot (and a connection)
        self._in_flight = 0              # reads handed to kazoo, of any generation
        self._max_in_flight = max(1, source.settings.max_reads_in_flight)
        self._connected = False
        self._listing = False            # a full listing is in progress
        self._failed = False             # a read of this generation lost the connection
        self._closed = False
        self._hop = LoopHop(loop)  # kazoo's threads reach the loop through this only
        # A view goes out after DEBOUNCE of quiet with no read outstanding (a
        # burst becomes one swap), and at least every MAX_DELAY under churn.
        self.publisher = Publisher(sink, source.name, self._view, log=log, debounce=DEBOUNCE,
                                   max_delay=MAX_DELAY, settled=lambda: self._outstanding == 0,
                                   after=self._published)

    def close(self) -> None:
        self._closed = True
        self._hop.close()
        self.publisher.close()

    def connect_overdue(self) -> None:
        if not self._connected and self.publisher.state is SourceState.SYNCING:
            self._set_state(SourceState.STALE, f"cannot reach ZooKeeper at {self.source.hosts}")

    def _set_state(self, state: SourceState, reason: str = "") -> None:
        # Once per change: a lost connection that turns into an expired session
        # is worth its own line, a retry that fails again is not.
        if not self.publisher.report(state, reason):
            return
        if state is SourceState.STALE:
            log.warning("ZooKeeper %s: stale, serving the last view: %s", self.source.hosts, reason)
        else:
            log.info("ZooKeeper %s: %s%s", self.source.hosts, state.value,
                     f" ({reason})" if reason else "")

    # --- hops from kazoo's threads to the loop ---------------------------------


    def kazoo_state(self, state: str) -> None:
        # On kazoo's connection thread, which must never block.
        self._hop(self._on_state, state)

    def _kazoo_watch(self, event: WatchedEvent) -> None:
        # One bound method for every watch: kazoo keeps watchers in a set per
        # path, so re-reading a path never stacks up duplicate watchers.
        self._hop(self._on_watch, event)

    def _read(self, kind: str, path: str, on_result: Callable[[Any], None],
              on_missing: Callable[[], None]) -> None:
        """Queue a read with a watch; its outcome comes back on the loop."""
        self._outstanding += 1
        self._queue.append(_Read(kind, path, self._generation, on_result, on_missing))
        self._pump()

    def _pump(self) -> None:
        """Hand queued reads to the submitting thread, within the in-flight
        bound, and none while disconnected (reconnecting relists anyway)."""
        if not self._connected or self._closed or not self._queue:
            return
        batch: list[_Read] = []
        while self._queue and self._in_flight < self._max_in_flight:
            batch.append(self._queue.popleft())
            self._in_flight += 1
        if batch:
            self._submitter.submit(lambda client: self._submit(client, batch))

    def _submit(self, client: Any, batch: list[_Read]) -> None:
        """On the submitting thread: start each read; never on the loop."""
        for read in batch:
            if not client.connected:
                # Lost since the loop looked: kazoo would queue the request and
                # write its wake-up byte to a socketpair nobody drains.
                self._hop(self._done, read, ConnectionLoss())
                continue
            try:
                if read.kind == "children":
                    result = client.get_children_async(read.path, watch=self._kazoo_watch)
                elif read.kind == "data":
                    result = client.get_async(read.path, watch=self._kazoo_watch)
                else:
                    result = client.exists_async(read.path, watch=self._kazoo_watch)
            except Exception as exc:  # e.g. the client closing under us
                self._hop(self._done, read, exc)
                continue
            result.rawlink(functools.partial(self._completed, read))

    def _completed(self, read: _Read, async_result: Any) -> None:
        # On kazoo's callback thread.
        try:
            value: Any = async_result.get_nowait()
        except Exception as exc:  # carried to the loop and sorted there
            value = exc
        self._hop(self._done, read, value)

    # --- the loop side -----------------------------------------------------------

    def _done(self, read: _Read, value: Any) -> None:
        self._in_flight -= 1
        if read.generation != self._generation or self._closed:
            self._pump()
            return  # a reply from before the last reconnection: that listing redoes it
        self._outstanding -= 1
        try:
            if isinstance(value, NoNodeError):
                read.on_missing()
            elif isinstance(value, _CONNECTION_ERRORS):
                # The state listener reports the loss and the reconnection
                # relists everything; this generation's view must not be published.
                self._failed = True
            elif isinstance(value, BaseException):
                # e.g. NoAuth on one znode: treat it as absent rather than stall.
                level = logging.WARNING if isinstance(value, KazooException) else logging.ERROR
                log.log(level, "ZooKeeper read failed: %r; treating the node as absent", value)
                read.on_missing()
            else:
                read.on_result(value)
        except Exception:
            # One node dnsd cannot digest must not stop the others from being
            # published: it is left out, and the rest goes on.
            log.exception("ZooKeeper: cannot use %s; leaving it out", read.path)
        self._pump()
        self.publisher.changed()

    def _on_state(self, state: str) -> None:
        if self._closed:
            return
        if state == KazooState.CONNECTED:
            self._connected = True
            self._relist()
        elif state == KazooState.SUSPENDED:
            self._connected = False
            self._queue.clear()  # relisted on reconnection
            self._set_state(SourceState.STALE, "connection to ZooKeeper lost")
        elif state == KazooState.LOST:
            self._connected = False
            self._queue.clear()
            self._set_state(SourceState.STALE, "ZooKeeper session expired")

    def _relist(self) -> None:
        """List the whole tree again under a new generation (watches may be gone)."""
        self._generation += 1
        self._outstanding = 0
        self._queue.clear()
        self._failed = False
        self._listing = True
        self.source.resyncs_total += 1
        self._read_services(full=True)

    def _on_watch(self, event: WatchedEvent) -> None:
        if self._closed or not self._connected or event.path is None:
            return  # EventType.NONE: kazoo dropped the watch; the reconnection relists
        relative = self._relative(event.path)
        if relative is None:
            return
        parts = relative.split("/") if relative else []
        if not parts:
            self._read_services(full=False)
        elif len(parts) == 1:
            if event.type == EventType.CHILD or event.type == EventType.DELETED:
                self._read_children(parts[0], full=False)
        elif len(parts) == 2:
            service, child = parts
            children = self._services.get(service)
            if children is None or child not in children:
                return
            if event.type == EventType.DELETED:
                del children[child]
                self.publisher.changed()
            elif event.type == EventType.CHANGED:
                self._read_data(service, child)

    def _relative(self, path: str) -> str | None:
        if self.base == "/":
            return path.lstrip("/")
        if path == self.base:
            return ""
        if path.startswith(self.base + "/"):
            return path[len(self.base) + 1:]
        return None

    def _path(self, *parts: str) -> str:
        return "/".join(("" if self.base == "/" else self.base, *parts)) or "/"

    def _read_services(self, full: bool) -> None:
        def listed(names: list[str]) -> None:
            names_set = set(names)
            if self.base == "/":
                names_set.discard("zookeeper")  # ZooKeeper's own /zookeeper tree
            for gone in set(self._services) - names_set:
                del self._services[gone]
            for service in sorted(names_set):
                if full or service not in self._services:
                    self._services.setdefault(service, {})
                    self._read_children(service, full)

        def missing() -> None:
            # No base path yet (registrator creates it on start): watch for it.
            self._services.clear()
            self._read("exists", self.base, created, lambda: None)

        def created(stat: Any) -> None:
            if stat is not None:  # created between the two reads
                self._read_services(full=True)

        self._read("children", self.base, listed, missing)

    def _read_children(self, service: str, full: bool) -> None:
        def listed(names: list[str]) -> None:
            children = self._services.get(service)
            if children is None:
                return  # the service went away meanwhile
            for gone in set(children) - set(names):
                del children[gone]
            for child in names:
                if full or child not in children:
                    children.setdefault(child, None)
                    self._read_data(service, child)

        def missing() -> None:
            self._services.pop(service, None)

        self._read("children", self._path(service), listed, missing)

    def _read_data(self, service: str, child: str) -> None:
        def got(result: tuple[bytes, Any]) -> None:
            children = self._services.get(service)
            if children is None or child not in children:
                return
            data = result[0] or b""
            parsed = parse_instance(service, child, data, self.source.datacenter)
            previous = children.get(child)
            children[child] = parsed
            if previous is not None and previous.problem == parsed.problem:
                return  # already reported for this content
            if parsed.instance is None:
                self.source.skipped_total += 1
                log.warning("skipping %s: %s", self._path(service, child), parsed.problem)
            elif parsed.problem:
                self.source.ignored_total += 1
                log.warning("%s: %s; using the rest", self._path(service, child),
                            parsed.problem)

        def missing() -> None:
            children = self._services.get(service)
            if children is not None:
                children.pop(child, None)

        self._read("data", self._path(service, child), got, missing)

    # --- publishing ----------------------------------------------------------------

    def _view(self) -> View | None:
        """The view to publish now, or None while none may go out: without a
        connection, after a read of this generation lost it, or while a full
        listing is half done (a partial incremental update is still a state
        the registry was in, plus some changes; a partial listing is not)."""
        if self._closed or not self._connected or self._failed:
            return None
        if self._listing and self._outstanding:
            return None
        return self.view()

    def _published(self) -> None:
        if self._listing and self._outstanding == 0:
            self._listing = False
            self._set_state(SourceState.UP)

    def view(self) -> View:
        """The view of the tree as currently known (instances being read left
        out), with the nodes whose instances name node meta."""
        instances: list[Instance] = []
        metas: dict[str, dict[str, str]] = {}
        for service in sorted(self._services):
            for _, parsed in sorted(self._services[service].items()):
                if parsed is None or parsed.instance is None:
                    continue
                instances.append(parsed.instance)
                if parsed.node_meta:
                    known = metas.setdefault(parsed.instance.node, {})
                    for key, value in parsed.node_meta.items():
                        known.setdefault(key, value)
        # No address: the table takes the node's address from its instances.
        nodes = tuple(Node(name, self.source.datacenter, meta=meta)
                      for name, meta in sorted(metas.items()))
        return View(tuple(instances), nodes)
