"""The name parser, as a table: labels left of the zone -> what they ask for."""

from __future__ import annotations

import pytest

from dnsd.names import (
    ZoneName,
    hex_address,
    parse_hex_address,
    parse_reverse,
    parse_zone_name,
    split_zone,
)

Z = "consul"

CASES = [
    ("", ZoneName("apex", Z)),
    ("ns", ZoneName("ns", Z)),
    ("web.service", ZoneName("service", Z, "web")),
    ("web.service.dc2", ZoneName("service", Z, "web", None, "dc2")),
    ("v1.web.service", ZoneName("service", Z, "web", "v1")),
    ("a.b.web.service", ZoneName("service", Z, "web", "a.b")),
    ("_web._v1.service", ZoneName("service", Z, "web", "v1")),
    ("_web._tcp.service.dc1", ZoneName("service", Z, "web", None, "dc1")),
    # Only _tcp means "no tag": _udp is a tag, as Consul reads it.
    ("_web._udp.service", ZoneName("service", Z, "web", "udp")),
    ("web._tcp.service", ZoneName("service", Z, "_tcp", "web")),
    ("service.service", ZoneName("service", Z, "service")),
    ("node1.node", ZoneName("node", Z, "node1")),
    ("node1.node.dc3", ZoneName("node", Z, "node1", None, "dc3")),
    ("host.example.node", ZoneName("node", Z, "host.example")),
    ("0a000001.addr.dc1", ZoneName("addr", Z, "0a000001", None, "dc1", "10.0.0.1")),
    ("0a000001.addr", ZoneName("addr", Z, "0a000001", None, None, "10.0.0.1")),
    ("0a000001.addr.dc1.extra", ZoneName("addr", Z, "0a000001", None, "dc1", "10.0.0.1")),
    # <dc>.dc locality forms
    ("web.service.dc1.dc", ZoneName("service", Z, "web", None, "dc1")),
    ("v1.web.service.dc2.dc", ZoneName("service", Z, "web", "v1", "dc2")),
    ("web.service.dc1.dc.dc2.dc", ZoneName("service", Z, "web", None, "dc2")),
    ("node1.node.dc2.dc", ZoneName("node", Z, "node1", None, "dc2")),
    ("web.service.p1.peer", ZoneName("invalid", Z)),
    ("web.service.ns1.ns", ZoneName("invalid", Z)),
    ("web.service.dc1.dc.p1.peer", ZoneName("invalid", Z)),
    ("web.service.a.b.c", ZoneName("invalid", Z)),
    # prepared queries: names with dots, RFC 2782 form, datacenter
    ("q.query.dc2", ZoneName("query", Z, "q", None, "dc2")),
    ("a.b.query", ZoneName("query", Z, "a.b")),
    ("_q._tcp.query", ZoneName("query", Z, "q")),
    ("_a.b._udp.query.dc1", ZoneName("query", Z, "a.b", None, "dc1")),
    ("q.query.dc1.dc", ZoneName("invalid", Z)),
    ("x.addr.dc1", ZoneName("invalid", Z)),
    ("service", ZoneName("invalid", Z)),
    ("web.service.dc1.extra", ZoneName("invalid", Z)),
    ("foo", ZoneName("invalid", Z)),
    ("foo.bar", ZoneName("invalid", Z)),
    ("q.query", ZoneName("query", Z, "q")),
]


@pytest.mark.parametrize(("name", "expected"), CASES, ids=[c[0] or "apex" for c in CASES])
def test_parse_zone_name(name: str, expected: ZoneName) -> None:
    labels = [part.encode() for part in name.split(".")] if name else []
    assert parse_zone_name(labels, Z) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("_db._tcp", ZoneName("service", Z, "db")),
    ("_db._primary.dc1", ZoneName("service", Z, "db", "primary", "dc1")),
    ("_db._primary.dc1.dc", ZoneName("service", Z, "db", "primary", "dc1")),
    ("_db._tcp.service", ZoneName("service", Z, "db")),
    ("web", ZoneName("invalid", Z)),
])
def test_rfc_2782_without_service_when_asked_srv(name: str, expected: ZoneName) -> None:
    labels = [part.encode() for part in name.split(".")]
    assert parse_zone_name(labels, Z, srv=True) == expected


def test_rfc_2782_without_service_is_nothing_for_other_types() -> None:
    assert parse_zone_name([b"_db", b"_tcp"], Z).kind == "invalid"


def test_the_most_specific_zone_wins() -> None:
    zones = ((b"consul",), (b"test", b"consul"))
    labels = [b"node1", b"node", b"test", b"consul"]
    assert split_zone(labels, zones) == (1, [b"node1", b"node"])
    assert split_zone(labels, tuple(reversed(zones))) == (0, [b"node1", b"node"])
    assert split_zone([b"x", b"consul"], zones) == (0, [b"x"])
    assert split_zone([b"example", b"org"], zones) is None


def test_non_ascii_label_is_invalid() -> None:
    assert parse_zone_name([b"\xff", b"service"], Z).kind == "invalid"


@pytest.mark.parametrize(("address", "label"), [
    ("10.0.0.1", "0a000001"),
    ("fd00::12", "fd000000000000000000000000000012"),
])
def test_hex_addresses_round_trip(address: str, label: str) -> None:
    assert hex_address(address) == label
    assert parse_hex_address(label) == address


@pytest.mark.parametrize(("name", "expected"), [
    ("1.0.0.10.in-addr.arpa", "10.0.0.1"),
    ("01.0.0.10.in-addr.arpa", "10.0.0.1"),
    ("256.0.0.10.in-addr.arpa", None),
    ("0.0.10.in-addr.arpa", None),
    (".".join(reversed("fd0d0000000000000000000000000012")) + ".ip6.arpa", "fd0d::12"),
    ("x.ip6.arpa", None),
    ("example.org", None),
])
def test_parse_reverse(name: str, expected: str | None) -> None:
    assert parse_reverse([p.encode() for p in name.split(".")]) == expected
