"""dnsd on real sockets: rotation, truncation, EDNS0, TCP framing and bad input."""

from __future__ import annotations

import collections
import socket
import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import BIG, SERVICES
from tests.dnsd_process import DnsdProcess


@pytest.fixture(scope="module")
def dnsd(dnsd_each_loop: DnsdProcess) -> DnsdProcess:
    """Every test here runs against each UDP loop (compiled and Python)."""
    return dnsd_each_loop


def _udp_raw(proc: DnsdProcess, payload: bytes, timeout: float = 5.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (proc.host, proc.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def _tcp_exchange(proc: DnsdProcess, payloads: list[bytes], timeout: float = 3.0
                  ) -> list[bytes]:
    with socket.create_connection((proc.host, proc.port), timeout=timeout) as sock:
        sock.sendall(b"".join(struct.pack("!H", len(p)) + p for p in payloads))
        replies = []
        buf = b""
        while len(replies) < len(payloads):
            chunk = sock.recv(65535)
            if not chunk:
                break
            buf += chunk
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                size = struct.unpack("!H", buf[:2])[0]
                replies.append(buf[2:2 + size])
                buf = buf[2 + size:]
        return replies


def _first_records(proc: DnsdProcess, qname: str, qtype: str, count: int) -> list[str]:
    firsts = []
    for _ in range(count):
        reply = proc.query(qname, qtype)
        firsts.append(reply.answer[0][0].to_text())
    return firsts


@pytest.mark.parametrize("qtype", ["A", "SRV"])
def test_rotation_puts_each_instance_first_equally(dnsd: DnsdProcess, qtype: str) -> None:
    k = 4
    firsts = _first_records(dnsd, "web.service.dc1.consul", qtype, 3 * k)
    counts = collections.Counter(firsts)
    assert len(counts) == 3
    assert set(counts.values()) == {k}


def test_rotation_of_aaaa(dnsd: DnsdProcess) -> None:
    reply = dnsd.query("big.service.consul", "A", tcp=True)
    assert len(reply.answer[0]) == 50
    firsts = _first_records(dnsd, "big.service.consul", "A", 5)
    assert len(set(firsts)) == 5


def test_question_is_echoed_with_its_case(dnsd: DnsdProcess) -> None:
    reply = dnsd.query("WeB.SeRvIcE.dC1.CoNsUl", "A")
    assert reply.question[0].name.to_text() == "WeB.SeRvIcE.dC1.CoNsUl."
    assert len(reply.answer[0]) == 3


def test_large_answer_truncated_over_udp_without_edns(dnsd: DnsdProcess) -> None:
    query = dns.message.make_query("big.service.consul", "A")
    wire = _udp_raw(dnsd, query.to_wire())
    assert wire is not None and len(wire) <= 512
    reply = dns.message.from_wire(wire)
    assert reply.flags & dns.flags.TC
    assert 20 <= len(reply.answer[0]) < 50  # as many whole records as fit


def test_large_answer_uses_edns_size_capped_at_1232(dnsd: DnsdProcess) -> None:
    query = dns.message.make_query("big.service.consul", "SRV", use_edns=0, payload=4096)
    wire = _udp_raw(dnsd, query.to_wire())
    assert wire is not None and 512 < len(wire) <= 1232
    reply = dns.message.from_wire(wire)
    assert reply.flags & dns.flags.TC
    assert reply.edns == 0 and reply.payload == 1232


def test_srv_additional_records_match_the_srv_records_kept(dnsd: DnsdProcess) -> None:
    query = dns.message.make_query("big.service.consul", "SRV", use_edns=0, payload=1232)
    reply = dns.message.from_wire(_udp_raw(dnsd, query.to_wire()) or b"")
    targets = {rd.target for rd in reply.answer[0]}
    extra = {rrset.name for rrset in reply.additional}
    assert extra <= targets


def test_large_answer_complete_over_tcp(dnsd: DnsdProcess) -> None:
    reply = dnsd.query("big.service.consul", "SRV", tcp=True)
    assert not reply.flags & dns.flags.TC
    assert len(reply.answer[0]) == 50
    assert len(reply.additional) == 50


def test_tcp_carries_pipelined_queries_on_one_connection(dnsd: DnsdProcess) -> None:
    names = ["web.service.consul", "db.service.consul", "nope.service.consul"]
    queries = [dns.message.make_query(n, "A") for n in names]
    replies = [dns.message.from_wire(w) for w in _tcp_exchange(dnsd, [q.to_wire()
                                                                      for q in queries])]
    by_id = {r.id: r for r in replies}
    assert [dns.rcode.to_text(by_id[q.id].rcode()) for q in queries] == [
        "NOERROR", "NOERROR", "NXDOMAIN"]


def test_edns_unknown_version_gets_badvers(dnsd: DnsdProcess) -> None:
    query = dns.message.make_query("web.service.consul", "A", use_edns=1)
    reply = dns.message.from_wire(_udp_raw(dnsd, query.to_wire()) or b"")
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0


def test_edns_options_and_do_bit_are_tolerated(dnsd: DnsdProcess) -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    query = dns.message.make_query("web.service.consul", "A", use_edns=0, want_dnssec=True,
                                   options=[cookie])
    reply = dns.message.from_wire(_udp_raw(dnsd, query.to_wire()) or b"")
    assert reply.rcode() == dns.rcode.NOERROR and len(reply.answer[0]) == 3
    assert reply.ednsflags & dns.flags.DO


BAD_INPUT = [
    # (description, packet, expected rcode or None for "no reply")
    ("empty", b"", None),
    ("short header", b"\x12\x34\x01", None),
    ("a response", bytes.fromhex("1234 8180 0001 0000 0000 0000") + b"\x00\x00\x01\x00\x01",
     None),
    ("header only", bytes.fromhex("1234 0100 0001 0000 0000 0000"), "FORMERR"),
    ("two questions", bytes.fromhex("1234 0100 0002 0000 0000 0000")
     + b"\x00\x00\x01\x00\x01" * 2, "FORMERR"),
    ("no question", bytes.fromhex("1234 0100 0000 0000 0000 0000"), "FORMERR"),
    ("label past end", bytes.fromhex("1234 0100 0001 0000 0000 0000") + b"\x3fabc", "FORMERR"),
    ("compressed question", bytes.fromhex("1234 0100 0001 0000 0000 0000")
     + b"\xc0\x0c\x00\x01\x00\x01", "FORMERR"),
    ("huge counts", bytes.fromhex("1234 0100 0001 ffff ffff ffff")
     + b"\x00\x00\x01\x00\x01", "FORMERR"),
    ("notify opcode", bytes.fromhex("1234 2000 0001 0000 0000 0000")
     + b"\x06consul\x00\x00\x06\x00\x01", "NOTIMP"),
    ("update opcode", bytes.fromhex("1234 2800 0001 0000 0000 0000")
     + b"\x06consul\x00\x00\x06\x00\x01", "NOTIMP"),
    ("chaos class", bytes.fromhex("1234 0100 0001 0000 0000 0000")
     + b"\x07version\x04bind\x00\x00\x10\x00\x03", "REFUSED"),
    ("zone transfer", bytes.fromhex("1234 0100 0001 0000 0000 0000")
     + b"\x06consul\x00\x00\xfc\x00\x01", "REFUSED"),
]


@pytest.mark.parametrize(("what", "packet", "rcode"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_gets_a_clear_answer(dnsd: DnsdProcess, what: str, packet: bytes,
                                       rcode: str | None) -> None:
    wire = _udp_raw(dnsd, packet, timeout=0.3 if rcode is None else 5.0)
    if rcode is None:
        assert wire is None
    else:
        assert wire is not None
        assert wire[:2] == packet[:2]  # the ID
        assert wire[2] & 0x80  # QR
        assert dns.rcode.to_text(wire[3] & 0xF) == rcode
    # and the server still answers the next valid query
    assert len(dnsd.query("web.service.consul", "A").answer[0]) == 3


def test_bad_input_over_tcp(dnsd: DnsdProcess) -> None:
    good = dns.message.make_query("web.service.consul", "A").to_wire()
    bad = bytes.fromhex("1234 0100 0001 0000 0000 0000") + b"\x3fabc"
    replies = _tcp_exchange(dnsd, [bad, good])
    assert replies[0][3] & 0xF == dns.rcode.FORMERR
    assert len(dns.message.from_wire(replies[1]).answer[0]) == 3


def test_random_garbage_never_stops_the_server(dnsd: DnsdProcess) -> None:
    import random
    rng = random.Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(2000):
            sock.sendto(rng.randbytes(rng.randrange(0, 600)), (dnsd.host, dnsd.port))
    time.sleep(0.2)
    assert len(dnsd.query("web.service.consul", "A").answer[0]) == 3


def test_udp_answer_limit_caps_non_edns_answers(udp_env: dict[str, str]) -> None:
    with DnsdProcess(["--static", str(SERVICES), "--static", str(BIG),
                      "--udp-answer-limit", "2"], env=udp_env) as proc:
        wire = _udp_raw(proc, dns.message.make_query("big.service.consul", "A").to_wire())
        reply = dns.message.from_wire(wire or b"")
        assert len(reply.answer[0]) == 2 and not reply.flags & dns.flags.TC
        firsts = {proc.query("web.service.consul", "A", use_edns=False).answer[0][0].address
                  for _ in range(3)}
        assert len(firsts) == 3  # rotation still spreads clients
        assert len(proc.query("big.service.consul", "A", use_edns=0).answer[0]) > 2
        assert len(proc.query("big.service.consul", "A", tcp=True).answer[0]) == 50


def test_only_passing_leaves_out_warning_instances(udp_env: dict[str, str]) -> None:
    with DnsdProcess(["--static", str(SERVICES), "--only-passing"], env=udp_env) as proc:
        assert {r.address for r in proc.query("db.service.consul", "A").answer[0]} == {
            "10.2.0.1"}
        reply = proc.query("replica.db.service.consul", "A")
        assert reply.rcode() == dns.rcode.NXDOMAIN


def test_ttl_options_apply_to_answers_and_soa(udp_env: dict[str, str]) -> None:
    with DnsdProcess(["--static", str(SERVICES), "--ttl", "30",
                      "--negative-ttl", "15"], env=udp_env) as proc:
        assert proc.query("web.service.consul", "A").answer[0].ttl == 30
        reply = proc.query("nope.service.consul", "A")
        soa = reply.authority[0]
        assert soa.ttl == 15 and soa[0].minimum == 15


def test_ipv6_listener_answers(udp_env: dict[str, str]) -> None:
    with DnsdProcess(["--listen", "[::1]:0", "--static", str(SERVICES)], env=udp_env) as proc:
        assert proc.host == "::1"
        msg = dns.message.make_query("web.service.consul", "A")
        for _ in range(3):  # a miss, then hits from the reply cache
            reply = dns.query.udp(msg, "::1", port=proc.port, timeout=3)
            assert len(reply.answer[0]) == 3
        reply = dns.query.tcp(msg, "::1", port=proc.port, timeout=3)
        assert len(reply.answer[0]) == 3


@pytest.mark.parametrize(("listen", "family", "target"), [
    ("0.0.0.0:0", socket.AF_INET, "127.0.0.2"),
    ("[::]:0", socket.AF_INET6, "::1"),
])
def test_wildcard_listener_replies_from_the_address_asked(listen: str, family: int,
                                                          target: str,
                                                          udp_env: dict[str, str]) -> None:
    with DnsdProcess(["--listen", listen, "--static", str(SERVICES)], env=udp_env) as proc:
        query = dns.message.make_query("web.service.consul", "A")
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            for _ in range(3):  # a miss, then hits from the reply cache
                sock.sendto(query.to_wire(), (target, proc.port))
                wire, source = sock.recvfrom(65535)
                assert source[0] == target
                assert len(dns.message.from_wire(wire).answer[0]) == 3
        reply = dns.query.tcp(query, target, port=proc.port, timeout=3)
        assert len(reply.answer[0]) == 3


def test_rate_limit_slips_truncated_replies_and_spares_tcp() -> None:
    with DnsdProcess(["--static", str(SERVICES), "--rate-limit", "5"]) as proc:
        query = dns.message.make_query("web.service.consul", "A")
        answered = truncated = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(30):  # a burst well over 5 per second
                sock.sendto(query.to_wire(), (proc.host, proc.port))
            sock.settimeout(0.5)
            try:
                while True:
                    reply = dns.message.from_wire(sock.recv(65535))
                    if reply.flags & dns.flags.TC:
                        truncated += 1
                    else:
                        answered += 1
            except TimeoutError:
                pass
        silent = 30 - answered - truncated
        assert 5 <= answered <= 7 and truncated >= 10 and silent >= 10
        reply = dns.query.tcp(query, proc.host, port=proc.port, timeout=3)
        assert len(reply.answer[0]) == 3  # the TC fallback always works


def test_any_over_udp_is_minimal_and_complete_over_tcp(dnsd: DnsdProcess) -> None:
    udp = dnsd.query("api.service.consul", "ANY")
    assert len(udp.answer) == 1  # one RRset (RFC 8482)
    tcp = dnsd.query("api.service.consul", "ANY", tcp=True)
    assert {dns.rdatatype.to_text(r.rdtype) for r in tcp.answer} == {"A", "AAAA"}
    apex = dnsd.query("consul", "ANY", tcp=True)
    assert {dns.rdatatype.to_text(r.rdtype) for r in apex.answer} == {"SOA", "NS"}
