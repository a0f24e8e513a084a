"""The DNS behaviour table: every case a question, and the reply written as
records in zone-file text. Order within a section is ignored (answers rotate);
``*`` in an expected record matches any one field (the SOA serial is the clock).
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.flags
import dns.message
import dns.rcode
import pytest

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

    def __str__(self) -> str:
        return f"{self.qname} {self.qtype}"


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
        0a01000d.addr.dc1.consul. 0 IN A 10.1.0.13"""),
    Case("web.service.consul.", "AAAA", authority=SOA),
    Case("web.service.consul.", "TXT", authority=SOA),
    # tags, and RFC 2782 names (_tcp and _udp are no tag filter)
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
        0a01000d.addr.dc1.consul. 0 IN A 10.1.0.13"""),
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
        fd000000000000000000000000000012.addr.dc1.consul. 0 IN AAAA fd00::12"""),
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
    # nodes
    Case("node1.node.consul.", "A", answer="node1.node.consul. 0 IN A 10.0.0.1"),
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
    Case("x.query.consul.", "A", "NXDOMAIN", authority=SOA),
    # the alternate domain answers alike, with its own names
    Case("web.service.dc1.alt.", "SRV", answer="""
        web.service.dc1.alt. 0 IN SRV 1 1 8080 0a01000b.addr.dc1.alt.
        web.service.dc1.alt. 0 IN SRV 1 1 8080 0a01000c.addr.dc1.alt.
        web.service.dc1.alt. 0 IN SRV 1 2 8081 0a01000d.addr.dc1.alt.""", additional="""
        0a01000b.addr.dc1.alt. 0 IN A 10.1.0.11
        0a01000c.addr.dc1.alt. 0 IN A 10.1.0.12
        0a01000d.addr.dc1.alt. 0 IN A 10.1.0.13"""),
    Case("nope.service.alt.", "A", "NXDOMAIN", authority=SOA_ALT),
    # PTR for addresses in the table
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


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_case(dnsd: DnsdProcess, case: Case, tcp: bool) -> None:
    # Twice: the second reply comes from the rendered-reply cache (over UDP,
    # answered by the compiled loop itself when it runs).
    for _ in range(2):
        reply = dnsd.query(case.qname, case.qtype, tcp=tcp, use_edns=0)
        assert dns.rcode.to_text(reply.rcode()) == case.rcode
        assert bool(reply.flags & dns.flags.AA) == case.aa
        assert not reply.flags & dns.flags.TC
        _check("answer", case.answer, _section_lines(reply.answer))
        _check("authority", case.authority, _section_lines(reply.authority))
        _check("additional", case.additional, _section_lines(reply.additional))
