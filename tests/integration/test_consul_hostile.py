"""The Consul source against a Consul that answers badly: JSON nested deeper
than any decoder's stack, replies far larger than any catalog, bytes trickled
one at a time. The source must stay up (stale, with the reason), back off,
and recover when the answers do; never crash its task."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest

from dnsd.sources.base import SourceState
from dnsd.sources.consul import ConsulSettings, ConsulSource
from tests.scripted_consul import ScriptedConsul, entry
from tests.sinks import RecordingSink
from tests.waiting import until


@pytest.fixture
def consul() -> Iterator[ScriptedConsul]:
    server = ScriptedConsul()
    try:
        yield server
    finally:
        server.close()


async def wait_for(predicate: Callable[[], object], timeout: float = 30.0,
                   what: str = "condition") -> None:
    await until(predicate, timeout, what=what)


@asynccontextmanager
async def running(consul: ScriptedConsul, **settings: object
                  ) -> AsyncIterator[tuple[asyncio.Task[None], RecordingSink]]:
    options: dict[str, object] = {"wait": 1.0, "backoff_base": 0.05, "backoff_cap": 0.3}
    options.update(settings)
    source = ConsulSource(dataclasses.replace(ConsulSettings(url=consul.url),
                                              **options))  # type: ignore[arg-type]
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        yield task, sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_deeply_nested_json_is_an_outage_not_a_crash(consul: ScriptedConsul) -> None:
    consul.set("/v1/health/service/web", b"[" * 100_000)
    async with running(consul) as (task, sink):
        await wait_for(lambda: sink.state is SourceState.STALE or task.done(), what="STALE")
        assert not task.done(), task.exception() if task.done() else None
        assert "RecursionError" in sink.reason
        reads = consul.requests["/v1/health/service/web"]
        await wait_for(lambda: consul.requests["/v1/health/service/web"] >= reads + 2,
                       what="retries")
        assert not task.done()
        consul.set("/v1/health/service/web", json.dumps([entry("web", "10.0.0.7")]).encode())
        await wait_for(lambda: sink.state is SourceState.UP, what="UP")
        assert [i.address or i.node_address for i in sink.instances("web")] == ["10.0.0.7"]


async def test_a_failing_agent_is_retried_and_logged_once(consul: ScriptedConsul,
                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "dnsd.consul")
    consul.set("/v1/agent/self", b"[" * 100_000)
    async with running(consul, backoff_base=0.1, backoff_cap=0.4) as (task, _):
        await wait_for(lambda: consul.requests["/v1/agent/self"] >= 6, what="six tries")
        assert not task.done()
    # Logged once, not once per retry.
    assert len([r for r in caplog.records if "RecursionError" in r.getMessage()]) == 1


@pytest.mark.parametrize("length", [True, False])
async def test_a_reply_past_the_bound_is_an_outage_logged_once(
        consul: ScriptedConsul, caplog: pytest.LogCaptureFixture, length: bool) -> None:
    caplog.set_level(logging.WARNING, "dnsd.consul")
    huge = json.dumps([entry("web", f"10.0.{n // 256}.{n % 256}") for n in range(400)])
    consul.set("/v1/health/service/web", huge.encode(), length=length)
    async with running(consul, max_reply_bytes=16_384) as (task, sink):
        await wait_for(lambda: sink.state is SourceState.STALE or task.done(), what="STALE")
        assert "larger than 16,384 bytes" in sink.reason
        reads = consul.requests["/v1/health/service/web"]
        await wait_for(lambda: consul.requests["/v1/health/service/web"] >= reads + 2,
                       what="retries")
        assert len([r for r in caplog.records if "larger than" in r.getMessage()]) == 1
        consul.set("/v1/health/service/web", json.dumps([entry("web", "10.0.0.7")]).encode())
        await wait_for(lambda: sink.state is SourceState.UP, what="UP")
        assert len(sink.instances("web")) == 1


async def test_a_trickling_consul_is_worth_a_warning(consul: ScriptedConsul,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """One byte at a time never trips a read timeout: the sync just lasts. It
    is reported once while it lasts, and its end too."""
    caplog.set_level(logging.INFO, "dnsd.consul")
    body = consul.replies["/v1/agent/self"].body
    consul.set("/v1/agent/self", body, trickle=2.0 / len(body))  # about 2 s
    async with running(consul, slow_sync=0.3) as (task, sink):
        await wait_for(lambda: any("sync not done after" in r.getMessage()
                                   for r in caplog.records) or task.done(), what="warning")
        assert sink.state is SourceState.SYNCING and not task.done()
        await wait_for(lambda: sink.state is SourceState.UP, what="UP")
        assert len([r for r in caplog.records if "sync not done" in r.getMessage()]) == 1
        assert [r.levelno for r in caplog.records if "sync not done" in r.getMessage()] == [
            logging.WARNING]
        assert any("synced after" in r.getMessage() for r in caplog.records)
