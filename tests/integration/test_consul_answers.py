"""End to end, what Consul's finer data answers: node meta and tagged
addresses, prepared queries (against the double's own ``execute``), and a
cluster without a leader. The Consul double -> ConsulSource -> dnsd's app ->
DNS over loopback, read with dnspython.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsd.app import App
from dnsd.build import build
from dnsd.config import load_config
from dnsd.sources.consul import ConsulSource
from dnsd.sources.registry import consul_settings
from tests.consul_double import ConsulDouble, go_duration
from tests.integration.test_consul_e2e import ask, texts, until


@asynccontextmanager
async def dnsd(*args: str, prepared_interval: float = 0.2) -> AsyncIterator[App]:
    """dnsd's app on loopback watching the double, with short waits (the
    definitions re-read every ``prepared_interval``)."""
    config = load_config(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9",
                          "--node-name", "testnode", *args], environ={})
    assert config.consul
    settings = replace(consul_settings(config), wait=2.0, backoff_base=0.05, backoff_cap=0.3,
                       prepared_interval=prepared_interval)
    app = App(config, parts=build(config, registry_sources=[ConsulSource(settings)]))
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


def records(reply: dns.message.Message, section: str = "answer",
            rdtype: str | None = None) -> set[str]:
    """``name TTL type data`` of each record of a section (of one type)."""
    found = set()
    for rrset in getattr(reply, section):
        if rdtype is None or rrset.rdtype == dns.rdatatype.from_text(rdtype):
            for rd in rrset:
                found.add(f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} "
                          f"{rd.to_text()}")
    return found


# --- node meta and tagged addresses ---------------------------------------------------


@pytest.fixture
def tagged() -> Iterator[ConsulDouble]:
    with ConsulDouble(remote=("dc2",)) as d:
        d.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80,
                   status="passing", node_meta={"rack": "r1", "env": "prod"},
                   node_tagged_addresses={"lan": "10.0.0.1", "lan_ipv6": "fd00::1",
                                          "wan": "198.51.100.1"})
        d.register("web", "web-2", node="node2", node_address="10.0.0.2", address="10.5.0.2",
                   port=81, status="passing",
                   tagged_addresses={"lan_ipv6": {"Address": "fd00::52", "Port": 81}})
        d.register("web", "web-far", node="far1", node_address="10.2.0.1", port=80, dc="dc2",
                   node_meta={"rack": "far"},
                   node_tagged_addresses={"wan": "203.0.113.1"})
        d.register("api", "api-far", node="far2", node_address="10.2.0.2", address="10.2.5.2",
                   port=9000, dc="dc2",
                   tagged_addresses={"wan": {"Address": "203.0.113.52", "Port": 19000}})
        yield d


async def test_node_meta_is_txt_alone_in_any_and_beside_node_and_srv_answers(
        tagged: ConsulDouble) -> None:
    async with dnsd("--consul", tagged.url) as app:
        await until(lambda: _has(app, "node1.node.consul", "TXT"))
        txt = await ask(app, "node1.node.consul", "TXT")
        assert records(txt) == {'node1.node.consul. 0 TXT "env=prod"',
                                'node1.node.consul. 0 TXT "rack=r1"'}
        reply = await ask(app, "node1.node.consul", "A")
        assert records(reply) == {"node1.node.consul. 0 A 10.0.0.1"}
        assert records(reply, "additional") == {'node1.node.consul. 0 TXT "env=prod"',
                                                'node1.node.consul. 0 TXT "rack=r1"'}
        # ANY over TCP (over UDP it is one RRset, RFC 8482).
        anything = await ask(app, "node1.node.consul", "ANY", tcp=True)
        assert records(anything, rdtype="TXT") == records(txt)
        # ...with the address Consul gives ANY: the tagged lan_ipv6 first.
        assert "node1.node.consul. 0 AAAA fd00::1" in records(anything)
        srv = await ask(app, "web.service.consul", "SRV")
        assert records(srv, "additional", "TXT") == {
            'node1.node.dc1.consul. 0 TXT "env=prod"', 'node1.node.dc1.consul. 0 TXT "rack=r1"'}
        # A node without meta: NOERROR, no TXT (never NXDOMAIN for a known node).
        bare = await ask(app, "node2.node.consul", "TXT")
        assert bare.rcode() == dns.rcode.NOERROR and not bare.answer
        # Meta changed in Consul: the answer follows.
        tagged.add_node("node1", "10.0.0.1", meta={"rack": "r7"})
        await until(lambda: _answer_is(app, "node1.node.consul", "TXT",
                                       {'node1.node.consul. 0 TXT "rack=r7"'}))


async def test_lan_ipv6_tagged_addresses_answer_aaaa(tagged: ConsulDouble) -> None:
    async with dnsd("--consul", tagged.url) as app:
        await until(lambda: _answer_is(app, "node1.node.consul", "AAAA",
                                       {"node1.node.consul. 0 AAAA fd00::1"}))
        assert records(await ask(app, "node1.node.consul", "A")) == {
            "node1.node.consul. 0 A 10.0.0.1"}
        # A service at its node's address answers the node's lan_ipv6; one at
        # its own address, its own tagged lan_ipv6.
        await until(lambda: _answer_is(app, "web.service.consul", "AAAA", {
            "web.service.consul. 0 AAAA fd00::1", "web.service.consul. 0 AAAA fd00::52"}))
        assert records(await ask(app, "web.service.consul", "A")) == {
            "web.service.consul. 0 A 10.0.0.1", "web.service.consul. 0 A 10.5.0.2"}


async def test_translate_wan_addrs_answers_a_remote_datacenter_at_its_wan_address(
        tagged: ConsulDouble) -> None:
    args = ("--consul", tagged.url, "--consul-datacenters", "dc2")
    async with dnsd(*args) as app:
        await until(lambda: _answer_is(app, "far1.node.dc2.consul", "A",
                                       {"far1.node.dc2.consul. 0 A 10.2.0.1"}))
    async with dnsd(*args, "--translate-wan-addrs") as app:
        await until(lambda: _answer_is(app, "far1.node.dc2.consul", "A",
                                       {"far1.node.dc2.consul. 0 A 203.0.113.1"}))
        assert records(await ask(app, "web.service.dc2.consul", "A")) == {
            "web.service.dc2.consul. 0 A 203.0.113.1"}
        await until(lambda: _answer_is(app, "api.service.dc2.consul", "A",
                                       {"api.service.dc2.consul. 0 A 203.0.113.52"}))
        srv = await ask(app, "api.service.dc2.consul", "SRV")
        assert records(srv) == {
            "api.service.dc2.consul. 0 SRV 1 1 19000 cb007134.addr.dc2.consul."}
        assert records(srv, "additional") == {"cb007134.addr.dc2.consul. 0 A 203.0.113.52"}
        # The local datacenter is answered at its own addresses (it syncs on
        # its own: it may land a moment after dc2).
        await until(lambda: _answer_is(app, "node1.node.consul", "A",
                                       {"node1.node.consul. 0 A 10.0.0.1"}))


async def _has(app: App, name: str, rdtype: str) -> bool:
    return bool((await ask(app, name, rdtype)).answer)


async def _answer_is(app: App, name: str, rdtype: str, expected: set[str]) -> bool:
    return records(await ask(app, name, rdtype)) == expected


# --- prepared queries, as the double's execute answers them ---------------------------


@pytest.fixture
def queries() -> Iterator[ConsulDouble]:
    with ConsulDouble(remote=("dc2",)) as d:
        d.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80,
                   tags=("v1",), status="passing")
        d.register("web", "web-2", node="node2", node_address="10.0.0.2", address="10.5.0.2",
                   port=81, tags=("v2",), status="passing")
        d.register("web", "web-3", node="node3", node_address="10.0.0.3", port=82,
                   tags=("v1",), status="critical")
        d.register("cache", "cache-1", node="node1", port=6379, status="critical")
        d.register("cache", "cache-far", node="far1", node_address="10.2.0.1", port=6379,
                   dc="dc2", status="passing")
        d.register("db", "db-far", node="far2", node_address="10.2.0.2", address="10.2.5.2",
                   port=5432, dc="dc2", status="passing")
        yield d


def create(double: ConsulDouble, definition: dict[str, Any], dc: str | None = None) -> str:
    """Create a query over HTTP, as an operator's POST /v1/query does."""
    path = "/v1/query" + (f"?dc={dc}" if dc else "")
    status, _, body = double.handle("POST", path, body=json.dumps(definition).encode())
    assert status == 200, body
    return str(json.loads(body)["ID"])


def update(double: ConsulDouble, ident: str, definition: dict[str, Any]) -> None:
    status, _, body = double.handle("PUT", f"/v1/query/{ident}",
                                    body=json.dumps(definition).encode())
    assert status == 200, body


@dataclass(frozen=True)
class Expected:
    """What a name should answer, worked out from the double's execute."""

    addresses: set[str]
    srv: set[tuple[int, str]]  # (port, target)
    ttl: int


NOT_YET = Expected(set(), set(), -1)


def executed(double: ConsulDouble, name: str, default_ttl: int = 0) -> Expected | None:
    reply = double.execute_query(name)
    if not reply["Nodes"]:
        return None
    dc = reply["Datacenter"]
    addresses, srv = set(), set()
    for entry in reply["Nodes"]:
        own, node = entry["Service"]["Address"], entry["Node"]
        addresses.add(own or node["Address"])
        target = (f"{ipaddress.ip_address(own).packed.hex()}.addr.{dc}.consul." if own
                  else f"{node['Node']}.node.{dc}.consul.")
        srv.add((entry["Service"]["Port"], target))
    ttl = reply["DNS"]["TTL"]
    return Expected(addresses, srv, int(go_duration(ttl)) if ttl else default_ttl)


async def answered(app: App, name: str) -> Expected | None:
    a = await ask(app, f"{name}.query.consul", "A")
    srv = await ask(app, f"_{name}._tcp.query.consul", "SRV")
    if a.rcode() == dns.rcode.NXDOMAIN and srv.rcode() == dns.rcode.NXDOMAIN:
        return None
    if dns.rcode.SERVFAIL in (a.rcode(), srv.rcode()):
        return NOT_YET  # the source has not been heard yet
    if a.rcode() != srv.rcode():
        return NOT_YET  # new definitions landed between the two questions
    assert a.rcode() == srv.rcode() == dns.rcode.NOERROR, (a, srv)
    ttls = {rrset.ttl for reply in (a, srv) for rrset in reply.answer}
    assert len(ttls) == 1, (a, srv)
    return Expected({rd.address for rrset in a.answer for rd in rrset},
                    {(rd.port, rd.target.to_text()) for rrset in srv.answer for rd in rrset},
                    ttls.pop())


async def agrees(app: App, double: ConsulDouble, name: str) -> bool:
    return await answered(app, name) == executed(double, name)


async def test_prepared_queries_answer_as_consul_executes_them(
        queries: ConsulDouble, caplog: pytest.LogCaptureFixture) -> None:
    create(queries, {"Name": "web", "Service": {"Service": "web"}})
    create(queries, {"Name": "web-v1", "Service": {"Service": "web", "Tags": ["v1"]},
                     "DNS": {"TTL": "30s"}})
    create(queries, {"Name": "cache", "Service": {"Service": "cache",
                                                  "Failover": {"Datacenters": ["dc2"]}},
                     "DNS": {"TTL": "1m30s"}})
    create(queries, {"Name": "geo-", "Template": {"Type": "name_prefix_match"},
                     "Service": {"Service": "${name.suffix}",
                                 "Failover": {"Datacenters": ["dc2"]}}})
    create(queries, {"Name": "ghost", "Service": {"Service": "nothere"}})
    broken = store_as_consul_would(queries, {
        "Name": "letters-", "Template": {"Type": "name_prefix_match",
                                         "Regexp": r"^letters-(\pL+)$"},
        "Service": {"Service": "${match(1)}"}})
    cases = ["web", "web-v1", "cache", "geo-web", "geo-db", "geo-cache"]
    async with dnsd("--consul", queries.url, "--consul-datacenters", "dc2") as app:
        await until(lambda: _has(app, "web.query.consul", "A"))
        await until(lambda: _has(app, "db.service.dc2.consul", "A"))  # failover's target
        for name in cases:
            expected = executed(queries, name)
            assert expected is not None, name
            assert await answered(app, name) == expected, name
        # The failover went to dc2, where the instances are named.
        assert {t for _, t in (await answered(app, "cache") or Expected(set(), set(), 0)).srv} \
            == {"far1.node.dc2.consul."}
        # Bad definitions: NXDOMAIN for them, each named in a warning; the rest unharmed.
        for name in ("ghost", "letters-abc"):
            reply = await ask(app, f"{name}.query.consul", "A")
            assert reply.rcode() == dns.rcode.NXDOMAIN, name
        messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("'ghost'" in m and "'nothere'" in m for m in messages), messages
        assert any(broken in m and "letters-" in m and "regexp" in m for m in messages), messages
        assert await agrees(app, queries, "web")


async def test_prepared_query_changes_show_up_with_the_next_read(queries: ConsulDouble) -> None:
    ident = create(queries, {"Name": "web", "Service": {"Service": "web"}})
    async with dnsd("--consul", queries.url, "--consul-datacenters", "dc2") as app:
        await until(lambda: agrees(app, queries, "web"))
        assert (await answered(app, "web") or Expected(set(), set(), -1)).addresses == {
            "10.0.0.1", "10.5.0.2"}
        update(queries, ident, {"Name": "web", "Service": {"Service": "web", "Tags": ["v2"]},
                                "DNS": {"TTL": "10s"}})
        await until(lambda: _answer_is(app, "web.query.consul", "A",
                                       {"web.query.consul. 10 A 10.5.0.2"}))
        assert await agrees(app, queries, "web")
        update(queries, ident, {"Name": "db", "Service": {"Service": "db",
                                                          "Failover": {"Datacenters": ["dc2"]}}})
        await until(lambda: agrees(app, queries, "db"))
        assert (await ask(app, "web.query.consul", "A")).rcode() == dns.rcode.NXDOMAIN
        assert queries.handle("DELETE", f"/v1/query/{ident}")[0] == 200
        await until(lambda: _rcode_is(app, "db.query.consul", dns.rcode.NXDOMAIN))
        # Queries of another datacenter are asked there.
        create(queries, {"Name": "far", "Service": {"Service": "db"}}, dc="dc2")
        await until(lambda: _answer_is(app, "far.query.dc2.consul", "A",
                                       {"far.query.dc2.consul. 0 A 10.2.5.2"}))
        assert (await ask(app, "far.query.consul", "A")).rcode() == dns.rcode.NXDOMAIN


def store_as_consul_would(double: ConsulDouble, definition: dict[str, Any]) -> str:
    """Store a definition the double (Python's ``re``) would refuse but Consul
    (Go's RE2, which knows ``\\pL``, a Unicode letter) accepts; its ID."""
    ident = "6f5b1c9e-3c3a-4a8e-9d2b-000000000001"
    with double._cond:
        double._dcs[double.datacenter].queries[ident] = {
            "ID": ident, "Name": definition["Name"], "Session": "", "Token": "",
            "Template": {"Type": "", "Regexp": "", "RemoveEmptyTags": False,
                         **definition.get("Template", {})},
            "Service": {"Service": "", "Failover": {"NearestN": 0, "Datacenters": None},
                        "IgnoreCheckIDs": None, "OnlyPassing": False, "Near": "",
                        "Tags": None, "NodeMeta": None, "ServiceMeta": None,
                        "Connect": False, **definition["Service"]},
            "DNS": {"TTL": ""}, "CreateIndex": 5, "ModifyIndex": 5}
    return ident


async def _rcode_is(app: App, name: str, rcode: int) -> bool:
    return (await ask(app, name, "A")).rcode() == rcode


# --- a cluster without a leader -----------------------------------------------------


async def _metrics(app: App) -> str:
    """/metrics, fetched off the loop (the app serves it on this one)."""
    host, port = app.metrics_address

    def fetch() -> str:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    return await asyncio.to_thread(fetch)


async def _gauge_of(app: App, name: str, dc: str) -> float | None:
    return _gauge(await _metrics(app), name, dc)


def _gauge(text: str, name: str, dc: str) -> float | None:
    found = re.search(rf'^{name}{{datacenter="{dc}",source="[^"]+"}} (\S+)$|'
                      rf'^{name}{{source="[^"]+",datacenter="{dc}"}} (\S+)$', text, re.M)
    return None if found is None else float(found.group(1) or found.group(2))


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def test_without_a_leader_dnsd_follows_stale_reads_and_says_so() -> None:
    now = [1000.0]
    with ConsulDouble(clock=lambda: now[0]) as double:
        double.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80)
        async with dnsd("--consul", double.url, "--metrics", "127.0.0.1:0") as app:
            await until(lambda: _has(app, "web.service.consul", "A"))
            assert await _gauge_of(app, "dnsd_consul_known_leader", "dc1") == 1.0
            double.set_leader(False)
            now[0] += 12.5
            double.register("api", "api-1", node="node2", node_address="10.0.0.2", port=9000)
            await until(lambda: _answer_is(app, "api.service.consul", "A",
                                           {"api.service.consul. 0 A 10.0.0.2"}))
            await until(lambda: _is(_gauge_of(app, "dnsd_consul_known_leader", "dc1"), 0.0))
            assert await _gauge_of(app, "dnsd_consul_last_contact_seconds", "dc1") == 12.5
            assert app.ready[0]
            assert {s.state.value for s in app.statuses.values()} == {"up"}


async def test_consistent_reads_go_stale_without_a_leader() -> None:
    with ConsulDouble() as double:
        double.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80)
        async with dnsd("--consul", double.url, "--consul-consistent") as app:
            await until(lambda: _has(app, "web.service.consul", "A"))
            double.set_leader(False)
            (name,) = app.statuses
            await until(lambda: app.statuses[name].state.value == "stale")
            assert "No cluster leader" in app.statuses[name].reason
            double.register("api", "api-1", node="node1", port=9000)
            assert texts(await ask(app, "web.service.consul")) == {"10.0.0.1"}  # last table
            assert (await ask(app, "api.service.consul")).rcode() == dns.rcode.NXDOMAIN
            double.set_leader(True)
            await until(lambda: _has(app, "api.service.consul", "A"))
            assert {mode for _, mode in double.consistency_log} == {"default"}
