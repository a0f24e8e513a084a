"""What the Docker source needs from an engine, as a narrow interface.

:class:`Engine` is the four requests the source makes (a ping, the list of
running containers, one container's inspect data already named into
instances, the event stream); ``client.DockerEngine`` implements it with
docker-py, and the unit tests with a fake. Every method hands its result to
the event loop; none blocks it. Failures come back as the two exceptions
below, never as a client library's own. Imports: ``sources.docker.naming``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dnsd.sources.docker.naming import (
    ContainerInstances,
    NamingSettings,
    Problem,
    container_instances,
)

# The engine's events that can change what a container serves (README.md,
# "Engine events"); the event stream is filtered to these on the engine's side.
# ``health_status`` matches every "health_status: <status>" action.
CONTAINER_ACTIONS = ("start", "die", "stop", "pause", "unpause", "health_status", "rename",
                     "destroy")
NETWORK_ACTIONS = ("connect", "disconnect")


class EngineUnavailable(Exception):
    """The engine cannot be reached or stopped answering; the message says why.
    The session that met it ends, and the next one lists everything again."""


class ContainerUnreadable(Exception):
    """The engine answered, but not with one container's data (an error other
    than "no such container"): the container keeps what it had."""


@dataclass(frozen=True, slots=True)
class Inspected:
    """One container's inspect data, named: what it serves, and what the
    source must know about it besides.

    ``result`` is None when the engine no longer has the container.
    ``recheck`` is set while the container's health may change without an
    event: paused (pausing turns a HEALTHCHECK unhealthy silently) or a
    HEALTHCHECK still ``starting``.
    """

    container_id: str
    result: ContainerInstances | None
    running: bool = False
    recheck: bool = False


def name_container(container_id: str, data: Any, settings: NamingSettings,
                   max_instances: int) -> Inspected:
    """One container's inspect data -> :class:`Inspected` (pure; run off the loop).

    A container yielding more than ``max_instances`` instances (an image that
    exposes a port range, say) keeps the first ones, with a warning: one
    container must not grow the table without bound.
    """
    result = container_instances(data, settings)
    if result.container_id != container_id:  # an inspect of another id is no answer
        result = ContainerInstances(container_id, result.container, problems=result.problems,
                                    reason="the engine answered with another container")
        return Inspected(container_id, result)
    if len(result.instances) > max_instances:
        problem = Problem(result.container, "Config.ExposedPorts",
                          f"yields {len(result.instances)} instances; only the first "
                          f"{max_instances} are served")
        result = ContainerInstances(result.container_id, result.container,
                                    result.instances[:max_instances],
                                    (*result.problems, problem), result.reason)
    state = data.get("State") if isinstance(data, dict) else None
    state = state if isinstance(state, dict) else {}
    health = state.get("Health")
    starting = isinstance(health, dict) and health.get("Status") == "starting"
    return Inspected(container_id, result, running=state.get("Running") is True,
                     recheck=state.get("Paused") is True or starting)


class Subscription(Protocol):
    """An event stream being followed."""

    @property
    def ended(self) -> asyncio.Future[str]:
        """Resolves with the reason once the stream has ended (the engine
        went away, or the stream failed)."""

    def close(self) -> None:
        """Stop following; safe to call more than once and from the loop."""


class Engine(Protocol):
    """The requests the source makes of one engine, in one session."""

    def ping(self) -> asyncio.Future[None]:
        """Check the engine answers (bounded by a timeout); EngineUnavailable if not."""

    def list_running(self) -> asyncio.Future[list[str]]:
        """The ids of the running (also paused and restarting) containers."""

    def inspect(self, container_id: str) -> asyncio.Future[Inspected]:
        """One container's data, named (off the loop). EngineUnavailable,
        or ContainerUnreadable."""

    async def subscribe(self, deliver: Callable[[Mapping[str, Any]], None]) -> Subscription:
        """Follow the event stream: returns once the engine has accepted the
        subscription (so nothing after it is missed), then calls ``deliver``
        on the loop with each event, in order."""

    def close(self) -> None:
        """Release the clients and threads (the subscription is closed apart)."""
