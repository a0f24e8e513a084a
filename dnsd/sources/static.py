"""The static source: services files (TOML or JSON) in the shape of Consul's
service definitions, re-read when they change.

Parsing is strict and names the file, the entry and the field of any problem. A
file that turns bad while dnsd runs leaves its previous view serving; the error
is logged once per bad version of the file.

While dnsd serves, a file is re-read on a worker thread (a file of 100,000
entries takes seconds to parse, and the event loop must keep answering), and
one whose content is unchanged (by its SHA-256) is not parsed again: a SIGHUP,
or a touch, costs one read and one hash. Reloads of one file never overlap: a
request made during one makes one more afterwards, however many were made.
Imports: ``errors``, ``model``, ``sources``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dnsd.errors import ServicesFileError
from dnsd.model import AddressKind, Health, Instance, Node, View, classify_address, is_hostname
from dnsd.sources.base import Sink, SourceState
from dnsd.sources.publisher import Publisher

log = logging.getLogger("dnsd.static")

POLL_INTERVAL = 0.25  # seconds; a change is picked up well within 1 s

_FIELDS = frozenset({"name", "id", "address", "port", "tags", "node", "node_address",
                     "datacenter", "meta", "weights", "status"})


def _entry_label(index: int, raw: Mapping[str, Any]) -> str:
    name = raw.get("name")
    return f"services[{index}] ({name})" if isinstance(name, str) else f"services[{index}]"


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ServicesFileError(path, f"cannot read: {exc.strerror or exc}") from None


def _decode(path: str, data: bytes) -> dict[str, Any]:
    try:
        is_json = path.endswith(".json")
        loaded = json.loads(data) if is_json else tomllib.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError is a ValueError
        kind = "JSON" if path.endswith(".json") else "TOML"
        raise ServicesFileError(path, f"not valid {kind}: {exc}") from None
    except RecursionError:  # both parsers recurse once per level of nesting
        raise ServicesFileError(path, "nested too deeply") from None
    if not isinstance(loaded, dict):
        raise ServicesFileError(path, "must be a table with a 'services' list")
    return loaded


def parse_services(path: str, data: Mapping[str, Any], node_name: str,
                   datacenter: str) -> View:
    """Validate a loaded services file and turn it into a view."""
    unknown = set(data) - {"services"}
    if unknown:
        raise ServicesFileError(path, "unknown top-level key; expected only 'services'",
                                field=sorted(unknown)[0])
    entries = data.get("services", [])
    if not isinstance(entries, list):
        raise ServicesFileError(path, "must be a list of tables", field="services")

    # First pass: node addresses, which services without an address fall back to.
    node_addresses: dict[tuple[str, str], str] = {}
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise ServicesFileError(path, "must be a table", entry=f"services[{index}]")
        label = _entry_label(index, raw)
        node_address = raw.get("node_address")
        if node_address is None:
            continue
        if not isinstance(node_address, str):
            raise ServicesFileError(path, "must be a string", label, "node_address")
        node = raw.get("node", node_name)
        dc = raw.get("datacenter", datacenter)
        key = (str(dc).lower(), str(node).lower())
        try:
            _, normal = classify_address(node_address)
        except ValueError as exc:
            raise ServicesFileError(path, str(exc), label, "node_address") from None
        if node_addresses.get(key, normal) != normal:
            raise ServicesFileError(path, f"node {node!r} already has address "
                                    f"{node_addresses[key]}", label, "node_address")
        node_addresses[key] = normal

    instances: list[Instance] = []
    ids: set[tuple[str, str, str]] = set()
    for index, raw in enumerate(entries):
        inst = _instance(path, index, raw, node_name, datacenter, node_addresses)
        ident = (inst.datacenter.lower(), inst.service.lower(), inst.id)
        if ident in ids:
            raise ServicesFileError(path, f"duplicate id {inst.id!r}",
                                    _entry_label(index, raw), "id")
        ids.add(ident)
        instances.append(inst)
    nodes = tuple(Node(name, dc, address) for (dc, name), address in node_addresses.items())
    return View(tuple(instances), nodes)


def _instance(path: str, index: int, raw: dict[str, Any], node_name: str, datacenter: str,
              node_addresses: Mapping[tuple[str, str], str]) -> Instance:
    label = _entry_label(index, raw)

    def fail(field: str, message: str) -> ServicesFileError:
        return ServicesFileError(path, message, label, field)

    for key in raw:
        if key not in _FIELDS:
            raise fail(key, f"unknown field (expected one of {', '.join(sorted(_FIELDS))})")
    name = raw.get("name")
    if name is None:
        raise fail("name", "is required")
    if not isinstance(name, str):
        raise fail("name", "must be a string")

    def text(field: str, default: str) -> str:
        value = raw.get(field, default)
        if not isinstance(value, str):
            raise fail(field, "must be a string")
        return value

    node = text("node", node_name)
    if not is_hostname(node):
        raise fail("node", f"{node!r} is not a valid node name")
    dc = text("datacenter", datacenter)
    address = text("address", "")
    try:
        kind, _ = classify_address(address)
    except ValueError as exc:
        raise fail("address", str(exc)) from None
    node_address = node_addresses.get((dc.lower(), node.lower()), "")
    if kind is AddressKind.NONE and not node_address:
        raise fail("address", "is required when the node has no node_address")

    port = raw.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise fail("port", "must be an integer from 0 to 65535")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise fail("tags", "must be a list of strings")
    meta = raw.get("meta", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str | int | float | bool)
                                             for v in meta.values()):
        raise fail("meta", "must be a table of strings")
    weights = raw.get("weights", {})
    if not isinstance(weights, dict):
        raise fail("weights", "must be a table with passing and warning")
    for key, value in weights.items():
        if key not in ("passing", "warning"):
            raise fail(f"weights.{key}", "unknown weight (expected passing or warning)")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise fail(f"weights.{key}", "must be an integer from 0 to 65535")
    status = text("status", "passing")
    try:
        health = Health(status)
    except ValueError:
        raise fail("status", f"{status!r} is not passing, warning or critical") from None
    try:
        return Instance(
            service=name, node=node, datacenter=dc, id=text("id", ""), address=address,
            node_address=node_address, port=port, tags=tuple(tags), health=health,
            weight_passing=weights.get("passing", 1), weight_warning=weights.get("warning", 1),
            meta={str(k): str(v) for k, v in meta.items()})
    except ValueError as exc:
        field = "name" if "service name" in str(exc) else "datacenter"
        raise fail(field, str(exc)) from None


def load_services_file(path: str, node_name: str, datacenter: str) -> View:
    """Read and validate one services file (raises :class:`ServicesFileError`)."""
    return parse_services(path, _decode(path, _read_bytes(path)), node_name, datacenter)


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
        data = _read_bytes(self.path)
        view = parse_services(self.path, _decode(self.path, data), self.node_name,
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
            data = _read_bytes(self.path)
        except ServicesFileError as exc:
            return _Examined(None, error=exc)
        digest = hashlib.sha256(data).digest()
        if digest == known:
            return _Examined(digest)  # unchanged: not worth parsing again
        try:
            view = parse_services(self.path, _decode(self.path, data), self.node_name,
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
