"""The Docker source: serves a Docker engine's running containers, named as
registrator names them (README.md in this package has the whole design).

A run is a series of sessions. Each one pings the engine, subscribes to its
event stream, lists and inspects every running container (the events that
arrive meanwhile are applied on top), swaps the fresh state in, publishes it
and reports the source ``UP``; then it follows the events, pinging the engine
every few seconds, until the stream ends or a request fails. The source then
reports ``STALE`` (the last view keeps serving), waits with the shared
backoff and starts a new session: the engine replays nothing missed while
away, so only a full listing is a view it may publish. Imports: ``model``,
``sources`` (backoff, base, publisher, docker.*).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from dnsd.model import View
from dnsd.sources.backoff import Backoff
from dnsd.sources.base import Sink, SourceState
from dnsd.sources.docker.engine import Engine, EngineUnavailable, Subscription
from dnsd.sources.docker.follow import Follower
from dnsd.sources.docker.naming import ContainerInstances, NamingSettings, Problem, build_view
from dnsd.sources.publisher import Publisher

log = logging.getLogger("dnsd.docker")

DEBOUNCE = 0.002
"""Seconds of quiet after a change before a view is published: a burst (every
container of a Compose project stopping) becomes one swap."""
MAX_DELAY = 0.03
"""Under steady churn, publish at least this often."""


@dataclass(frozen=True, slots=True)
class DockerSettings:
    """Everything the Docker source runs with (built from the configuration by
    ``sources.registry``; tests shorten the waits)."""

    url: str                          # unix:///var/run/docker.sock or tcp://HOST:PORT
    naming: NamingSettings
    timeout: float = 10.0             # seconds for a list or an inspect
    ping_interval: float = 5.0        # how often a followed engine is asked if it lives
    ping_timeout: float = 3.0
    recheck_interval: float = 1.0     # re-reading paused and starting containers
    concurrency: int = 8              # inspects in flight
    max_instances: int = 1024         # per container
    backoff_base: float = 0.25
    backoff_cap: float = 2.0         # a retry is one ping: cheap, and the engine is near


EngineFactory = Callable[[DockerSettings], Engine]


def docker_engine(settings: DockerSettings) -> Engine:
    """The real engine client (docker-py), imported only when a source runs."""
    from dnsd.sources.docker.client import DockerEngine

    return DockerEngine(settings.url, settings.naming, timeout=settings.timeout,
                        ping_timeout=settings.ping_timeout, concurrency=settings.concurrency,
                        max_instances=settings.max_instances)


class DockerSource:
    """Watches one Docker engine and publishes its containers as a view."""

    def __init__(self, settings: DockerSettings, *, engine: EngineFactory = docker_engine,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.url = settings.url
        self._engine_factory = engine
        self._rng = rng or random.Random()
        self._publisher: Publisher | None = None
        self._follower: Follower | None = None   # the session whose view is served
        self._counters: dict[str, int] = {
            "events": 0, "inspects": 0, "rechecks": 0, "unreadable": 0, "relists": 0,
            "losses": 0, "warnings": 0}
        self._publishes_before = 0

    @property
    def name(self) -> str:
        return f"docker:{self.url}"

    @property
    def counters(self) -> dict[str, int]:
        """Event counts for ``dnsd_source_events`` (read at scrape time)."""
        current = self._publisher.publishes if self._publisher is not None else 0
        return {**self._counters, "publishes": self._publishes_before + current}

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "not running"
        return self._publisher

    # --- the run loop --------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        publisher = self._publisher = Publisher(
            sink, self.name, self._view, log=log, debounce=DEBOUNCE, max_delay=MAX_DELAY)
        self._follower = None
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_cap, self._rng)
        try:
            while True:
                try:
                    await self._session(backoff)
                except EngineUnavailable as exc:
                    self._lost(str(exc))
                await asyncio.sleep(backoff.next())
        finally:
            publisher.close()
            self._publishes_before += publisher.publishes
            self._publisher = None

    def _lost(self, reason: str) -> None:
        if self.publisher.report(SourceState.STALE, f"Docker engine {self.url}: {reason}",
                                 key="lost"):
            self._counters["losses"] += 1
            served = "serving the last view" if self._follower is not None else "nothing served"
            log.warning("docker %s: %s; %s, retrying", self.url, reason, served)
        else:
            log.debug("docker %s: still unreachable: %s", self.url, reason)

    async def _session(self, backoff: Backoff) -> None:
        """One connection: sync fully, then follow until the engine is lost."""
        settings = self.settings
        engine = self._engine_factory(settings)
        follower = Follower(engine, changed=self._changed, report=self._report,
                            counters=self._counters, recheck_interval=settings.recheck_interval)
        subscription: Subscription | None = None
        pinger: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        try:
            await engine.ping()
            started = loop.time()
            subscription = await engine.subscribe(follower.on_event)
            subscription.ended.add_done_callback(
                lambda ended: follower.fail(ended.result() if not ended.cancelled()
                                            else "event stream cancelled"))
            self._counters["relists"] += 1
            listed = await engine.list_running()
            await follower.sync(listed)
            # The complete new state replaces the last session's, in one step.
            recovered = self.publisher.state is SourceState.STALE
            self._follower = follower
            self.publisher.flush()
            self.publisher.report(SourceState.UP, key="up")
            backoff.reset()
            serving = sum(len(c.instances) for c in follower.containers.values())
            log.info("docker %s: %s in %.3f s: %d running containers, %d instances", self.url,
                     "back" if recovered else "synced", loop.time() - started,
                     len(follower.containers), serving)
            pinger = asyncio.create_task(self._ping(engine, follower))
            reason = await follower.lost
            raise EngineUnavailable(reason)
        finally:
            if pinger is not None:
                pinger.cancel()
            follower.close()
            if subscription is not None:
                subscription.close()
            engine.close()

    async def _ping(self, engine: Engine, follower: Follower) -> None:
        """An engine that keeps its connections open and never answers leaves
        the event stream silent forever: ask it something every few seconds."""
        while True:
            await asyncio.sleep(self.settings.ping_interval)
            try:
                await asyncio.wait_for(engine.ping(), self.settings.ping_timeout * 2)
            except (EngineUnavailable, TimeoutError) as exc:
                follower.fail(f"ping: {exc or 'timed out'}")
                return

    # --- publishing ---------------------------------------------------------------------

    def _view(self) -> View | None:
        follower = self._follower
        if follower is None:
            return None
        return build_view(follower.containers.values())

    def _changed(self, event_at: float | None) -> None:
        """The view changed; ``event_at`` is when the event behind it reached
        dnsd, which ``dnsd_propagation_seconds`` measures from."""
        if self._publisher is not None:
            if event_at is not None:
                self._publisher.observe(event_at)
            self._publisher.changed()

    def _report(self, result: ContainerInstances) -> None:
        """Log what one container's data made dnsd ignore: once per container
        and problem (a restart or a re-read is not news)."""
        publisher = self._publisher
        if publisher is None:
            return
        # One line per container and label (or field): a SERVICE_TAGS of
        # thousands of bad tags is one problem to fix, not thousands of lines.
        by_source: dict[str, list[Problem]] = {}
        for problem in result.problems:
            by_source.setdefault(problem.source, []).append(problem)
        for source, problems in by_source.items():
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            if publisher.warn_once((result.container_id, source), "docker: %s%s",
                                   problems[0], more):
                self._counters["warnings"] += 1
        if result.reason.startswith("no address"):
            publisher.warn_once((result.container_id, "reason", result.reason),
                                "docker: container %s is not served: %s", result.container,
                                result.reason)
        elif not result.instances and result.reason:
            log.debug("docker: container %s is not served: %s", result.container, result.reason)
