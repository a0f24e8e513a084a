"""Consul's finer points, answered from the table: node meta TXT, tagged and wan
addresses, in-zone CNAMEs, TTL and size knobs, the time before a registry is
heard, and prepared queries. Snapshots are built directly from views."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Iterable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from dnsd.answer import Answerer, ZoneSettings, meta_text, render, ttl_for_service
from dnsd.handler import Handler
from dnsd.model import Health, Instance, Node, ServiceAddress, View
from dnsd.table import Table
from dnsd.wire import Query, parse_query


def _table(instances: Iterable[Instance] = (), nodes: Iterable[Node] = (),
           prepared: dict[str, str] | None = None, **kwargs: Any) -> Table:
    table = Table(**kwargs)
    table.publish("test", View(tuple(instances), tuple(nodes), prepared=prepared or {}))
    return table


def _ask(answerer: Answerer, table: Table, name: str, qtype: str = "A",
         limit: int = 65535) -> dns.message.Message:
    query = parse_query(dns.message.make_query(name, qtype).to_wire())
    found = answerer.lookup(query, table.snapshot)
    assert found is not None, f"{name} {qtype} is not ours"
    return dns.message.from_wire(render(query, found, limit=limit))


def _lines(section: list[dns.rrset.RRset]) -> set[str]:
    return {line for rrset in section for line in rrset.to_text().splitlines()}


# --- node meta as TXT --------------------------------------------------------------

META_NODE = Node("node1", "dc1", "10.0.0.1", {"rack": "r1", "rfc1035-raw": "v=spf1 -all",
                                               "a=b": " x`y"})
WEB = Instance("web", "node1", "dc1", address="10.1.0.1", node_address="10.0.0.1", port=80)


@pytest.mark.parametrize(("key", "value", "text"), [
    ("rack", "r1", "rack=r1"),
    ("RFC1035-raw", "v=spf1", "v=spf1"),
    ("a=b", "c", "a`=b=c"),
    ("  k ", "v`", "` ` k` =v``"),
    ("k`", "", "k``="),
])
def test_meta_text_is_rfc_1464_as_consul_writes_it(key: str, value: str, text: str) -> None:
    assert meta_text(key, value) == text


def test_node_txt_answers_its_meta() -> None:
    table = _table([WEB], [META_NODE])
    got = _ask(Answerer(ZoneSettings(ttl=7)), table, "node1.node.consul", "TXT")
    assert _lines(got.answer) == {
        'node1.node.consul. 7 IN TXT "a`=b= x``y"',
        'node1.node.consul. 7 IN TXT "rack=r1"',
        'node1.node.consul. 7 IN TXT "v=spf1 -all"'}


def test_node_without_meta_asked_txt_is_nodata() -> None:
    table = _table([WEB], [Node("node1", "dc1", "10.0.0.1")])
    got = _ask(Answerer(ZoneSettings()), table, "node1.node.consul", "TXT")
    assert got.rcode() == dns.rcode.NOERROR and not got.answer and got.authority


def test_node_meta_rides_in_any_and_in_the_additional_section() -> None:
    table = _table([WEB], [META_NODE])
    answerer = Answerer(ZoneSettings())
    got = _ask(answerer, table, "node1.node.consul", "ANY")
    assert {r.rdtype for r in got.answer} == {dns.rdatatype.A, dns.rdatatype.TXT}
    got = _ask(answerer, table, "node1.node.consul", "A")
    assert _lines(got.answer) == {"node1.node.consul. 0 IN A 10.0.0.1"}
    assert len(_lines(got.additional)) == 3
    got = _ask(answerer, table, "web.service.consul", "SRV")
    assert "node1.node.dc1.consul. 0 IN TXT \"rack=r1\"" in _lines(got.additional)
    assert "0a010001.addr.dc1.consul. 0 IN A 10.1.0.1" in _lines(got.additional)


def test_node_meta_txt_can_be_turned_off() -> None:
    table = _table([WEB], [META_NODE])
    answerer = Answerer(ZoneSettings(node_meta_txt=False))
    assert not _ask(answerer, table, "node1.node.consul", "A").additional
    srv = _ask(answerer, table, "web.service.consul", "SRV")
    assert {r.rdtype for r in srv.additional} == {dns.rdatatype.A}
    assert len(_lines(_ask(answerer, table, "node1.node.consul", "TXT").answer)) == 3


def test_node_meta_is_left_out_before_any_target_address() -> None:
    """Short of room, node meta is left out before any SRV target's address."""
    meta = {f"key{i}": "v" * 200 for i in range(5)}
    table = _table([Instance("web", f"n{i}", "dc1", address=f"10.1.0.{i}", port=80)
                    for i in range(1, 4)],
                   [Node(f"n{i}", "dc1", f"10.0.0.{i}", meta) for i in range(1, 4)])
    got = _ask(Answerer(ZoneSettings()), table, "web.service.consul", "SRV", limit=1232)
    assert not got.flags & dns.flags.TC and len(got.answer[0]) == 3
    kinds = [r.rdtype for r in got.additional]
    assert kinds.count(dns.rdatatype.A) == 3 and kinds.count(dns.rdatatype.TXT) < 15


# --- tagged addresses --------------------------------------------------------------

def test_lan_ipv6_answers_aaaa_for_an_ipv4_node_and_service() -> None:
    table = _table(
        [Instance("web", "node1", "dc1", node_address="10.0.0.1", port=80),
         Instance("api", "node2", "dc1", address="10.2.0.1", node_address="10.0.0.2",
                  tagged_addresses={"lan_ipv6": ServiceAddress("fd00::21")}, port=81)],
        [Node("node1", "dc1", "10.0.0.1", tagged_addresses={"lan_ipv6": "fd00::1"})])
    answerer = Answerer(ZoneSettings())
    assert _lines(_ask(answerer, table, "node1.node.consul", "AAAA").answer) == {
        "node1.node.consul. 0 IN AAAA fd00::1"}
    assert _lines(_ask(answerer, table, "node1.node.consul", "A").answer) == {
        "node1.node.consul. 0 IN A 10.0.0.1"}
    assert _lines(_ask(answerer, table, "web.service.consul", "AAAA").answer) == {
        "web.service.consul. 0 IN AAAA fd00::1"}
    assert _lines(_ask(answerer, table, "api.service.consul", "AAAA").answer) == {
        "api.service.consul. 0 IN AAAA fd00::21"}
    assert _lines(_ask(answerer, table, "api.service.consul", "A").answer) == {
        "api.service.consul. 0 IN A 10.2.0.1"}


def test_lan_ipv4_answers_a_for_an_ipv6_service() -> None:
    table = _table([Instance("api", "node2", "dc1", address="fd00::2", port=81,
                             tagged_addresses={"lan_ipv4": ServiceAddress("10.2.0.2")})])
    got = _ask(Answerer(ZoneSettings()), table, "api.service.consul", "A")
    assert _lines(got.answer) == {"api.service.consul. 0 IN A 10.2.0.2"}


def test_srv_prefers_the_tagged_ipv6_address_as_consul_does() -> None:
    table = _table([Instance("web", "node1", "dc1", node_address="10.0.0.1", port=80)],
                   [Node("node1", "dc1", "10.0.0.1", tagged_addresses={"lan_ipv6": "fd00::1"})])
    got = _ask(Answerer(ZoneSettings()), table, "web.service.consul", "SRV")
    assert _lines(got.answer) == {
        "web.service.consul. 0 IN SRV 1 1 80 fd000000000000000000000000000001.addr.dc1.consul."}


REMOTE = [Instance("web", "far1", "dc2", node_address="10.9.0.1", port=80),
          Instance("api", "far1", "dc2", address="10.9.1.1", node_address="10.9.0.1", port=81,
                   tagged_addresses={"wan": ServiceAddress("198.51.100.11", 8081)})]
REMOTE_NODES = [Node("far1", "dc2", "10.9.0.1", tagged_addresses={"wan": "198.51.100.1"})]


def test_remote_datacenters_answer_lan_addresses_by_default() -> None:
    table = _table(REMOTE, REMOTE_NODES)
    answerer = Answerer(ZoneSettings())
    assert _lines(_ask(answerer, table, "web.service.dc2.consul").answer) == {
        "web.service.dc2.consul. 0 IN A 10.9.0.1"}
    assert _lines(_ask(answerer, table, "api.service.dc2.consul", "SRV").answer) == {
        "api.service.dc2.consul. 0 IN SRV 1 1 81 0a090101.addr.dc2.consul."}


def test_translate_wan_addrs_answers_remote_datacenters_at_their_wan_address() -> None:
    table = _table([*REMOTE, Instance("web", "n1", "dc1", node_address="10.0.0.1")],
                   [*REMOTE_NODES, Node("n1", "dc1", "10.0.0.1",
                                        tagged_addresses={"wan": "198.51.100.99"})])
    answerer = Answerer(ZoneSettings(translate_wan_addrs=True))
    assert _lines(_ask(answerer, table, "web.service.dc2.consul").answer) == {
        "web.service.dc2.consul. 0 IN A 198.51.100.1"}
    assert _lines(_ask(answerer, table, "far1.node.dc2.consul").answer) == {
        "far1.node.dc2.consul. 0 IN A 198.51.100.1"}
    # the node's own address is no longer what the node name gives: an addr target
    assert _lines(_ask(answerer, table, "web.service.dc2.consul", "SRV").answer) == {
        "web.service.dc2.consul. 0 IN SRV 1 1 80 c6336401.addr.dc2.consul."}
    assert _lines(_ask(answerer, table, "api.service.dc2.consul", "SRV").answer) == {
        "api.service.dc2.consul. 0 IN SRV 1 1 8081 c633640b.addr.dc2.consul."}
    # the local datacenter is never translated
    assert _lines(_ask(answerer, table, "web.service.consul").answer) == {
        "web.service.consul. 0 IN A 10.0.0.1"}


# --- CNAMEs ------------------------------------------------------------------------

def test_an_in_zone_address_is_answered_from_the_table() -> None:
    table = _table([Instance("alias", "n1", "dc1", address="api.service.consul", port=1),
                    Instance("api", "n2", "dc1", address="10.2.0.1", port=2),
                    Instance("api", "n3", "dc1", address="10.2.0.2", port=2)])
    got = _ask(Answerer(ZoneSettings(service_ttl=(("alias", 30),))), table,
               "alias.service.consul")
    assert _lines(got.answer) == {"alias.service.consul. 30 IN CNAME api.service.consul.",
                                  "api.service.consul. 30 IN A 10.2.0.1",
                                  "api.service.consul. 30 IN A 10.2.0.2"}
    srv = _ask(Answerer(ZoneSettings()), table, "alias.service.consul", "SRV")
    assert _lines(srv.answer) == {"alias.service.consul. 0 IN SRV 1 1 1 api.service.consul."}
    assert _lines(srv.additional) == {"api.service.consul. 0 IN A 10.2.0.1",
                                      "api.service.consul. 0 IN A 10.2.0.2"}


def test_an_in_zone_node_address_is_answered_from_the_table() -> None:
    table = _table([Instance("api", "n2", "dc1", address="10.2.0.1", port=2)],
                   [Node("edge", "dc1", "n2.node.dc1.consul"), Node("n2", "dc1", "10.0.0.2")])
    got = _ask(Answerer(ZoneSettings()), table, "edge.node.consul")
    assert _lines(got.answer) == {"edge.node.consul. 0 IN CNAME n2.node.dc1.consul.",
                                  "n2.node.dc1.consul. 0 IN A 10.0.0.2"}


def test_a_service_whose_address_names_itself_is_answered_at_its_node() -> None:
    table = _table([Instance("web", "n1", "dc1", address="web.service.consul",
                             node_address="10.0.0.1", port=80)])
    answerer = Answerer(ZoneSettings())
    assert _lines(_ask(answerer, table, "web.service.consul").answer) == {
        "web.service.consul. 0 IN A 10.0.0.1"}
    assert _lines(_ask(answerer, table, "web.service.consul", "SRV").answer) == {
        "web.service.consul. 0 IN SRV 1 1 80 n1.node.dc1.consul."}


def test_a_cname_loop_ends() -> None:
    table = _table([Instance("a", "n1", "dc1", address="b.service.consul"),
                    Instance("b", "n1", "dc1", address="a.service.consul")])
    got = _ask(Answerer(ZoneSettings()), table, "a.service.consul")
    assert got.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in got.answer] == [dns.rdatatype.CNAME] * len(got.answer)
    assert 1 <= len(got.answer) <= 4


class FakeForwarder:
    """Answers every forwarded question with fixed addresses and a TTL of 300,
    and counts what it was asked."""

    enabled = True
    stats = None

    def __init__(self, addresses: dict[str, list[str]]) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    def cached(self, query: Query, over_tcp: bool) -> bytes | None:
        return None

    async def forward(self, query: Query, over_tcp: bool) -> bytes:
        request = dns.message.from_wire(query.wire)
        name = request.question[0].name.to_text().rstrip(".")
        qtype = request.question[0].rdtype
        self.asked.append(name)
        reply = dns.message.make_response(request)
        for address in self.addresses.get(name, []):
            family = dns.rdatatype.A if ipaddress.ip_address(address).version == 4 \
                else dns.rdatatype.AAAA
            if family == qtype:
                reply.answer.append(dns.rrset.from_text(name + ".", 300, "IN", family,
                                                        address))
        return reply.to_wire()  # type: ignore[no-any-return]


def _handle(handler: Handler, name: str, qtype: str,
            client: str = "127.0.0.1") -> dns.message.Message:
    async def run() -> bytes | None:
        result = handler.handle(dns.message.make_query(name, qtype).to_wire(), client, True)
        if isinstance(result, bytes) or result is None:
            return result
        return await result
    wire = asyncio.run(run())
    assert wire is not None
    return dns.message.from_wire(wire)


def test_chased_records_take_the_service_ttl_and_in_zone_targets_are_never_forwarded() -> None:
    table = _table([Instance("ext", "n1", "dc1", address="host.example.net", port=443),
                    Instance("alias", "n1", "dc1", address="api.service.consul", port=1),
                    Instance("api", "n2", "dc1", address="10.2.0.1", port=2)])
    forwarder = FakeForwarder({"host.example.net": ["192.0.2.1", "2001:db8::1"]})
    handler = Handler(table, Answerer(ZoneSettings(ttl=5)), forwarder,
                      [ipaddress.ip_network("127.0.0.0/8")])
    got = _handle(handler, "ext.service.consul", "A")
    assert _lines(got.answer) == {"ext.service.consul. 5 IN CNAME host.example.net.",
                                  "host.example.net. 5 IN A 192.0.2.1"}
    got = _handle(handler, "ext.service.consul", "SRV")
    assert _lines(got.answer) == {"ext.service.consul. 5 IN SRV 1 1 443 host.example.net."}
    assert _lines(got.additional) == {"host.example.net. 5 IN A 192.0.2.1",
                                      "host.example.net. 5 IN AAAA 2001:db8::1"}
    forwarder.asked.clear()
    got = _handle(handler, "alias.service.consul", "A")
    assert "api.service.consul. 5 IN A 10.2.0.1" in _lines(got.answer)
    got = _handle(handler, "alias.service.consul", "SRV")
    assert _lines(got.additional) == {"api.service.consul. 5 IN A 10.2.0.1"}
    assert forwarder.asked == []


def test_a_client_that_may_not_recurse_does_not_decide_what_others_get() -> None:
    table = _table([Instance("ext", "n1", "dc1", address="host.example.net", port=443)])
    forwarder = FakeForwarder({"host.example.net": ["192.0.2.1"]})
    handler = Handler(table, Answerer(ZoneSettings()), forwarder,
                      [ipaddress.ip_network("127.0.0.0/8")])
    for qtype in ("A", "SRV"):
        assert not forwarder.asked
        alone = _handle(handler, "ext.service.consul", qtype, client="198.51.100.7")
        assert not forwarder.asked and "192.0.2.1" not in str(alone)
        chased = _handle(handler, "ext.service.consul", qtype)
        assert forwarder.asked and "host.example.net. 0 IN A 192.0.2.1" in str(chased)
        forwarder.asked.clear()


# --- name forms and PTR ------------------------------------------------------------

def test_rfc_2782_without_service_answers_srv_only() -> None:
    table = _table([Instance("db", "n1", "dc1", address="10.2.0.1", port=5432,
                             tags=("primary",)),
                    Instance("db", "n1", "dc1", address="10.2.0.2", port=5432, tags=("udp",))])
    answerer = Answerer(ZoneSettings())
    assert len(_ask(answerer, table, "_db._tcp.consul", "SRV").answer[0]) == 2
    assert _lines(_ask(answerer, table, "_db._primary.dc1.consul", "SRV").answer) == {
        "_db._primary.dc1.consul. 0 IN SRV 1 1 5432 0a020001.addr.dc1.consul."}
    assert _lines(_ask(answerer, table, "_db._udp.service.consul", "SRV").answer) == {
        "_db._udp.service.consul. 0 IN SRV 1 1 5432 0a020002.addr.dc1.consul."}
    assert _ask(answerer, table, "_db._tcp.consul", "A").rcode() == dns.rcode.NXDOMAIN
    assert len(_ask(answerer, table, "db.service.dc1.dc.consul").answer[0]) == 2


def test_the_most_specific_zone_answers() -> None:
    table = _table([Instance("web", "node1", "dc1", node_address="10.0.0.1")])
    answerer = Answerer(ZoneSettings(domains=("consul", "test.consul")))
    got = _ask(answerer, table, "node1.node.test.consul")
    assert _lines(got.answer) == {"node1.node.test.consul. 0 IN A 10.0.0.1"}
    srv = _ask(answerer, table, "web.service.test.consul", "SRV")
    assert srv.answer[0][0].target.to_text() == "node1.node.dc1.test.consul."


def test_reverse_lookup_answers_one_name_node_first_with_ttl_0() -> None:
    table = _table([Instance("web", "n1", "dc1", address="10.0.0.1", node_address="10.0.0.1"),
                    Instance("db", "n2", "dc1", address="10.0.0.2", node_address="10.0.0.9"),
                    Instance("db", "n3", "dc1", address="10.0.0.2", node_address="10.0.0.8")])
    answerer = Answerer(ZoneSettings(ttl=30))
    assert _lines(_ask(answerer, table, "1.0.0.10.in-addr.arpa", "PTR").answer) == {
        "1.0.0.10.in-addr.arpa. 0 IN PTR n1.node.dc1.consul."}
    assert _lines(_ask(answerer, table, "2.0.0.10.in-addr.arpa", "PTR").answer) == {
        "2.0.0.10.in-addr.arpa. 0 IN PTR db.service.dc1.consul."}


# --- TTL and size knobs ------------------------------------------------------------

@pytest.mark.parametrize(("name", "ttl"), [
    ("web", 10), ("web-2", 20), ("web-1", 30), ("web-10", 30), ("db", 40), ("webby", 40)])
def test_service_ttl_exact_then_longest_prefix_then_star(name: str, ttl: int) -> None:
    rules = (("*", 40), ("web-*", 20), ("web", 10), ("web-1*", 30))
    assert ttl_for_service(rules, name, 0) == ttl
    assert ttl_for_service(rules[1:], "db", 7) == 7


def test_node_and_service_ttls_default_to_ttl() -> None:
    table = _table([Instance("web", "n1", "dc1", address="10.1.0.1"),
                    Instance("db", "n1", "dc1", address="10.1.0.2")],
                   [Node("n1", "dc1", "10.0.0.1")])
    answerer = Answerer(ZoneSettings(ttl=9, node_ttl=3, service_ttl=(("db", 60),),
                                     negative_ttl=4))
    assert _ask(answerer, table, "n1.node.consul").answer[0].ttl == 3
    assert _ask(answerer, table, "0a000001.addr.dc1.consul").answer[0].ttl == 3
    assert _ask(answerer, table, "web.service.consul").answer[0].ttl == 9
    assert _ask(answerer, table, "db.service.consul").answer[0].ttl == 60
    assert _ask(answerer, table, "nope.service.consul").authority[0].ttl == 4
    assert _ask(Answerer(ZoneSettings(ttl=9)), table, "n1.node.consul").answer[0].ttl == 9


def test_soa_timers() -> None:
    table = _table()
    answerer = Answerer(ZoneSettings(soa_refresh=1, soa_retry=2, soa_expire=3, negative_ttl=4))
    soa = _ask(answerer, table, "consul", "SOA").answer[0][0]
    assert (soa.refresh, soa.retry, soa.expire, soa.minimum) == (1, 2, 3, 4)


def test_a_record_limit_caps_each_answer_and_rotates_through_all() -> None:
    table = _table([Instance("web", "n1", "dc1", address=f"10.1.0.{i}") for i in range(1, 6)])
    answerer = Answerer(ZoneSettings(a_record_limit=2))
    seen: set[str] = set()
    for _ in range(5):
        got = _ask(answerer, table, "web.service.consul")
        assert len(got.answer[0]) == 2 and not got.flags & dns.flags.TC
        seen |= {r.address for r in got.answer[0]}
    assert len(seen) == 5
    assert len(_ask(answerer, table, "web.service.consul", "SRV").answer[0]) == 5


# --- before a registry is heard ----------------------------------------------------

def test_names_a_pending_registry_may_know_are_servfail_until_it_publishes() -> None:
    table = _table([Instance("web", "n1", "dc1", address="10.1.0.1")])
    table.expect("consul")
    answerer = Answerer(ZoneSettings())
    for name in ("nope.service.consul", "web.service.dc2.consul", "x.node.consul",
                 "q.query.consul"):
        got = _ask(answerer, table, name)
        assert got.rcode() == dns.rcode.SERVFAIL and not got.flags & dns.flags.AA, name
    assert _ask(answerer, table, "web.service.consul").answer  # found names are answered
    assert _ask(answerer, table, "web.service.consul", "AAAA").rcode() == dns.rcode.NOERROR
    assert _ask(answerer, table, "foo.consul").rcode() == dns.rcode.NXDOMAIN
    table.publish("consul", View())
    got = _ask(answerer, table, "nope.service.consul")
    assert got.rcode() == dns.rcode.NXDOMAIN and got.flags & dns.flags.AA


# --- prepared queries --------------------------------------------------------------

def _definition(ident: str, name: str, service: str, fields: dict[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
    """A definition as ``GET /v1/query`` lists it; ``fields`` go into its Service."""
    return {"ID": ident, "Name": name, "Service": {"Service": service, **(fields or {})},
            **extra}


QUERIES = [
    _definition("8f246b77-f3e1-ff88-5b48-8ec93abf3e05", "web-q", "web", DNS={"TTL": "15s"}),
    _definition("0b1c2d3e-0000-4000-8000-000000000002", "v2", "web",
                {"Tags": ["v2"]}),
    _definition("0b1c2d3e-0000-4000-8000-000000000003", "db-q", "db",
                {"Failover": {"Datacenters": ["dc2"]}}),
    _definition("0b1c2d3e-0000-4000-8000-000000000004", "", "${name.suffix}",
                Template={"Type": "name_prefix_match"}),
    {"ID": "broken", "Name": "bad", "Template": {"Type": "unknown"},
     "Service": {"Service": "web"}},
]
PREPARED_INSTANCES = [
    Instance("web", "n1", "dc1", address="10.1.0.1", port=80, tags=("v1",)),
    Instance("web", "n2", "dc1", address="10.1.0.2", port=80, tags=("v2",)),
    Instance("db", "n1", "dc1", address="10.2.0.1", port=5432, health=Health.CRITICAL),
    Instance("db", "far1", "dc2", address="10.9.2.1", port=5432),
]


def _prepared_table() -> Table:
    return _table(PREPARED_INSTANCES, prepared={"dc1": json.dumps(QUERIES),
                                                "dc2": json.dumps(QUERIES[:1])})


def test_prepared_queries_answer_a_srv_and_the_rfc_2782_form() -> None:
    table = _prepared_table()
    answerer = Answerer(ZoneSettings(ttl=1))
    assert _lines(_ask(answerer, table, "web-q.query.consul").answer) == {
        "web-q.query.consul. 15 IN A 10.1.0.1", "web-q.query.consul. 15 IN A 10.1.0.2"}
    assert _lines(_ask(answerer, table, "v2.query.consul").answer) == {
        "v2.query.consul. 1 IN A 10.1.0.2"}
    by_id = _ask(answerer, table, "8f246b77-f3e1-ff88-5b48-8ec93abf3e05.query.consul")
    assert len(by_id.answer[0]) == 2
    srv = _ask(answerer, table, "_v2._tcp.query.consul", "SRV")
    assert _lines(srv.answer) == {
        "_v2._tcp.query.consul. 1 IN SRV 1 1 80 0a010002.addr.dc1.consul."}
    assert _lines(srv.additional) == {"0a010002.addr.dc1.consul. 1 IN A 10.1.0.2"}
    # a template: any other name's suffix is the service
    assert len(_ask(answerer, table, "web.query.consul").answer[0]) == 2


def test_prepared_query_failover_answers_from_the_other_datacenter() -> None:
    table = _prepared_table()
    got = _ask(Answerer(ZoneSettings()), table, "db-q.query.consul", "SRV")
    assert _lines(got.answer) == {
        "db-q.query.consul. 0 IN SRV 1 1 5432 0a090201.addr.dc2.consul."}


def test_prepared_queries_of_a_remote_datacenter_are_its_own() -> None:
    table = _prepared_table()
    answerer = Answerer(ZoneSettings())
    assert _ask(answerer, table, "v2.query.dc2.consul").rcode() == dns.rcode.NXDOMAIN
    # dc2's web-q finds no web instance in dc2
    assert _ask(answerer, table, "web-q.query.dc2.consul").rcode() == dns.rcode.NXDOMAIN


def test_unknown_or_bad_prepared_queries_are_nxdomain_with_the_soa(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    table = _table(PREPARED_INSTANCES, prepared={"dc1": json.dumps(QUERIES[:3] + QUERIES[4:])})
    answerer = Answerer(ZoneSettings())
    assert "broken" in caplog.text  # a bad definition is logged, the rest kept
    for name in ("nope.query.consul", "bad.query.consul", "x.query.dc9.consul"):
        got = _ask(answerer, table, name)
        assert got.rcode() == dns.rcode.NXDOMAIN and got.authority, name
    assert _ask(answerer, table, "web-q.query.consul").answer
    none_healthy = _table(PREPARED_INSTANCES[2:3], prepared={"dc1": json.dumps(
        [_definition("0b1c2d3e-0000-4000-8000-000000000009", "dbq", "db")])})
    assert _ask(answerer, none_healthy, "dbq.query.consul").rcode() == dns.rcode.NXDOMAIN


def test_a_datacenter_without_prepared_queries_is_nxdomain() -> None:
    table = _table(PREPARED_INSTANCES)
    got = _ask(Answerer(ZoneSettings()), table, "web-q.query.consul")
    assert got.rcode() == dns.rcode.NXDOMAIN and got.authority

