"""ConsulSource through python-consul2 over real HTTP against the Consul double."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from dnsd.config import Config
from dnsd.model import Health, Node
from dnsd.sources.base import SourceState
from dnsd.sources.consul import ConsulSettings, ConsulSource
from dnsd.sources.registry import consul_settings
from tests.consul_double import ConsulDouble
from tests.sinks import RecordingSink
from tests.waiting import until


def settings(double: ConsulDouble, **options: object) -> ConsulSettings:
    """The settings ``--consul <double>`` and the Config fields in ``options``
    give, with the ConsulSettings fields in ``options`` (shorter waits) applied."""
    fields = {f.name for f in dataclasses.fields(ConsulSettings)}
    config = Config(consul=double.url,  # type: ignore[arg-type]
                    **{k: v for k, v in options.items() if k not in fields})
    return dataclasses.replace(consul_settings(config),  # type: ignore[arg-type]
                               **{k: v for k, v in options.items() if k in fields})


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble() as d:
        d.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80,
                   tags=("v1", "http"), status="passing")
        d.register("db", "db-1", node="node2", node_address="10.0.0.2", address="10.5.0.2",
                   port=5432, meta={"role": "primary"}, weights={"Passing": 10, "Warning": 1})
        yield d


Running = tuple[ConsulSource, RecordingSink]


@asynccontextmanager
async def start(double: ConsulDouble, watch_limit: int | None = None,
                **config: object) -> AsyncIterator[Running]:
    """A running source (short waits and backoff) and the sink it reports to."""
    options = {} if watch_limit is None else {"watch_limit": watch_limit}
    source = ConsulSource(settings(double, wait=2.0, backoff_base=0.05, backoff_cap=0.3,
                                   **options, **config))
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await until(lambda: sink.state is SourceState.UP)
        yield source, sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def running(double: ConsulDouble) -> AsyncIterator[Running]:
    async with start(double, consul_datacenters=("dc2",)) as pair:
        yield pair


async def test_initial_sync_maps_everything(running: Running) -> None:
    source, sink = running
    assert source.name == f"consul:{source.url}"
    (web,) = sink.instances("web")
    assert (web.id, web.node, web.port, web.tags) == ("web-1", "node1", 80, ("v1", "http"))
    assert web.address == "" and web.effective_address == "10.0.0.1"  # node address serves
    (db,) = sink.instances("db")
    assert db.effective_address == "10.5.0.2" and dict(db.meta) == {"role": "primary"}
    assert (db.weight_passing, db.weight_warning) == (10, 1)
    assert {(n.name, n.address) for n in sink.view.nodes} == {("node1", "10.0.0.1"),
                                                               ("node2", "10.0.0.2")}
    assert sink.view.local_datacenter == "dc1"


async def test_registration_and_deregistration(double: ConsulDouble, running: Running) -> None:
    _, sink = running
    double.register("api", "api-1", node="node1", port=9000, tags=("v2",))
    await until(lambda: len(sink.instances("api")) == 1)
    double.register("api", "api-2", node="node2", port=9001, tags=("v2",))  # same tag set
    await until(lambda: len(sink.instances("api")) == 2)
    double.register("web", "web-2", node="node2", port=81, tags=("v1", "http"))
    await until(lambda: len(sink.instances("web")) == 2)
    double.deregister("api-1", node="node1")
    await until(lambda: [i.id for i in sink.instances("api")] == ["api-2"])
    double.deregister("api-2", node="node2")
    await until(lambda: not sink.instances("api"))


async def test_port_change_without_tag_change_is_seen(double: ConsulDouble,
                                                      running: Running) -> None:
    _, sink = running
    double.register("web", "web-1", node="node1", port=8080, tags=("v1", "http"),
                    status="passing")
    await until(lambda: [i.port for i in sink.instances("web")] == [8080])


async def test_check_changes(double: ConsulDouble, running: Running) -> None:
    _, sink = running
    double.set_check("web-1", "warning", node="node1")
    await until(lambda: sink.instances("web")[0].health is Health.WARNING)
    double.set_check("web-1", "critical", node="node1")
    await until(lambda: sink.instances("web")[0].health is Health.CRITICAL)
    double.set_check("web-1", "passing", node="node1")
    await until(lambda: sink.instances("web")[0].health is Health.PASSING)
    # A node-level check (serfHealth) failing makes every instance on it critical.
    double.set_check("", "critical", node="node2")
    await until(lambda: sink.instances("db")[0].health is Health.CRITICAL)
    assert sink.instances("web")[0].health is Health.PASSING


async def test_node_address_change(double: ConsulDouble, running: Running) -> None:
    _, sink = running
    double.add_node("node1", "10.0.0.99")
    await until(lambda: sink.instances("web")[0].effective_address == "10.0.0.99")
    # the node list comes from its own long-poll: it may land a moment later
    await until(lambda: sink.view is not None and ("node1", "10.0.0.99") in {
        (n.name, n.address) for n in sink.view.nodes})


async def test_remote_datacenter(double: ConsulDouble, running: Running) -> None:
    _, sink = running
    double.register("web", "web-dc2", node="far1", node_address="10.2.0.1", port=80, dc="dc2")
    await until(lambda: len(sink.instances("web", "dc2")) == 1)
    assert sink.instances("web", "dc2")[0].effective_address == "10.2.0.1"
    assert len(sink.instances("web", "dc1")) == 1  # the local one untouched


async def test_datacenter_flag_keeps_agent_out_of_local(double: ConsulDouble) -> None:
    async with start(double, datacenter="dc9", datacenter_set=True) as (_, sink):
        assert sink.view.local_datacenter is None
        assert sink.instances("web", "dc1")  # instances keep the datacenter Consul says


async def test_invalid_entries_are_skipped_not_fatal(double: ConsulDouble,
                                                     running: Running) -> None:
    _, sink = running
    double.register("web.v2", "odd-1", node="node1", port=1)
    double.register("api", "api-1", node="node1", port=2)
    await until(lambda: len(sink.instances("api")) == 1)
    assert not [i for i in sink.view.instances if i.id == "odd-1"]
    assert sink.state is SourceState.UP


async def test_outage_keeps_last_view_then_resyncs(double: ConsulDouble,
                                                   running: Running) -> None:
    _, sink = running
    before = sink.view
    double.stop()
    await until(lambda: sink.state is SourceState.STALE)
    assert sink.view == before  # nothing published: the last table keeps serving
    await asyncio.sleep(0.5)    # several retries...
    stale = [s for s in sink.states if s.state is SourceState.STALE]
    assert len(stale) <= 2      # ...reported once per failing datacenter, not per retry
    # Changes made while dnsd could not see them arrive with the resync.
    double.start()
    double.register("api", "api-1", node="node1", port=9000)
    double.deregister("db-1", node="node2")
    await until(lambda: sink.state is SourceState.UP)
    await until(lambda: bool(sink.instances("api")) and not sink.instances("db"))


async def test_every_read_is_stale_by_default(double: ConsulDouble, running: Running) -> None:
    double.register("api", "api-1", node="node1", port=9000)
    _, sink = running
    await until(lambda: bool(sink.instances("api")))
    modes = {(path.split("/")[2], mode) for path, mode in double.consistency_log
             if path != "/v1/agent/self"}  # the agent's own endpoint has no modes
    assert modes == {("catalog", "stale"), ("health", "stale"), ("query", "stale")}


async def test_no_leader_keeps_following_through_stale_reads() -> None:
    now = [100.0]
    with ConsulDouble(clock=lambda: now[0]) as double:
        double.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80)
        async with start(double, consul_datacenters=("dc2",)) as (source, sink):
            assert _contact(source, "dc1") == (0.0, 1.0)
            double.set_leader(False)
            now[0] += 4.5  # the servers last heard from a leader 4.5 s ago
            # Changes made while there is no leader (the servers still
            # replicate what they had) keep arriving: stale reads are served.
            double.register("api", "api-1", node="node1", port=9000)
            double.set_check("web-1", "critical", node="node1")
            await until(lambda: bool(sink.instances("api")))
            await until(lambda: sink.instances("web")[0].health is Health.CRITICAL)
            assert sink.state is SourceState.UP
            await until(lambda: _contact(source, "dc1") == (4.5, 0.0))
            assert not any(r.state is SourceState.STALE for r in sink.states)
            double.set_leader(True)
            double.register("cache", "cache-1", node="node1", port=6379)
            await until(lambda: bool(sink.instances("cache")))
            await until(lambda: _contact(source, "dc1") == (0.0, 1.0))


async def test_a_long_lost_leader_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dnsd.consul")
    now = [100.0]
    with ConsulDouble(clock=lambda: now[0]) as double:
        double.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80)
        async with start(double) as (_, sink):
            double.set_leader(False)
            now[0] += 45.0  # past the bound
            for port in (9000, 9001, 9002):
                double.register("api", f"api-{port}", node="node1", port=port)
                await until(lambda p=port: any(i.port == p for i in sink.instances("api")))
            warnings = [r.getMessage() for r in caplog.records
                        if "heard from a leader" in r.getMessage()]
            assert len(warnings) == 1 and "45 s ago" in warnings[0], warnings
            double.set_leader(True)
            double.register("api", "api-9003", node="node1", port=9003)
            await until(lambda: any("in contact with a leader again" in r.getMessage()
                                    for r in caplog.records))
            assert sink.state is SourceState.UP


async def test_consistent_reads_make_no_leader_an_outage(double: ConsulDouble) -> None:
    async with start(double, consul_consistent=True) as (source, sink):
        assert {mode for path, mode in double.consistency_log} == {"default"}
        assert _contact(source, "dc1") == (0.0, 1.0)
        double.set_leader(False)
        await until(lambda: sink.state is SourceState.STALE)
        assert "No cluster leader" in sink.states[-1].reason
        assert sink.instances("web")  # the last view keeps serving
        # No reply, no word on the leader: the datacenter's gauges are gone.
        await until(lambda: _contact(source, "dc1") == (-1.0, -1.0))
        double.set_leader(True)
        await until(lambda: sink.state is SourceState.UP)


def _contact(source: ConsulSource, dc: str) -> tuple[float, float]:
    """(last contact seconds, known leader) as the source's gauges say for ``dc``."""
    values = {g.name: g.value for g in source.gauges if g.labels["datacenter"] == dc}
    return (values.get("dnsd_consul_last_contact_seconds", -1.0),
            values.get("dnsd_consul_known_leader", -1.0))


async def test_index_going_backwards_resets(double: ConsulDouble, running: Running) -> None:
    _, sink = running
    double.rewind(to=3)  # a snapshot restore: every index smaller than before
    double.register("api", "api-1", node="node1", port=9000)
    await until(lambda: len(sink.instances("api")) == 1)
    double.deregister("api-1", node="node1")
    await until(lambda: not sink.instances("api"))


async def test_token_is_sent(double: ConsulDouble) -> None:
    double.required_token = "s3cret"
    async with start(double, consul_token="s3cret") as (_, sink):
        assert sink.instances("web")


async def test_wrong_token_is_stale_with_reason(double: ConsulDouble) -> None:
    double.required_token = "s3cret"
    source = ConsulSource(settings(double, consul_token="wrong", wait=2.0,
                                   backoff_base=0.05, backoff_cap=0.3))
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await until(lambda: sink.state is SourceState.STALE)
        assert "permission denied" in sink.states[-1].reason
        assert not sink.views
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("services", [40, 400])
async def test_idle_request_rate_is_bounded_by_the_watch_limit(double: ConsulDouble,
                                                                services: int) -> None:
    for n in range(services):
        double.register(f"svc{n}", f"svc{n}-1", node="node1", port=1000 + n)
    source = ConsulSource(settings(double, wait=1.0, watch_limit=16))
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await until(lambda: sink.state is SourceState.UP)
        await asyncio.sleep(0.5)
        mark = len(double.request_log)
        await asyncio.sleep(3.0)
        window = double.request_log[mark:]
        # 3 catalog long-polls + 16 service long-polls, each expiring once per
        # wait on its own slot: about 19 * 3 = 57 requests in 3 s, whether there
        # are 40 services or 400 (the same bound would hold for 10,000).
        assert 40 <= len(window) <= 75, len(window)
        polled = {path for _, path in window if path.startswith("/v1/health/service/")}
        assert len(polled) == 16
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_same_tags_instance_changes_in_watched_services_need_no_sweep(
        double: ConsulDouble, running: Running) -> None:
    source, sink = running
    double.register("web", "web-2", node="node3", node_address="10.0.0.3", port=80,
                    tags=("v1", "http"))  # the same tag set, no check: no diff explains it
    await until(lambda: len(sink.instances("web")) == 2)
    double.deregister("web-2", node="node3")
    await until(lambda: len(sink.instances("web")) == 1)
    assert source.counters["sweeps"] == 0  # web's own long-poll saw both


async def test_services_beyond_the_watch_limit_are_swept_then_promoted(
        double: ConsulDouble) -> None:
    for n in range(6):
        double.register(f"svc{n}", f"svc{n}-1", node="node1", port=1000 + n)
    double.register("busy", "busy-1", node="node1", port=80)
    double.register("busy", "busy-2", node="node2", port=80)
    # Watched first: the services with most instances (busy, then db, svc0, svc1...
    # by name with one instance each); with a limit of 2, svc5 is not watched.
    async with start(double, watch_limit=2) as (source, sink):
        double.register("svc5", "svc5-2", node="node2", port=2000)  # same tags: unexplained
        await until(lambda: len(sink.instances("svc5")) == 2)
        assert source.counters["swept_changes"] == 1  # a sweep of the unwatched found it
        # Promoted: svc5 now has its own long-poll, which sees the next change
        # (the unwatched rest is still swept, and finds nothing).
        await until(lambda: _polled_with_index(double, "svc5"))
        double.deregister("svc5-2", node="node2")
        await until(lambda: len(sink.instances("svc5")) == 1)
        assert source.counters["swept_changes"] == 1
        # db, the coldest watched service, made room; it is still followed, by sweeps.
        assert not _polled_with_index(double, "web")
        double.register("db", "db-3", node="node3", node_address="10.0.0.3", port=5432)
        await until(lambda: len(sink.instances("db")) == 2)
        assert source.counters["swept_changes"] == 2


async def test_no_watches_at_all_still_follows_everything(double: ConsulDouble) -> None:
    async with start(double, watch_limit=0) as (_, sink):
        double.register("web", "web-2", node="node3", node_address="10.0.0.3", port=80,
                        tags=("v1", "http"))
        await until(lambda: len(sink.instances("web")) == 2)
        double.set_check("web-1", "critical", node="node1")
        await until(lambda: sink.instances("web")[0].health is Health.CRITICAL)
        assert not _polled_with_index(double, "web")


def _polled_with_index(double: ConsulDouble, service: str) -> bool:
    return double.requests_with_index.get(f"/v1/health/service/{service}", 0) > 0


async def test_cancel_is_prompt_during_a_long_poll(double: ConsulDouble) -> None:
    source = ConsulSource(settings(double, wait=60.0))
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    await until(lambda: sink.state is SourceState.UP)
    await asyncio.sleep(0.1)  # the three long-polls are hanging now
    started = time.monotonic()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert time.monotonic() - started < 30.0  # not the 60 s long-poll


async def test_node_meta_and_tagged_addresses_are_published(double: ConsulDouble) -> None:
    double.register("api", "api-1", node="node3", node_address="10.0.0.3", port=9000,
                    node_meta={"rack": "r3", "zone": "a"},
                    node_tagged_addresses={"lan_ipv6": "fd00::3", "wan": "198.51.100.3"},
                    tagged_addresses={"lan_ipv6": {"Address": "fd00::33", "Port": 9001}})
    async with start(double) as (_, sink):
        node3 = _node(sink, "node3")
        assert dict(node3.meta) == {"rack": "r3", "zone": "a"}
        assert dict(node3.tagged_addresses) == {"lan_ipv6": "fd00::3", "wan": "198.51.100.3"}
        (api,) = sink.instances("api")
        assert {t: (a.address, a.port) for t, a in api.tagged_addresses.items()} == {
            "lan_ipv6": ("fd00::33", 9001)}
        # Meta changes on its own (no service touched): the node is published again.
        double.add_node("node3", "10.0.0.3", meta={"rack": "r9"})
        await until(lambda: dict(_node(sink, "node3").meta) == {"rack": "r9"})
        # A node registered with its first service has its meta from the start.
        double.register("cache", "cache-1", node="node4", node_address="10.0.0.4", port=6379,
                        node_meta={"rack": "r4"})
        await until(lambda: bool(sink.instances("cache")))
        assert dict(_node(sink, "node4").meta) == {"rack": "r4"}


def _node(sink: RecordingSink, name: str, dc: str = "dc1") -> Node:
    assert sink.view is not None
    (node,) = [n for n in sink.view.nodes if n.name == name and n.datacenter == dc]
    return node


async def test_prepared_query_definitions_are_read_and_reread() -> None:
    with ConsulDouble() as double:
        double.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80)
        double.register("web", "web-far", node="far1", node_address="10.2.0.1", port=80,
                        dc="dc2")
        first = double.create_query({"Name": "web", "Service": {"Service": "web"},
                                     "Token": "s3cret"})
        double.create_query({"Name": "far", "Service": {"Service": "web"}}, dc="dc2")
        async with start(double, consul_datacenters=("dc2",),
                         prepared_interval=0.1) as (source, sink):
            await until(lambda: set(sink.view.prepared) == {"dc1", "dc2"})
            assert _queries(sink, "dc1") == {first: "web"}
            assert "s3cret" not in sink.view.prepared["dc1"]
            # Re-read, but unchanged: nothing is published again.
            published, reads = len(sink.views), source.counters["prepared_reads"]
            await until(lambda: source.counters["prepared_reads"] >= reads + 6)
            assert len(sink.views) == published
            # A new one, an update and a deletion each show up with a re-read.
            second = double.create_query({"Name": "db", "Service": {"Service": "db"}})
            await until(lambda: _queries(sink, "dc1") == {first: "web", second: "db"})
            status, _, _ = double.handle("PUT", f"/v1/query/{first}", body=json.dumps(
                {"Name": "web-v2", "Service": {"Service": "web"}}).encode())
            assert status == 200
            await until(lambda: _queries(sink, "dc1") == {first: "web-v2", second: "db"})
            for ident in (first, second):
                assert double.handle("DELETE", f"/v1/query/{ident}")[0] == 200
            await until(lambda: "dc1" not in sink.view.prepared)
            assert set(_queries(sink, "dc2").values()) == {"far"}
            assert sink.state is SourceState.UP


def _queries(sink: RecordingSink, dc: str) -> dict[str, str]:
    assert sink.view is not None
    text = sink.view.prepared.get(dc)
    return {} if text is None else {q["ID"]: q["Name"] for q in json.loads(text)}


class QueriesFail(ConsulDouble):
    """A Consul whose prepared query endpoint fails (an RPC error) while
    ``failing`` is set, its catalog fine."""

    failing = False

    def handle(self, method: str, raw_path: str, token: str | None = None,
               body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.failing and raw_path.startswith("/v1/query"):
            return 500, {}, b"rpc error making call: unexpected EOF"
        return super().handle(method, raw_path, token, body)


async def test_unreadable_definitions_keep_the_last_ones_and_the_source_up(
        caplog: pytest.LogCaptureFixture) -> None:
    with QueriesFail() as double:
        double.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80)
        first = double.create_query({"Name": "web", "Service": {"Service": "web"}})
        async with start(double, prepared_interval=0.1) as (source, sink):
            assert _queries(sink, "dc1") == {first: "web"}
            double.failing = True
            double.create_query({"Name": "db", "Service": {"Service": "db"}})
            errors = source.counters["prepared_errors"]
            await until(lambda: source.counters["prepared_errors"] >= errors + 3)
            # The catalog still follows, the last definitions still serve.
            double.register("api", "api-1", node="node1", port=9000)
            await until(lambda: bool(sink.instances("api")))
            assert _queries(sink, "dc1") == {first: "web"}
            assert sink.state is SourceState.UP
            assert len([r for r in caplog.records
                        if "cannot read prepared queries" in r.getMessage()]) == 1
            double.failing = False
            await until(lambda: set(_queries(sink, "dc1").values()) == {"web", "db"})


async def test_a_query_of_an_unknown_service_is_named_in_a_warning(
        double: ConsulDouble, caplog: pytest.LogCaptureFixture) -> None:
    ident = double.create_query({"Name": "ghost", "Service": {"Service": "nothere"}})
    double.create_query({"Name": "web", "Service": {"Service": "web"}})
    async with start(double, prepared_interval=0.1) as (source, _):
        reads = source.counters["prepared_reads"]
        await until(lambda: source.counters["prepared_reads"] >= reads + 3)
        warnings = [r.getMessage() for r in caplog.records if "no catalog" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert ident in warnings[0] and "'ghost'" in warnings[0] and "'nothere'" in warnings[0]
