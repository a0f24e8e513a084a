"""Threads for registry clients that block, and the hop back to the event loop.

Sources must never block the event loop, and their libraries often do: a
synchronous HTTP client (python-consul2), a client that calls back on its own
threads (kazoo), a blocking event stream (a Docker engine's ``/events``). Two
pieces cover them all:

- :class:`ClientThreads`, a pool of daemon threads, each owning one client,
  that runs blocking jobs and hands their results to the loop as futures.
  A job should do all the work that needs no loop state (the request *and*
  mapping its reply to model values), so the loop only receives finished
  values;
- :class:`LoopHop`, which carries a call from any thread onto the loop
  (``call_soon_threadsafe``), and silently drops it once the source has
  closed or the loop is gone, so a late callback from a library thread
  never touches state that is being torn down.

A source that follows an event stream from a thread runs the blocking
iterator in a :class:`ClientThreads` job (or its own thread) and hops each
event to the loop with a :class:`LoopHop`; one on an asyncio client needs
neither. Imports: the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

C = TypeVar("C")
T = TypeVar("T")


class LoopHop:
    """Runs calls made on other threads on one event loop, until closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __call__(self, func: Callable[..., object], *args: Any) -> None:
        """Schedule ``func(*args)`` on the loop; safe from any thread, never blocks."""
        if self._closed:
            return
        # RuntimeError: the loop closed under us during shutdown; nobody waits.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(func, *args)

    def close(self) -> None:
        """Drop every later call (those already scheduled check ``closed`` themselves)."""
        self._closed = True


def settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    """Resolve ``future`` on its loop, unless it was cancelled meanwhile."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ClientThreads(Generic[C]):
    """Daemon threads, each owning one client, fed by one queue.

    Daemon, because a thread blocked in a long-poll cannot be interrupted and
    must not hold up process exit. ``size`` threads start at once; more are
    started when a job finds no idle thread, up to ``limit``, which bounds
    concurrency. Each client is built by its own thread (``factory``), which
    alone uses it: clients such as a ``requests`` session are not meant to be
    shared across threads.
    """

    def __init__(self, factory: Callable[[], C], name: str, size: int,
                 limit: int | None = None) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._factory = factory
        self._name = name
        self._limit = max(size, limit if limit is not None else size)
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0     # threads waiting for a job...
        self._queued = 0   # ...and jobs waiting for a thread
        self._closed = False
        with self._lock:
            for _ in range(size):
                self._spawn()

    @property
    def threads(self) -> int:
        return self._threads

    def _spawn(self) -> None:  # with self._lock held
        self._threads += 1
        self._idle += 1
        threading.Thread(target=self._work, daemon=True,
                         name=f"{self._name}-{self._threads}").start()

    def _work(self) -> None:
        client: C | None = None
        while True:
            job = self._jobs.get()
            with self._lock:
                self._idle -= 1
                self._queued -= job is not None
            if job is None or self._closed:  # closed: drop queued work, nobody awaits it
                return
            fn, loop, future = job
            if future.done():  # cancelled while queued: skip it
                with self._lock:
                    self._idle += 1
                continue
            try:
                if client is None:
                    client = self._factory()
                result, error = fn(client), None
            except BaseException as exc:
                result, error = None, exc
            with self._lock:
                self._idle += 1
            # A closed loop (RuntimeError) means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, future, result, error)

    def submit(self, fn: Callable[[C], T]) -> asyncio.Future[T]:
        """Queue ``fn(client)`` for a thread; its outcome arrives on the loop.

        Call on the loop thread. Cancelling the future before a thread takes
        the job skips it.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queued += 1
            if self._queued > self._idle and self._threads < self._limit:
                self._spawn()
        self._jobs.put((fn, loop, future))
        return future

    async def call(self, fn: Callable[[C], T]) -> T:
        """Run ``fn(client)`` on one of the threads and return its result."""
        return await self.submit(fn)

    def close(self) -> None:
        """Let the threads exit once their current job returns."""
        self._closed = True
        for _ in range(self._threads):
            self._jobs.put(None)
