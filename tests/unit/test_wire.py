"""The hand-written query parser against dnspython-built queries and bad bytes."""

from __future__ import annotations

import dns.edns
import dns.message
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsd.wire import Malformed, parse_query


def test_parses_a_plain_query() -> None:
    msg = dns.message.make_query("WeB.service.consul", "SRV", use_edns=False)
    query = parse_query(msg.to_wire())
    assert query.id == msg.id and query.qtype == 33 and query.qclass == 1
    assert query.qname == b"\x03WeB\x07service\x06consul\x00"
    assert query.key == b"\x03web\x07service\x06consul\x00"
    assert query.labels() == [b"web", b"service", b"consul"]
    assert query.edns is None and query.rd


def test_parses_edns_with_options() -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    msg = dns.message.make_query("a.consul", "A", use_edns=0, payload=4096, want_dnssec=True,
                                 options=[cookie])
    query = parse_query(msg.to_wire())
    assert query.edns is not None
    assert (query.edns.udp_size, query.edns.version, query.edns.do) == (4096, 0, True)


@pytest.mark.parametrize("wire", [
    bytes.fromhex("0001 0100 0001 0000 0000 0000"),
    bytes.fromhex("0001 0100 0001 0000 0000 0000") + b"\x01a\x00\x00\x01",
    bytes.fromhex("0001 0100 0001 0000 0000 0000") + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
    bytes.fromhex("0001 0100 0001 0000 0000 0000") + b"\x3f" + b"a" * 63 * 5,
    bytes.fromhex("0001 0100 0001 0000 0000 0000") + (b"\x3f" + b"a" * 63) * 4
    + b"\x00\x00\x01\x00\x01",
    # an OPT record in the answer section
    bytes.fromhex("0001 0100 0001 0001 0000 0000") + b"\x00\x00\x01\x00\x01"
    + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00",
    # two OPT records
    bytes.fromhex("0001 0100 0001 0000 0000 0002") + b"\x00\x00\x01\x00\x01"
    + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00" * 2,
    # an additional record whose data runs past the end
    bytes.fromhex("0001 0100 0001 0000 0000 0001") + b"\x00\x00\x01\x00\x01"
    + b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x09",
])
def test_malformed(wire: bytes) -> None:
    with pytest.raises(Malformed):
        parse_query(wire)


@given(st.binary(min_size=12, max_size=600))
def test_random_bytes_parse_or_raise_malformed(data: bytes) -> None:
    try:
        query = parse_query(data)
    except Malformed:
        return
    assert query.question == data[12:12 + len(query.question)]
