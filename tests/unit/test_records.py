"""Records built for answers, and the addresses taken from an upstream's reply
when an external service's CNAME is chased."""

from __future__ import annotations

from collections.abc import Sequence

import dns.message
from dnslib import RCODE, RR, DNSRecord

from dnsd import records as rr


def upstream_reply(name: str, answers: Sequence[str], rcode: int = RCODE.NOERROR) -> bytes:
    msg = DNSRecord.question(name, "A").reply()
    msg.header.rcode = rcode
    for line in answers:
        msg.add_answer(*RR.fromZone(line))
    return bytes(msg.pack())


def texts(records: Sequence[bytes]) -> list[str]:
    """Each standalone record as zone text (its owner is a full name)."""
    out = []
    for record in records:
        wire = (b"\x00\x00\x81\x80\x00\x00\x00\x01\x00\x00\x00\x00" + record)
        out.append(dns.message.from_wire(wire).answer[0].to_text())
    return out


def test_address_answers_keep_the_chain_from_the_target_only() -> None:
    reply = upstream_reply("search.example.test.", [
        "search.example.test. 60 IN CNAME edge.cdn.test.",
        "web.service.consul. 60 IN A 6.6.6.6",          # not on the chain: poison
        "edge.cdn.test. 30 IN CNAME Edge2.CDN.test.",
        "other.example.test. 60 IN AAAA 2001:db8::66",  # not on the chain
        "edge2.cdn.test. 20 IN A 10.9.8.7",
        "edge2.cdn.test. 20 IN AAAA 2001:db8::7",
    ])
    assert texts(rr.address_answers(reply, "Search.Example.Test")) == [
        "search.example.test. 60 IN CNAME edge.cdn.test.",
        "edge.cdn.test. 30 IN CNAME Edge2.CDN.test.",
        "edge2.cdn.test. 20 IN A 10.9.8.7",
        "edge2.cdn.test. 20 IN AAAA 2001:db8::7",
    ]


def test_address_answers_of_a_failed_or_empty_reply() -> None:
    assert rr.address_answers(upstream_reply("x.test.", [], RCODE.NXDOMAIN), "x.test") == []
    assert rr.address_answers(b"\x00garbage", "x.test") == []
    poisoned_only = upstream_reply("x.test.", ["web.service.consul. 60 IN A 6.6.6.6"])
    assert rr.address_answers(poisoned_only, "x.test") == []


def test_standalone_records_read_back() -> None:
    assert texts([rr.a(rr.name("a.test"), 5, "10.0.0.1")]) == ["a.test. 5 IN A 10.0.0.1"]
