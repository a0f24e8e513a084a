"""Upstream health, apart from routing: an upstream is marked down after
``max_fails`` consecutive failed tries, and a down upstream is probed in the
background (". NS", any well-formed reply will do) until it answers again.

A down upstream is still routed to; the forwarder only prefers the others (see
``Forwarder.order``). Probes run as tasks the owner starts and tracks (its
``spawn``), so the owner's shutdown cancels them. Imports: ``hostport``,
``records``, ``wire``, ``forward.exchange``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dnsd.forward.exchange import ExchangeError, Exchanger
from dnsd.hostport import HostPort, format_hostport
from dnsd.records import T_NS
from dnsd.wire import CLASS_IN

log = logging.getLogger("dnsd.forward")

PROBE_QUESTION = b"\x00" + struct.pack("!HH", T_NS, CLASS_IN)  # ". NS IN": any answer will do

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


@dataclass(eq=False, slots=True)
class Upstream:
    """One upstream address and its health. Shared by every route naming it."""

    addr: HostPort
    fails: int = 0              # consecutive failed tries
    down: bool = False
    queries: int = 0
    failures: int = 0
    probe: asyncio.Task[None] | None = None

    def __str__(self) -> str:
        return format_hostport(*self.addr)


class Health:
    """Keeps :class:`Upstream` health up to date from the outcome of each try."""

    def __init__(self, exchanger: Exchanger, spawn: Spawn, *, max_fails: int,
                 probe_interval: float, probe_timeout: float, mark: bytes = b"") -> None:
        self.exchanger = exchanger
        self.spawn = spawn
        self.max_fails = max_fails
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.mark = mark  # the forwarder's forwarded-by mark: a probe never circles
        self.closed = False

    def alive(self, up: Upstream) -> None:
        """``up`` answered (any rcode): it is up, and its probe can stop."""
        up.fails = 0
        if up.down:
            up.down = False
            log.info("upstream %s is answering again", up)
        if up.probe is not None:
            up.probe.cancel()
            up.probe = None

    def failed(self, up: Upstream, why: str) -> None:
        """A try with ``up`` got no acceptable reply (timeout, error, garbage)."""
        up.fails += 1
        up.failures += 1
        log.debug("upstream %s failed: %s", up, why)
        if not up.down and up.fails >= self.max_fails:
            up.down = True
            log.warning("upstream %s is down after %d failures (%s); probing it", up,
                        up.fails, why)
        if up.down and up.probe is None and not self.closed:
            up.probe = self.spawn(self._probe(up))

    async def _probe(self, up: Upstream) -> None:
        """Ask a down upstream ". NS" until any well-formed reply comes back."""
        try:
            while up.down:
                await asyncio.sleep(self.probe_interval)
                try:
                    await self.exchanger.udp(up.addr, PROBE_QUESTION, do=False, cd=False,
                                             timeout=self.probe_timeout, marks=self.mark)
                except ExchangeError:
                    continue
                up.probe = None  # alive() must not cancel the task it runs in
                self.alive(up)
        finally:
            if up.probe is asyncio.current_task():
                up.probe = None
