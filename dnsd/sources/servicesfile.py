"""The services file: its format, read into a view, every problem named.

Two shapes are read, TOML or JSON (by the ``.json`` ending):

- dnsd's own: a ``services`` list of entries whose keys follow Consul's
  service definitions in lower case (``name``, ``id``, ``address``, ``port``,
  ``tags``, ``node``, ``node_address``, ``datacenter``, ``meta``,
  ``node_meta``, ``weights``, ``status``);
- a Consul agent service definition file as it is: ``{"service": {...}}`` or
  ``{"services": [...]}`` with Consul's keys (``Name``, ``ID``, ``Tags``,
  ``Address``, ``Port``, ``Meta``, ``Weights``, ``Check``/``Checks``, and the
  ones dnsd has no use for, such as ``EnableTagOverride`` or ``Connect``,
  which are accepted and ignored). Keys are matched whatever their case or
  style (``EnableTagOverride``, ``enable_tag_override``). dnsd runs no checks:
  a check counts by its ``Status`` (Consul's initial status), the worst one
  winning, and one without a status is not counted.

Every problem names the file, the entry (numbered from 1, with its name) and
the field, with a "did you mean" for a misspelt field. :func:`parse_services`
raises the first problem (serving stops at a bad file); :func:`check_services`
returns them all (``dnsd check``). Pure: no I/O but :func:`read_file`.
Imports: ``errors``, ``model``.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dnsd.errors import ServicesFileError
from dnsd.model import AddressKind, Health, Instance, Node, View, classify_address, is_hostname

FIELDS = frozenset({"name", "id", "address", "port", "tags", "node", "node_address",
                    "datacenter", "meta", "node_meta", "weights", "status", "check", "checks"})
# Consul service definition fields dnsd has no use for: accepted, not served.
CONSUL_IGNORED = frozenset({"enable_tag_override", "token", "kind", "proxy", "connect",
                            "namespace", "partition", "locality", "socket_path",
                            "tagged_addresses"})
MAX_ENTRY_ERRORS = 100  # dnsd check stops listing after this many problems in one file


def snake(key: str) -> str:
    """``EnableTagOverride`` / ``enableTagOverride`` / ``ID`` -> ``enable_tag_override``, ``id``."""
    key = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", key)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ServicesFileError(path, f"cannot read: {exc.strerror or exc}") from None


def decode(path: str, data: bytes) -> dict[str, Any]:
    """The file's content, TOML or JSON by its ending."""
    kind = "JSON" if path.endswith(".json") else "TOML"
    try:
        loaded = json.loads(data) if kind == "JSON" else tomllib.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError is a ValueError
        raise ServicesFileError(path, f"not valid {kind}: {exc}") from None
    except RecursionError:  # both parsers recurse once per level of nesting
        raise ServicesFileError(path, "nested too deeply") from None
    if not isinstance(loaded, dict):
        raise ServicesFileError(path, "must be a table with a 'services' list")
    return loaded


def _suggest(word: str, choices: frozenset[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass
class _Reader:
    """Reads one file's entries, keeping every problem it meets."""

    path: str
    node_name: str
    datacenter: str
    problems: list[ServicesFileError] = field(default_factory=list)

    def fail(self, message: str, entry: str | None = None, field_name: str | None = None
             ) -> None:
        self.problems.append(ServicesFileError(self.path, message, entry, field_name))

    def entries(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        top = {snake(k): k for k in data}
        unknown = set(top) - {"services", "service"}
        if unknown:
            key = sorted(unknown)[0]
            self.fail("unknown top-level key; expected 'services' (or a Consul "
                      "definition's 'service')", field_name=top[key])
        raw: Any = data.get(top["services"], []) if "services" in top else []
        if "service" in top:
            raw = [data[top["service"]], *(raw if isinstance(raw, list) else [])]
        if not isinstance(raw, list):
            self.fail("must be a list of tables", field_name="services")
            return []
        entries: list[dict[str, Any]] = []
        for index, entry in enumerate(raw, start=1):
            if not isinstance(entry, dict):
                self.fail("must be a table", entry=f"entry {index}")
                entries.append({})
                continue
            entries.append({snake(k): v for k, v in entry.items()})
        return entries


def _label(index: int, raw: Mapping[str, Any]) -> str:
    name = raw.get("name")
    return f"entry {index} ({name})" if isinstance(name, str) else f"entry {index}"


def _node_key(raw: Mapping[str, Any], node_name: str, datacenter: str) -> tuple[str, str]:
    return (str(raw.get("datacenter", datacenter)).lower(),
            str(raw.get("node", node_name)).lower())


def _nodes(reader: _Reader, entries: list[dict[str, Any]]
           ) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], dict[str, str]]]:
    """Node addresses and node meta, which entries of one node must agree on."""
    addresses: dict[tuple[str, str], str] = {}
    metas: dict[tuple[str, str], dict[str, str]] = {}
    for index, raw in enumerate(entries, start=1):
        label = _label(index, raw)
        key = _node_key(raw, reader.node_name, reader.datacenter)
        node_address = raw.get("node_address")
        if node_address is not None:
            if not isinstance(node_address, str):
                reader.fail("must be a string", label, "node_address")
            else:
                try:
                    _, normal = classify_address(node_address)
                except ValueError as exc:
                    reader.fail(str(exc), label, "node_address")
                else:
                    if addresses.get(key, normal) != normal:
                        reader.fail(f"node {key[1]!r} already has address {addresses[key]}",
                                    label, "node_address")
                    else:
                        addresses[key] = normal
        node_meta = raw.get("node_meta")
        if node_meta is not None:
            meta = _string_table(node_meta)
            if meta is None:
                reader.fail("must be a table of strings", label, "node_meta")
            elif metas.get(key, meta) != meta:
                reader.fail(f"node {key[1]!r} already has other node_meta", label, "node_meta")
            else:
                metas[key] = meta
    return addresses, metas


def _string_table(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict) or not all(
            isinstance(v, str | int | float | bool) for v in value.values()):
        return None
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


def _checks_health(raw: Mapping[str, Any], fail: Callable[[str, str], None]) -> Health | None:
    """The worst ``status`` of a Consul ``check``/``checks``; None if none says."""
    checks: list[Any] = []
    if "check" in raw:
        checks.append(raw["check"])
    if "checks" in raw:
        if isinstance(raw["checks"], list):
            checks.extend(raw["checks"])
        else:
            fail("checks", "must be a list of checks")
    statuses = []
    for check in checks:
        if not isinstance(check, dict):
            fail("checks", "a check must be a table")
            continue
        status = {snake(k): v for k, v in check.items()}.get("status")
        if status is None:
            continue  # dnsd runs no checks: only a stated status counts
        if status not in ("passing", "warning", "critical"):
            fail("checks", f"status {status!r} is not passing, warning or critical")
            continue
        statuses.append(status)
    return Health.worst(statuses) if statuses else None


def _instance(reader: _Reader, index: int, raw: dict[str, Any],
              node_addresses: Mapping[tuple[str, str], str]) -> Instance | None:
    label = _label(index, raw)
    bad: list[str] = []

    def fail(field_name: str, message: str) -> None:
        bad.append(field_name)
        reader.fail(message, label, field_name)

    for key in raw:
        if key not in FIELDS and key not in CONSUL_IGNORED:
            fail(key, f"unknown field{_suggest(key, FIELDS)}")
    name = raw.get("name")
    if name is None:
        fail("name", "is required")
    elif not isinstance(name, str):
        fail("name", "must be a string")

    def text(field_name: str, default: str) -> str:
        value = raw.get(field_name, default)
        if not isinstance(value, str):
            fail(field_name, "must be a string")
            return default
        return value

    node = text("node", reader.node_name)
    if not is_hostname(node):
        fail("node", f"{node!r} is not a valid node name")
    dc = text("datacenter", reader.datacenter)
    address = text("address", "")
    kind = AddressKind.NONE
    try:
        kind, _ = classify_address(address)
    except ValueError as exc:
        fail("address", str(exc))
    node_address = node_addresses.get((dc.lower(), node.lower()), "")
    if kind is AddressKind.NONE and not node_address and "address" not in bad:
        fail("address", "is required when the node has no node_address")
    port = raw.get("port", 0)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        fail("port", "must be an integer from 0 to 65535")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        fail("tags", "must be a list of strings")
    meta = _string_table(raw.get("meta", {}))
    if meta is None:
        fail("meta", "must be a table of strings")
    weights = raw.get("weights", {})
    weight = {"passing": 1, "warning": 1}
    if not isinstance(weights, dict):
        fail("weights", "must be a table with passing and warning")
    else:
        for key, value in weights.items():
            wkey = snake(key)
            if wkey not in weight:
                fail(f"weights.{key}", "unknown weight (expected passing or warning)")
            elif isinstance(value, bool) or not isinstance(value, int) \
                    or not 0 <= value <= 65535:
                fail(f"weights.{key}", "must be an integer from 0 to 65535")
            else:
                weight[wkey] = value
    status = text("status", "passing")
    health = Health.PASSING
    try:
        health = Health(status)
    except ValueError:
        fail("status", f"{status!r} is not passing, warning or critical")
    from_checks = _checks_health(raw, fail)
    if from_checks is not None and "status" not in raw:
        health = from_checks
    if bad:
        return None
    try:
        return Instance(
            service=str(name), node=node, datacenter=dc, id=text("id", ""), address=address,
            node_address=node_address, port=port, tags=tuple(tags), health=health,
            weight_passing=weight["passing"], weight_warning=weight["warning"],
            meta=meta or {})
    except ValueError as exc:
        fail("name" if "service name" in str(exc) else "datacenter", str(exc))
        return None


def _read(path: str, data: Mapping[str, Any], node_name: str,
          datacenter: str) -> tuple[View, list[ServicesFileError]]:
    reader = _Reader(path, node_name, datacenter)
    entries = reader.entries(data)
    node_addresses, node_metas = _nodes(reader, entries)
    instances: list[Instance] = []
    ids: set[tuple[str, str, str]] = set()
    for index, raw in enumerate(entries, start=1):
        if not raw:
            continue
        inst = _instance(reader, index, raw, node_addresses)
        if inst is None:
            if len(reader.problems) >= MAX_ENTRY_ERRORS:
                break
            continue
        ident = (inst.datacenter.lower(), inst.service.lower(), inst.id)
        if ident in ids:
            reader.fail(f"duplicate id {inst.id!r}", _label(index, raw), "id")
            continue
        ids.add(ident)
        instances.append(inst)
    node_names = {(i.datacenter.lower(), i.node.lower()): (i.node, i.datacenter)
                  for i in instances}
    nodes = []
    for key in sorted(node_addresses.keys() | node_metas.keys()):
        name, dc = node_names.get(key, (key[1], key[0]))
        try:
            nodes.append(Node(name, dc, node_addresses.get(key, ""), node_metas.get(key, {})))
        except ValueError as exc:
            reader.fail(str(exc), field_name="node")
    return View(tuple(instances), tuple(nodes)), reader.problems


def parse_services(path: str, data: Mapping[str, Any], node_name: str,
                   datacenter: str) -> View:
    """Validate a loaded services file and turn it into a view; raises the
    first problem (:class:`ServicesFileError`)."""
    view, problems = _read(path, data, node_name, datacenter)
    if problems:
        raise problems[0]
    return view


def check_services(path: str, node_name: str, datacenter: str) -> list[ServicesFileError]:
    """Every problem of the services file at ``path`` (``dnsd check``)."""
    try:
        data = decode(path, read_file(path))
    except ServicesFileError as exc:
        return [exc]
    return _read(path, data, node_name, datacenter)[1]


def load_services_file(path: str, node_name: str, datacenter: str) -> View:
    """Read and validate one services file (raises :class:`ServicesFileError`)."""
    return parse_services(path, decode(path, read_file(path)), node_name, datacenter)
