"""The Consul follower, one step at a time, against in-memory reads (no
Consul, no threads): what each catalog-wide change makes it re-read, sweep,
watch and publish."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence

import pytest

from dnsd.model import Instance, Node
from dnsd.sources.consul.follow import DcState, Follower
from dnsd.sources.consul.parse import (
    Checks,
    ConsulUnavailable,
    NodeList,
    Nodes,
    ServiceRead,
    Tags,
    node_list,
)
from dnsd.sources.consul.watch import Apply


def inst(service: str, node: str = "node1", port: int = 80) -> Instance:
    return Instance(service, node, "dc1", address="10.0.0.1", port=port)


class FakeReads:
    """The registry as the follower's reads see it; records what was read."""

    def __init__(self, services: Mapping[str, tuple[Instance, ...]], index: int = 10) -> None:
        self.services = dict(services)
        self.index = index
        self.fetched: list[list[str]] = []
        self.swept: list[list[str]] = []
        self.watching: set[str] = set()
        self.failure: asyncio.Future[None] | None = None

    def read(self, name: str) -> ServiceRead:
        return ServiceRead(self.index, self.services.get(name, ()))

    async def fetch(self, names: Iterable[str]) -> Mapping[str, ServiceRead]:
        ordered = sorted(names)
        self.fetched.append(ordered)
        return {name: self.read(name) for name in ordered}

    async def fetch_each(self, names: Sequence[str],
                         found: Callable[[str, ServiceRead], None]) -> None:
        self.swept.append(list(names))
        for name in names:
            found(name, self.read(name))

    async def _hang(self) -> None:
        self.failure = self.failure or asyncio.get_running_loop().create_future()
        await self.failure

    async def watch_services(self, index: int, apply: Apply[Tags]) -> None:
        await self._hang()

    async def watch_nodes(self, index: int, apply: Apply[NodeList]) -> None:
        await self._hang()

    async def watch_checks(self, index: int, apply: Apply[Checks]) -> None:
        await self._hang()

    async def watch_service(self, name: str, index: int, apply: Apply[ServiceRead]) -> None:
        self.watching.add(name)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.watching.discard(name)


def synced(services: Mapping[str, tuple[Instance, ...]], nodes: Nodes | None = None,
           checks: Checks | None = None) -> DcState:
    state = DcState(name="dc1", tags={name: frozenset() for name in services},
                    nodes=dict(nodes or {"node1": "10.0.0.1", "node2": "10.0.0.2"}),
                    checks=dict(checks or {}), synced=True)
    for name, group in services.items():
        state.store(name, 5, group)
    return state


class Harness:
    def __init__(self, services: Mapping[str, tuple[Instance, ...]], watch_limit: int = 0,
                 **state: object) -> None:
        self.reads = FakeReads(services)
        self.state = synced(services, **state)  # type: ignore[arg-type]
        self.published = 0
        self.counters = {"sweeps": 0, "swept_changes": 0}
        self.follower = Follower(self.state, self.reads, watch_limit=watch_limit,
                                 changed=self.changed, counters=self.counters)

    def changed(self) -> None:
        self.published += 1


async def test_a_new_service_is_read_and_ranked_hottest() -> None:
    h = Harness({"web": (inst("web"),)})
    h.reads.services["api"] = (inst("api", port=9000),)
    h.follower.on_services(11, {"web": frozenset(), "api": frozenset({"v1"})}, reset=False)
    assert h.follower.pending == {"api"} and h.follower.wake.is_set()
    assert not h.follower.sweep_wanted.is_set()  # the diff explains the move
    assert h.state.rank("api") < h.state.rank("web")
    await h.follower.refresh()
    assert h.reads.fetched == [["api"]]
    assert h.state.instances["api"] == (inst("api", port=9000),) and h.published == 1


async def test_an_unexplained_catalog_move_asks_for_a_sweep() -> None:
    h = Harness({"web": (inst("web"),)})
    h.follower.on_services(11, {"web": frozenset()}, reset=False)
    assert h.follower.pending == set() and h.follower.sweep_wanted.is_set()


async def test_a_moved_node_rereads_its_services_and_publishes_the_node() -> None:
    h = Harness({"web": (inst("web", "node1"),), "db": (inst("db", "node2"),)})
    moved = node_list([{"Node": "node1", "Address": "10.0.0.99"},
                       {"Node": "node2", "Address": "10.0.0.2"}], "dc1")
    h.follower.on_nodes(11, moved, reset=False)
    assert h.follower.pending == {"web"} and h.published == 1
    assert [n.address for n in h.state.node_values] == ["10.0.0.99", "10.0.0.2"]
    h.follower.on_nodes(12, moved, reset=False)
    assert h.published == 1  # nothing moved: nothing to publish


async def test_node_meta_or_tagged_address_changes_publish_without_rereads() -> None:
    h = Harness({"web": (inst("web", "node1"),)})
    listing = [{"Node": "node1", "Address": "10.0.0.1"}, {"Node": "node2", "Address": "10.0.0.2"}]
    h.follower.on_nodes(11, node_list(listing, "dc1"), reset=False)
    published = h.published
    listing[0] = {**listing[0], "Meta": {"rack": "r2"}}
    h.follower.on_nodes(12, node_list(listing, "dc1"), reset=False)
    assert h.published == published + 1 and h.follower.pending == set()
    listing[1] = {**listing[1], "TaggedAddresses": {"lan_ipv6": "fd00::2"}}
    h.follower.on_nodes(13, node_list(listing, "dc1"), reset=False)
    assert h.published == published + 2 and h.follower.pending == set()
    assert dict(h.state.node_values[1].tagged_addresses) == {"lan_ipv6": "fd00::2"}


def test_nodes_only_a_service_read_has_shown_are_published_until_listed() -> None:
    state = synced({})
    state.node_values = (Node("node1", "dc1", "10.0.0.1", {"rack": "listed"}),)
    assert state.store("web", 6, (inst("web", "node1"), inst("web", "node3")), nodes=(
        Node("node1", "dc1", "10.0.0.1", {"rack": "older"}),
        Node("node3", "dc1", "10.0.0.3", {"rack": "r3"})))
    # The listing wins for the nodes it has; a node it lacks comes from the read.
    assert [(n.name, n.meta["rack"]) for n in state.published_nodes()] == [
        ("node1", "listed"), ("node3", "r3")]
    # The same instances, a node's meta changed: a change worth publishing.
    assert state.store("web", 7, (inst("web", "node1"), inst("web", "node3")), nodes=(
        Node("node3", "dc1", "10.0.0.3", {"rack": "r4"}),))
    assert state.store("web", 8, ()) and state.published_nodes() == list(state.node_values)


async def test_check_changes_name_services_and_the_services_on_a_node() -> None:
    checks = {("node1", "service:web-1"): ("passing", "web-1", "web"),
              ("node2", "serfHealth"): ("passing", "", "")}
    h = Harness({"web": (inst("web", "node1"),), "db": (inst("db", "node2"),)},
                checks=checks)
    checks = {**checks, ("node1", "service:web-1"): ("critical", "web-1", "web")}
    h.follower.on_checks(11, checks, reset=False)
    assert h.follower.pending == {"web"}
    h.follower.pending.clear()
    h.follower.on_checks(12, {**checks, ("node2", "serfHealth"): ("critical", "", "")},
                         reset=False)
    assert h.follower.pending == {"db"}  # a node check touches every service on it


async def test_refresh_skips_watched_services_and_keeps_newer_reads() -> None:
    h = Harness({"web": (inst("web"),), "db": (inst("db"),)}, watch_limit=1)
    h.follower.reconcile()
    watched = set(h.follower.watched)
    h.follower.want(["web", "db"])
    h.reads.index = 3  # older than the reads the state already holds (index 5)
    h.reads.services = {}
    await h.follower.refresh()
    assert h.reads.fetched == [sorted({"web", "db"} - watched)]
    assert h.state.instances.keys() == {"web", "db"} and h.published == 0
    for task in h.follower.watched.values():
        task.cancel()


async def test_reset_forgets_per_service_indexes() -> None:
    h = Harness({"web": (inst("web"),)})
    h.follower.on_services(2, {"web": frozenset({"x"})}, reset=True)
    assert h.state.indexes == {}
    h.reads.index = 1  # a restored snapshot's lower index is accepted now
    h.reads.services = {"web": (inst("web", port=81),)}
    await h.follower.refresh()
    assert h.state.instances["web"] == (inst("web", port=81),)


async def test_sweep_reads_unwatched_services_hottest_first_and_promotes_a_change() -> None:
    services = {"big": (inst("big"), inst("big", "node2")), "a": (inst("a"),),
                "b": (inst("b"),)}
    h = Harness(services, watch_limit=1)
    h.follower.reconcile()
    await asyncio.sleep(0)
    assert set(h.follower.watched) == {"big"} == h.reads.watching  # most instances first
    h.reads.services["b"] = (inst("b"), inst("b", "node2"))  # changed unannounced
    await h.follower.sweep()
    assert h.reads.swept == [["a", "b"]]
    assert h.counters == {"sweeps": 1, "swept_changes": 1} and h.published == 1
    await asyncio.sleep(0)
    # b took big's watch; big, no longer watched, is read once so no change falls between.
    assert set(h.follower.watched) == {"b"} == h.reads.watching
    assert h.follower.pending == {"big"}
    for task in h.follower.watched.values():
        task.cancel()


async def test_reconcile_stops_the_watches_of_services_gone() -> None:
    h = Harness({"web": (inst("web"),), "db": (inst("db"),)}, watch_limit=5)
    h.follower.reconcile()
    assert set(h.follower.watched) == {"web", "db"}
    h.state.tags.pop("db")
    assert h.follower.reconcile() == set()  # db is gone: nothing to re-read
    assert set(h.follower.watched) == {"web"}
    for task in h.follower.watched.values():
        task.cancel()


async def test_a_watched_service_s_change_is_stored_and_published() -> None:
    h = Harness({"web": (inst("web"),)})
    h.follower.on_service("web", 9, ServiceRead(9, (inst("web", port=81),)), reset=False)
    assert h.state.instances["web"] == (inst("web", port=81),) and h.published == 1
    h.follower.on_service("web", 8, ServiceRead(8, ()), reset=False)  # older: dropped
    assert h.state.instances["web"] == (inst("web", port=81),) and h.published == 1


async def test_run_ends_with_the_first_failure_and_stops_every_watch() -> None:
    h = Harness({"web": (inst("web"),)}, watch_limit=1)
    run = asyncio.create_task(h.follower.run())
    for _ in range(5):
        await asyncio.sleep(0)
    assert h.reads.watching == {"web"} and h.reads.failure is not None
    h.reads.failure.set_exception(ConsulUnavailable("cannot connect"))
    with pytest.raises(ConsulUnavailable, match="cannot connect"):
        await asyncio.wait_for(run, 5)
    assert h.reads.watching == set()
