"""The Engine API through docker-py: the only module that imports ``docker``.

:class:`DockerEngine` implements ``engine.Engine`` for one session. docker-py
blocks, so every request runs on a client thread (``sources.threads``), each
thread with a client of its own (a ``requests`` session is not shared across
threads):

- a *probe* thread pings with a short timeout, and negotiates the API version
  once, which the other clients then use as is;
- up to ``concurrency`` *inspect* threads, which also name the containers
  (``engine.name_container``), so the loop only receives finished values;
- one *events* thread reads the event stream, which docker-py requests with no
  timeout at all, and hops each event to the loop; closing the subscription
  shuts the stream's socket, which ends the read at once. An engine that keeps
  the connection open and never answers is noticed by the ping instead.

Errors are mapped here: "no such container" is a container gone, another API
error a container unreadable, anything else the engine unavailable. Imports:
``docker``, ``sources.docker.engine``, ``sources.docker.naming``,
``sources.threads``.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Callable, Mapping
from typing import Any

import docker
from docker.errors import APIError, NotFound

from dnsd.sources.docker.engine import (
    CONTAINER_ACTIONS,
    NETWORK_ACTIONS,
    ContainerUnreadable,
    EngineUnavailable,
    Inspected,
    name_container,
)
from dnsd.sources.docker.naming import NamingSettings
from dnsd.sources.threads import ClientThreads, LoopHop, settle

EVENT_FILTERS = {"type": ["container", "network"],
                 "event": [*CONTAINER_ACTIONS, *NETWORK_ACTIONS]}

_ERRNO_TEXT = {
    errno.ENOENT: "no socket there (is the engine running?)",
    errno.ECONNREFUSED: "connection refused (is the engine running?)",
    errno.EACCES: "permission denied (dnsd's user may not use the engine's socket)",
    errno.ETIMEDOUT: "timed out",
}


def describe(exc: BaseException) -> str:
    """A short reason for a failed request, from the error docker-py and
    requests wrap around the system's (``('Connection aborted.',
    FileNotFoundError(2, ...))`` says "no socket there")."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ERRNO_TEXT:
            return _ERRNO_TEXT[current.errno]
        if "timed out" in str(current).lower() or "timeout" in type(current).__name__.lower():
            return "timed out"
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def connect(url: str, timeout: float, version: str | None) -> Any:
    """A docker-py client of ``url``; ``version`` None negotiates it (one request)."""
    # requests takes a float timeout; docker-py's hints say int.
    options: dict[str, Any] = {"timeout": timeout}
    try:
        return docker.APIClient(base_url=url, version=version or "auto", **options)
    except Exception as exc:
        raise EngineUnavailable(describe(exc)) from None


class _Subscription:
    """The event stream of one session (see ``engine.Subscription``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ended: asyncio.Future[str] = loop.create_future()
        self.hop = LoopHop(loop)
        self._lock = threading.Lock()
        self._stream: Any = None
        self._closed = False

    def attach(self, stream: Any) -> None:
        """On the events thread, once the engine accepted the request."""
        with self._lock:
            self._stream = stream
            closed = self._closed
        if closed:  # closed while the request was on its way
            self._shut(stream)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
        self.hop.close()
        if stream is not None:
            self._shut(stream)

    @staticmethod
    def _shut(stream: Any) -> None:
        # Shuts the socket under the reading thread, which then sees the end.
        try:
            stream.close()
        except Exception:  # already closed by the engine going away
            return


class DockerEngine:
    """One session's clients of one engine (``engine.Engine``)."""

    def __init__(self, url: str, naming: NamingSettings, *, timeout: float = 10.0,
                 ping_timeout: float = 3.0, concurrency: int = 8,
                 max_instances: int = 1024) -> None:
        self.url = url
        self._naming = naming
        self._timeout = timeout
        self._max_instances = max_instances
        self.version: str | None = None
        self._probe: ClientThreads[Any] = ClientThreads(self._probe_client, "docker-ping", 1)
        self._inspects: ClientThreads[Any] = ClientThreads(
            lambda: connect(url, timeout, self.version), "docker-inspect", 0, max(1, concurrency))
        self._events: ClientThreads[Any] = ClientThreads(
            lambda: connect(url, timeout, self.version), "docker-events", 0, 1)
        self._ping_timeout = ping_timeout

    def _probe_client(self) -> Any:
        client = connect(self.url, self._ping_timeout, None)
        self.version = str(client.api_version)
        return client

    @staticmethod
    def _guarded(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``fn`` with any failure but the source's own mapped to EngineUnavailable."""
        def job(client: Any) -> Any:
            try:
                return fn(client)
            except (EngineUnavailable, ContainerUnreadable):
                raise
            except Exception as exc:
                raise EngineUnavailable(describe(exc)) from None
        return job

    def ping(self) -> asyncio.Future[None]:
        def job(client: Any) -> None:
            client.ping()

        return self._probe.submit(self._guarded(job))

    def list_running(self) -> asyncio.Future[list[str]]:
        def job(client: Any) -> list[str]:
            listed = client.containers(quiet=True)
            return [entry["Id"] for entry in listed
                    if isinstance(entry, dict) and isinstance(entry.get("Id"), str)]

        return self._inspects.submit(self._guarded(job))

    def inspect(self, container_id: str) -> asyncio.Future[Inspected]:
        naming, limit = self._naming, self._max_instances

        def job(client: Any) -> Inspected:
            try:
                data = client.inspect_container(container_id)
            except NotFound:
                return Inspected(container_id, None)
            except APIError as exc:
                if exc.is_server_error():
                    raise EngineUnavailable(describe(exc)) from None
                raise ContainerUnreadable(describe(exc)) from None
            return name_container(container_id, data, naming, limit)

        return self._inspects.submit(self._guarded(job))

    async def subscribe(self, deliver: Callable[[Mapping[str, Any]], None]) -> _Subscription:
        loop = asyncio.get_running_loop()
        subscription = _Subscription(loop)
        accepted: asyncio.Future[None] = loop.create_future()
        hop = subscription.hop

        def follow(client: Any) -> str:
            stream = client.events(decode=True, filters=EVENT_FILTERS)
            subscription.attach(stream)
            hop(settle, accepted, None, None)
            for event in stream:
                hop(deliver, event)
            return "the engine ended the event stream"

        def finished(done: asyncio.Future[str]) -> None:
            if done.cancelled():
                reason = "event stream cancelled"
            elif done.exception() is not None:
                reason = f"event stream failed: {done.exception()}"
            else:
                reason = done.result()
            if not accepted.done():
                accepted.set_exception(EngineUnavailable(reason))
            if not subscription.ended.done():
                subscription.ended.set_result(reason)

        # The end is settled through the same hop as the events, so it comes
        # after the last of them.
        self._events.submit(self._guarded(follow)).add_done_callback(finished)
        try:
            await accepted
        except BaseException:
            subscription.close()
            raise
        return subscription

    def close(self) -> None:
        for pool in (self._probe, self._inspects, self._events):
            pool.close()
