"""The tests' one way to wait for something that happens concurrently.

Tests assert that an event happens, not how fast: a busy machine may be slow,
so the timeout only bounds a failure and is generous, and both helpers return
the seconds the wait took for a test that wants to print it. ``until`` is the
asyncio form; its check may return an awaitable (a DNS query, say).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

DEFAULT_TIMEOUT = 30.0


def wait_until(check: Callable[[], object], timeout: float = DEFAULT_TIMEOUT,
               interval: float = 0.002, what: str = "condition") -> float:
    """Poll ``check`` until it is true; return the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


async def until(check: Callable[[], object | Awaitable[object]],
                timeout: float = DEFAULT_TIMEOUT, interval: float = 0.002,
                what: str = "condition") -> float:
    """Poll ``check`` on the event loop until it is true; return the seconds it took."""
    started = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
