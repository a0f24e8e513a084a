"""dnsd inside another Python program.

A program that wants dnsd's answers for names it knows itself (a scheduler, a
test harness, a control plane) runs it in-process and publishes services into
its table::

    from dnsd.embed import Dnsd
    from dnsd.model import Instance

    dns = Dnsd(["--listen", "127.0.0.1:0", "--no-forward"])
    dns.start()                  # its own thread and event loop; returns once serving
    dns.publish("jobs", [Instance("web", "node1", "dc1", address="10.0.0.5", port=8080)])
    host, port = dns.addresses[0]    # dig @host -p port web.service.consul
    dns.stop()

or, on the caller's own asyncio loop, ``async with Dnsd([...]) as dns: ...``.

The arguments are dnsd's command-line options (``--static``, ``--consul``...,
all of them work), read without the process's ``DNSD_*`` environment unless
``environ`` is given. Nothing here touches signal handlers or the logging
setup: those stay the program's. ``publish`` replaces the whole view of one
named feed (like every source, it never sends deltas) and may be called from
any thread. Imports: ``app``, ``build``, ``config``, ``model``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType

from dnsd.app import App
from dnsd.build import build
from dnsd.config import Config, load_config
from dnsd.model import Instance, Node, View

FEED_PREFIX = "api:"  # published views are named api:<feed> in /v1/table and metrics


class Dnsd:
    """One embedded dnsd: start it, publish into it, stop it."""

    def __init__(self, args: Sequence[str] = (), *,
                 environ: Mapping[str, str] | None = None,
                 config: Config | None = None) -> None:
        self.config = config or load_config(list(args), environ={} if environ is None
                                             else environ)
        self.app: App | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    # --- on the caller's loop ---------------------------------------------------

    async def __aenter__(self) -> Dnsd:
        await self.start_async()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_async()

    async def start_async(self) -> None:
        """Start serving on the running loop; raises a DnsdError (a bad file, an
        address that cannot be bound) with nothing left open."""
        self._loop = asyncio.get_running_loop()
        app = App(self.config, parts=build(self.config))
        await app.start()
        self.app = app

    async def stop_async(self) -> None:
        if self.app is not None:
            app, self.app = self.app, None
            await app.shutdown()

    # --- on a thread of its own ---------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Serve from a daemon thread with its own event loop; returns once dnsd
        listens (or raises what stopped it from starting)."""
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._stopping = asyncio.Event()
            try:
                await self.start_async()
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            await self._stopping.wait()
            await self.stop_async()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True,
                                        name="dnsd")
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError(f"dnsd did not start within {timeout} s")
        if failure:
            self._thread.join(timeout)
            raise failure[0]

    def stop(self, timeout: float = 30.0) -> None:
        """Stop a dnsd started with :meth:`start` (replies in flight still go out)."""
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout)
        self._thread = None

    # --- what it serves -------------------------------------------------------------

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where it listens, ports chosen (``--listen 127.0.0.1:0``) included."""
        return [] if self.app is None else [(x.host, x.port) for x in self.app.listeners]

    def publish(self, feed: str, instances: Iterable[Instance],
                nodes: Iterable[Node] = ()) -> None:
        """Serve ``instances`` (and ``nodes``) as feed ``feed``'s whole view,
        replacing what it published before. Safe from any thread."""
        view = View(tuple(instances), tuple(nodes))
        self._on_loop(lambda app: app.board.publish(FEED_PREFIX + feed, view))

    def withdraw(self, feed: str) -> None:
        """Stop serving what ``feed`` published."""
        self._on_loop(lambda app: app.board.remove(FEED_PREFIX + feed))

    def _on_loop(self, action: Callable[[App], None]) -> None:
        """Run ``action(app)`` on dnsd's loop: at once when called on it, else
        handed over and waited for (the table is only touched on its loop)."""
        loop = self._loop
        if loop is None or self.app is None:
            raise RuntimeError("dnsd is not running: start() it first")
        done = threading.Event()

        def run() -> None:
            try:
                if self.app is not None:
                    action(self.app)
            finally:
                done.set()

        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            run()
        else:
            loop.call_soon_threadsafe(run)
            done.wait(30)
