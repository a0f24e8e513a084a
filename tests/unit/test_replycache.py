"""The one cache policy: byte bounds that hold under any flood of keys, and hot
entries that survive one (no cliff where everything is thrown away); and the
handler's caches built on it."""

from __future__ import annotations

import collections
import random

import dns.message
import dns.rdatatype

from dnsd.answer import Answerer, ZoneSettings
from dnsd.handler import Handler
from dnsd.model import Instance, View
from dnsd.replycache import RENDERED_BYTES, ReplyCache
from dnsd.table import Table


class Blob:
    def __init__(self, size: int) -> None:
        self.size = size


def test_bytes_stay_within_the_bound_whatever_the_flood() -> None:
    cache: ReplyCache[int, Blob] = ReplyCache(max_bytes=10_000)
    for key in range(5_000):
        cache.put(key, Blob(300))
        assert cache.bytes <= 10_000
    assert 0 < len(cache) <= 10_000 // 300


def test_a_hot_entry_survives_a_flood_of_one_off_keys() -> None:
    cache: ReplyCache[str, Blob] = ReplyCache(max_bytes=10_000)
    hot = Blob(100)
    cache.put("hot", hot)
    for n in range(10_000):
        cache.put(f"random-{n}", Blob(100))
        if n % 20 == 0:  # asked now and then, as a popular name is
            assert cache.get("hot") is hot


def test_a_value_larger_than_half_the_budget_is_not_kept() -> None:
    cache: ReplyCache[str, Blob] = ReplyCache(max_bytes=1_000)
    cache.put("big", Blob(600))
    assert cache.get("big") is None and cache.bytes == 0


def test_replacing_a_key_counts_its_bytes_once() -> None:
    cache: ReplyCache[str, Blob] = ReplyCache(max_bytes=100_000)
    for _ in range(10):
        cache.put("k", Blob(1_000))
    assert cache.bytes == 1_000 and len(cache) == 1


def _handler(instances: int) -> Handler:
    table = Table()
    table.publish("t", View(tuple(
        Instance("big", f"n{i}", "dc1", address=f"10.0.{i // 250}.{i % 250 + 1}", port=80)
        for i in range(instances))))
    return Handler(table, Answerer(ZoneSettings()), None, [])


def _variant(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


def test_case_variants_of_a_big_answer_stay_within_the_byte_bound() -> None:
    """0x20 variants of a 64-instance SRV name, each asked twice: every rotation
    of each used to be rendered up front (335 KB a variant, without limit)."""
    handler = _handler(64)
    rng = random.Random(7)
    asked: collections.Counter[bytes] = collections.Counter()
    for _ in range(400):
        wire = dns.message.make_query(_variant(rng, "big.service.consul"), "SRV",
                                      use_edns=0, payload=1232).to_wire()
        for _ in range(2):
            reply = handler.handle(wire, "127.0.0.1", True)
            assert isinstance(reply, bytes) and reply[:2] == wire[:2]
            asked[wire[2:]] += 1
    replies = handler._replies[True]
    assert replies.bytes <= RENDERED_BYTES
    for key, cached in [*replies.young.items(), *replies.old.items()]:
        # only the rotations actually served (a spelling may come up twice)
        assert sum(r is not None for r in cached.renders) <= asked[key]


def test_padded_queries_are_answered_but_not_cached_by_their_bytes() -> None:
    handler = _handler(3)
    msg = dns.message.make_query("big.service.consul", "A")
    for n in range(50):
        wire = msg.to_wire() + bytes([n]) * 60_000  # trailing bytes change nothing
        reply = handler.handle(wire, "127.0.0.1", True)
        assert isinstance(reply, bytes)
        answer = dns.message.from_wire(reply[:2] + reply[2:], ignore_trailing=True)
        assert answer.answer and answer.answer[0].rdtype == dns.rdatatype.A
    assert len(handler._replies[True]) == 0


def test_values_leaving_the_cache_are_handed_to_on_drop() -> None:
    """Replaced by a put, or in a dropped generation: their owner may still
    have to read them (the handler's hit counts); clear() hands nothing."""
    dropped: list[Blob] = []
    cache: ReplyCache[int, Blob] = ReplyCache(max_bytes=1_000, on_drop=dropped.extend)
    first = Blob(100)
    cache.put(0, first)
    cache.put(0, Blob(100))
    assert dropped == [first]
    for key in range(1, 20):  # two generations' turns: the first old one goes
        cache.put(key, Blob(100))
    assert len(dropped) > 1 and len(cache) + len(dropped) == 21  # 20 keys, one replaced
    dropped.clear()
    cache.clear()
    assert dropped == []


def test_hits_of_a_replaced_reply_are_counted() -> None:
    handler = _handler(3)
    wire = dns.message.make_query("big.service.consul", "A").to_wire()
    for _ in range(5):
        handler.handle(wire, "127.0.0.1", False)
    replies = handler._replies[False]
    entry = next(iter(replies.values()))
    replies.max_bytes = 2 * entry.size  # a generation holds two entries
    for key in (b"one", b"two", b"three"):  # two turns: the counted entry's generation goes
        replies.put(key, entry)
    assert list(replies.old) == [b"two", b"three"]
    handler.flush_stats()
    assert sum(handler.stats.replies.values()) == 5
