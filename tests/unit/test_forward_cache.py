"""The forwarding cache: TTL policy, countdown, negative TTLs (RFC 2308), eviction,
serve-stale (RFC 8767). Replies are built with dnslib from zone text; time is a number."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from dnslib import EDNS0, RCODE, RR, DNSRecord

from dnsd.forward.cache import Cache, CacheKey, CachePolicy, Entry, make_entry
from dnsd.forward.exchange import Reply, read_reply

SOA = "example.org. {ttl} IN SOA ns.example.org. host.example.org. 1 3600 600 86400 {minimum}"


def reply(name: str = "www.example.org.", qtype: str = "A", *, answers: Sequence[str] = (),
          authority: Sequence[str] = (), additional: Sequence[str] = (),
          rcode: int = RCODE.NOERROR, tc: bool = False) -> Reply:
    msg = DNSRecord.question(name, qtype).reply()
    msg.header.rcode = rcode
    msg.header.tc = int(tc)
    for line in answers:
        msg.add_answer(*RR.fromZone(line))
    for line in authority:
        msg.add_auth(*RR.fromZone(line))
    for line in additional:
        msg.add_ar(*RR.fromZone(line))
    return read_reply(msg.pack())


def key(name: bytes = b"\x03www\x07example\x03org\x00", qtype: int = 1) -> CacheKey:
    return (name, qtype, 1, False, False)


POLICY = CachePolicy(max_entries=100, max_ttl=3600, max_negative_ttl=1800, stale_window=600,
                     stale_ttl=30)


@pytest.mark.parametrize(("case", "built", "lifetime", "ttls"), [
    ("positive: smallest TTL",
     lambda: reply(answers=["www.example.org. 300 IN A 10.0.0.1",
                            "www.example.org. 120 IN A 10.0.0.2"]), 120, (300, 120)),
    ("positive: capped at max_ttl",
     lambda: reply(answers=["www.example.org. 86400 IN A 10.0.0.1"]), 3600, (3600,)),
    ("additional section counts",
     lambda: reply(qtype="MX", answers=["www.example.org. 300 IN MX 10 mx.example.org."],
                   additional=["mx.example.org. 40 IN A 10.0.0.3"]), 40, (300, 40)),
    ("zero TTL: not kept",
     lambda: reply(answers=["www.example.org. 0 IN A 10.0.0.1"]), 0, (0,)),
    ("NXDOMAIN: SOA minimum below SOA TTL",
     lambda: reply(rcode=RCODE.NXDOMAIN, authority=[SOA.format(ttl=900, minimum=60)]),
     60, (60,)),
    ("NXDOMAIN: SOA TTL below SOA minimum",
     lambda: reply(rcode=RCODE.NXDOMAIN, authority=[SOA.format(ttl=45, minimum=600)]),
     45, (45,)),
    ("NXDOMAIN: capped at max_negative_ttl",
     lambda: reply(rcode=RCODE.NXDOMAIN, authority=[SOA.format(ttl=90000, minimum=90000)]),
     1800, (1800,)),
    ("NODATA: SOA minimum",
     lambda: reply(qtype="AAAA", authority=[SOA.format(ttl=300, minimum=77)]), 77, (77,)),
    ("NXDOMAIN without SOA: not kept (RFC 2308 5)",
     lambda: reply(rcode=RCODE.NXDOMAIN), 0, ()),
    ("NODATA without SOA: not kept",
     lambda: reply(qtype="AAAA"), 0, ()),
    ("SERVFAIL: not kept",
     lambda: reply(rcode=RCODE.SERVFAIL), 0, ()),
    ("REFUSED with records: not kept",
     lambda: reply(rcode=RCODE.REFUSED, answers=["www.example.org. 300 IN A 10.0.0.1"]),
     0, (300,)),
    ("truncated: not kept",
     lambda: reply(tc=True, answers=["www.example.org. 300 IN A 10.0.0.1"]), 0, (300,)),
])
def test_entry_policy(case: str, built, lifetime: int, ttls: tuple[int, ...]) -> None:
    entry = make_entry(built(), 1000.0, POLICY)
    assert (entry.lifetime, entry.ttls) == (lifetime, ttls), case
    cache = Cache(POLICY)
    assert cache.put(key(), entry) is (lifetime > 0)


def test_ttl_counts_down_then_entry_expires_into_stale() -> None:
    cache = Cache(POLICY)
    r = reply(answers=["www.example.org. 300 IN A 10.0.0.1",
                       "www.example.org. 100 IN A 10.0.0.2"])
    cache.put(key(), make_entry(r, 1000.0, POLICY))
    hit = cache.get(key(), 1000.4)
    assert hit is not None and hit.served_ttls(1000.4, 30) == (300, 100)
    hit = cache.get(key(), 1042.9)
    assert hit is not None and hit.served_ttls(1042.9, 30) == (258, 58)
    assert cache.get_stale(key(), 1042.9) is None  # fresh entries are not "stale"
    assert cache.get(key(), 1100.0) is None          # lifetime 100 s is over
    stale = cache.get_stale(key(), 1100.0)
    assert stale is not None and stale.served_ttls(1100.0, 30) == (30, 30)
    assert cache.get_stale(key(), 1000 + 100 + 599) is not None
    assert cache.get_stale(key(), 1000 + 100 + 600) is None  # stale window over
    assert len(cache) == 0


def test_negative_entry_serves_soa_ttl_counting_down() -> None:
    cache = Cache(POLICY)
    r = reply(rcode=RCODE.NXDOMAIN, authority=[SOA.format(ttl=3600, minimum=60)])
    cache.put(key(), make_entry(r, 0.0, POLICY))
    hit = cache.get(key(), 15.0)
    assert hit is not None and hit.served_ttls(15.0, 30) == (45,)
    assert cache.get(key(), 60.0) is None


def test_size_bound_evicts_least_recently_used() -> None:
    policy = CachePolicy(max_entries=3, stale_window=600)
    cache = Cache(policy)
    r = reply(answers=["www.example.org. 300 IN A 10.0.0.1"])
    keys = [key(qtype=t) for t in (1, 2, 3, 4)]
    for k in keys[:3]:
        cache.put(k, make_entry(r, 0.0, policy))
    assert cache.get(keys[0], 1.0) is not None  # touch: now keys[1] is the oldest
    cache.put(keys[3], make_entry(r, 1.0, policy))
    assert len(cache) == 3 and cache.evictions == 1
    assert cache.get(keys[1], 2.0) is None
    assert all(cache.get(k, 2.0) is not None for k in (keys[0], keys[2], keys[3]))


def test_byte_bound_evicts() -> None:
    r = reply(answers=[f"www.example.org. 300 IN A 10.0.0.{i}" for i in range(1, 30)])
    one = make_entry(r, 0.0, CachePolicy()).size
    cache = Cache(CachePolicy(max_bytes=one * 2 + 10))
    for t in (1, 2, 3):
        cache.put(key(qtype=t), make_entry(r, 0.0, cache.policy))
    assert len(cache) == 2 and cache.bytes <= one * 2 + 10
    assert cache.get(key(qtype=1), 1.0) is None


def test_replacing_an_entry_keeps_byte_count_right() -> None:
    cache = Cache(POLICY)
    r = reply(answers=["www.example.org. 300 IN A 10.0.0.1"])
    for now in (0.0, 1.0, 2.0):
        cache.put(key(), make_entry(r, now, POLICY))
    assert len(cache) == 1 and cache.bytes == make_entry(r, 0.0, POLICY).size


def test_uncacheable_reply_leaves_the_stale_entry() -> None:
    cache = Cache(POLICY)
    good = reply(answers=["www.example.org. 10 IN A 10.0.0.1"])
    cache.put(key(), make_entry(good, 0.0, POLICY))
    assert not cache.put(key(), make_entry(reply(rcode=RCODE.SERVFAIL), 20.0, POLICY))
    stale = cache.get_stale(key(), 20.0)
    assert isinstance(stale, Entry) and stale.reply.records[0].ttl == 10


def test_read_reply_skips_opt_and_reads_soa_minimum() -> None:
    msg = DNSRecord.question("x.example.org.", "A").reply()
    msg.header.rcode = RCODE.NXDOMAIN
    msg.add_auth(*RR.fromZone(SOA.format(ttl=100, minimum=7)))
    msg.add_ar(EDNS0(udp_len=1232))
    parsed = read_reply(msg.pack())
    assert [(r.rtype, r.ttl, r.soa_minimum) for r in parsed.records] == [(6, 100, 7)]
