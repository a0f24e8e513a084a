"""The Forwarder against real upstream servers on loopback: dnsmasq from Debian
and the scripted test upstream. Cache time is a fake clock; timeouts are real."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
from collections.abc import AsyncIterator, Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from dnsd.build import forward_settings
from dnsd.config import load_config
from dnsd.forward import Forwarder, ForwardTiming
from dnsd.wire import Query, parse_query
from tests.upstreams import BlackHole, Dnsmasq, ScriptedUpstream, free_port


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_forwarder(*upstreams: str, clock: Clock | None = None, argv: tuple[str, ...] = (),
                   timing: ForwardTiming | None = None) -> Forwarder:
    args = [*argv]
    for spec in upstreams:
        args += ["--upstream", spec]
    settings = forward_settings(load_config(args, environ={}))
    if timing is not None:
        settings = dataclasses.replace(settings, timing=timing)
    return Forwarder(settings, now=clock or Clock(), rng=random.Random(1),
                     resolv_conf="/nonexistent")


def query(name: str, qtype: str = "A", **kwargs: object) -> Query:
    return parse_query(dns.message.make_query(name, qtype, **kwargs).to_wire())


async def ask(fwd: Forwarder, name: str, qtype: str = "A", tcp: bool = False,
              **kwargs: object) -> dns.message.Message:
    q = query(name, qtype, **kwargs)
    wire = await fwd.forward(q, tcp)
    assert wire[:2] == q.wire[:2], "reply must carry the client's ID"
    assert wire[12:12 + len(q.question)] == q.question, "question must be echoed exactly"
    return dns.message.from_wire(wire)


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    with Dnsmasq(["--host-record=web.example.test,10.1.2.3",
                  "--host-record=v6.example.test,fd00::7",
                  "--txt-record=txt.example.test,hello forwarding",
                  "--address=/wild.test/10.9.9.9",
                  "--address=/example.test/"], local_ttl=60) as server:
        yield server


@pytest.fixture
async def closing() -> AsyncIterator[list[Forwarder]]:
    made: list[Forwarder] = []
    yield made
    for fwd in made:
        await fwd.close()
        assert not fwd._tasks, "close() must leave no task running"


RECORDS = ["a.test. 300 IN A 10.0.0.1", "a.test. 300 IN A 10.0.0.2",
           "short.test. 2 IN A 10.0.0.3"] + \
          [f"big.test. 300 IN A 10.0.1.{i}" for i in range(1, 61)]


# --- through dnsmasq -----------------------------------------------------------

async def test_resolves_through_dnsmasq_and_caches(dnsmasq: Dnsmasq, closing) -> None:
    clock = Clock()
    fwd = make_forwarder(dnsmasq.spec, clock=clock)
    closing.append(fwd)
    msg = await ask(fwd, "WEB.Example.TEST.")
    assert msg.rcode() == dns.rcode.NOERROR and addresses(msg) == ["10.1.2.3"]
    assert msg.answer[0].ttl == 60
    assert msg.flags & 0x0080  # RA
    assert addresses(await ask(fwd, "v6.example.test.", "AAAA")) == ["fd00::7"]
    txt = await ask(fwd, "txt.example.test.", "TXT", tcp=True)
    assert txt.answer[0][0].to_text() == '"hello forwarding"'
    assert addresses(await ask(fwd, "anything.wild.test.")) == ["10.9.9.9"]
    nx = await ask(fwd, "missing.example.test.")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert fwd.stats.cache_hits == 0

    clock.t += 17.5
    again = await ask(fwd, "web.example.test.")
    assert addresses(again) == ["10.1.2.3"] and again.answer[0].ttl == 60 - 17
    assert fwd.stats.cache_hits == 1
    clock.t += 43
    await ask(fwd, "web.example.test.")
    assert fwd.stats.cache_hits == 1 and fwd.stats.forwarded == 6  # expired: asked again


async def test_edns_client_gets_opt_and_do_is_part_of_the_key(dnsmasq, closing) -> None:
    fwd = make_forwarder(dnsmasq.spec)
    closing.append(fwd)
    plain = await ask(fwd, "web.example.test.")
    assert plain.edns == -1
    edns = await ask(fwd, "web.example.test.", use_edns=0, payload=1232, want_dnssec=True)
    assert edns.edns == 0 and edns.ednsflags & 0x8000
    assert fwd.stats.forwarded == 2  # the DO=1 question is not served the DO=0 answer
    await ask(fwd, "web.example.test.", use_edns=0, want_dnssec=True)
    assert fwd.stats.cache_hits == 1


# --- fail-over and health -------------------------------------------------------

async def test_failover_from_a_dead_upstream_then_skip_it(dnsmasq, closing) -> None:
    with BlackHole() as dead:
        fwd = make_forwarder(dead.spec, dnsmasq.spec)
        closing.append(fwd)
        msg = await ask(fwd, "web.example.test.")
        assert addresses(msg) == ["10.1.2.3"]
        dead_up = fwd.upstreams[dead.addr]
        assert dead_up.down and dead_up.probe is not None
        assert dead_up.queries == 1 and dead_up.failures == 1  # one try, timed out
        for i in range(5):
            assert addresses(await ask(fwd, f"n{i}.wild.test.")) == ["10.9.9.9"]
        # Later queries skip the dead upstream: no try waits on it again.
        assert dead_up.queries == 1 and fwd.stats.upstream_failures == 1


async def test_closed_port_fails_over_at_once(dnsmasq, closing) -> None:
    # A try timeout far longer than the test's own patience: only the ICMP port
    # unreachable error, not a timeout, can end the first try in time.
    fwd = make_forwarder(f"127.0.0.1:{free_port()}", dnsmasq.spec,
                         timing=ForwardTiming(try_timeout=60.0, deadline=120.0))
    closing.append(fwd)
    msg = await asyncio.wait_for(ask(fwd, "web.example.test."), 30)
    assert addresses(msg) == ["10.1.2.3"] and fwd.stats.upstream_failures == 1


async def test_every_upstream_dead_is_servfail_within_budget(closing) -> None:
    with BlackHole() as one, BlackHole() as two:
        fwd = make_forwarder(one.spec, two.spec)
        closing.append(fwd)
        msg = await ask(fwd, "www.example.org.")
        assert msg.rcode() == dns.rcode.SERVFAIL
        first, second = fwd.upstreams[one.addr], fwd.upstreams[two.addr]
        assert (first.queries, second.queries) == (1, 1)  # each tried once, in turn
        assert (await ask(fwd, "www.example.org.", tcp=True)).rcode() == dns.rcode.SERVFAIL
        assert first.queries + second.queries == 3, "all down: only one upstream is tried"
        assert fwd.stats.servfail == 2


async def test_down_upstream_comes_back_through_the_probe(closing) -> None:
    with ScriptedUpstream(RECORDS, mode="timeout") as up, \
            ScriptedUpstream(RECORDS) as spare:
        fwd = make_forwarder(up.spec, spare.spec,
                             timing=ForwardTiming(probe_interval=0.1, try_timeout=0.3))
        closing.append(fwd)
        await ask(fwd, "a.test.")
        primary = fwd.upstreams[up.addr]
        assert primary.down
        up.mode = "answer"
        for _ in range(50):
            if not primary.down:
                break
            await asyncio.sleep(0.05)
        assert not primary.down and primary.probe is None
        assert up.count(qname=".") >= 1  # the probe asked ". NS"
        before = up.count(qname="a.test")
        await ask(fwd, "a.test.", qtype="AAAA")
        assert up.count() > before and spare.count(qname="a.test") == 1


async def test_servfail_and_refused_upstreams_fail_over(closing) -> None:
    with ScriptedUpstream(RECORDS, mode="servfail") as bad, \
            ScriptedUpstream(RECORDS, mode="refused") as worse, \
            ScriptedUpstream(RECORDS) as good:
        fwd = make_forwarder(bad.spec, worse.spec, good.spec)
        closing.append(fwd)
        assert addresses(await ask(fwd, "a.test.")) == ["10.0.0.1", "10.0.0.2"]
        assert bad.count() == worse.count() == good.count() == 1
        assert not fwd.upstreams[bad.addr].down  # it answered: alive
        only_bad = make_forwarder(bad.spec)
        closing.append(only_bad)
        assert (await ask(only_bad, "a.test.")).rcode() == dns.rcode.SERVFAIL


# --- what is accepted -----------------------------------------------------------

async def test_wrong_id_is_ignored(closing) -> None:
    with ScriptedUpstream(RECORDS, mode="wrong_id_then_right") as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        msg = await ask(fwd, "a.test.")
        assert addresses(msg) == ["10.0.0.1", "10.0.0.2"]  # not the decoy 192.0.2.99
        assert up.count() == 1 and fwd.stats.upstream_failures == 0  # the same try
    with ScriptedUpstream(RECORDS, mode="wrong_id") as liar, ScriptedUpstream(RECORDS) as good:
        fwd = make_forwarder(liar.spec, good.spec)
        closing.append(fwd)
        assert addresses(await ask(fwd, "a.test.")) == ["10.0.0.1", "10.0.0.2"]
        # The liar's try ran out (its wrong-ID reply was ignored), then the good one answered.
        assert liar.count() == 1 and good.count() == 1
        assert fwd.upstreams[liar.addr].failures == 1


async def test_wrong_question_is_ignored(closing) -> None:
    with ScriptedUpstream(RECORDS, mode="wrong_question") as liar, \
            ScriptedUpstream(RECORDS) as good:
        fwd = make_forwarder(liar.spec, good.spec,
                             timing=ForwardTiming(try_timeout=0.3))
        closing.append(fwd)
        msg = await ask(fwd, "a.test.")
        assert addresses(msg) == ["10.0.0.1", "10.0.0.2"] and good.count() == 1


async def test_random_id_and_source_port_per_upstream_query(closing) -> None:
    with ScriptedUpstream(RECORDS) as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        for i in range(8):
            await ask(fwd, f"n{i}.test.")
        ids = {r.ident for r in up.received}
        ports = {r.source_port for r in up.received}
        assert len(ids) >= 7 and len(ports) >= 7
        assert all(r.qname == r.qname.lower() and r.edns for r in up.received)


async def test_udp_sockets_are_reused_and_rotated(closing) -> None:
    """A few sockets carry many queries (opening one per query starved the loop
    under load), and each is replaced after a few, so the source port keeps
    changing (RFC 5452 spirit)."""
    with ScriptedUpstream(RECORDS) as up:
        fwd = make_forwarder(up.spec, timing=ForwardTiming(udp_sockets=4, socket_queries=5))
        closing.append(fwd)
        for i in range(40):
            await ask(fwd, f"seq{i}.test.")
        ports = {r.source_port for r in up.received}
        assert 4 < len(ports) < 40
        assert all(n <= 5 for n in collections.Counter(
            r.source_port for r in up.received).values())


async def test_concurrent_udp_queries_share_sockets_and_get_their_own_replies(closing) -> None:
    records = [f"n{i}.test. 60 IN A 10.2.0.{i}" for i in range(30)]
    with ScriptedUpstream(records, delay=0.01) as up:
        fwd = make_forwarder(up.spec, timing=ForwardTiming(udp_sockets=3))
        closing.append(fwd)
        replies = await asyncio.gather(*(ask(fwd, f"n{i}.test.") for i in range(30)))
        assert [addresses(r) for r in replies] == [[f"10.2.0.{i}"] for i in range(30)]
        assert len({r.source_port for r in up.received}) <= 3
        per_port = collections.defaultdict(list)
        for r in up.received:
            per_port[r.source_port].append(r.ident)
        assert all(len(set(ids)) == len(ids) for ids in per_port.values())


async def test_concurrent_tcp_queries_share_one_connection(closing) -> None:
    """RFC 7766 6.2.1.1: queries in flight together go on one connection."""
    records = [f"t{i}.test. 60 IN A 10.3.0.{i}" for i in range(10)]
    with ScriptedUpstream(records, delay=0.02) as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        replies = await asyncio.gather(*(ask(fwd, f"t{i}.test.", tcp=True) for i in range(10)))
        assert [addresses(r) for r in replies] == [[f"10.3.0.{i}"] for i in range(10)]
        assert up.count("tcp") == 10 and up.count("udp") == 0
        assert len({r.source_port for r in up.received}) < 10


async def test_tcp_connection_the_upstream_closed_is_replaced(closing) -> None:
    """A kept connection the upstream has closed (RFC 7766 6.2.3 lets it) costs
    nothing: the query goes on a new one."""
    with ScriptedUpstream(RECORDS, tcp_queries=1) as up:
        fwd = make_forwarder(up.spec, timing=ForwardTiming(tcp_idle=5.0))
        closing.append(fwd)
        for i in range(4):
            assert addresses(await ask(fwd, f"a{i}.test.", "A", tcp=True)) == [], i
            await asyncio.sleep(0.05)
        assert up.count("tcp") == 4 and fwd.stats.servfail == 0


async def test_formerr_to_edns_is_retried_without_it(closing) -> None:
    with ScriptedUpstream(RECORDS, mode="formerr_edns") as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        msg = await ask(fwd, "a.test.", use_edns=0)
        assert addresses(msg) == ["10.0.0.1", "10.0.0.2"] and msg.edns == 0
        assert [r.edns for r in up.received] == [True, False]


# --- TCP ---------------------------------------------------------------------------

async def test_truncated_udp_reply_is_retried_over_tcp(closing) -> None:
    with ScriptedUpstream(RECORDS, mode="truncate") as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        msg = await ask(fwd, "a.test.")
        assert addresses(msg) == ["10.0.0.1", "10.0.0.2"] and not msg.flags & 0x0200
        assert up.count("udp") == 1 and up.count("tcp") == 1


async def test_tcp_client_is_forwarded_over_tcp(closing) -> None:
    with ScriptedUpstream(RECORDS) as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        msg = await ask(fwd, "big.test.", tcp=True)
        assert len(msg.answer[0]) == 60
        assert up.count("udp") == 0 and up.count("tcp") == 1


async def test_big_answer_fits_the_udp_client(closing) -> None:
    with ScriptedUpstream(RECORDS) as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        q = query("big.test.")
        wire = await fwd.forward(q, False)
        msg = dns.message.from_wire(wire)
        assert len(wire) <= 512 and msg.flags & 0x0200 and len(msg.answer[0]) < 60
        edns = await ask(fwd, "big.test.", use_edns=0, payload=1232)
        assert len(edns.answer[0]) == 60 and not edns.flags & 0x0200
        assert up.count() == 1  # the second came from the cache


# --- cache: negative, stale, coalescing -----------------------------------------------

async def test_negative_answers_cached_for_soa_minimum(closing) -> None:
    clock = Clock()
    with ScriptedUpstream(RECORDS, soa_ttl=300, soa_minimum=60) as up:
        fwd = make_forwarder(up.spec, clock=clock)
        closing.append(fwd)
        nx = await ask(fwd, "nothing.test.")
        assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].ttl == 60
        nodata = await ask(fwd, "a.test.", "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
        clock.t += 25
        nx = await ask(fwd, "nothing.test.")
        assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].ttl == 35
        assert (await ask(fwd, "a.test.", "AAAA")).authority[0].ttl == 35
        assert up.count() == 2
        clock.t += 36
        await ask(fwd, "nothing.test.")
        assert up.count(qname="nothing.test") == 2


async def test_serve_stale_when_upstreams_fail(closing) -> None:
    clock = Clock()
    up = ScriptedUpstream(RECORDS)
    try:
        fwd = make_forwarder(up.spec, clock=clock)
        closing.append(fwd)
        assert addresses(await ask(fwd, "short.test.")) == ["10.0.0.3"]
        up.mode = "servfail"
        clock.t += 5  # TTL 2 is over
        stale = await ask(fwd, "short.test.")
        assert stale.rcode() == dns.rcode.NOERROR and addresses(stale) == ["10.0.0.3"]
        assert stale.answer[0].ttl == 30 and fwd.stats.stale_served == 1
        up.mode = "timeout"
        tries = fwd.upstreams[up.addr].queries
        assert addresses(await ask(fwd, "short.test.", tcp=True)) == ["10.0.0.3"]
        assert fwd.upstreams[up.addr].queries == tries + 1  # one TCP try, then stale
        # Now the upstream is down: stale is served without trying it again.
        assert addresses(await ask(fwd, "short.test.")) == ["10.0.0.3"]
        assert fwd.upstreams[up.addr].queries == tries + 1 and fwd.stats.stale_served == 3
        assert (await ask(fwd, "never-seen.test.")).rcode() == dns.rcode.SERVFAIL
        clock.t += 86_400
        assert (await ask(fwd, "short.test.")).rcode() == dns.rcode.SERVFAIL  # window over
    finally:
        up.close()


async def test_identical_concurrent_misses_are_one_upstream_query(closing) -> None:
    with ScriptedUpstream(RECORDS, delay=0.2) as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        names = ["a.test.", "A.TEST.", "a.Test."] * 4
        replies = await asyncio.gather(*(ask(fwd, n) for n in names))
        assert all(addresses(r) == ["10.0.0.1", "10.0.0.2"] for r in replies)
        assert up.count() == 1 and fwd.stats.coalesced == len(names) - 1


async def test_one_waiter_cancelled_does_not_cancel_the_others(closing) -> None:
    with ScriptedUpstream(RECORDS, delay=0.2) as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        first = asyncio.ensure_future(ask(fwd, "a.test."))
        second = asyncio.ensure_future(ask(fwd, "a.test."))
        await asyncio.sleep(0.05)
        first.cancel()
        assert addresses(await second) == ["10.0.0.1", "10.0.0.2"]
        assert up.count() == 1


async def test_ipv6_upstream_over_udp_and_tcp(closing) -> None:
    with ScriptedUpstream(RECORDS, host="::1", mode="truncate") as up:
        fwd = make_forwarder(up.spec)
        closing.append(fwd)
        assert addresses(await ask(fwd, "a.test.")) == ["10.0.0.1", "10.0.0.2"]
        assert up.count("udp") == 1 and up.count("tcp") == 1


# --- routing on real sockets ------------------------------------------------------

async def test_upstream_for_routes_by_most_specific_domain(dnsmasq, closing) -> None:
    with ScriptedUpstream([*RECORDS, "x.lab.test. 60 IN A 10.7.7.7"]) as lab:
        fwd = make_forwarder(dnsmasq.spec, argv=("--upstream-for", f"lab.test={lab.spec}"))
        closing.append(fwd)
        assert addresses(await ask(fwd, "x.lab.test.")) == ["10.7.7.7"]
        assert addresses(await ask(fwd, "web.example.test.")) == ["10.1.2.3"]
        assert lab.count() == 1


def test_dnsmasq_fixture_serves_only_its_records(dnsmasq: Dnsmasq) -> None:
    import dns.query
    msg = dns.query.udp(dns.message.make_query("web.example.test.", "A"),
                        dnsmasq.host, port=dnsmasq.port, timeout=2)
    assert addresses(msg) == ["10.1.2.3"]
    other = dns.query.udp(dns.message.make_query("example.org.", "A"),
                          dnsmasq.host, port=dnsmasq.port, timeout=2)
    assert other.rcode() == dns.rcode.REFUSED  # --no-resolv: never reaches the world
    assert dns.rdatatype.A == 1
