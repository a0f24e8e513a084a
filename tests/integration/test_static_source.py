"""The static source on real files, in-process: what it reports and logs when
its file goes bad, goes away, or comes back."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from dnsd.sources.base import SourceState
from dnsd.sources.static import StaticSettings, StaticSource
from tests.perf.workload import Registry
from tests.sinks import RecordingSink
from tests.waiting import until

SETTINGS = StaticSettings(node_name="testnode", datacenter="dc1", poll_interval=0.02)


def services(*addresses: str) -> str:
    return "".join(f'[[services]]\nname = "web"\nid = "web-{n}"\naddress = "{a}"\n'
                   for n, a in enumerate(addresses))


async def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    await until(predicate, timeout, what=what)


@asynccontextmanager
async def running(path: Path) -> AsyncIterator[tuple[StaticSource, RecordingSink]]:
    source = StaticSource(str(path), SETTINGS)
    source.load()
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await wait_for(lambda: sink.state is SourceState.UP, "UP")
        yield source, sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


async def settle(source: StaticSource) -> None:
    """Let several polls and an explicit reload go by."""
    source.request_reload()
    await asyncio.sleep(0.2)


@pytest.mark.parametrize("how", ["deleted", "dangling"])
async def test_a_file_gone_is_stale_logged_once_and_back_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str) -> None:
    caplog.set_level(logging.INFO, "dnsd.static")
    target = tmp_path / "real.toml"
    target.write_text(services("10.0.0.1"))
    path = tmp_path / "services.toml"
    if how == "dangling":
        path.symlink_to(target)
    else:
        path = target
    async with running(path) as (source, sink):
        published = len(sink.views)
        os.unlink(target)  # deleted, or the symlink's target gone
        await wait_for(lambda: sink.state is SourceState.STALE, "STALE")
        assert "cannot read" in sink.reason
        await settle(source)
        assert len(messages(caplog, "cannot read")) == 1
        assert len(sink.views) == published  # the last view keeps serving
        assert [s.state for s in sink.states].count(SourceState.STALE) == 1

        target.write_text(services("10.0.0.2"))
        await wait_for(lambda: sink.state is SourceState.UP, "UP again")
        assert [i.address for i in sink.instances("web")] == ["10.0.0.2"]
        await settle(source)
        assert len(messages(caplog, ": readable again; serving it")) == 1


async def test_a_fixed_bad_edit_says_it_is_fixed(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dnsd.static")
    path = tmp_path / "services.toml"
    path.write_text(services("10.0.0.1"))
    async with running(path) as (source, sink):
        path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.1"\nport = "x"\n')
        await wait_for(lambda: sink.state is SourceState.STALE, "STALE")
        assert "port" in sink.reason
        path.write_text(services("10.0.0.1"))  # back to the very content it serves
        await wait_for(lambda: sink.state is SourceState.UP, "UP again")
        await settle(source)
        assert len(messages(caplog, ": fixed; serving it")) == 1
        assert [i.address for i in sink.instances("web")] == ["10.0.0.1"]


async def test_a_big_file_is_parsed_off_the_loop_and_not_again_when_unchanged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """100,000 entries take seconds to parse: a replaced file is parsed on a
    worker thread while the loop keeps running, and reload requests for an
    unchanged file parse nothing."""
    caplog.set_level(logging.DEBUG, "dnsd.static")
    text = Registry(services=10_000, instances=10).dnsd_toml()
    path = tmp_path / "big.toml"
    path.write_text(text)
    async with running(path) as (source, sink):
        loop = asyncio.get_running_loop()
        gaps: list[float] = []

        async def tick() -> None:
            last = loop.time()
            while True:
                await asyncio.sleep(0.005)
                now = loop.time()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        try:
            published = len(sink.views)
            replacement = tmp_path / "big.toml.new"
            replacement.write_text(text.replace('address = "10.0.0.1"\n',
                                                'address = "10.99.0.1"\n', 1))
            os.replace(replacement, path)  # an atomic replace, as editors and tools do
            await wait_for(lambda: len(sink.views) > published, "the new view", timeout=300)
            assert "10.99.0.1" in {i.address for i in sink.instances("svc00000")}
            parsed = [r for r in caplog.records if "parsed 100000 services" in r.getMessage()]
            assert len(parsed) == 1
            assert parsed[0].threadName != threading.main_thread().name
            print(f"\nreplacing a 100,000-entry file: {parsed[0].getMessage().split(' in ')[-1]}"
                  f" to parse, longest loop stall {max(gaps) * 1000:.0f} ms")

            # A SIGHUP storm on the unchanged file: one reload at a time, nothing parsed.
            for _ in range(50):
                source.request_reload()
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.5)
            assert len([r for r in caplog.records if ": parsed " in r.getMessage()]) == 1
            assert len(sink.views) == published + 1 and sink.state is SourceState.UP
        finally:
            ticker.cancel()
