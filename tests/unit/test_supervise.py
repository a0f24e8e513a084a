"""A source that keeps crashing is restarted later and later, and its traceback
is logged once, not once a second."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from dnsd.app import App
from dnsd.config import load_config
from dnsd.sources.backoff import Backoff
from dnsd.sources.base import Sink


class CrashingSource:
    name = "crashing:test"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, sink: Sink) -> None:
        self.runs += 1
        raise RuntimeError("boom")


async def test_a_crashing_source_is_restarted_with_backoff(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, "dnsd")
    config = load_config(["--upstream", "127.0.0.1:9"], environ={})
    app = App(config, restart_backoff=lambda: Backoff(0.01, 0.08, random.Random(5)))
    source = CrashingSource()
    task = asyncio.create_task(app._supervise(source))
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while source.runs < 7:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    expected = Backoff(0.01, 0.08, random.Random(5))
    delays = [f"{expected.next():.2f}" for _ in range(6)]
    records = [r for r in caplog.records if "crashing:test" in r.getMessage()][:6]
    assert [r.getMessage().rsplit(" in ", 1)[1] for r in records] == [f"{d} s" for d in delays]
    assert float(delays[-1]) > float(delays[0])  # later and later, up to the cap
    assert [r.exc_info is not None for r in records] == [True] + [False] * 5
    assert app.statuses[source.name].state.value == "stale"
