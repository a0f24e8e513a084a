"""The one home of dnsd's answer and reply caches, and their one policy.

Every layer is a :class:`ReplyCache`: bounded by bytes, never by a count, and
evicting by generations rather than all at once. New entries go into the young
generation; when it holds half the budget it becomes the old one and the
previous old generation is dropped; an entry found in the old generation moves
back to the young one. So an entry used at least once per generation stays,
and a flood of one-off keys (random names, 0x20 case variants, a cookie per
query) costs the cache its cold entries, never its hot ones: there is no cliff
at which everything is thrown away. A hit in the young generation is one dict
lookup, which the hot path does inline (``cache.young.get(key)``).

The layers:

- built answers (``answer.Answerer``): (lower-cased name, qtype) -> the
  records and rcode (``AnswerSet``); emptied by a new table version; bounded
  by ``ANSWERS_BYTES``.
- rendered in-zone replies (``handler.Handler``, one per transport): the
  query's bytes after its ID, at most ``MAX_KEY`` of them -> the reply's
  rotations, each rendered when first served; emptied by a new table version
  or a SIGHUP; ``RENDERED_BYTES`` each.
- forwarded replies (``handler.Handler``, one per transport): the query's
  bytes after its ID -> a forward-cache answer as rendered in one second of its
  TTL countdown; stale the next second; ``FORWARDED_BYTES`` each.
- recursion permission (``handler.Handler``): client address -> allowed or
  not; emptied by a SIGHUP; ``CLIENTS_BYTES``.

The forwarder's TTL cache of upstream answers (``forward``) keeps its own
entry and byte bounds with LRU order, because its entries expire by TTL and
are also kept stale (RFC 8767). Imports: the standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

# Keys longer than this are not cached by query bytes: a real query is well
# under it (EDNS padding pads to 128-octet blocks, RFC 8467), and the bytes of a
# longer one (padding, trailing data) would not change its reply.
MAX_KEY = 512
ENTRY_OVERHEAD = 200  # bytes a cached entry costs beyond its payload (dict slot, objects)

ANSWERS_BYTES = 32 * 1024 * 1024
# Replies are rendered per rotation: 10k names of 10 records take 23 MB, and a
# working set larger than a generation (half the budget) is rendered again
# and again (4x the CPU per answer in the 100k-instance benchmark at 32 MB).
RENDERED_BYTES = 64 * 1024 * 1024
FORWARDED_BYTES = 16 * 1024 * 1024
CLIENTS_BYTES = 4 * 1024 * 1024

K = TypeVar("K")
V = TypeVar("V", bound="Sized")


class Sized(Protocol):
    """A cached value that knows how many bytes it holds."""

    @property
    def size(self) -> int: ...


class ReplyCache(Generic[K, V]):
    """A byte-bounded cache of two generations (see the module docstring).

    ``on_drop``, if given, is called with the values that leave the cache
    because a ``put`` replaced them or their generation was dropped (not on
    ``clear``): the values may hold counts their owner has not read yet."""

    __slots__ = ("_old_bytes", "_young_bytes", "max_bytes", "old", "on_drop", "young")

    def __init__(self, max_bytes: int,
                 on_drop: Callable[[Iterable[V]], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.on_drop = on_drop
        self.young: dict[K, V] = {}
        self.old: dict[K, V] = {}
        self._young_bytes = 0
        self._old_bytes = 0

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def get(self, key: K) -> V | None:
        """The value for ``key``, or None; an old entry becomes young again."""
        value = self.young.get(key)
        if value is None:
            value = self.old.pop(key, None)
            if value is not None:
                self._old_bytes -= value.size
                self._admit(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value``; a value larger than half the budget is not kept."""
        if value.size * 2 > self.max_bytes:
            return
        stale = self.old.pop(key, None)
        if stale is not None:
            self._old_bytes -= stale.size
        previous = self.young.pop(key, None)
        if previous is not None:
            self._young_bytes -= previous.size
        if self.on_drop is not None and (stale is not None or previous is not None):
            self.on_drop([v for v in (stale, previous) if v is not None and v is not value])
        self._admit(key, value)

    def _admit(self, key: K, value: V) -> None:
        self.young[key] = value
        self._young_bytes += value.size
        if self._young_bytes * 2 > self.max_bytes:
            # The young generation is full: it becomes the old one, and what
            # was not used since the last turn goes.
            dropped = self.old
            self.old, self._old_bytes = self.young, self._young_bytes
            self.young = {}
            self._young_bytes = 0
            if self.on_drop is not None and dropped:
                self.on_drop(dropped.values())

    def values(self) -> list[V]:
        return [*self.young.values(), *self.old.values()]

    def clear(self) -> None:
        self.young = {}
        self.old = {}
        self._young_bytes = self._old_bytes = 0

    @property
    def bytes(self) -> int:
        """The bytes held, as the values count them."""
        return self._young_bytes + self._old_bytes
