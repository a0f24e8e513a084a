"""Forwarding without sockets: routing, upstreams from resolv.conf, loop refusal,
reply matching, re-rendering an upstream reply for the client, try order."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

import dns.edns
import dns.message
import dns.rcode
import dns.rrset
import pytest
from dnslib import RR, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsd.build import forward_settings
from dnsd.config import load_config
from dnsd.errors import ConfigError
from dnsd.forward import Forwarder
from dnsd.forward.exchange import acceptable, build_query, in_bailiwick, read_reply
from dnsd.forward.forwarder import forwarded_by, render
from dnsd.forward.routes import default_upstreams, is_own
from dnsd.wire import (
    OPTION_FORWARDED_BY,
    Malformed,
    Query,
    encode_name,
    error_reply,
    parse_query,
    udp_limit,
)


def forwarder(*argv: str, resolv_conf: str = "/nonexistent") -> Forwarder:
    return Forwarder(forward_settings(load_config(list(argv), environ={})),
                     rng=random.Random(7), resolv_conf=resolv_conf)


def client_query(name: str, qtype: str = "A", **kwargs: object) -> Query:
    return parse_query(dns.message.make_query(name, qtype, **kwargs).to_wire())


# --- resolv.conf and loops -------------------------------------------------------

RESOLV = """\
# generated
search example.com
nameserver 127.0.0.1
nameserver 10.0.0.2   # trailing comment
nameserver ::1
nameserver fe80::1%eth0
nameserver not-an-address
nameserver 10.0.0.2
options ndots:5
"""


@pytest.mark.parametrize(("own", "expected"), [
    ((("127.0.0.1", 8600),),
     (("127.0.0.1", 53), ("10.0.0.2", 53), ("::1", 53), ("fe80::1%eth0", 53))),
    ((("127.0.0.1", 53),), (("10.0.0.2", 53), ("::1", 53), ("fe80::1%eth0", 53))),
    ((("0.0.0.0", 53), ("::", 53)), (("10.0.0.2", 53), ("fe80::1%eth0", 53))),
    ((("10.0.0.2", 53), ("::1", 53)), (("127.0.0.1", 53), ("fe80::1%eth0", 53))),
])
def test_default_upstreams_drop_own_addresses(own, expected) -> None:
    assert default_upstreams(RESOLV, own) == expected


def test_default_upstreams_of_empty_text() -> None:
    assert default_upstreams("", (("127.0.0.1", 8600),)) == ()


@pytest.mark.parametrize(("addr", "own", "loops"), [
    (("127.0.0.1", 8600), (("127.0.0.1", 8600),), True),
    (("127.0.0.2", 8600), (("0.0.0.0", 8600),), True),
    (("::1", 53), (("::", 53),), True),
    (("127.0.0.1", 53), (("127.0.0.1", 8600),), False),
    (("10.1.1.1", 53), (("0.0.0.0", 53),), False),  # not known to be ours
    # Docker's resolver: redirected by the engine, never reached by a wildcard...
    (("127.0.0.11", 53), (("0.0.0.0", 53),), False),
    (("127.0.0.11", 53), (("::", 53),), False),
    # ...but ours when dnsd listens on it by name.
    (("127.0.0.11", 53), (("127.0.0.11", 53),), True),
    (("127.0.0.12", 53), (("0.0.0.0", 53),), True),
])
def test_is_own(addr, own, loops) -> None:
    assert is_own(addr, own) is loops


def test_docker_resolver_is_an_upstream_inside_a_container(tmp_path) -> None:
    """The image listens on 0.0.0.0:53 and, on a user-defined network, finds
    only 127.0.0.11 in resolv.conf: that is where other names must go."""
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 127.0.0.11\noptions ndots:0\n")
    fwd = forwarder("--listen", "0.0.0.0:53", resolv_conf=str(path))
    assert [u.addr for u in fwd.routes.default] == [("127.0.0.11", 53)]
    explicit = forwarder("--listen", "0.0.0.0:53", "--upstream", "127.0.0.11")
    assert [u.addr for u in explicit.routes.default] == [("127.0.0.11", 53)]
    with pytest.raises(ConfigError, match="would loop"):
        forwarder("--listen", "0.0.0.0:53", "--upstream", "127.0.0.1")
    with pytest.raises(ConfigError, match=r"upstream 127.0.0.11:53 is dnsd's own"):
        forwarder("--listen", "127.0.0.11:53", "--upstream", "127.0.0.11")


def test_upstream_equal_to_listen_address_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"upstream 127.0.0.1:8600 is dnsd's own"):
        forwarder("--listen", "127.0.0.1:8600", "--upstream", "127.0.0.1:8600")
    with pytest.raises(ConfigError, match="would loop"):
        forwarder("--listen", "0.0.0.0:53", "--upstream-for", "corp=127.0.0.1")


def test_upstreams_come_from_resolv_conf_when_not_given(tmp_path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 127.0.0.1\nnameserver 192.0.2.1\n")
    fwd = forwarder("--listen", "127.0.0.1:53", resolv_conf=str(path))
    assert [u.addr for u in fwd.routes.default] == [("192.0.2.1", 53)]
    assert fwd.enabled


def test_enabled() -> None:
    assert not forwarder().enabled  # no --upstream, no readable resolv.conf
    assert forwarder("--upstream-for", "corp=10.0.0.1").enabled
    assert forwarder("--upstream", "10.0.0.1").enabled


# --- routing -------------------------------------------------------------------

def test_most_specific_domain_wins() -> None:
    fwd = forwarder("--upstream", "192.0.2.1", "--upstream-for", "corp=192.0.2.10",
                    "--upstream-for", "lab.corp=192.0.2.20:5353",
                    "--upstream-for", "lab.corp=192.0.2.21",
                    "--upstream-for", "in-addr.arpa=192.0.2.30")

    def route(name: str) -> list[tuple[str, int]]:
        return [u.addr for u in fwd.routes.lookup(encode_name(name.lower()))]

    assert route("www.example.org") == [("192.0.2.1", 53)]
    assert route("corp") == [("192.0.2.10", 53)]
    assert route("a.b.corp") == [("192.0.2.10", 53)]
    assert route("x.LAB.corp") == [("192.0.2.20", 5353), ("192.0.2.21", 53)]
    assert route("lab.corp") == [("192.0.2.20", 5353), ("192.0.2.21", 53)]
    assert route("notcorp") == [("192.0.2.1", 53)]          # label boundary, not substring
    assert route("xlab.corp") == [("192.0.2.10", 53)]
    assert route("1.2.0.192.in-addr.arpa") == [("192.0.2.30", 53)]
    assert route(".") == [("192.0.2.1", 53)]


def test_same_address_is_one_upstream_with_one_health() -> None:
    fwd = forwarder("--upstream", "192.0.2.1", "--upstream-for", "corp=192.0.2.1")
    assert fwd.routes.lookup(encode_name("corp"))[0] is fwd.routes.default[0]


async def test_names_routed_nowhere_and_own_zone_are_refused() -> None:
    fwd = forwarder("--upstream-for", "corp=192.0.2.10", "--alt-domain", "alt")
    for name in ("www.example.org.", "web.service.consul.", "CONSUL.", "x.alt."):
        reply = dns.message.from_wire(await fwd.forward(client_query(name), False))
        assert reply.rcode() == dns.rcode.REFUSED, name
    assert fwd.stats.refused == 4 and fwd.stats.forwarded == 0
    await fwd.close()


# --- matching replies to queries --------------------------------------------------

QUESTION = encode_name("www.example.org") + struct.pack("!HH", 1, 1)


def upstream_reply(ident: int, question: bytes = QUESTION, qr: bool = True) -> bytes:
    flags = 0x8180 if qr else 0x0100
    return struct.pack("!HHHHHH", ident, flags, 1, 0, 0, 0) + question


@pytest.mark.parametrize(("case", "wire", "accepted"), [
    ("same id and question", upstream_reply(4242), True),
    ("question in other case", upstream_reply(4242, encode_name("WWW.Example.ORG")
                                              + struct.pack("!HH", 1, 1)), True),
    ("wrong id", upstream_reply(4243), False),
    ("not a response", upstream_reply(4242, qr=False), False),
    ("other name", upstream_reply(4242, encode_name("www.example.com")
                                  + struct.pack("!HH", 1, 1)), False),
    ("other type", upstream_reply(4242, encode_name("www.example.org")
                                  + struct.pack("!HH", 28, 1)), False),
    ("no question", struct.pack("!HHHHHH", 4242, 0x8180, 0, 0, 0, 0), False),
    ("too short", b"\x10\x92\x81", False),
])
def test_acceptable(case: str, wire: bytes, accepted: bool) -> None:
    assert acceptable(wire, 4242, QUESTION) is accepted, case


def test_build_query_carries_rd_cd_and_do() -> None:
    wire = build_query(99, QUESTION, do=True, cd=True)
    msg = dns.message.from_wire(wire)
    assert msg.id == 99 and msg.flags & 0x0100 and msg.flags & 0x0010
    assert msg.edns == 0 and msg.payload == 1232 and msg.ednsflags & 0x8000
    assert dns.message.from_wire(build_query(1, QUESTION, do=False, cd=False,
                                             edns=False)).edns == -1


# --- rendering for the client -------------------------------------------------------

def big_reply(name: str, count: int, *, additional: int = 0) -> bytes:
    msg = DNSRecord.question(name.lower(), "A").reply()
    for i in range(count):
        msg.add_answer(*RR.fromZone(f"{name.lower()} 300 IN A 10.0.{i // 250}.{i % 250}"))
    for i in range(additional):
        msg.add_ar(*RR.fromZone(f"extra{i}.example.org. 300 IN A 10.9.9.{i}"))
    return msg.pack()


def test_render_echoes_id_and_question_case_and_writes_ttls() -> None:
    query = client_query("WwW.ExAmPlE.oRg.")
    reply = read_reply(big_reply("www.example.org.", 2))
    wire = render(query, reply, (123, 45), limit=512)
    msg = dns.message.from_wire(wire)
    assert msg.id == query.id
    assert wire[12:12 + len(query.question)] == query.question
    assert [rr.ttl for rr in msg.answer] == [45]  # dnspython merges the RRset at min TTL
    assert struct.unpack_from("!I", wire, wire.index(b"\x0a\x00\x00\x00") - 6)[0] == 123
    assert msg.flags & 0x0080 and msg.flags & 0x8000  # RA, QR
    assert msg.edns == -1  # client sent no EDNS: no OPT back


def test_render_truncates_to_client_limit_with_tc() -> None:
    query = client_query("many.example.org.")
    reply = read_reply(big_reply("many.example.org.", 60))
    wire = render(query, reply, (300,) * 60, limit=udp_limit(query))
    msg = dns.message.from_wire(wire)
    assert len(wire) <= 512 and msg.flags & 0x0200
    assert 0 < len(msg.answer[0]) < 60
    edns_query = client_query("many.example.org.", use_edns=0, payload=4096)
    assert udp_limit(edns_query) == 1232
    wire = render(edns_query, reply, (300,) * 60, limit=udp_limit(edns_query))
    msg = dns.message.from_wire(wire)
    assert len(wire) <= 1232 and msg.edns == 0 and not msg.flags & 0x0200
    assert len(msg.answer[0]) == 60
    tcp = render(query, reply, (300,) * 60, limit=65535)
    assert not dns.message.from_wire(tcp).flags & 0x0200


def test_render_drops_additional_before_setting_tc() -> None:
    query = client_query("www.example.org.")
    reply = read_reply(big_reply("www.example.org.", 5, additional=40))
    wire = render(query, reply, (300,) * 45, limit=512)
    msg = dns.message.from_wire(wire)
    assert not msg.flags & 0x0200 and len(msg.answer[0]) == 5 and not msg.additional


def test_render_small_edns_size_is_raised_to_512() -> None:
    query = client_query("www.example.org.", use_edns=0, payload=100)
    assert udp_limit(query) == 512


def test_error_reply_echoes_question_and_edns() -> None:
    query = client_query("WWW.example.org.", use_edns=0, want_dnssec=True)
    wire = error_reply(query, 2)
    msg = dns.message.from_wire(wire)
    assert msg.rcode() == dns.rcode.SERVFAIL and msg.id == query.id
    assert wire[12:12 + len(query.question)] == query.question
    assert msg.edns == 0 and msg.ednsflags & 0x8000


# --- try order -----------------------------------------------------------------------

def test_order_sequential_skips_down_and_tries_one_when_all_down() -> None:
    fwd = forwarder("--upstream", "192.0.2.1,192.0.2.2,192.0.2.3")
    ups = fwd.routes.default
    assert fwd.order(ups) == list(ups)
    ups[0].down = True
    assert fwd.order(ups) == [ups[1], ups[2]]
    for up in ups:
        up.down = True
    assert fwd.order(ups) == [ups[0]]


def test_order_random_spreads_over_healthy_upstreams() -> None:
    fwd = forwarder("--upstream", "192.0.2.1,192.0.2.2,192.0.2.3",
                    "--upstream-policy", "random")
    ups = fwd.routes.default
    firsts = {fwd.order(ups)[0].addr for _ in range(60)}
    assert len(firsts) == 3
    ups[1].down = True
    assert all(ups[1] not in fwd.order(ups) for _ in range(30))
    assert all(len(fwd.order(ups)) == 2 for _ in range(5))


# --- bad upstream replies never crash ---------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(0, 400))
def test_garbage_replies_are_malformed_or_render(tail: bytes, cut: int) -> None:
    """Random bytes after a valid header and question, or a valid reply cut short:
    reading raises only Malformed, and whatever reads renders within the limit."""
    base = big_reply("www.example.org.", 3, additional=2)
    for wire in (base[:12 + len(QUESTION)] + tail, base[:cut], tail):
        try:
            reply = read_reply(wire)
        except Malformed:
            continue
        query = client_query("www.example.org.")
        out = render(query, reply, [r.ttl for r in reply.records], limit=512)
        assert len(out) <= 512 or not reply.records
        assert out[:2] == query.wire[:2]


# --- forwarding loops ------------------------------------------------------------------

def marked_query(name: str, marks: bytes) -> Query:
    option = dns.edns.GenericOption(OPTION_FORWARDED_BY, marks)
    return parse_query(dns.message.make_query(name, "A", use_edns=0,
                                              options=[option]).to_wire())


def test_upstream_queries_carry_the_forwarded_by_marks() -> None:
    msg = dns.message.from_wire(build_query(7, QUESTION, do=False, cd=False,
                                            marks=b"AAAAAAAABBBBBBBB"))
    assert [(o.otype, o.to_wire()) for o in msg.options] == [
        (OPTION_FORWARDED_BY, b"AAAAAAAABBBBBBBB")]
    assert not dns.message.from_wire(build_query(7, QUESTION, do=False, cd=False)).options


def test_marks_are_read_whole() -> None:
    assert forwarded_by(client_query("a.example.org.")) == b""
    assert forwarded_by(marked_query("a.example.org.", b"AAAAAAAAxyz")) == b"AAAAAAAA"


async def test_own_query_come_back_is_servfail_and_not_forwarded() -> None:
    fwd = forwarder("--upstream", "192.0.2.1")
    for marks in (b"AAAAAAAA" + fwd.mark, fwd.mark, b"12345678" * 8):
        reply = dns.message.from_wire(await fwd.forward(marked_query("x.example.org.", marks),
                                                        False))
        assert reply.rcode() == dns.rcode.SERVFAIL and reply.flags & 0x0080
    assert fwd.stats.loops == 3 and fwd.stats.forwarded == 0
    await fwd.close()


# --- what of an upstream's answer section is kept ------------------------------------------

def scrub_case(name: str, answers: Sequence[str], *, authority: Sequence[str] = (),
               additional: Sequence[str] = ()) -> list[str]:
    """The records (zone text) a client gets of an upstream reply to ``name`` A,
    the reply built (and compressed) by dnspython."""
    msg = dns.message.make_response(dns.message.make_query(name, "A"))
    for section, lines in ((msg.answer, answers), (msg.authority, authority),
                           (msg.additional, additional)):
        for line in lines:
            owner, ttl, rdclass, rdtype, rdata = line.split(None, 4)
            section.append(dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, rdata))
    reply = read_reply(msg.to_wire())
    kept = in_bailiwick(reply, encode_name(name.lower()))
    out = dns.message.from_wire(render(client_query(name), kept,
                                       [r.ttl for r in kept.records], limit=65535))
    return [rrset.to_text() for section in (out.answer, out.authority, out.additional)
            for rrset in section]


def test_answer_section_keeps_the_chain_from_the_question_only() -> None:
    assert scrub_case("www.example.org.", [
        "www.example.org. 60 IN CNAME edge.cdn.test.",
        "web.service.consul. 60 IN A 6.6.6.6",
        "edge.cdn.test. 60 IN CNAME last.cdn.test.",
        "example.org. 60 IN A 6.6.6.7",
        "last.cdn.test. 60 IN A 10.0.0.1",
    ], authority=["cdn.test. 60 IN NS ns.cdn.test."],
        additional=["ns.cdn.test. 60 IN A 10.0.0.53"]) == [
        "www.example.org. 60 IN CNAME edge.cdn.test.",
        "edge.cdn.test. 60 IN CNAME last.cdn.test.",
        "last.cdn.test. 60 IN A 10.0.0.1",
        "cdn.test. 60 IN NS ns.cdn.test.",
        "ns.cdn.test. 60 IN A 10.0.0.53",
    ]


def test_chain_out_of_order_and_dname_are_kept() -> None:
    assert scrub_case("www.old.test.", [
        "new.test. 60 IN A 6.6.6.6",
        "www.new.test. 60 IN A 10.0.0.2",
        "old.test. 60 IN DNAME new.test.",
        "old.test. 60 IN A 6.6.6.7",
        "www.old.test. 60 IN CNAME www.new.test.",
    ]) == [
        "www.new.test. 60 IN A 10.0.0.2",
        "old.test. 60 IN DNAME new.test.",
        "www.old.test. 60 IN CNAME www.new.test.",
    ]


def test_clean_answer_is_the_same_reply() -> None:
    msg = DNSRecord.question("www.example.org", "A").reply()
    msg.add_answer(*RR.fromZone("www.example.org. 60 IN A 10.0.0.1"))
    msg.add_answer(*RR.fromZone("www.example.org. 60 IN A 10.0.0.2"))
    reply = read_reply(bytes(msg.pack()))
    assert in_bailiwick(reply, encode_name("www.example.org")) is reply
