"""The app: runs one dnsd process's lifecycle. It starts the parts ``build``
wired (read the services files, restore the saved table, bind, start the
sources), applies SIGHUP (the configuration's reloadable part, the services
files), and shuts down gracefully on SIGTERM/SIGINT (stop taking queries, let
replies in flight go out, then stop the rest).

It builds nothing itself beyond what the lifecycle needs: the parts come from
``build`` (or from the caller), the Sink is ``status.StatusBoard``, sockets come
from ``listen``. Imports: ``answer``, ``build``, ``config``, ``errors``,
``forward``, ``handler``, ``hostport``, ``listen``, ``logs``, ``metrics``,
``sdnotify``, ``server``, ``signals``, ``sources``, ``state``, ``status``,
``table``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import gc
import logging
import signal
from collections.abc import Callable

from dnsd import build, logs, sdnotify
from dnsd.answer import Answerer
from dnsd.config import RESTART_ONLY, Config
from dnsd.errors import DnsdError, ServicesFileError, StateFileError
from dnsd.forward import Forwarder
from dnsd.handler import Handler
from dnsd.hostport import format_hostport
from dnsd.listen import Listener, bind_error, bind_pair, listen
from dnsd.metrics import MetricsInputs, MetricsServer
from dnsd.signals import STOP as STOP_SIGNALS
from dnsd.signals import PendingSignals
from dnsd.sources.backoff import Backoff
from dnsd.sources.base import Source, SourceState
from dnsd.sources.static import StaticSource
from dnsd.state import StateSaver, load_views
from dnsd.status import SourceStatus, StatusBoard
from dnsd.table import Table

log = logging.getLogger("dnsd")


def release_memory() -> None:
    """Hand memory freed after a large parse back to the system: a services
    file of 100k entries leaves tens of megabytes of freed parser objects in
    the C allocator's heap, which glibc keeps unless asked (``malloc_trim``).
    A no-op where there is no glibc."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)

SHUTDOWN_GRACE = 2.0
SOURCE_RESTART_DELAY = 1.0


@dataclasses.dataclass
class App:
    """One dnsd process."""

    config: Config
    worker: int = 0  # index among --workers processes; worker 0 serves --metrics
    # Re-reads flags, environment and config file on SIGHUP (None: static files only).
    reload_config: Callable[[], Config] | None = None
    # How long a crashed source waits before it runs again (grows while it keeps crashing).
    restart_backoff: Callable[[], Backoff] = lambda: Backoff(SOURCE_RESTART_DELAY, 60.0)
    parts: build.Parts | None = None  # what to run; built from ``config`` when not given
    listeners: list[Listener] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.parts is None:
            self.parts = build.build(self.config)
        self.metrics: MetricsServer | None = None
        self.metrics_address: tuple[str, int] = ("", 0)
        self.saver: StateSaver | None = None
        self.state_error = ""
        self._source_tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        for source in self.sources:
            self.board.add(source.name)

    # --- the parts, by name ---------------------------------------------------

    @property
    def _parts(self) -> build.Parts:
        assert self.parts is not None
        return self.parts

    @property
    def table(self) -> Table:
        return self._parts.table

    @property
    def board(self) -> StatusBoard:
        return self._parts.board

    @property
    def handler(self) -> Handler:
        return self._parts.handler

    @property
    def forwarder(self) -> Forwarder | None:
        return self._parts.forwarder

    @property
    def sources(self) -> list[Source]:
        return self._parts.sources

    @property
    def statuses(self) -> dict[str, SourceStatus]:
        return self.board.statuses

    @property
    def ready(self) -> tuple[bool, str]:
        return self.board.ready

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Read the services files, restore the saved table, bind every socket,
        then say where dnsd serves and start the sources. A bad file or an
        address that cannot be bound raises a one-line DnsdError before any
        line says dnsd is serving, and leaves nothing open."""
        for static in self._parts.static_sources:  # a bad file stops the start
            self.board.publish(static.name, static.load())
        self._restore_state()  # before binding: the first answers already use it
        release_memory()  # what parsing the files and the saved table left behind
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
            log.info("metrics on http://%s/metrics", format_hostport(*self.metrics_address))
        if not self.sources:
            log.warning("no source (--static, --consul, --zookeeper): every service name "
                        "is NXDOMAIN; dnsd only forwards")
        if self.forwarder is not None:
            await self.forwarder.start()
        for source in self.sources:
            self._run(source)
        sdnotify.notify("READY=1")  # systemd Type=notify: listeners are bound and answering

    def _run(self, source: Source) -> None:
        self._source_tasks[source.name] = asyncio.create_task(self._supervise(source))

    def _restore_state(self) -> None:
        """``--state-dir``: serve the saved views of the registry sources until
        they sync, and save the table after each change (worker 0 only)."""
        if not self.config.state_dir:
            return
        registry = {s.name for s in self._parts.registry_sources}
        try:
            saved = load_views(self.config.state_dir)
        except StateFileError as exc:
            log.warning("%s", exc)
            self.state_error = str(exc)
            saved = {}
        restored = {name: view for name, view in saved.items() if name in registry}
        if restored:
            self.board.restored(restored)
            log.info("serving the saved table of %s until it syncs",
                     ", ".join(sorted(restored)))
        if self.worker == 0 and registry:
            table = self.table
            saver = StateSaver(self.config.state_dir, lambda: {
                name: view for name, view in table.views.items() if name in registry})
            self.saver = saver
            table.subscribe(saver.notify)

    async def _supervise(self, source: Source) -> None:
        """Run a source forever; a source that crashes is logged and restarted,
        later each time while it keeps crashing (its traceback logged once)."""
        backoff = self.restart_backoff()
        loop = asyncio.get_running_loop()
        last = ""
        while True:
            started = loop.time()
            try:
                await source.run(self.board)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if loop.time() - started > backoff.cap:
                    backoff.reset()  # it ran well for a while: this is a new failure
                delay = backoff.next()
                if repr(exc) == last:
                    log.error("source %s failed again (%r); restarting it in %.2f s",
                              source.name, exc, delay)
                else:
                    log.exception("source %s failed; restarting it in %.2f s",
                                  source.name, delay)
                last = repr(exc)
                self.board.set_state(source.name, SourceState.STALE, "internal error")
                await asyncio.sleep(delay)

    async def _bind_all(self) -> None:
        """Bind every DNS address, then the metrics one; raise ListenError if one fails."""
        pairs = []
        try:
            for host, port in self.config.listen:
                pairs.append(bind_pair(host, port, reuse_port=self.config.workers > 1,
                                       freebind=self.config.freebind))
        except BaseException:
            for udp, tcp in pairs:
                udp.close()
                tcp.close()
            raise
        parts = self._parts
        for (host, _), pair in zip(self.config.listen, pairs, strict=True):
            self.listeners.append(await listen(
                host, 0, parts.handler.handle, parts.tasks, parts.tcp_limits, bound=pair,
                caches=parts.handler.udp_caches))
        if self.config.metrics is not None and self.worker == 0:
            self.metrics = MetricsServer(self.metrics_inputs())
            host, port = self.config.metrics
            try:
                self.metrics_address = await self.metrics.start(host, port)
            except OSError as exc:
                self.metrics = None
                raise bind_error("--metrics", host, port, exc) from None

    def metrics_inputs(self) -> MetricsInputs:
        parts = self._parts
        forwarder = parts.forwarder
        return MetricsInputs(
            stats=parts.stats, table=parts.table, statuses=lambda: self.board.statuses,
            ready=lambda: self.board.ready, before_scrape=parts.handler.flush_stats,
            forwarder_stats=lambda: getattr(forwarder, "stats", None),
            upstreams=lambda: [] if forwarder is None else [
                (str(u), not u.down, u.queries, u.failures)
                for u in forwarder.upstreams.values()],
            forward_cache_entries=lambda: None if forwarder is None else len(forwarder.cache),
            source_counters=lambda: {s.name: dict(getattr(s, "counters", {}))
                                     for s in self.sources if getattr(s, "counters", None)},
            source_gauges=lambda: {s.name: tuple(getattr(s, "gauges", ()))
                                   for s in self.sources if getattr(s, "gauges", None)},
            views=lambda: parts.table.views)

    # --- SIGHUP -----------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the configuration and the services files.

        Options marked reloadable in the options table (answer settings, the
        services file list, recursion and rate limits, logging) apply at once;
        the others need a restart, and a changed one is logged as such. A bad
        configuration is logged and the running one kept. No query is dropped:
        the loop only swaps references between two packets.
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
        for source in self._parts.static_sources:
            source.request_reload()

    def _apply(self, new: Config) -> None:
        old = self.config
        for name in RESTART_ONLY:
            if getattr(new, name) != getattr(old, name):
                log.warning("SIGHUP: %s changed; restart dnsd to apply it", name)
        # What a running process keeps: the restart-only settings of ``old``.
        new = dataclasses.replace(new, **{name: getattr(old, name) for name in RESTART_ONLY})
        logs.apply_levels(new.log_level, new.query_log)
        if new.static != old.static:
            self._replace_static(build.static_sources(new))
        parts = self._parts
        parts.answerer = Answerer(build.zone_settings(new))
        parts.handler.reconfigure(
            answerer=parts.answerer, allow_recursion=new.allow_recursion,
            udp_answer_limit=new.udp_answer_limit, log_queries=new.query_log,
            rate_limiter=build.rate_limiter(new))
        self.config = new
        log.info("SIGHUP: configuration applied")

    def _replace_static(self, wanted: list[StaticSource]) -> None:
        """Start the services files newly named, stop the ones no longer named."""
        parts = self._parts
        running = {s.name: s for s in parts.static_sources}
        fresh = [running.pop(s.name, s) for s in wanted]
        for gone in running.values():
            task = self._source_tasks.pop(gone.name, None)
            if task is not None:
                task.cancel()
            self.board.remove(gone.name)
        for source in fresh:
            if source.name not in self._source_tasks:
                self.board.add(source.name)
                # Served as soon as the new configuration is; a bad file is
                # reported by the source's own task.
                with contextlib.suppress(ServicesFileError):
                    self.board.publish(source.name, source.load())
                self._run(source)
        parts.static_sources = fresh

    # --- running and stopping -------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def serve(self, started: Callable[[App], None] | None = None,
                    pending: PendingSignals | None = None) -> None:
        """Start, run until SIGTERM/SIGINT (or :meth:`stop`), then shut down.

        ``pending`` holds signals that arrived before the loop could take them
        (see ``dnsd.signals``): a stop among them shuts down right after start,
        a SIGHUP reloads. Installs signal handlers: for the main thread of a
        process that is dnsd; an embedding program calls :meth:`start` and
        :meth:`shutdown` itself (see ``dnsd.embed``)."""
        loop = asyncio.get_running_loop()
        # Handlers first: a signal that arrives while starting must not kill
        # the process with the default action (tests and init systems send early).
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.start()  # a bad file or address raises here
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
            if self.listeners:
                await self.shutdown()

    async def shutdown(self) -> None:
        """Stop taking queries, let in-flight replies finish briefly, then stop
        the sources, save the table and close the rest."""
        log.info("shutting down")
        sdnotify.notify("STOPPING=1")
        parts = self._parts
        for listener in self.listeners:
            listener.stop()
        await parts.tasks.drain(SHUTDOWN_GRACE)  # replies in flight still go out
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        tasks = list(self._source_tasks.values())
        self._source_tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.saver is not None:
            await self.saver.close()
        if parts.forwarder is not None:
            await parts.forwarder.close()
        if self.metrics is not None:
            await self.metrics.close()
            self.metrics = None
