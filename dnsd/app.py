"""The app: wires config, sources, table, answerer, forwarder, handler and
servers together, and runs the lifecycle (start, reload on SIGHUP, graceful
shutdown on SIGTERM/SIGINT). The only module that knows every other one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from dnsd import logs
from dnsd.answer import Answerer, ZoneSettings
from dnsd.config import RESTART_ONLY, Config
from dnsd.errors import DnsdError, StateFileError
from dnsd.forward import Forwarder, ForwardSettings, ForwardTiming
from dnsd.handler import Handler
from dnsd.hostport import format_hostport
from dnsd.listen import Listener, bind_error, bind_pair, listen
from dnsd.metrics import MetricsInputs, MetricsServer
from dnsd.model import View
from dnsd.ratelimit import RateLimiter
from dnsd.server import Tasks, TcpLimits, connection_cap
from dnsd.signals import STOP as STOP_SIGNALS
from dnsd.signals import PendingSignals
from dnsd.sources.base import Source, SourceState
from dnsd.sources.static import StaticSource
from dnsd.state import StateSaver, load_views
from dnsd.stats import QueryStats
from dnsd.table import Snapshot, Table

log = logging.getLogger("dnsd")

SHUTDOWN_GRACE = 2.0
SOURCE_RESTART_DELAY = 1.0


@dataclass
class SourceStatus:
    state: SourceState = SourceState.SYNCING
    reason: str = ""
    has_data: bool = False  # a view (live or restored from --state-dir) is being served


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
        # Raises the open-files limit where allowed; never more connections than fit.
        self.tcp_limits = TcpLimits(max_connections=connection_cap())
        self.static_sources = [StaticSource(path, cfg.node_name, cfg.datacenter)
                               for path in cfg.static]
        self.sources: list[Source] = [*self.static_sources, *self._registry_sources()]
        for source in self.sources:
            self.statuses[source.name] = SourceStatus()
        # Until a registry has been heard, a name it may know is not called absent.
        self.table.expect(*(s.name for s in self.sources if s not in self.static_sources))
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
        self.metrics_address: tuple[str, int] = ("", 0)
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
        if self.config.no_forward:
            return None
        forwarder = Forwarder(forward_settings(self.config))
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
                                     for s in self.sources if getattr(s, "counters", None)},
            views=lambda: self.table.views)

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
        """Read the services files, restore the saved table, bind every socket,
        then say where dnsd serves and start the sources. A bad file or an
        address that cannot be bound raises a one-line DnsdError before any
        line says dnsd is serving, and leaves nothing open."""
        self.load_static()
        self.restore_state()  # before binding: the first answers already use it
        try:
            await self._bind_all()
        except BaseException:
            for listener in self.listeners:
                listener.close()
            self.listeners.clear()
            if self.metrics is not None:
                await self.metrics.close()
            raise
        for listener in self.listeners:
            log.info("listening on %s (udp, tcp)%s",
                     format_hostport(listener.host, listener.port),
                     " (IPv6 only: add --listen 0.0.0.0:PORT for IPv4)"
                     if listener.host == "::" else "")
        if self.metrics is not None:
            host, port = self.metrics_address
            log.info("metrics on http://%s/metrics", format_hostport(host, port))
        if not self.sources:
            log.warning("no source (--static, --consul, --zookeeper): every service name "
                        "is NXDOMAIN; dnsd only forwards")
        if self.forwarder is not None:
            await self.forwarder.start()
        for source in self.sources:
            self._source_tasks.append(asyncio.create_task(self._supervise(source)))

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
        """Bind every DNS address, then the metrics one; raise ListenError if one fails."""
        pairs = []
        try:
            for host, port in self.config.listen:
                pairs.append(bind_pair(host, port, reuse_port=self.config.workers > 1))
        except BaseException:
            for udp, tcp in pairs:
                udp.close()
                tcp.close()
            raise
        for (host, _), pair in zip(self.config.listen, pairs, strict=True):
            self.listeners.append(await listen(
                host, 0, self.handler.handle, self.tasks, self.tcp_limits, bound=pair))
        if self.config.metrics is not None and self.worker == 0:
            self.metrics = MetricsServer(self.metrics_inputs())
            host, port = self.config.metrics
            try:
                self.metrics_address = await self.metrics.start(host, port)
            except OSError as exc:
                self.metrics = None
                raise bind_error("--metrics", host, port, exc) from None

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
        logs.apply_levels(new.log_level, new.query_log)
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

    async def serve(self, started: Callable[[App], None] | None = None,
                    pending: PendingSignals | None = None) -> None:
        """Start, run until SIGTERM/SIGINT (or :meth:`stop`), then shut down.

        ``pending`` holds signals that arrived before the loop could take them
        (see ``dnsd.signals``): a stop among them shuts down right after start,
        a SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        # Handlers first: a signal that arrives while starting must not kill
        # the process with the default action (tests and init systems send early).
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()  # a bad file or address raises here, before any cleanup is due
        try:
            for early in pending.take() if pending is not None else ():
                if early in STOP_SIGNALS:
                    self.stop()
                else:
                    loop.call_soon(self.reload)
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
        for listener in self.listeners:
            listener.stop()
        await self.tasks.drain(SHUTDOWN_GRACE)  # replies in flight still go out
        for listener in self.listeners:
            listener.close()
        for task in self._source_tasks:
            task.cancel()
        await asyncio.gather(*self._source_tasks, return_exceptions=True)
        if self.saver is not None:
            await self.saver.close()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.metrics is not None:
            await self.metrics.close()


def zone_settings(cfg: Config) -> ZoneSettings:
    ns_addresses = tuple(host for host, _ in cfg.listen
                         if not ipaddress.ip_address(host).is_unspecified)
    return ZoneSettings(domains=cfg.domains, ttl=cfg.ttl, negative_ttl=cfg.negative_ttl,
                        only_passing=cfg.only_passing, ns_addresses=ns_addresses,
                        node_ttl=cfg.node_ttl, service_ttl=cfg.service_ttl,
                        a_record_limit=cfg.a_record_limit, soa_refresh=cfg.soa_refresh,
                        soa_retry=cfg.soa_retry, soa_expire=cfg.soa_expire,
                        node_meta_txt=cfg.node_meta_txt,
                        translate_wan_addrs=cfg.translate_wan_addrs)


def forward_settings(cfg: Config) -> ForwardSettings:
    """Forwarding's own settings, taken from the whole configuration."""
    # --recursor-timeout is the per-try UDP timeout (Consul's recursor_timeout);
    # TCP gets its handshake on top, and the whole attempt room for one try more.
    base = ForwardTiming()
    timing = dataclasses.replace(
        base, try_timeout=cfg.recursor_timeout,
        tcp_timeout=cfg.recursor_timeout + base.tcp_timeout - base.try_timeout,
        deadline=max(base.deadline, cfg.recursor_timeout + base.tcp_timeout))
    return ForwardSettings(upstreams=cfg.upstream, upstream_for=cfg.upstream_for,
                           policy=cfg.upstream_policy, listen=cfg.listen, domains=cfg.domains,
                           timing=timing)
