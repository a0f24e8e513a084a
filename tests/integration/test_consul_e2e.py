"""End to end: the Consul double -> ConsulSource -> dnsd's real app (table,
answerer, handler, UDP/TCP servers) -> DNS answers read with dnspython.

The app is dnsd's own, built in-process with the parts ``dnsd.build`` wires
and a Consul source whose waits and backoff are shortened for tests; queries go
over real loopback sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsd.app import App
from dnsd.build import build
from dnsd.config import Config, load_config
from dnsd.sources.base import Source
from dnsd.sources.consul import ConsulSource
from dnsd.sources.registry import consul_settings
from dnsd.state import load_views
from tests.consul_double import ConsulDouble, register_web
from tests.waiting import until


def quick_consul(config: Config) -> list[Source]:
    """The Consul source the configuration names, with short waits and backoff."""
    if not config.consul:
        return []
    settings = replace(consul_settings(config), wait=2.0, backoff_base=0.05, backoff_cap=0.3)
    return [ConsulSource(settings)]


@asynccontextmanager
async def dnsd(*args: str) -> AsyncIterator[App]:
    config = load_config(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                          "--node-name", "testnode", *args], environ={})
    app = App(config, parts=build(config, registry_sources=quick_consul(config)))
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


async def ask(app: App, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    port = app.listeners[0].port
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", port=port, timeout=2)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2)


def texts(reply: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in reply.answer for rd in rrset}


async def answers(app: App, name: str, rdtype: str = "A") -> set[str]:
    return texts(await ask(app, name, rdtype))


def answers_are(app: App, name: str, expected: set[str],
                rdtype: str = "A") -> Callable[[], object]:
    async def check() -> bool:
        return await answers(app, name, rdtype) == expected
    return check


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble() as d:
        register_web(d)
        yield d


async def test_registration_deregistration_and_fields(double: ConsulDouble) -> None:
    async with dnsd("--consul", double.url) as app:
        await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
        # Empty service address: the node's; SRV targets as Consul builds them.
        srv = texts(await ask(app, "web.service.consul", "SRV"))
        assert any(t.endswith(" 80 node1.node.dc1.consul.") for t in srv), srv
        assert any(" 81 " in t and ".addr.dc1.consul." in t for t in srv), srv
        assert await answers(app, "v1.web.service.consul") == {"10.0.0.1"}
        rfc2782 = texts(await ask(app, "_web._v2.service.consul", "SRV"))
        assert len(rfc2782) == 1 and " 81 " in rfc2782.pop()
        assert await answers(app, "node2.node.consul") == {"10.0.0.2"}

        double.register("api", "api-1", node="node1", port=9000)
        await until(answers_are(app, "api.service.consul", {"10.0.0.1"}))
        double.deregister("api-1", node="node1")
        await until(lambda: _rcode(app, "api.service.consul", dns.rcode.NXDOMAIN))


async def _rcode(app: App, name: str, rcode: int) -> bool:
    return (await ask(app, name)).rcode() == rcode


async def test_health_critical_removes_warning_kept(double: ConsulDouble) -> None:
    async with dnsd("--consul", double.url) as app:
        await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
        double.set_check("web-1", "critical", node="node1")
        await until(answers_are(app, "web.service.consul", {"10.5.0.2"}))
        double.set_check("web-1", "warning", node="node1")
        await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
        double.set_check("web-2", "critical", node="node2")
        double.set_check("web-1", "critical", node="node1")
        await until(lambda: _rcode(app, "web.service.consul", dns.rcode.NXDOMAIN))


async def test_only_passing_drops_warning(double: ConsulDouble) -> None:
    double.set_check("web-1", "warning", node="node1")
    async with dnsd("--consul", double.url, "--only-passing") as app:
        await until(answers_are(app, "web.service.consul", {"10.5.0.2"}))
        double.set_check("web-1", "passing", node="node1")
        await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))


async def test_remote_datacenter(double: ConsulDouble) -> None:
    double.register("web", "web-far", node="far1", node_address="10.2.0.1", port=80, dc="dc2")
    async with dnsd("--consul", double.url, "--consul-datacenters", "dc2") as app:
        await until(answers_are(app, "web.service.dc2.consul", {"10.2.0.1"}))
        # each datacenter syncs on its own: the local one may land a moment later
        await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
        double.register("db", "db-far", node="far1", port=5432, dc="dc2")
        await until(answers_are(app, "db.service.dc2.consul", {"10.2.0.1"}))


async def test_consul_down_keeps_serving_then_resyncs(double: ConsulDouble) -> None:
    async with dnsd("--consul", double.url) as app:
        await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
        double.stop()
        name = next(iter(app.statuses))
        await until(lambda: app.statuses[name].state.value == "stale")
        assert await answers(app, "web.service.consul") == {"10.0.0.1", "10.5.0.2"}
        assert app.ready[0]  # still serving its last view
        double.start()
        double.deregister("web-2", node="node2")
        await until(lambda: app.statuses[name].state.value == "up")
        await until(answers_are(app, "web.service.consul", {"10.0.0.1"}))


async def test_restart_with_consul_down_serves_saved_table(double: ConsulDouble,
                                                          tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    async with dnsd("--consul", double.url, "--state-dir", state) as app:
        await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
        await until(lambda: app.saver is not None and app.saver.saves > 0)
    double.stop()
    async with dnsd("--consul", double.url, "--state-dir", state) as app:
        # Answers at once, from the saved table, with Consul unreachable.
        assert await answers(app, "web.service.consul") == {"10.0.0.1", "10.5.0.2"}
        assert app.ready[0]
        double.start()
        double.deregister("web-1", node="node1")
        await until(answers_are(app, "web.service.consul", {"10.5.0.2"}))


async def test_corrupt_state_file_is_ignored(double: ConsulDouble, tmp_path: Path) -> None:
    (tmp_path / "table.json").write_text('{"format": "dnsd-table", "version": 1, "views": 5')
    async with dnsd("--consul", double.url, "--state-dir", str(tmp_path)) as app:
        assert "table.json" in app.state_error
        await until(answers_are(app, "web.service.consul", {"10.0.0.1", "10.5.0.2"}))
        await until(lambda: app.saver is not None and app.saver.saves > 0)
    assert load_views(str(tmp_path))  # replaced by a good one
