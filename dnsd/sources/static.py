"""The static source: services files (their format is ``servicesfile``'s),
served and re-read when they change.

A file that turns bad while dnsd runs leaves its previous view serving; the
error is logged once per bad version of the file.

While dnsd serves, a file is re-read on a worker thread (a file of 100,000
entries takes seconds to parse, and the event loop must keep answering), and
one whose content is unchanged (by its SHA-256) is not parsed again: a SIGHUP,
or a touch, costs one read and one hash. Reloads of one file never overlap: a
request made during one makes one more afterwards, however many were made.
Imports: ``errors``, ``model``, ``sources`` (``servicesfile`` among them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass

from dnsd.errors import ServicesFileError
from dnsd.model import View
from dnsd.sources.base import Sink, SourceState
from dnsd.sources.publisher import Publisher
from dnsd.sources.servicesfile import decode, parse_services, read_file

log = logging.getLogger("dnsd.static")

POLL_INTERVAL = 0.25  # seconds; a change is picked up well within 1 s


@dataclass(frozen=True, slots=True)
class _Examined:
    """What a re-read found (built on a worker thread)."""

    digest: bytes | None                # the content's SHA-256; None: unreadable
    view: View | None = None            # new content, good: its view
    changed: bool = False               # ...and whether it differs from the one served
    error: ServicesFileError | None = None  # unreadable, or new content that is bad


@dataclass(frozen=True, slots=True)
class StaticSettings:
    """What every services file is read with (built from the configuration by
    ``sources.registry``)."""

    node_name: str                       # the node of entries that name none
    datacenter: str                      # the datacenter of entries that name none
    poll_interval: float = POLL_INTERVAL


class StaticSource:
    """Publishes one services file and re-reads it when it changes."""

    def __init__(self, path: str, settings: StaticSettings) -> None:
        self.path = path
        self.settings = settings
        self.node_name = settings.node_name
        self.datacenter = settings.datacenter
        self.poll_interval = settings.poll_interval
        self._stamp: tuple[int, int, int] | None = None
        self._digest: bytes | None = None        # the content last parsed...
        self._digest_error: str | None = None    # ...and why it was bad (None: it was good)
        self._failure: str | None = None  # why the file cannot be served, while it cannot
        self._failed_version: bytes | None = None  # ...and which content (None: unreadable)
        self.view: View | None = None
        self._reload_wanted = asyncio.Event()
        self._publisher: Publisher | None = None

    @property
    def name(self) -> str:
        return f"static:{self.path}"

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> View:
        """Read the file now, on the caller's thread (dnsd checks every file
        before it serves); raises :class:`ServicesFileError` when it is bad."""
        stamp = self._file_stamp()
        data = read_file(self.path)
        view = parse_services(self.path, decode(self.path, data), self.node_name,
                              self.datacenter)
        self._stamp = stamp
        self._digest, self._digest_error = hashlib.sha256(data).digest(), None
        self.view = view
        return view

    def request_reload(self) -> None:
        """Re-read the file soon (SIGHUP). The source's own task does it, so a
        burst of requests makes one reload, not one each."""
        self._reload_wanted.set()

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "not running"
        return self._publisher

    def _examine(self, known: bytes | None, serving: View | None) -> _Examined:
        """Read the file and, unless its content is ``known``, parse it and
        compare it with the view ``serving``. Runs on a worker thread."""
        started = time.perf_counter()
        try:
            data = read_file(self.path)
        except ServicesFileError as exc:
            return _Examined(None, error=exc)
        digest = hashlib.sha256(data).digest()
        if digest == known:
            return _Examined(digest)  # unchanged: not worth parsing again
        try:
            view = parse_services(self.path, decode(self.path, data), self.node_name,
                                  self.datacenter)
        except ServicesFileError as exc:
            return _Examined(digest, error=exc)
        log.debug("%s: parsed %d services in %.2f s", self.path, len(view.instances),
                  time.perf_counter() - started)
        return _Examined(digest, view, changed=view != serving)

    async def _reload(self) -> None:
        """Re-read the file; publish it if good, else keep the last view and log why."""
        self._stamp = self._file_stamp()
        got = await asyncio.to_thread(self._examine, self._digest, self.view)
        if got.digest is None:
            self._failed(None, str(got.error))
            return
        if got.digest == self._digest:  # the content last parsed: its verdict stands
            if self._digest_error is not None:
                self._failed(got.digest, self._digest_error)
            elif self.view is not None:
                self._recovered(len(self.view.instances))
            return
        self._digest = got.digest
        if got.error is not None or got.view is None:
            self._digest_error = str(got.error)
            self._failed(got.digest, self._digest_error)
            return
        self._digest_error = None
        if got.changed:
            self.view = got.view
            log.info("%s: reloaded, %d services", self.path, len(got.view.instances))
            self.publisher.flush(changed=True)
        self._recovered(len(got.view.instances))

    def _failed(self, version: bytes | None, reason: str) -> None:
        """The file cannot be served: say so once per bad version (a deleted or
        dangling file is one version: it is logged once, however long it lasts)."""
        if (version, reason) == (self._failed_version, self._failure):
            return
        self._failed_version, self._failure = version, reason
        log.error("%s; still serving its previous version", reason)
        self.publisher.report(SourceState.STALE, reason)

    def _recovered(self, services: int) -> None:
        if self._failure is None:
            return
        unreadable = self._failed_version is None
        self._failure = self._failed_version = None
        log.info("%s: %s; serving it, %d services", self.path,
                 "readable again" if unreadable else "fixed", services)
        self.publisher.report(SourceState.UP)

    async def run(self, sink: Sink) -> None:
        self._publisher = Publisher(sink, self.name, lambda: self.view, log=log)
        try:
            if self.view is None:
                await self._reload()
            else:
                self.publisher.flush()
            if self._failure is None:
                self.publisher.report(SourceState.UP)
            else:
                self.publisher.report(SourceState.STALE, self._failure)
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._reload_wanted.wait()
                if self._reload_wanted.is_set():
                    self._reload_wanted.clear()
                    await self._reload()
                elif self._file_stamp() != self._stamp:
                    await self._reload()
        finally:
            self._publisher.close()
