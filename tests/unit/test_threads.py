"""Client threads and the hop from other threads to the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dnsd.sources.threads import ClientThreads, LoopHop


async def test_each_thread_builds_and_alone_uses_its_client() -> None:
    built: list[str] = []
    lock = threading.Lock()

    def factory() -> str:
        with lock:
            built.append(threading.current_thread().name)
        return threading.current_thread().name

    pool = ClientThreads(factory, "test", size=2, limit=4)
    try:
        gate = threading.Event()

        def job(client: str) -> str:
            gate.wait(5)
            assert client == threading.current_thread().name  # its own client
            return client

        futures = [pool.submit(job) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert pool.threads == 4  # grown on demand up to the limit, no further
        gate.set()
        names = await asyncio.gather(*futures)
        assert len(set(names)) == 4 and sorted(built) == sorted(names)
        assert threading.main_thread().name not in names
    finally:
        pool.close()


async def test_errors_reach_the_caller_and_the_thread_survives() -> None:
    pool: ClientThreads[object] = ClientThreads(object, "test", size=1)
    try:
        def boom(_: object) -> None:
            raise RecursionError("deep")

        with pytest.raises(RecursionError):
            await pool.call(boom)
        assert await pool.call(lambda _: 42) == 42
    finally:
        pool.close()


async def test_a_client_that_cannot_be_built_fails_the_job_not_the_pool() -> None:
    attempts = []

    def factory() -> object:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no route")
        return object()

    pool = ClientThreads(factory, "test", size=1)
    try:
        with pytest.raises(OSError):
            await pool.call(lambda _: 1)
        assert await pool.call(lambda _: 2) == 2  # built on the next job
    finally:
        pool.close()


async def test_a_job_cancelled_while_queued_never_runs() -> None:
    pool: ClientThreads[object] = ClientThreads(object, "test", size=1)
    try:
        gate = threading.Event()
        ran: list[int] = []
        first = pool.submit(lambda _: gate.wait(5))
        second = pool.submit(lambda _: ran.append(2))
        second.cancel()
        gate.set()
        await first
        assert await pool.call(lambda _: 3) == 3
        assert ran == []
    finally:
        pool.close()


async def test_hop_runs_on_the_loop_and_stops_once_closed() -> None:
    loop = asyncio.get_running_loop()
    hop = LoopHop(loop)
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    def on_loop(value: int) -> None:
        seen.append((threading.current_thread().name, value))
        done.set()

    thread = threading.Thread(target=hop, args=(on_loop, 1))
    thread.start()
    thread.join()
    await asyncio.wait_for(done.wait(), 5)
    assert seen == [(threading.main_thread().name, 1)]
    hop.close()
    thread = threading.Thread(target=hop, args=(on_loop, 2))
    thread.start()
    thread.join()
    await asyncio.sleep(0.01)
    assert hop.closed and seen == [(threading.main_thread().name, 1)]


def test_hop_to_a_closed_loop_is_dropped() -> None:
    loop = asyncio.new_event_loop()
    hop = LoopHop(loop)
    loop.close()
    hop(print, "never")  # no RuntimeError from a library thread at shutdown
