"""The ZooKeeper source against a real ZooKeeper server, with a registrator
stand-in writing exactly what registrator writes (from its own session, so its
instance nodes are really ephemeral). The source runs on the test's event loop
and reports to a recording sink."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from kazoo.client import KazooClient

from dnsd.config import load_config
from dnsd.sources.base import SourceState
from dnsd.sources.registry import zookeeper_settings
from dnsd.sources.zookeeper import ZooKeeperSource
from tests.integration import conftest_zookeeper as fixtures
from tests.integration.conftest_zookeeper import (
    Registrator,
    TcpProxy,
    wait_until,
)
from tests.sinks import RecordingSink
from tests.zookeeper_server import ZooKeeperServer

# The fixtures, by name (pytest finds them as module attributes).
zookeeper = fixtures.zookeeper
registrator = fixtures.registrator
proxy = fixtures.proxy


@asynccontextmanager
async def running(hosts: str, base: str, *extra: str,
                  **kwargs: float) -> AsyncIterator[tuple[ZooKeeperSource, RecordingSink]]:
    config = load_config(["--zookeeper", f"{hosts}{base}", *extra])
    kwargs.setdefault("max_retry_delay", 0.2)
    source = ZooKeeperSource(replace(zookeeper_settings(config), **kwargs))
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        yield source, sink
    finally:
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 30, "the source hung on stop"


async def up(sink: RecordingSink, timeout: float = 30.0) -> None:
    await wait_until(lambda: sink.state is SourceState.UP, timeout, "source UP")


def has(sink: RecordingSink, service: str, *endpoints: tuple[str, int]) -> Callable[[], bool]:
    return lambda: sink.endpoints(service) == set(endpoints)


async def test_register_query_fields_and_deregister(registrator: Registrator) -> None:
    reg = registrator
    reg.register("web", "10.0.0.1", 8080, tags=["http", "v1"], attrs={"version": "1.2"})
    async with running(reg.hosts, reg.base, "--datacenter", "east") as (_, sink):
        await up(sink)
        assert sink.endpoints("web") == {("10.0.0.1", 8080)}
        [inst] = sink.instances("web")
        assert inst.node == "10.0.0.1" and inst.node_address == "10.0.0.1"
        assert inst.datacenter == "east"
        assert inst.tags == ("http", "v1") and dict(inst.meta) == {"version": "1.2"}
        assert inst.weight == 1

        reg.register("web", "10.0.0.2", 8080)
        reg.register("service_1", "10.0.0.3", 5432, tags=["udp"])
        await wait_until(has(sink, "web", ("10.0.0.1", 8080), ("10.0.0.2", 8080)),
                         what="second web instance")
        await wait_until(has(sink, "service_1", ("10.0.0.3", 5432)), what="service_1")

        reg.deregister("web", "10.0.0.1:8080")
        await wait_until(has(sink, "web", ("10.0.0.2", 8080)), what="web-1 gone")
        reg.deregister("web", "10.0.0.2:8080")  # the service node goes too
        await wait_until(lambda: not sink.instances("web"), what="web gone")
        assert not reg.client.exists(f"{reg.base}/web")
        assert sink.endpoints("service_1") == {("10.0.0.3", 5432)}
        assert sink.state is SourceState.UP
        assert [s for _, s, _ in sink.states] == [SourceState.UP]


async def test_instances_go_when_registrator_session_ends(zookeeper: ZooKeeperServer,
                                                          registrator: Registrator) -> None:
    """A dead registrator's ephemeral nodes vanish, and so do its instances."""
    other = Registrator(zookeeper.hosts, registrator.base)
    registrator.register("api", "10.0.1.1", 80)
    other.register("api", "10.0.1.2", 80)
    async with running(zookeeper.hosts, registrator.base) as (_, sink):
        await wait_until(has(sink, "api", ("10.0.1.1", 80), ("10.0.1.2", 80)))
        other.close()
        await wait_until(has(sink, "api", ("10.0.1.1", 80)), what="ephemeral node expiry")


async def test_base_path_created_after_start(zookeeper: ZooKeeperServer) -> None:
    base = f"/late-{time.monotonic_ns()}"
    async with running(zookeeper.hosts, base) as (_, sink):
        await up(sink)
        assert sink.view is not None and sink.view.instances == ()
        reg = Registrator(zookeeper.hosts, base)  # registrator creates the base on start
        try:
            reg.register("web", "10.0.2.1", 80)
            await wait_until(has(sink, "web", ("10.0.2.1", 80)), what="late base path")
            reg.client.delete(base, recursive=True)
            await wait_until(lambda: sink.view is not None and not sink.view.instances,
                             what="base path deleted")
            reg.client.ensure_path(base)  # as a restarted registrator does
            reg.register("web", "10.0.2.2", 80)
            await wait_until(has(sink, "web", ("10.0.2.2", 80)), what="base path re-created")
        finally:
            reg.close()


async def test_root_base_path_skips_zookeeper_node(zookeeper: ZooKeeperServer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """``--zookeeper host:port`` watches the root, where /zookeeper is no service.

    (Other tests' base paths sit at the root of this shared server too and are
    skipped as non-instances; only ZooKeeper's own tree must not be looked at.)
    """
    caplog.set_level(logging.WARNING, "dnsd.zookeeper")
    async with running(zookeeper.hosts, "") as (source, sink):
        await up(sink)
        assert source.base == "/"
        assert not any(i.service == "zookeeper" for i in sink.instances())
    assert not [r for r in caplog.records if "/zookeeper/" in r.getMessage()]


async def test_malformed_data_and_odd_names(registrator: Registrator,
                                            caplog: pytest.LogCaptureFixture) -> None:
    reg = registrator
    good = Registrator.body("odd", "10.0.3.9", 9999)
    reg.create("odd", "10.0.3.1:80", b"{broken json")              # name rescues it
    reg.create("odd", "container-xyz", good)                        # JSON rescues it
    reg.create("odd", "nothing-usable", b"\xff\x00")                # skipped
    reg.create("odd", "fd00::3:8443", b"")                          # IPv6, no data
    reg.create("odd", "[fd00::4]:8443", b"null")
    reg.create("bad.name", "10.0.3.2:80", good)                     # not a DNS label
    reg.create("odd", "10.0.3.3:80", Registrator.body("odd", "10.0.3.3", 80, tags=["x"],
                                                      attrs={"k": "v"}))
    caplog.set_level(logging.WARNING, "dnsd.zookeeper")
    async with running(reg.hosts, reg.base) as (source, sink):
        await up(sink)
        assert sink.endpoints("odd") == {("10.0.3.1", 80), ("10.0.3.9", 9999),
                                         ("fd00::3", 8443), ("fd00::4", 8443),
                                         ("10.0.3.3", 80)}
        assert not [i for i in sink.instances() if i.service == "bad.name"]
        assert source.skipped_total == 2   # nothing-usable, bad.name
        assert source.ignored_total == 2   # the broken JSON, the 'null' data
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("nothing-usable" in w for w in warnings)
        assert any("bad.name" in w for w in warnings)

        # Still serving and still watching after all that.
        reg.register("odd", "10.0.3.4", 80)
        await wait_until(lambda: ("10.0.3.4", 80) in sink.endpoints("odd"))
        # A skipped node is not reported again when something else changes.
        assert source.skipped_total == 2


async def test_hostile_data_never_stops_the_view(registrator: Registrator,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Data nested deeper than any parser's stack, or far larger than any
    registrator writes: that instance falls back to its name, and the rest of
    the tree is published as usual."""
    reg = registrator
    reg.register("web", "10.0.11.1", 80)
    reg.create("web", "10.0.11.2:80", b"[" * 50_000)
    reg.create("web", "10.0.11.3:80", b'{"Attrs": {"k": "' + b"x" * 500_000 + b'"}}')
    caplog.set_level(logging.WARNING, "dnsd.zookeeper")
    async with running(reg.hosts, reg.base) as (source, sink):
        await up(sink)
        assert sink.endpoints("web") == {("10.0.11.1", 80), ("10.0.11.2", 80),
                                         ("10.0.11.3", 80)}
        assert source.ignored_total == 2
        reg.register("web", "10.0.11.4", 80)  # and the watches still work
        await wait_until(lambda: ("10.0.11.4", 80) in sink.endpoints("web"))


async def test_data_change_is_picked_up(registrator: Registrator) -> None:
    reg = registrator
    path = reg.register("web", "10.0.4.1", 80, tags=["blue"])
    async with running(reg.hosts, reg.base) as (_, sink):
        await wait_until(lambda: [i.tags for i in sink.instances("web")] == [("blue",)])
        reg.client.set(path, Registrator.body("web", "10.0.4.1", 80, tags=["green"]))
        await wait_until(lambda: [i.tags for i in sink.instances("web")] == [("green",)],
                         what="new tags")


async def test_burst_is_published_in_few_swaps(registrator: Registrator) -> None:
    reg = registrator
    async with running(reg.hosts, reg.base) as (_, sink):
        await up(sink)
        before = len(sink.views)
        transaction = reg.client.transaction()
        transaction.create(f"{reg.base}/burst", b"")
        for n in range(50):
            transaction.create(f"{reg.base}/burst/10.0.5.{n}:80",
                               Registrator.body("burst", f"10.0.5.{n}", 80), ephemeral=True)
        transaction.commit()
        await wait_until(lambda: len(sink.endpoints("burst")) == 50, what="50 instances")
        assert len(sink.views) - before <= 5  # 50 creates, a handful of swaps at most


async def test_zookeeper_restart_keeps_serving_then_catches_up(
        zookeeper: ZooKeeperServer, registrator: Registrator) -> None:
    reg = registrator
    reg.register("web", "10.0.6.1", 80)
    reg.register("web", "10.0.6.2", 80)
    async with running(zookeeper.hosts, reg.base) as (source, sink):
        await wait_until(has(sink, "web", ("10.0.6.1", 80), ("10.0.6.2", 80)))
        await up(sink)
        views_before = len(sink.views)
        zookeeper.stop()
        await wait_until(lambda: sink.state is SourceState.STALE, what="STALE")
        await asyncio.sleep(0.5)
        # Nothing published while ZooKeeper is away: the last view stays.
        assert len(sink.views) == views_before
        zookeeper.start()
        # Changes made as soon as the server is back (the source may not be yet).
        await wait_until(lambda: reg.client.connected, 20, "registrator reconnected")
        reg.register("web", "10.0.6.3", 80)
        reg.deregister("web", "10.0.6.1:80")
        await wait_until(has(sink, "web", ("10.0.6.2", 80), ("10.0.6.3", 80)),
                         timeout=20, what="changes after restart")
        await up(sink)
        assert source.resyncs_total >= 2


async def test_missed_changes_are_picked_up_after_reconnect(
        zookeeper: ZooKeeperServer, registrator: Registrator, proxy: TcpProxy) -> None:
    """Cut only dnsd off; registrator keeps writing; after the reconnection the
    whole tree is listed again, since kazoo drops watches on a disconnection."""
    reg = registrator
    reg.register("web", "10.0.7.1", 80)
    reg.register("db", "10.0.7.9", 5432)
    async with running(proxy.hosts, reg.base) as (source, sink):
        await up(sink)
        await wait_until(has(sink, "web", ("10.0.7.1", 80)))
        published = len(sink.views)
        proxy.cut()
        await wait_until(lambda: sink.state is SourceState.STALE, what="STALE")
        assert sink.states[-1][2] == "connection to ZooKeeper lost"
        reg.register("web", "10.0.7.2", 80)
        reg.deregister("web", "10.0.7.1:80")
        reg.deregister("db", "10.0.7.9:5432")
        reg.register("cache", "10.0.7.5", 6379)
        await asyncio.sleep(0.3)
        assert len(sink.views) == published
        assert sink.endpoints("web") == {("10.0.7.1", 80)}  # still the last view
        proxy.restore()
        await up(sink)
        # UP is reported only after the fresh view went out.
        assert sink.endpoints("web") == {("10.0.7.2", 80)}
        assert sink.endpoints("cache") == {("10.0.7.5", 6379)}
        assert not sink.instances("db")
        assert len(sink.views) == published + 1
        # And the watches work again.
        reg.register("web", "10.0.7.3", 80)
        await wait_until(has(sink, "web", ("10.0.7.2", 80), ("10.0.7.3", 80)))
        assert source.resyncs_total == 2


async def test_session_expiry(zookeeper: ZooKeeperServer, registrator: Registrator,
                              proxy: TcpProxy, caplog: pytest.LogCaptureFixture) -> None:
    """Cut off for longer than the session timeout: the server expires the
    session; kazoo starts a new one and the source relists everything."""
    reg = registrator
    reg.register("web", "10.0.8.1", 80)
    caplog.set_level(logging.INFO, "dnsd.zookeeper")
    async with running(proxy.hosts, reg.base, session_timeout=1.5) as (_, sink):
        await up(sink)
        await wait_until(has(sink, "web", ("10.0.8.1", 80)))
        proxy.cut()
        await wait_until(lambda: sink.state is SourceState.STALE)
        reg.register("web", "10.0.8.2", 80)
        await asyncio.sleep(3.0)  # twice the session timeout: expired server-side
        proxy.restore()
        await wait_until(lambda: any(r == "ZooKeeper session expired"
                                     for _, _, r in sink.states), what="expiry seen")
        await up(sink)
        assert sink.endpoints("web") == {("10.0.8.1", 80), ("10.0.8.2", 80)}
        reg.deregister("web", "10.0.8.1:80")
        await wait_until(has(sink, "web", ("10.0.8.2", 80)), what="watch after expiry")
        # One log line per state change, not one per retry.
        stale_lines = [r for r in caplog.records if "stale" in r.getMessage()]
        assert len(stale_lines) == len([s for s in sink.states if s[1] is SourceState.STALE])


async def test_unreachable_at_start_is_stale_then_up(registrator: Registrator,
                                                     proxy: TcpProxy) -> None:
    registrator.register("web", "10.0.9.1", 80)
    proxy.cut()
    async with running(proxy.hosts, registrator.base, connect_grace=0.3) as (_, sink):
        await wait_until(lambda: sink.state is SourceState.STALE, what="STALE at start")
        assert sink.view is None
        proxy.restore()
        await up(sink)
        assert sink.endpoints("web") == {("10.0.9.1", 80)}


async def test_stops_promptly_while_zookeeper_is_unreachable(proxy: TcpProxy) -> None:
    proxy.cut()
    async with running(proxy.hosts, "/services", connect_grace=0.1) as (_, sink):
        await wait_until(lambda: sink.state is SourceState.STALE)
    # running() asserts the cancellation finished within 5 s


async def test_independent_client_sees_same_tree(registrator: Registrator) -> None:
    """Cross-check the published view against a plain kazoo listing."""
    reg = registrator
    for n in range(5):
        reg.register(f"svc{n % 2}", f"10.0.10.{n}", 1000 + n)
    async with running(reg.hosts, reg.base) as (_, sink):
        await up(sink)
        checker = KazooClient(hosts=reg.hosts)
        checker.start(timeout=15)
        try:
            listed = {(svc, child) for svc in checker.get_children(reg.base)
                      for child in checker.get_children(f"{reg.base}/{svc}")}
        finally:
            checker.stop()
            checker.close()
        assert {(i.service, f"{i.address}:{i.port}") for i in sink.instances()} == listed
