"""Blocking queries: Consul's index rules, when each long-poll should expire,
which services get a long-poll of their own, and the loop that follows one
endpoint.

Index rules follow Consul's documentation on blocking queries: a return is no
promise of change (an unchanged index is ignored), an index that goes
backwards resets to 0 (the next read is a full one), an index below 1 is
treated as 1, and a watcher whose queries keep returning at once without
progress slows down. See README.md for why expiries are spread on slots and
how the watched services are chosen. Imports: ``sources.consul.parse``.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from dnsd.sources.consul.parse import ConsulUnavailable

T = TypeVar("T")

QUICK_RETURN = 1.0          # a blocking query back faster than this made no progress...
QUICK_RETURN_PAUSE = 0.5    # ...so the next one waits this long first

Read = Callable[[int, str], Awaitable[tuple[int, T | None]]]
"""``read(index, wait)``: one blocking query from ``index`` (0: a full,
non-blocking read) for at most ``wait`` (Consul's duration text, e.g.
``"300000ms"``) -> (the reply's index, its data mapped, or None when the index
did not move: an unchanged reply is not worth mapping)."""

Apply = Callable[[int, T, bool], None]
"""``apply(index, data, reset)``: the endpoint changed; ``reset`` when its index
went backwards (a snapshot restore)."""


def parse_index(raw: object) -> int:
    """An ``X-Consul-Index`` header as an int; below 1 counts as 1 (Consul's advice)."""
    if raw is None:
        raise ConsulUnavailable("reply has no X-Consul-Index")
    try:
        value = int(str(raw))
    except ValueError:
        raise ConsulUnavailable(f"bad X-Consul-Index {raw!r}") from None
    return max(value, 1)


def next_index(previous: int, returned: int) -> tuple[int, bool]:
    """(index for the next blocking query, whether the data may have changed).

    Unchanged: no change. Backwards: reset to 0 so the next read is a full,
    non-blocking one, and treat the data as changed (a snapshot restore).
    """
    if returned == previous:
        return previous, False
    if returned < previous:
        return 0, True
    return returned, True


def slot_wait(now: float, phase: float, wait: float, first: bool = False) -> float:
    """Seconds a blocking query should wait to expire on this watch's next slot.

    Slots are ``phase + k * wait``; the next one at least ``wait / 2`` away is
    taken, so the result is in [wait/2, 3*wait/2) (a ``first`` query takes the
    very next slot, so a new set of watches expires evenly from the start). A
    watch that returns early (a change) or late (Consul's jitter) falls back
    onto its own slot, so the expiries of many watches stay as spread as their
    random phases.
    """
    if wait <= 0:
        return 0.0
    slots = math.ceil((now + (0.0 if first else wait / 2) - phase) / wait)
    return max(phase + slots * wait - now, 0.0)


Rank = Callable[[str], tuple[Any, ...]]


def plan_watches(watched: Iterable[str], known: Iterable[str], limit: int, rank: Rank,
                 promote: Iterable[str] = ()) -> tuple[set[str], set[str]]:
    """(services to start watching, services to stop watching).

    Watches of services no longer ``known`` stop. Each ``promote`` name (hottest
    first by ``rank``, lowest sorts first) takes a free slot or displaces the
    coldest watched service when that one ranks below it. Free slots left are
    filled with the best-ranked unwatched services. At most ``limit`` watched.
    """
    known = set(known)
    keep = set(watched) & known
    stop = set(watched) - known
    start: set[str] = set()
    limit = max(0, limit)
    for name in sorted(keep, key=rank)[limit:]:  # over the limit: the coldest go
        keep.discard(name)
        stop.add(name)
    for name in sorted((set(promote) & known) - keep, key=rank):
        if len(keep) + len(start) >= limit:
            coldest = max(keep, key=rank, default=None)
            if coldest is None or rank(coldest) <= rank(name):
                break
            keep.discard(coldest)
            stop.add(coldest)
        start.add(name)
    free = limit - len(keep) - len(start)
    if free > 0:
        start.update(heapq.nsmallest(free, known - keep - start, key=rank))
    return start, stop


async def follow(read: Read[T], index: int, apply: Apply[T], *, wait: float, phase: float,
                 observe: Callable[[], None]) -> None:
    """Follow one endpoint with blocking queries from ``index`` until cancelled
    (or a read raises), calling ``apply`` on every change.

    ``phase`` is this watch's slot in the ``wait`` cycle (see :func:`slot_wait`);
    ``observe`` is told when a change is first seen, before it is applied.
    """
    loop = asyncio.get_running_loop()
    first = True
    while True:
        wait_ms = max(1, int(slot_wait(loop.time(), phase, wait, first) * 1000))
        first = False
        started = loop.time()
        returned, data = await read(index, f"{wait_ms}ms")
        index, changed = next_index(index, returned)
        if changed:
            observe()
            if data is None:
                raise ConsulUnavailable("a changed reply came back unmapped")
            apply(returned, data, index == 0)
            if index:  # moved forward: follow at once
                continue
        if loop.time() - started < min(QUICK_RETURN, wait / 2):
            # Back at once with nothing new (or an index that keeps going
            # backwards): don't turn a misbehaving server into a busy loop.
            await asyncio.sleep(min(QUICK_RETURN_PAUSE, wait / 4))
