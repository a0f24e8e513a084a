"""The DNS behaviour table: every case a question, and the reply written as
records in zone-file text. Order within a section is ignored (answers rotate);
``*`` in an expected record matches any one field (the SOA serial is the clock).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import pytest

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess

SOA = "consul. 0 IN SOA ns.consul. hostmaster.consul. * 3600 600 86400 0"
SOA_ALT = "alt. 0 IN SOA ns.alt. hostmaster.alt. * 3600 600 86400 0"


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    rcode: str = "NOERROR"
    answer: str = ""
    authority: str = ""
    additional: str = ""
    aa: bool = True
    transport: str = ""  # "udp" or "tcp": asked over that one only; "": both

    def __str__(self) -> str:
        return f"{self.qname} {self.qtype}"


def over_each_transport(cases: list[Case]) -> list[object]:
    """(case, tcp) pairs: each case over UDP and TCP, or the one it names."""
    return [pytest.param(case, tcp, id=f"{case}-{'tcp' if tcp else 'udp'}")
            for case in cases for tcp in (False, True)
            if case.transport in ("", "tcp" if tcp else "udp")]


CASES = [
    # services: A, AAAA, SRV; local datacenter implied or named; case-insensitive
    Case("web.service.consul.", "A", answer="""
        web.service.consul. 0 IN A 10.1.0.11
        web.service.consul. 0 IN A 10.1.0.12
        web.service.consul. 0 IN A 10.1.0.13"""),
    Case("web.service.dc1.consul.", "A", answer="""
        web.service.dc1.consul. 0 IN A 10.1.0.11
        web.service.dc1.consul. 0 IN A 10.1.0.12
        web.service.dc1.consul. 0 IN A 10.1.0.13"""),
    Case("web.service.dc1.consul.", "SRV", answer="""
        web.service.dc1.consul. 0 IN SRV 1 1 8080 0a01000b.addr.dc1.consul.
        web.service.dc1.consul. 0 IN SRV 1 1 8080 0a01000c.addr.dc1.consul.
        web.service.dc1.consul. 0 IN SRV 1 2 8081 0a01000d.addr.dc1.consul.""", additional="""
        0a01000b.addr.dc1.consul. 0 IN A 10.1.0.11
        0a01000c.addr.dc1.consul. 0 IN A 10.1.0.12
        0a01000d.addr.dc1.consul. 0 IN A 10.1.0.13
        node1.node.dc1.consul. 0 IN TXT "rack=r1"
        node1.node.dc1.consul. 0 IN TXT "zone=a"
        """),
    Case("web.service.consul.", "AAAA", authority=SOA),
    Case("web.service.consul.", "TXT", authority=SOA),
    # tags, and RFC 2782 names (only _tcp is no tag filter: _udp is a tag, as in Consul)
    Case("v1.web.service.consul.", "A", answer="""
        v1.web.service.consul. 0 IN A 10.1.0.11
        v1.web.service.consul. 0 IN A 10.1.0.13"""),
    Case("_web._v2.service.consul.", "SRV", answer="""
        _web._v2.service.consul. 0 IN SRV 1 1 8080 0a01000c.addr.dc1.consul.""", additional="""
        0a01000c.addr.dc1.consul. 0 IN A 10.1.0.12"""),
    Case("_web._tcp.service.dc1.consul.", "SRV", answer="""
        _web._tcp.service.dc1.consul. 0 IN SRV 1 1 8080 0a01000b.addr.dc1.consul.
        _web._tcp.service.dc1.consul. 0 IN SRV 1 1 8080 0a01000c.addr.dc1.consul.
        _web._tcp.service.dc1.consul. 0 IN SRV 1 2 8081 0a01000d.addr.dc1.consul.""",
         additional="""
        0a01000b.addr.dc1.consul. 0 IN A 10.1.0.11
        0a01000c.addr.dc1.consul. 0 IN A 10.1.0.12
        0a01000d.addr.dc1.consul. 0 IN A 10.1.0.13
        node1.node.dc1.consul. 0 IN TXT "rack=r1"
        node1.node.dc1.consul. 0 IN TXT "zone=a"
        """),
    Case("_web._udp.service.consul.", "SRV", "NXDOMAIN", authority=SOA),
    # RFC 2782 without .service, asked SRV (as Consul reads it)
    Case("_web._tcp.consul.", "SRV", answer="""
        _web._tcp.consul. 0 IN SRV 1 1 8080 0a01000b.addr.dc1.consul.
        _web._tcp.consul. 0 IN SRV 1 1 8080 0a01000c.addr.dc1.consul.
        _web._tcp.consul. 0 IN SRV 1 2 8081 0a01000d.addr.dc1.consul.""", additional="""
        0a01000b.addr.dc1.consul. 0 IN A 10.1.0.11
        0a01000c.addr.dc1.consul. 0 IN A 10.1.0.12
        0a01000d.addr.dc1.consul. 0 IN A 10.1.0.13
        node1.node.dc1.consul. 0 IN TXT "rack=r1"
        node1.node.dc1.consul. 0 IN TXT "zone=a"
        """),
    Case("_db._primary.dc1.consul.", "SRV", answer="""
        _db._primary.dc1.consul. 0 IN SRV 1 1 5432 0a020001.addr.dc1.consul.""",
         additional="0a020001.addr.dc1.consul. 0 IN A 10.2.0.1"),
    Case("_web._tcp.consul.", "A", "NXDOMAIN", authority=SOA),
    # <dc>.dc locality forms; cluster peers are not served
    Case("v2.web.service.dc1.dc.consul.", "A",
         answer="v2.web.service.dc1.dc.consul. 0 IN A 10.1.0.12"),
    Case("node1.node.dc1.dc.consul.", "A", answer="node1.node.dc1.dc.consul. 0 IN A 10.0.0.1",
         additional="""
        node1.node.dc1.dc.consul. 0 IN TXT "rack=r1"
        node1.node.dc1.dc.consul. 0 IN TXT "zone=a"
        """),
    Case("web.service.p1.peer.consul.", "A", "NXDOMAIN", authority=SOA),
    Case("nosuchtag.web.service.consul.", "A", "NXDOMAIN", authority=SOA),
    Case("x.y.web.service.consul.", "A", "NXDOMAIN", authority=SOA),
    # no address of its own: the node's address; SRV target is the node name
    Case("api.service.consul.", "A", answer="api.service.consul. 0 IN A 10.0.0.1"),
    Case("api.service.consul.", "AAAA", answer="api.service.consul. 0 IN AAAA fd00::12"),
    Case("api.service.consul.", "SRV", answer="""
        api.service.consul. 0 IN SRV 1 1 9090 node1.node.dc1.consul.
        api.service.consul. 0 IN SRV 1 1 9090 fd000000000000000000000000000012.addr.dc1.consul.""",
         additional="""
        node1.node.dc1.consul. 0 IN A 10.0.0.1
        fd000000000000000000000000000012.addr.dc1.consul. 0 IN AAAA fd00::12
        node1.node.dc1.consul. 0 IN TXT "rack=r1"
        node1.node.dc1.consul. 0 IN TXT "zone=a"
        """),
    # health: critical never, warning yes; all critical is NXDOMAIN
    Case("db.service.consul.", "A", answer="""
        db.service.consul. 0 IN A 10.2.0.1
        db.service.consul. 0 IN A 10.2.0.2"""),
    Case("replica.db.service.consul.", "A", answer="replica.db.service.consul. 0 IN A 10.2.0.2"),
    Case("db.service.consul.", "AAAA", authority=SOA),
    Case("gone.service.consul.", "A", "NXDOMAIN", authority=SOA),
    Case("nope.service.consul.", "A", "NXDOMAIN", authority=SOA),
    Case("nope.service.consul.", "AAAA", "NXDOMAIN", authority=SOA),
    # datacenters
    Case("web.service.dc9.consul.", "A", "NXDOMAIN", authority=SOA),
    Case("remote.service.dc2.consul.", "A", answer="remote.service.dc2.consul. 0 IN A 10.9.0.1"),
    Case("remote.service.consul.", "A", "NXDOMAIN", authority=SOA),
    Case("far1.node.dc2.consul.", "A", answer="far1.node.dc2.consul. 0 IN A 10.9.0.100"),
    # names with underscores and a -port suffix (registrator's)
    Case("service_1.service.consul.", "A", answer="service_1.service.consul. 0 IN A 10.4.0.1"),
    Case("web-8080.service.consul.", "A", answer="web-8080.service.consul. 0 IN A 10.4.0.2"),
    # external services: a host name address is a CNAME; SRV targets it
    Case("search.service.consul.", "A",
         answer="search.service.consul. 0 IN CNAME search.example.org."),
    Case("search.service.consul.", "SRV",
         answer="search.service.consul. 0 IN SRV 1 1 443 search.example.org."),
    Case("ext.service.consul.", "A", answer="ext.service.consul. 0 IN CNAME host.example.net."),
    Case("extnode.node.consul.", "A", answer="extnode.node.consul. 0 IN CNAME host.example.net."),
    Case("ext.service.consul.", "SRV",
         answer="ext.service.consul. 0 IN SRV 1 1 80 host.example.net."),
    # an address in dnsd's own zone: answered from the table, never forwarded
    Case("alias.service.consul.", "A", answer="""
        alias.service.consul. 0 IN CNAME db.service.consul.
        db.service.consul. 0 IN A 10.2.0.1
        db.service.consul. 0 IN A 10.2.0.2"""),
    Case("alias.service.consul.", "SRV",
         answer="alias.service.consul. 0 IN SRV 1 1 5432 db.service.consul.", additional="""
        db.service.consul. 0 IN A 10.2.0.1
        db.service.consul. 0 IN A 10.2.0.2"""),
    # a service whose address names itself: its node's address
    Case("self.service.consul.", "A", answer="self.service.consul. 0 IN A 10.0.0.2"),
    Case("self.service.consul.", "SRV",
         answer="self.service.consul. 0 IN SRV 1 1 7000 node2.node.dc1.consul.",
         additional="node2.node.dc1.consul. 0 IN A 10.0.0.2"),
    # nodes, with their meta as TXT records (Consul's node meta): alone, beside
    # the address in the additional section, and in ANY (over UDP one RRset,
    # RFC 8482 4.1); a node without meta has no TXT (NODATA)
    Case("node1.node.consul.", "A", answer="node1.node.consul. 0 IN A 10.0.0.1",
         additional="""
        node1.node.consul. 0 IN TXT "rack=r1"
        node1.node.consul. 0 IN TXT "zone=a"
        """),
    Case("node1.node.consul.", "TXT", answer="""
        node1.node.consul. 0 IN TXT "rack=r1"
        node1.node.consul. 0 IN TXT "zone=a"
        """),
    Case("node1.node.dc1.consul.", "ANY", transport="tcp", answer="""
        node1.node.dc1.consul. 0 IN A 10.0.0.1
        node1.node.dc1.consul. 0 IN TXT "rack=r1"
        node1.node.dc1.consul. 0 IN TXT "zone=a"
        """),
    Case("node1.node.dc1.consul.", "ANY", transport="udp",
         answer="node1.node.dc1.consul. 0 IN A 10.0.0.1"),
    Case("node2.node.consul.", "TXT", authority=SOA),
    Case("node1.node.dc1.consul.", "AAAA", authority=SOA),
    Case("node3.node.consul.", "AAAA", answer="node3.node.consul. 0 IN AAAA fd00::3"),
    Case("nonode.node.consul.", "A", "NXDOMAIN", authority=SOA),
    # addr names decode themselves
    Case("0a000001.addr.dc1.consul.", "A", answer="0a000001.addr.dc1.consul. 0 IN A 10.0.0.1"),
    Case("0a000001.addr.dc1.consul.", "AAAA", authority=SOA),
    Case("zz000001.addr.dc1.consul.", "A", "NXDOMAIN", authority=SOA),
    # the apex: SOA and NS, nothing else
    Case("consul.", "SOA", answer=SOA),
    Case("consul.", "NS", answer="consul. 0 IN NS ns.consul.",
         additional="ns.consul. 0 IN A 127.0.0.1"),
    Case("consul.", "A", authority=SOA),
    Case("ns.consul.", "A", answer="ns.consul. 0 IN A 127.0.0.1"),
    # in the zone but parses as nothing
    Case("foo.consul.", "A", "NXDOMAIN", authority=SOA),
    Case("web.service.dc1.extra.consul.", "A", "NXDOMAIN", authority=SOA),
    Case("x.query.consul.", "A", "NXDOMAIN", authority=SOA),  # no prepared queries here
    Case("_x._tcp.query.consul.", "SRV", "NXDOMAIN", authority=SOA),
    # the alternate domain answers alike, with its own names
    Case("web.service.dc1.alt.", "SRV", answer="""
        web.service.dc1.alt. 0 IN SRV 1 1 8080 0a01000b.addr.dc1.alt.
        web.service.dc1.alt. 0 IN SRV 1 1 8080 0a01000c.addr.dc1.alt.
        web.service.dc1.alt. 0 IN SRV 1 2 8081 0a01000d.addr.dc1.alt.""", additional="""
        0a01000b.addr.dc1.alt. 0 IN A 10.1.0.11
        0a01000c.addr.dc1.alt. 0 IN A 10.1.0.12
        0a01000d.addr.dc1.alt. 0 IN A 10.1.0.13
        node1.node.dc1.alt. 0 IN TXT "rack=r1"
        node1.node.dc1.alt. 0 IN TXT "zone=a"
        """),
    Case("nope.service.alt.", "A", "NXDOMAIN", authority=SOA_ALT),
    # PTR for addresses in the table: one name, a node's first, TTL 0
    Case("1.0.0.10.in-addr.arpa.", "PTR",
         answer="1.0.0.10.in-addr.arpa. 0 IN PTR node1.node.dc1.consul."),
    Case("11.0.1.10.in-addr.arpa.", "PTR",
         answer="11.0.1.10.in-addr.arpa. 0 IN PTR web.service.dc1.consul."),
    # not ours, and this client may not recurse
    Case("example.org.", "A", "REFUSED", aa=False),
    Case("9.9.9.192.in-addr.arpa.", "PTR", "REFUSED", aa=False),
]


def _fields_match(expected: str, got: str) -> bool:
    want, have = expected.split(), got.split()
    return len(want) == len(have) and all(w in ("*", h) for w, h in zip(want, have,
                                                                       strict=True))


def _section_lines(rrsets: list[object]) -> list[str]:
    lines: list[str] = []
    for rrset in rrsets:
        lines.extend(rrset.to_text().splitlines())  # type: ignore[attr-defined]
    return lines


def _check(section: str, expected: str, got: list[str]) -> None:
    want = [" ".join(line.split()) for line in expected.strip().splitlines() if line.strip()]
    remaining = list(got)
    for line in want:
        match = next((g for g in remaining if _fields_match(line, g)), None)
        assert match is not None, f"{section}: expected {line!r}, got {got}"
        remaining.remove(match)
    assert not remaining, f"{section}: unexpected {remaining}"


@pytest.fixture(scope="module")
def dnsd(dnsd_each_loop: DnsdProcess) -> DnsdProcess:
    """The table runs against each UDP loop (compiled and Python)."""
    return dnsd_each_loop


@pytest.mark.parametrize(("case", "tcp"), over_each_transport(CASES))
def test_case(dnsd: DnsdProcess, case: Case, tcp: bool) -> None:
    # Twice: the second reply comes from the rendered-reply cache (over UDP,
    # answered by the compiled loop itself when it runs).
    for _ in range(2):
        check_reply(dnsd.query(case.qname, case.qtype, tcp=tcp, use_edns=0), case)


def check_reply(reply: dns.message.Message, case: Case) -> None:
    """``reply`` is what ``case`` expects (shared with the in-process run of the
    table, tests/unit/test_dns_cases_in_process.py)."""
    assert dns.rcode.to_text(reply.rcode()) == case.rcode
    assert bool(reply.flags & dns.flags.AA) == case.aa
    assert not reply.flags & dns.flags.TC
    _check("answer", case.answer, _section_lines(reply.answer))
    _check("authority", case.authority, _section_lines(reply.authority))
    _check("additional", case.additional, _section_lines(reply.additional))


@pytest.fixture(scope="module")
def nested() -> Iterator[DnsdProcess]:
    """dnsd whose alternate domain sits inside its domain, with Consul's knobs set."""
    with DnsdProcess(["--static", str(SERVICES), "--alt-domain", "test.consul",
                      "--allow-recursion", "192.0.2.0/24", "--ttl", "5", "--node-ttl", "7",
                      "--service-ttl", "db=30", "--service-ttl", "web*=20",
                      "--a-record-limit", "1", "--soa-refresh", "100", "--soa-retry", "10",
                      "--soa-expire", "1000", "--negative-ttl", "3"]) as proc:
        yield proc


NESTED_SOA = "test.consul. 3 IN SOA ns.test.consul. hostmaster.test.consul. * 100 10 1000 3"
NESTED = [
    # the most specific zone wins: node1.node in test.consul, not node1.node.test
    Case("node1.node.test.consul.", "A", answer="node1.node.test.consul. 7 IN A 10.0.0.1",
         additional="""
        node1.node.test.consul. 7 IN TXT "rack=r1"
        node1.node.test.consul. 7 IN TXT "zone=a"
        """),
    Case("nope.node.test.consul.", "A", "NXDOMAIN", authority=NESTED_SOA),
    Case("replica.db.service.test.consul.", "A",
         answer="replica.db.service.test.consul. 30 IN A 10.2.0.2"),
    Case("v2.web-8080.service.consul.", "A", "NXDOMAIN", authority=NESTED_SOA.replace(
        "test.consul", "consul")),
    Case("web-8080.service.consul.", "A", answer="web-8080.service.consul. 20 IN A 10.4.0.2"),
    Case("service_1.service.consul.", "A", answer="service_1.service.consul. 5 IN A 10.4.0.1"),
    Case("1.0.0.10.in-addr.arpa.", "PTR",
         answer="1.0.0.10.in-addr.arpa. 0 IN PTR node1.node.dc1.consul."),
]


@pytest.mark.parametrize(("case", "tcp"), over_each_transport(NESTED))
def test_nested_zone_and_knobs(nested: DnsdProcess, case: Case, tcp: bool) -> None:
    test_case(nested, case, tcp)


def test_a_record_limit_rotates_through_every_instance(nested: DnsdProcess) -> None:
    seen = set()
    for _ in range(6):
        reply = nested.query("web.service.consul.", "A")
        assert len(reply.answer[0]) == 1 and reply.answer[0].ttl == 20
        seen.add(reply.answer[0][0].address)
    assert seen == {"10.1.0.11", "10.1.0.12", "10.1.0.13"}
