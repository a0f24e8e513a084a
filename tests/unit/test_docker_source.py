"""The Docker source without an engine: a fake one (the four requests of
``dnsd.sources.docker.engine.Engine``) serving real inspect data from
tests/data/docker, and events shaped as Docker 20.10 sends them. Each test
drives one step: listing, an event, a reply that lands late, the engine lost."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from dnsd.config import load_config
from dnsd.model import Health, Instance
from dnsd.sources.base import SourceState
from dnsd.sources.docker import DockerSettings, DockerSource, NamingSettings
from dnsd.sources.docker.engine import (
    ContainerUnreadable,
    EngineUnavailable,
    Inspected,
    name_container,
)
from dnsd.sources.docker.follow import RECHECK_BATCH, event_target
from dnsd.sources.registry import build_sources, docker_settings
from tests.sinks import RecordingSink

DATA = Path(__file__).resolve().parents[1] / "data" / "docker"
NAMING = NamingSettings(node="host1", datacenter="dc1")
FAST = DockerSettings(url="unix:///fake.sock", naming=NAMING, ping_interval=0.05,
                      ping_timeout=0.05, recheck_interval=0.02, backoff_base=0.01,
                      backoff_cap=0.02)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def container(n: int, template: str = "multi", *, labels: dict[str, str] | None = None,
              name: str | None = None) -> dict[str, Any]:
    """A copy of real inspect data as container number ``n``: its own id, name and address."""
    data = copy.deepcopy(load(template))
    data["Id"] = f"{n:064x}"
    data["Name"] = f"/{name or f'app-{n}'}"
    if labels is not None:
        data["Config"]["Labels"] = labels
    for network in data["NetworkSettings"]["Networks"].values():
        if network.get("IPAddress"):
            network["IPAddress"] = f"10.9.{n >> 8 & 255}.{n & 255}"
    return data


def web(n: int, **labels: str) -> dict[str, Any]:
    """A one-port container (80/tcp) served as ``web`` unless labels say otherwise."""
    return container(n, "health-healthy", labels={"SERVICE_NAME": "web", **labels})


def event(container_id: str, action: str, kind: str = "container",
          **attributes: str) -> dict[str, Any]:
    if kind == "network":
        return {"Type": "network", "Action": action,
                "Actor": {"ID": "f" * 64, "Attributes": {"container": container_id,
                                                         "name": "net", **attributes}}}
    return {"Type": "container", "Action": action,
            "Actor": {"ID": container_id, "Attributes": {"image": "busybox", **attributes}}}


class FakeSubscription:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._ended: asyncio.Future[str] = loop.create_future()
        self.closed = False

    @property
    def ended(self) -> asyncio.Future[str]:
        return self._ended

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """An engine in memory: ``containers`` is its state (raw inspect data by id).

    Inspects land on the next loop iteration, or wait in ``held`` while
    ``hold`` is set, so a test can make one land after a later event."""

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, Any]] = {}
        self.up = True
        self.hold = False
        self.held: list[tuple[str, asyncio.Future[Inspected]]] = []
        self.unreadable: set[str] = set()
        self.inspected: list[str] = []
        self.pings = 0
        self.sessions = 0
        self.deliver: Callable[[Mapping[str, Any]], None] | None = None
        self.subscription: FakeSubscription | None = None
        self.closed = 0
        self.max_instances = 1024

    def add(self, *datas: dict[str, Any]) -> list[str]:
        for data in datas:
            self.containers[data["Id"]] = data
        return [data["Id"] for data in datas]

    def state(self, container_id: str) -> dict[str, Any]:
        state: dict[str, Any] = self.containers[container_id]["State"]
        return state

    # --- engine.Engine -------------------------------------------------------------

    def _future(self, value: Any = None, error: BaseException | None = None
                ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
        return future

    def ping(self) -> asyncio.Future[None]:
        self.pings += 1
        return self._future(error=None if self.up else EngineUnavailable("no socket there"))

    def list_running(self) -> asyncio.Future[list[str]]:
        if not self.up:
            return self._future(error=EngineUnavailable("no socket there"))
        return self._future([i for i, d in self.containers.items() if d["State"]["Running"]])

    def inspect(self, container_id: str) -> asyncio.Future[Inspected]:
        self.inspected.append(container_id)
        future: asyncio.Future[Inspected] = asyncio.get_running_loop().create_future()
        if self.hold:
            self.held.append((container_id, future))
        else:
            asyncio.get_running_loop().call_soon(self._land, container_id, future)
        return future

    def _land(self, container_id: str, future: asyncio.Future[Inspected]) -> None:
        if future.done():
            return
        if not self.up:
            future.set_exception(EngineUnavailable("connection refused"))
        elif container_id in self.unreadable:
            future.set_exception(ContainerUnreadable("500 Server Error: oops"))
        elif container_id not in self.containers:
            future.set_result(Inspected(container_id, None))
        else:
            data = copy.deepcopy(self.containers[container_id])
            future.set_result(name_container(container_id, data, NAMING, self.max_instances))

    def release(self) -> None:
        """Let the held inspects land now, reading the engine as it is now."""
        held, self.held = self.held, []
        for container_id, future in held:
            self._land(container_id, future)

    async def subscribe(self, deliver: Callable[[Mapping[str, Any]], None]
                        ) -> FakeSubscription:
        if not self.up:
            raise EngineUnavailable("no socket there")
        self.sessions += 1
        self.deliver = deliver
        self.subscription = FakeSubscription(asyncio.get_running_loop())
        return self.subscription

    def close(self) -> None:
        self.closed += 1

    # --- driving it ------------------------------------------------------------------

    def emit(self, *events: dict[str, Any]) -> None:
        assert self.deliver is not None
        for one in events:
            self.deliver(one)

    def go_down(self) -> None:
        """The engine stops: the stream ends, and requests fail until it is back."""
        self.up = False
        assert self.subscription is not None
        if not self.subscription.ended.done():
            self.subscription.ended.set_result("the engine ended the event stream")


class Running:
    """A DockerSource on a FakeEngine, reporting to a RecordingSink."""

    def __init__(self, engine: FakeEngine, settings: DockerSettings = FAST) -> None:
        self.engine = engine
        self.sink = RecordingSink()
        self.source = DockerSource(settings, engine=lambda _: engine, rng=random.Random(1))
        self.task: asyncio.Task[None] | None = None

    async def start(self, until: SourceState | None = SourceState.UP) -> Running:
        self.task = asyncio.create_task(self.source.run(self.sink))
        if until is not None:
            await self.wait(lambda: self.sink.state is until)
        return self

    async def wait(self, check: Callable[[], object], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.001)

    async def settle(self) -> None:
        """Let everything in flight land and be published (debounce included)."""
        await asyncio.sleep(0.05)

    def served(self, service: str | None = None) -> list[Instance]:
        return self.sink.instances(service)

    def addresses(self, service: str, healthy_only: bool = True) -> set[str]:
        return {i.address for i in self.served(service)
                if not healthy_only or i.health is Health.PASSING}

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
async def running(engine: FakeEngine) -> AsyncIterator[Running]:
    run = Running(engine)
    yield run
    if run.task is not None and not run.task.done():
        await run.stop()


# --- events: which ones the source acts on --------------------------------------------

def real_events() -> list[dict[str, Any]]:
    lines = (DATA / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_the_events_acted_on_are_the_ones_that_change_what_a_container_serves() -> None:
    acted = {(e["Type"], e["Action"]) for e in real_events() if event_target(e) is not None}
    ignored = {(e["Type"], e["Action"]) for e in real_events() if event_target(e) is None}
    assert ("container", "health_status: healthy") in acted
    assert {("container", a) for a in ("start", "die", "stop", "pause", "unpause", "rename",
                                       "destroy")} <= acted
    assert {("network", "connect"), ("network", "disconnect")} <= acted
    # create (not running yet), kill (still running until die), image and
    # network lifecycle events change nothing served.
    assert {("container", "create"), ("container", "kill"), ("network", "create"),
            ("image", "tag")} <= ignored


def test_a_network_event_names_the_container_in_its_attributes() -> None:
    connect = next(e for e in real_events() if e["Action"] == "connect")
    container_id, action, kind = event_target(connect) or ("", "", "")
    assert container_id == connect["Actor"]["Attributes"]["container"]
    assert (action, kind) == ("connect", "network")


@pytest.mark.parametrize("bad", [
    None, [], "start", {"Type": "container"}, {"Type": "container", "Action": "start"},
    {"Type": "container", "Action": "start", "Actor": {"ID": ""}},
    {"Type": "container", "Action": 5, "Actor": {"ID": "x"}},
    {"Type": "network", "Action": "connect", "Actor": {"ID": "n", "Attributes": []}},
    {"Type": "network", "Action": "connect", "Actor": {"ID": "n", "Attributes": {}}},
])
def test_events_of_another_shape_are_ignored(bad: Any) -> None:
    assert event_target(bad) is None


# --- listing --------------------------------------------------------------------------

async def test_every_running_container_is_listed_then_published_once_then_up(
        engine: FakeEngine, running: Running) -> None:
    ids = engine.add(*(web(n) for n in range(1, 4)), container(9, "stopped"),
                     container(10, "udp"))
    await running.start()
    assert [r.state for r in running.sink.states] == [SourceState.UP]
    assert len(running.sink.views) == 1  # the whole listing, published in one go
    assert running.addresses("web") == {"10.9.0.1", "10.9.0.2", "10.9.0.3"}
    assert {i.service for i in running.served()} == {"web", "dns", "busybox-80"}
    assert set(engine.inspected) == set(ids) - {ids[3]}  # the stopped one is not listed


async def test_no_view_goes_out_before_the_listing_is_complete(
        engine: FakeEngine, running: Running) -> None:
    engine.add(web(1), web(2))
    engine.hold = True
    await running.start(until=None)
    await running.wait(lambda: len(engine.held) == 2)
    engine.held[0][1].set_result(name_container(engine.held[0][0], web(1), NAMING, 1024))
    await running.settle()
    assert running.sink.views == [] and running.sink.state is SourceState.SYNCING
    engine.hold = False
    engine.release()
    await running.wait(lambda: running.sink.state is SourceState.UP)
    assert running.addresses("web") == {"10.9.0.1", "10.9.0.2"}


async def test_an_event_during_the_listing_is_read_after_it(engine: FakeEngine,
                                                           running: Running) -> None:
    """Subscribed first, listed second: a container that stops while the
    listing's inspect of it is on its way is read again, and not served."""
    _, second = engine.add(web(1), web(2))
    engine.hold = True
    await running.start(until=None)
    await running.wait(lambda: len(engine.held) == 2)
    engine.state(second).update(Running=False, Status="exited")
    engine.emit(event(second, "die"))
    engine.hold = False
    engine.held[1][1].set_result(name_container(second, web(2), NAMING, 1024))  # stale: running
    engine.release()
    await running.wait(lambda: running.sink.state is SourceState.UP)
    assert running.addresses("web") == {"10.9.0.1"}
    assert engine.inspected.count(second) == 2


# --- following ------------------------------------------------------------------------

async def test_start_and_stop_are_followed(engine: FakeEngine, running: Running) -> None:
    (first,) = engine.add(web(1))
    await running.start()
    (second,) = engine.add(web(2))
    engine.emit(event(second, "start"))
    await running.wait(lambda: running.addresses("web") == {"10.9.0.1", "10.9.0.2"})
    engine.state(first).update(Running=False, Status="exited")
    engine.emit(event(first, "die"), event(first, "stop"))
    await running.wait(lambda: running.addresses("web") == {"10.9.0.2"})
    assert running.source.counters["events"] == 3


async def test_propagation_is_measured_from_the_event(engine: FakeEngine,
                                                      running: Running) -> None:
    """The sink hears when the event reached the source, not when the read
    that followed it landed: dnsd_propagation_seconds covers the inspect."""
    await running.start()
    assert running.sink.observed == [None]  # the listing: no event behind it
    (one,) = engine.add(web(1))
    engine.hold = True
    sent = asyncio.get_running_loop().time()
    engine.emit(event(one, "start"))
    await asyncio.sleep(0.02)
    engine.hold = False
    engine.release()
    await running.wait(lambda: running.addresses("web") == {"10.9.0.1"})
    observed = running.sink.observed[-1]
    assert observed is not None and sent <= observed < sent + 0.01


async def test_die_takes_the_instances_out_before_the_inspect_lands(
        engine: FakeEngine, running: Running) -> None:
    (one,) = engine.add(web(1))
    await running.start()
    engine.hold = True
    engine.state(one).update(Running=False, Status="exited")
    engine.emit(event(one, "die"))
    await running.wait(lambda: running.served("web") == [])
    assert engine.held  # the inspect is still on its way
    engine.hold = False
    engine.release()
    await running.settle()
    assert running.served("web") == []


async def test_a_restart_loop_settles_where_the_engine_ends_up(
        engine: FakeEngine, running: Running) -> None:
    """start and die in the same millisecond, then start again: replies of
    reads sent before the last event are dropped and the container read again."""
    (one,) = engine.add(web(1))
    await running.start()
    engine.hold = True
    for action in ("die", "start", "die", "start"):
        engine.emit(event(one, action))
    await running.wait(lambda: running.served("web") == [])  # the first die
    assert len(engine.held) == 1  # coalesced: one read in flight at a time
    engine.hold = False
    engine.release()
    await running.wait(lambda: running.addresses("web") == {"10.9.0.1"})
    assert engine.inspected.count(one) == 3  # the listing, the first read, one more


async def test_health_transitions(engine: FakeEngine, running: Running) -> None:
    """A HEALTHCHECK starting and unhealthy is critical (kept, not answered);
    healthy is passing; each status change is an event."""
    (one,) = engine.add(container(1, "health-starting", labels={"SERVICE_NAME": "web"}))
    await running.start()
    assert [i.health for i in running.served("web")] == [Health.CRITICAL]
    for status, health in (("healthy", Health.PASSING), ("unhealthy", Health.CRITICAL),
                           ("healthy", Health.PASSING)):
        engine.state(one)["Health"]["Status"] = status
        engine.emit(event(one, f"health_status: {status}"))

        def shows(health: Health = health) -> bool:
            return [i.health for i in running.served("web")] == [health]

        await running.wait(shows)


async def test_pause_is_critical_and_paused_containers_are_read_again_without_events(
        engine: FakeEngine, running: Running) -> None:
    (one,) = engine.add(web(1))
    await running.start()
    engine.state(one).update(Paused=True, Status="paused")
    engine.emit(event(one, "pause"))
    await running.wait(lambda: [i.health for i in running.served("web")] == [Health.CRITICAL])
    before = running.source.counters["rechecks"]
    await running.wait(lambda: running.source.counters["rechecks"] >= before + 2)
    # While paused, its HEALTHCHECK turned unhealthy with no event; after
    # unpause the read says so, and the next check's event brings it back.
    engine.state(one).update(Paused=False, Status="running")
    engine.state(one)["Health"]["Status"] = "unhealthy"
    engine.emit(event(one, "unpause"))
    await running.settle()
    assert [i.health for i in running.served("web")] == [Health.CRITICAL]
    engine.state(one)["Health"]["Status"] = "healthy"
    engine.emit(event(one, "health_status: healthy"))
    await running.wait(lambda: running.addresses("web") == {"10.9.0.1"})
    rechecks = running.source.counters["rechecks"]
    await running.settle()
    assert running.source.counters["rechecks"] == rechecks  # nothing left to recheck


async def test_rechecks_come_in_small_batches_oldest_first(engine: FakeEngine,
                                                           running: Running) -> None:
    """A host full of paused containers: each recheck reads a few, those read
    longest ago, so an event's read never queues behind all of them."""
    paused = engine.add(*(container(n, "paused", labels={"SERVICE_NAME": "p"})
                          for n in range(40)))
    await running.start()
    engine.inspected.clear()
    await running.wait(lambda: len(engine.inspected) >= 40)
    first_forty = engine.inspected[:40]
    assert sorted(first_forty) == sorted(paused)  # every one once before any twice
    rechecks = running.source.counters["rechecks"]
    await asyncio.sleep(FAST.recheck_interval * 0.5)
    assert running.source.counters["rechecks"] - rechecks <= RECHECK_BATCH


async def test_a_starting_healthcheck_is_read_again_until_it_settles(
        engine: FakeEngine, running: Running) -> None:
    (one,) = engine.add(container(1, "health-starting", labels={"SERVICE_NAME": "web"}))
    await running.start()
    engine.state(one)["Health"]["Status"] = "healthy"  # and its event is lost
    await running.wait(lambda: running.addresses("web") == {"10.9.0.1"})


async def test_rename_changes_the_default_id(engine: FakeEngine, running: Running) -> None:
    (one,) = engine.add(web(1))
    await running.start()
    assert [i.id for i in running.served("web")] == ["host1:app-1:80"]
    engine.containers[one]["Name"] = "/renamed"
    engine.emit(event(one, "rename", name="renamed", oldName="/app-1"))
    await running.wait(lambda: [i.id for i in running.served("web")] == ["host1:renamed:80"])


async def test_network_events_reread_running_containers_only(
        engine: FakeEngine, running: Running) -> None:
    data = container(1, "twonet", labels={"SERVICE_NAME": "web"})
    networks = data["NetworkSettings"]["Networks"]
    networks["dnsr-b"]["IPAddress"] = "10.8.0.1"
    (one,) = engine.add(data)
    await running.start()
    assert running.addresses("web") == {"10.9.0.1"}  # dnsr-a: the first by name
    del engine.containers[one]["NetworkSettings"]["Networks"]["dnsr-a"]
    engine.emit(event(one, "disconnect", kind="network"))
    await running.wait(lambda: running.addresses("web") == {"10.8.0.1"})
    inspected = len(engine.inspected)
    engine.emit(event("e" * 64, "connect", kind="network"))  # a container being created
    await running.settle()
    assert len(engine.inspected) == inspected


async def test_a_destroyed_container_is_gone(engine: FakeEngine, running: Running) -> None:
    (one,) = engine.add(web(1))
    await running.start()
    del engine.containers[one]
    engine.emit(event(one, "destroy"))
    await running.wait(lambda: running.served() == [])


# --- bad input ----------------------------------------------------------------------

async def test_bad_labels_cost_their_port_only_with_one_warning_each(
        engine: FakeEngine, running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dnsd.docker")
    bad_name, bad_port, good = engine.add(
        web(1, SERVICE_NAME="not_ok.dots"), web(2, SERVICE_8080_NAME="api"), web(3))
    await running.start()
    assert {i.id for i in running.served()} == {"host1:app-2:80", "host1:app-3:80"}
    warnings = [r.getMessage() for r in caplog.records]
    assert any("app-1" in w and "label SERVICE_NAME" in w and "not a DNS label" in w
               for w in warnings), warnings
    assert any("app-2" in w and "label SERVICE_8080_NAME" in w and "port 8080" in w
               for w in warnings), warnings
    assert len(warnings) == 2
    for one in (bad_name, bad_port, good):   # read again: no new warning
        engine.emit(event(one, "health_status: healthy"))
    await running.settle()
    assert len(caplog.records) == 2 and running.source.counters["warnings"] == 2


async def test_one_warning_per_container_and_label(engine: FakeEngine, running: Running,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dnsd.docker")
    bad = ",".join(f"v1.{n}" for n in range(5000))
    engine.add(web(1, SERVICE_TAGS=f"ok,{bad}"))
    await running.start()
    assert [i.tags for i in running.served("web")] == [("ok",)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "app-1" in line and "label SERVICE_TAGS" in line and "(and 4999 more)" in line


async def test_many_containers_some_bad(engine: FakeEngine, running: Running,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dnsd.docker")
    engine.add(*(web(n, SERVICE_NAME=f"svc{n % 50}") for n in range(2000)))
    engine.add(*(web(n, SERVICE_TAGS="ok,v1.2") for n in range(2000, 2010)))
    await running.start()
    assert len(running.served()) == 2010
    tag_warnings = [r.getMessage() for r in caplog.records if "'v1.2'" in r.getMessage()]
    assert len(tag_warnings) == 10
    assert all(i.tags == ("ok",) for i in running.served("web"))


async def test_a_port_range_is_capped(engine: FakeEngine, caplog: pytest.LogCaptureFixture
                                      ) -> None:
    caplog.set_level(logging.WARNING, logger="dnsd.docker")
    data = web(1)
    data["Config"]["ExposedPorts"] = {f"{p}/tcp": {} for p in range(10000, 12000)}
    data["NetworkSettings"]["Ports"] = {}
    engine.add(data, web(2))
    engine.max_instances = 100  # what DockerSettings.max_instances gives the client
    run = Running(engine)
    await run.start()
    try:
        assert len(run.served()) == 101
        assert any("app-1" in r.getMessage() and "Config.ExposedPorts" in r.getMessage()
                   and "2000 instances" in r.getMessage() for r in caplog.records)
    finally:
        await run.stop()


async def test_an_unreadable_container_keeps_what_it_had(
        engine: FakeEngine, running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dnsd.docker")
    (one,) = engine.add(web(1))
    await running.start()
    engine.unreadable.add(one)
    engine.emit(event(one, "health_status: healthy"))
    await running.wait(lambda: running.source.counters["unreadable"] >= 1)
    assert running.addresses("web") == {"10.9.0.1"}
    assert any("app-1" in r.getMessage() and "cannot be read" in r.getMessage()
               for r in caplog.records)
    engine.unreadable.clear()
    engine.state(one).update(Running=False, Status="exited")
    await running.wait(lambda: running.served() == [])  # the recheck read it again


# --- the engine lost and back -----------------------------------------------------------

async def test_engine_lost_keeps_the_view_then_relists(engine: FakeEngine,
                                                       running: Running) -> None:
    first, _ = engine.add(web(1), web(2))
    await running.start()
    views = len(running.sink.views)
    engine.go_down()
    await running.wait(lambda: running.sink.state is SourceState.STALE)
    assert "the engine ended the event stream" in running.sink.reason
    assert len(running.sink.views) == views  # the last view keeps serving
    # While away: one container gone, one new; no event will say so.
    del engine.containers[first]
    engine.add(web(3))
    engine.up = True
    await running.wait(lambda: running.sink.state is SourceState.UP)
    assert running.addresses("web") == {"10.9.0.2", "10.9.0.3"}
    assert running.source.counters["relists"] == 2 and engine.sessions == 2
    assert engine.closed == 1  # the lost session's clients were released


async def test_an_engine_that_stops_answering_is_noticed_by_the_ping(
        engine: FakeEngine, running: Running) -> None:
    engine.add(web(1))
    await running.start()
    engine.up = False  # the stream stays open and silent
    await running.wait(lambda: running.sink.state is SourceState.STALE)
    assert "ping" in running.sink.reason
    assert running.addresses("web") == {"10.9.0.1"}
    engine.up = True
    await running.wait(lambda: running.sink.state is SourceState.UP)


async def test_no_engine_at_start_is_stale_with_the_reason_then_up(
        engine: FakeEngine, running: Running) -> None:
    engine.up = False
    engine.add(web(1))
    await running.start(until=SourceState.STALE)
    assert running.sink.views == [] and "no socket there" in running.sink.reason
    await asyncio.sleep(0.1)
    assert [r.state for r in running.sink.states] == [SourceState.STALE]  # said once
    engine.up = True
    await running.wait(lambda: running.sink.state is SourceState.UP)
    assert running.addresses("web") == {"10.9.0.1"}


async def test_a_failed_inspect_ends_the_session(engine: FakeEngine, running: Running) -> None:
    (one,) = engine.add(web(1))
    await running.start()
    engine.up = False
    engine.emit(event(one, "health_status: healthy"))
    await running.wait(lambda: running.sink.state is SourceState.STALE)
    assert "connection refused" in running.sink.reason
    engine.up = True
    await running.wait(lambda: running.sink.state is SourceState.UP)


async def test_counters_for_metrics(engine: FakeEngine, running: Running) -> None:
    engine.add(web(1))
    await running.start()
    counters = running.source.counters
    assert set(counters) >= {"events", "inspects", "rechecks", "relists", "losses",
                             "warnings", "publishes"}
    assert counters["publishes"] == 1 and counters["relists"] == 1
    assert running.source.name == "docker:unix:///fake.sock"


# --- the registry row -------------------------------------------------------------------

def test_the_configuration_builds_the_source() -> None:
    config = load_config(["--docker", "tcp://10.0.0.2:2375", "--docker-published",
                          "192.0.2.10", "--docker-network", "front", "--node-name", "h1",
                          "--datacenter", "east", "--static", "x.toml"], environ={})
    settings = docker_settings(config)
    assert settings.url == "tcp://10.0.0.2:2375"
    assert settings.naming == NamingSettings(node="h1", datacenter="east",
                                             published="192.0.2.10", network="front")
    assert [s.name for s in build_sources(config)] == ["docker:tcp://10.0.0.2:2375"]
    both = load_config(["--docker", "--zookeeper", "zk:2181/s", "--consul", "c:8500"],
                       environ={"DOCKER_HOST": "unix:///d.sock"})
    assert [s.name for s in build_sources(both)] == [
        "consul:http://c:8500", "zookeeper:zk:2181/s", "docker:unix:///d.sock"]
