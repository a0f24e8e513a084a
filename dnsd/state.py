"""The saved table (``--state-dir``): every source's last view, written after
changes and read at start, so dnsd answers at once even when its registries are
down at boot.

One JSON file, ``table.json``, with a format marker and a version. Writes are
atomic (a temporary file in the same directory, fsync, rename, fsync of the
directory), so a crash leaves the old file or the new one, never half of one.
Loading checks everything and raises :class:`StateFileError` for a corrupt,
foreign or future file: the app reports it and starts without it.
Imports: ``errors``, ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from dnsd.errors import StateFileError
from dnsd.model import Health, Instance, Node, ServiceAddress, View

log = logging.getLogger("dnsd.state")

FILE_NAME = "table.json"
TEMP_PREFIX = ".table."
FORMAT = "dnsd-table"
VERSION = 1
MAX_BYTES = 512 * 1024 * 1024  # about 1.5 million instances; a bigger file is not ours


def state_path(state_dir: str) -> str:
    return os.path.join(state_dir, FILE_NAME)


# --- encoding -------------------------------------------------------------------


def _instance_json(inst: Instance) -> dict[str, Any]:
    return {"service": inst.service, "node": inst.node, "datacenter": inst.datacenter,
            "id": inst.id, "address": inst.address, "node_address": inst.node_address,
            "port": inst.port, "tags": list(inst.tags), "health": inst.health.value,
            "weight_passing": inst.weight_passing, "weight_warning": inst.weight_warning,
            "meta": dict(inst.meta),
            "tagged_addresses": {tag: {"address": a.address, "port": a.port}
                                 for tag, a in inst.tagged_addresses.items()}}


def encode_views(views: Mapping[str, View], saved_at: float | None = None) -> bytes:
    data = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": time.time() if saved_at is None else saved_at,
        "views": {
            name: {"local_datacenter": view.local_datacenter,
                   "instances": [_instance_json(i) for i in view.instances],
                   "nodes": [{"name": n.name, "datacenter": n.datacenter, "address": n.address,
                              "meta": dict(n.meta),
                              "tagged_addresses": dict(n.tagged_addresses)}
                             for n in view.nodes],
                   "prepared": dict(view.prepared)}
            for name, view in sorted(views.items())
        },
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def save_views(state_dir: str, views: Mapping[str, View]) -> None:
    """Write ``views`` to ``state_dir/table.json`` atomically. Raises ``OSError``."""
    os.makedirs(state_dir, exist_ok=True)
    payload = encode_views(views)
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=TEMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, state_path(state_dir))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry is on disk too.
    dir_fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --- decoding -------------------------------------------------------------------


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ValueError(f"{where}: {key} is missing or of the wrong type")
    return value


def _string_map(raw: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    """An optional map of strings (absent in files saved before it existed)."""
    value = raw.get(key, {})
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"{where}: {key} must map strings to strings")
    return value


def _service_addresses(raw: Mapping[str, Any], where: str) -> dict[str, ServiceAddress]:
    """An instance's tagged addresses (absent in files saved before them)."""
    value = raw.get("tagged_addresses", {})
    if not isinstance(value, dict):
        raise ValueError(f"{where}: tagged_addresses must be an object")
    out = {}
    for tag, item in value.items():
        if not isinstance(item, dict):
            raise ValueError(f"{where}: tagged_addresses[{tag!r}] must be an object")
        out[tag] = ServiceAddress(_field(item, "address", str, where),
                                  _field(item, "port", int, where))
    return out


def _decode_instance(raw: object, where: str) -> Instance:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: not an object")
    tags = _field(raw, "tags", list, where)
    meta = _field(raw, "meta", dict, where)
    if not all(isinstance(t, str) for t in tags):
        raise ValueError(f"{where}: tags must be strings")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ValueError(f"{where}: meta must map strings to strings")
    try:
        health = Health(_field(raw, "health", str, where))
    except ValueError:
        raise ValueError(f"{where}: unknown health {raw.get('health')!r}") from None
    try:
        return Instance(
            service=_field(raw, "service", str, where), node=_field(raw, "node", str, where),
            datacenter=_field(raw, "datacenter", str, where), id=_field(raw, "id", str, where),
            address=_field(raw, "address", str, where),
            node_address=_field(raw, "node_address", str, where),
            port=_field(raw, "port", int, where), tags=tuple(tags), health=health,
            weight_passing=_field(raw, "weight_passing", int, where),
            weight_warning=_field(raw, "weight_warning", int, where), meta=dict(meta),
            tagged_addresses=_service_addresses(raw, where))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _decode_node(raw: object, where: str) -> Node:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: not an object")
    meta = _string_map(raw, "meta", where)  # absent in files saved before nodes had meta
    tagged = _string_map(raw, "tagged_addresses", where)
    try:
        return Node(_field(raw, "name", str, where), _field(raw, "datacenter", str, where),
                    _field(raw, "address", str, where), meta, tagged)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def decode_views(payload: bytes) -> dict[str, View]:
    """Parse a saved table; ``ValueError`` names the first problem."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("not a dnsd table (nested too deeply)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a dnsd table (no format marker {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ValueError(f"format version {data.get('version')!r}, this dnsd reads {VERSION}")
    raw_views = data.get("views")
    if not isinstance(raw_views, dict):
        raise ValueError("views is missing")
    views: dict[str, View] = {}
    for name, raw in raw_views.items():
        if not isinstance(raw, dict):
            raise ValueError(f"views[{name!r}]: not an object")
        local = raw.get("local_datacenter")
        if local is not None and not isinstance(local, str):
            raise ValueError(f"views[{name!r}]: local_datacenter must be a string")
        instances = _field(raw, "instances", list, f"views[{name!r}]")
        nodes = _field(raw, "nodes", list, f"views[{name!r}]")
        views[name] = View(
            tuple(_decode_instance(r, f"views[{name!r}].instances[{i}]")
                  for i, r in enumerate(instances)),
            tuple(_decode_node(r, f"views[{name!r}].nodes[{i}]") for i, r in enumerate(nodes)),
            local, _string_map(raw, "prepared", f"views[{name!r}]"))
    return views


def load_views(state_dir: str) -> dict[str, View]:
    """The saved views, or ``{}`` when nothing was saved yet.

    Raises :class:`StateFileError` for a file that cannot be read or is not a
    dnsd table of this format version.
    """
    path = state_path(state_dir)
    try:
        # O_NONBLOCK: a FIFO put there must not hang the start; only a regular
        # file of sane size is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateFileError(f"{path}: not a regular file; ignoring it")
        if info.st_size > MAX_BYTES:
            raise StateFileError(f"{path}: larger than {MAX_BYTES // 2**20} MiB; ignoring it")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            payload = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return decode_views(payload)
    except ValueError as exc:
        raise StateFileError(f"{path}: {exc}; ignoring it") from None


def remove_orphans(state_dir: str) -> None:
    """Remove temporary files a write cut short (a kill -9 mid-save) left behind.

    Only the process that saves calls this, before its first save."""
    for orphan in glob.glob(os.path.join(glob.escape(state_dir), f"{TEMP_PREFIX}*.tmp")):
        with contextlib.suppress(OSError):
            os.unlink(orphan)
            log.info("removed %s, left by an interrupted save", orphan)


# --- the debounced saver ---------------------------------------------------------


class StateSaver:
    """Saves the views ``delay`` seconds after the first change of a burst.

    ``notify`` fits ``Table.subscribe`` (it takes and ignores the snapshot) and
    must be called on the event loop thread. Writes run in a worker thread so an
    fsync never stalls answers; a failed write is logged once per distinct error
    and retried at the next change. ``close`` flushes what is pending.
    """

    def __init__(self, state_dir: str, get_views: Callable[[], Mapping[str, View]],
                 delay: float = 0.5) -> None:
        remove_orphans(state_dir)
        self.state_dir = state_dir
        self.get_views = get_views
        self.delay = delay
        self.saves = 0
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._last_error = ""

    def notify(self, _snapshot: object = None) -> None:
        self._dirty = True
        if self._timer is None and self._writing is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.delay, self._start_write)

    def _start_write(self) -> None:
        self._timer = None
        self._writing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while self._dirty:
                self._dirty = False
                views = dict(self.get_views())  # the views are immutable: safe to hand over
                try:
                    await asyncio.to_thread(save_views, self.state_dir, views)
                    self.saves += 1
                    self._last_error = ""
                except OSError as exc:
                    message = f"cannot save the table to {self.state_dir}: {exc}"
                    if message != self._last_error:
                        log.warning("%s", message)
                        self._last_error = message
                    return
        finally:
            self._writing = None

    async def close(self) -> None:
        """Write any pending change now and wait for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            await self._writing
        if self._dirty:
            self._writing = asyncio.get_running_loop().create_task(self._write())
            await self._writing
