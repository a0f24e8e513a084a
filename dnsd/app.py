"""The app: wires config, sources, table, answerer, forwarder, handler and
servers together, and runs the lifecycle (start, reload on SIGHUP, graceful
shutdown on SIGTERM/SIGINT). The only module that knows every other one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from dnsd import sdnotify
from dnsd.answer import Answerer, ZoneSettings
from dnsd.config import Config
from dnsd.errors import DnsdError, StateFileError
from dnsd.forward import Forwarder
from dnsd.handler import Handler
from dnsd.metrics import MetricsInputs, MetricsServer
from dnsd.model import View
from dnsd.ratelimit import RateLimiter
from dnsd.server import Tasks, TcpLimits, TcpProtocol, UdpSocket
from dnsd.sources.base import Source, SourceState
from dnsd.sources.static import StaticSource
from dnsd.state import StateSaver, load_views
from dnsd.stats import QueryStats
from dnsd.table import Snapshot, Table

log = logging.getLogger("dnsd")

SHUTDOWN_GRACE = 2.0
SOURCE_RESTART_DELAY = 1.0


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class SourceStatus:
    state: SourceState = SourceState.SYNCING
    reason: str = ""
    has_data: bool = False  # a view (live or restored from --state-dir) is being served


@dataclass
class Listener:
    host: str
    port: int
    udp: UdpSocket
    tcp: asyncio.AbstractServer


@dataclass
class App:
    """One dnsd process."""

    config: Config
    worker: int = 0  # index among --workers processes; worker 0 serves --metrics
    # Re-reads flags, environment and config file on SIGHUP (None: static files only).
    reload_config: Callable[[], Config] | None = None
    table: Table = field(init=False)
    statuses: dict[str, SourceStatus] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = self.config
        fixed = cfg.datacenter_set or cfg.consul is None
        self.table = Table(cfg.datacenter, datacenter_fixed=fixed)
        self.tasks = Tasks()
        self.tcp_limits = TcpLimits()
        self.static_sources = [StaticSource(path, cfg.node_name, cfg.datacenter)
                               for path in cfg.static]
        self.sources: list[Source] = [*self.static_sources, *self._registry_sources()]
        for source in self.sources:
            self.statuses[source.name] = SourceStatus()
        self.forwarder = self._forwarder()
        self.answerer = Answerer(zone_settings(cfg))
        self.stats = QueryStats()
        self.handler = Handler(self.table, self.answerer, self.forwarder,
                               cfg.allow_recursion, udp_answer_limit=cfg.udp_answer_limit,
                               log_queries=cfg.query_log, stats=self.stats,
                               timed=cfg.metrics is not None,
                               rate_limiter=RateLimiter(cfg.rate_limit) if cfg.rate_limit
                               else None)
        self.metrics: MetricsServer | None = None
        self.saver: StateSaver | None = None
        self.state_error = ""
        self._source_tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.table.subscribe(self._swapped)

    # --- construction helpers ------------------------------------------------

    def _registry_sources(self) -> list[Source]:
        sources: list[Source] = []
        if self.config.consul:
            from dnsd.sources.consul import ConsulSource

            sources.append(ConsulSource(self.config))
        if self.config.zookeeper:
            from dnsd.sources.zookeeper import ZooKeeperSource

            sources.append(ZooKeeperSource(self.config))
        return sources

    def _forwarder(self) -> Forwarder | None:
        forwarder = Forwarder(self.config)
        return forwarder if forwarder.enabled else None

    # --- the Sink the sources report to -------------------------------------

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

    def _swapped(self, snapshot: Snapshot) -> None:
        log.info("table version %d: %d services, %d instances, %d nodes",
                 snapshot.version, len(snapshot.services), snapshot.instance_count,
                 len(snapshot.nodes))

    @property
    def ready(self) -> tuple[bool, str]:
        """Ready once every source has served a view (live or restored)."""
        waiting = [name for name, s in self.statuses.items() if not s.has_data]
        if waiting:
            return False, "waiting for " + ", ".join(sorted(waiting))
        return True, "ok"

    # --- lifecycle ------------------------------------------------------------

    def load_static(self) -> None:
        """Read the services files now: a bad one stops startup (raises)."""
        for source in self.static_sources:
            self.publish(source.name, source.load())

    def metrics_inputs(self) -> MetricsInputs:
        return MetricsInputs(
            stats=self.stats, table=self.table, statuses=lambda: self.statuses,
            ready=lambda: self.ready, before_scrape=self.handler.flush_stats,
            forwarder_stats=lambda: getattr(self.forwarder, "stats", None),
            upstreams=lambda: [] if self.forwarder is None else [
                (str(u), not u.down, u.queries, u.failures)
                for u in self.forwarder.upstreams.values()],
            forward_cache_entries=lambda: None if self.forwarder is None
            else len(self.forwarder.cache),
            source_counters=lambda: {s.name: dict(getattr(s, "counters", {}))
                                     for s in self.sources if getattr(s, "counters", None)})

    def restore_state(self) -> None:
        """``--state-dir``: serve the saved views of the registry sources until
        they sync, and save the table after each change (worker 0 only)."""
        if not self.config.state_dir:
            return
        registry = {s.name for s in self.sources if s not in self.static_sources}
        try:
            saved = load_views(self.config.state_dir)
        except StateFileError as exc:
            log.warning("%s", exc)
            self.state_error = str(exc)
            saved = {}
        restored = {name: view for name, view in saved.items() if name in registry}
        if restored:
            for name in restored:
                self.statuses[name].has_data = True
            self.table.publish_many(restored)
            log.info("serving the saved table of %s until it syncs",
                     ", ".join(sorted(restored)))
        if self.worker == 0 and registry:
            saver = StateSaver(self.config.state_dir, lambda: {
                name: view for name, view in self.table.views.items() if name in registry})
            self.saver = saver
            self.table.subscribe(saver.notify)

    async def start(self) -> None:
        self.load_static()
        self.restore_state()  # before binding: the first answers already use it
        await self._bind_all()
        if self.config.metrics is not None and self.worker == 0:
            self.metrics = MetricsServer(self.metrics_inputs())
            host, port = await self.metrics.start(*self.config.metrics)
            log.info("metrics on http://%s/metrics", format_hostport(host, port))
        if self.forwarder is not None:
            await self.forwarder.start()
        for source in self.sources:
            self._source_tasks.append(asyncio.create_task(self._supervise(source)))
        sdnotify.notify("READY=1")  # systemd Type=notify: listeners are bound and answering

    async def _supervise(self, source: Source) -> None:
        """Run a source forever; a source that crashes is logged and restarted."""
        while True:
            try:
                await source.run(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("source %s failed; restarting it", source.name)
                self.set_state(source.name, SourceState.STALE, "internal error")
                await asyncio.sleep(SOURCE_RESTART_DELAY)

    async def _bind_all(self) -> None:
        for host, port in self.config.listen:
            listener = await self._bind(host, port)
            self.listeners.append(listener)
            log.info("listening on %s (udp, tcp)", format_hostport(listener.host, listener.port))

    async def _bind(self, host: str, port: int) -> Listener:
        """UDP and TCP on the same address and port; port 0 picks one free for both."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):
            udp_sock = _socket(family, socket.SOCK_DGRAM, self.config.workers > 1,
                               self.config.freebind)
            try:
                udp_sock.bind((host, port))
            except OSError as exc:
                udp_sock.close()
                raise OSError(exc.errno, f"cannot listen on udp "
                              f"{format_hostport(host, port)}: {exc.strerror}") from None
            bound = udp_sock.getsockname()[1]
            tcp_sock = _socket(family, socket.SOCK_STREAM, self.config.workers > 1,
                               self.config.freebind)
            try:
                tcp_sock.bind((host, bound))
            except OSError as exc:
                tcp_sock.close()
                udp_sock.close()
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    continue
                raise OSError(exc.errno, f"cannot listen on tcp "
                              f"{format_hostport(host, bound)}: {exc.strerror}") from None
            tcp_sock.listen(1024)
            udp = UdpSocket(udp_sock, self.handler.handle, self.tasks,
                            pktinfo=ipaddress.ip_address(host).is_unspecified)
            tcp = await loop.create_server(
                lambda: TcpProtocol(self.handler.handle, self.tasks, self.tcp_limits),
                sock=tcp_sock)
            return Listener(host, bound, udp, tcp)
        raise AssertionError("unreachable")

    def reload(self) -> None:
        """SIGHUP: re-read the configuration and the services files.

        Answer settings, the services file list, recursion and rate limits and
        logging apply at once; listen addresses, registries and upstreams need
        a restart, and a changed one is logged as such. A bad configuration is
        logged and the running one kept. No query is dropped: the loop only
        swaps references between two packets.
        """
        log.info("SIGHUP: reloading configuration and services files")
        if self.reload_config is not None:
            try:
                new = self.reload_config()
            except DnsdError as exc:
                log.error("SIGHUP: %s; keeping the running configuration", exc)
                new = self.config
            if new != self.config:
                self._apply(new)
        for source in self.static_sources:
            source.reload(self)

    def _apply(self, new: Config) -> None:
        old = self.config
        for name in RESTART_ONLY:
            if getattr(new, name) != getattr(old, name):
                log.warning("SIGHUP: %s changed; restart dnsd to apply it", name)
        logging.getLogger().setLevel(getattr(logging, new.log_level.upper()))
        if new.static != old.static:
            keep = {s.path: s for s in self.static_sources}
            fresh = []
            for path in new.static:
                source = keep.pop(path, None) or StaticSource(path, new.node_name,
                                                              new.datacenter)
                fresh.append(source)
            for gone in keep.values():
                self.sources.remove(gone)
                self.statuses.pop(gone.name, None)
                self.table.remove(gone.name)
            for source in fresh:
                if source not in self.static_sources:
                    self.sources.append(source)
                    self.statuses[source.name] = SourceStatus()
                    self._source_tasks.append(asyncio.create_task(self._supervise(source)))
            self.static_sources = fresh
        self.answerer = Answerer(zone_settings(new))
        self.handler.reconfigure(
            answerer=self.answerer, allow_recursion=new.allow_recursion,
            udp_answer_limit=new.udp_answer_limit, log_queries=new.query_log,
            rate_limiter=RateLimiter(new.rate_limit) if new.rate_limit else None)
        self.config = dataclasses.replace(
            new, **{name: getattr(old, name) for name in RESTART_ONLY})
        log.info("SIGHUP: configuration applied")

    def stop(self) -> None:
        self._stop.set()

    async def serve(self, started: Callable[[App], None] | None = None) -> None:
        """Start, run until SIGTERM/SIGINT (or :meth:`stop`), then shut down."""
        loop = asyncio.get_running_loop()
        # Handlers first: a signal that arrives while starting must not kill
        # the process with the default action (tests and init systems send early).
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()  # a bad file or address raises here, before any cleanup is due
        try:
            if started is not None:
                started(self)
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.shutdown()

    async def shutdown(self) -> None:
        """Close listeners, let in-flight replies finish briefly, then cancel the rest."""
        log.info("shutting down")
        sdnotify.notify("STOPPING=1")
        for listener in self.listeners:
            listener.udp.close()
            listener.tcp.close()
        await self.tasks.drain(SHUTDOWN_GRACE)
        for task in self._source_tasks:
            task.cancel()
        await asyncio.gather(*self._source_tasks, return_exceptions=True)
        if self.saver is not None:
            await self.saver.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.metrics is not None:
            await self.metrics.close()


# Settings a running process cannot change: they need a restart.
RESTART_ONLY = ("listen", "freebind", "workers", "consul", "consul_token", "consul_ca",
                "consul_datacenters", "zookeeper", "zookeeper_datacenter", "upstream",
                "upstream_for", "upstream_policy", "state_dir", "metrics", "domain",
                "alt_domain", "datacenter", "datacenter_set", "node_name")


def zone_settings(cfg: Config) -> ZoneSettings:
    ns_addresses = tuple(host for host, _ in cfg.listen
                         if not ipaddress.ip_address(host).is_unspecified)
    return ZoneSettings(domains=cfg.domains, ttl=cfg.ttl, negative_ttl=cfg.negative_ttl,
                        only_passing=cfg.only_passing, ns_addresses=ns_addresses)


IP_FREEBIND = 15  # Linux <linux/in.h>; the socket module does not export it


def _socket(family: int, kind: int, reuse_port: bool, freebind: bool = False
            ) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if freebind:
            # Bind an address the host does not have yet (a bridge that appears
            # later); the socket receives as soon as it does. Works for IPv6 too.
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # [::]:53 serves IPv6 only, so 0.0.0.0:53 can be listed beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock

