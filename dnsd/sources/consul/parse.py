"""Consul's JSON as model values, and the diffs between two catalog listings.

Pure functions, no I/O: each takes what python-consul2 decoded from one reply
and returns plain values, raising :class:`ConsulUnavailable` for a reply whose
shape is wrong as a whole. A single entry dnsd cannot serve (a service name
that is no DNS label, a bad address) is skipped and named in ``problems``; it
never fails the reply it came in. A part of an entry dnsd cannot use (a tagged
address that is no address, a meta value that is no text) is left out and
named in ``ignored``; the rest of the entry is served. Imports: ``model``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from dnsd.model import (
    AddressKind,
    Health,
    Instance,
    Node,
    ServiceAddress,
    classify_address,
)

Tags = dict[str, frozenset[str]]
"""``/v1/catalog/services``: service name -> its tag set."""

Nodes = dict[str, str]
"""``/v1/catalog/nodes``: node name -> address."""

Checks = dict[tuple[str, str], tuple[str, str, str]]
"""``/v1/health/state/any``: (node, check id) -> (status, service id, service name)."""


class ConsulUnavailable(Exception):
    """Consul could not be read, or its reply cannot be used; the message says
    why, in one line."""


@dataclass(frozen=True, slots=True)
class ServiceRead:
    """One ``/v1/health/service/<name>`` reply, mapped."""

    index: int                       # the reply's X-Consul-Index
    instances: tuple[Instance, ...]  # the entries dnsd can serve
    problems: tuple[str, ...] = ()   # why each other entry was skipped
    nodes: tuple[Node, ...] = ()     # the entries' nodes (meta, tagged addresses), once each
    ignored: tuple[str, ...] = ()    # parts of served entries left out, and why


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _weight(weights: object, key: str) -> int:
    if isinstance(weights, Mapping):
        value = weights.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
            return value
    return 1


def _texts(value: object, what: str, ignored: list[str]) -> dict[str, str]:
    """A Consul string map (meta): text values kept; numbers and booleans,
    which no Consul writes but a hand-made registration may, as text; others
    left out and noted."""
    if not value:
        return {}
    if not isinstance(value, Mapping):
        ignored.append(f"{what} is not an object (left out)")
        return {}
    out: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, str):
            out[str(key)] = item
        elif isinstance(item, bool):
            out[str(key)] = "true" if item else "false"
        elif isinstance(item, int | float):
            out[str(key)] = str(item)
        else:
            ignored.append(f"{what} {key!r} is not text (left out)")
    return out


def node_addresses(value: object, ignored: list[str]) -> dict[str, str]:
    """A node's ``TaggedAddresses`` (tag -> address): each that is an IP
    address or a host name kept, empty ones dropped, others noted."""
    out: dict[str, str] = {}
    for tag, text in _texts(value, "TaggedAddresses", ignored).items():
        try:
            kind, address = classify_address(text)
        except ValueError as exc:
            ignored.append(f"tagged address {tag}: {exc} (left out)")
            continue
        if kind is not AddressKind.NONE:
            out[tag] = address
    return out


def service_addresses(value: object, ignored: list[str]) -> dict[str, ServiceAddress]:
    """A service's ``TaggedAddresses`` (tag -> ``{"Address", "Port"}``)."""
    if not value:
        return {}
    if not isinstance(value, Mapping):
        ignored.append("Service.TaggedAddresses is not an object (left out)")
        return {}
    out: dict[str, ServiceAddress] = {}
    for tag, item in value.items():
        address = item.get("Address") if isinstance(item, Mapping) else None
        port = item.get("Port", 0) if isinstance(item, Mapping) else None
        if not isinstance(address, str) or not isinstance(port, int) or isinstance(port, bool):
            ignored.append(f"service tagged address {tag}: not an Address and a Port "
                           "(left out)")
            continue
        try:
            tagged = ServiceAddress(address, port)
        except ValueError as exc:
            ignored.append(f"service tagged address {tag}: {exc} (left out)")
            continue
        if tagged.address:
            out[str(tag)] = tagged
    return out


def node_from(raw: Mapping[str, object], datacenter: str, ignored: list[str]) -> Node:
    """A node of ``/v1/catalog/nodes`` or of a ``/v1/health/service`` entry,
    with its ``Meta`` and ``TaggedAddresses``. ``ValueError`` names the problem
    when the node itself cannot be served (its name)."""
    return Node(_str(raw.get("Node")), datacenter, _str(raw.get("Address")),
                meta=_texts(raw.get("Meta"), "Meta", ignored),
                tagged_addresses=node_addresses(raw.get("TaggedAddresses"), ignored))


def entry_values(entry: object, datacenter: str,
                 ignored: list[str] | None = None) -> tuple[Instance, Node]:
    """One ``/v1/health/service/<name>`` entry as an Instance and its Node
    (``Node.Meta``, ``Node.TaggedAddresses``); the parts left out are added
    to ``ignored``.

    Raises ``ValueError`` naming the problem for an entry dnsd cannot serve
    (a service name that is no DNS label, a bad address...).
    """
    ignored = [] if ignored is None else ignored
    if not isinstance(entry, Mapping):
        raise ValueError("entry is not an object")
    node, service, checks = entry.get("Node"), entry.get("Service"), entry.get("Checks")
    if not isinstance(node, Mapping) or not isinstance(service, Mapping):
        raise ValueError("entry lacks Node or Service")
    statuses = [_str(c.get("Status")) for c in checks if isinstance(c, Mapping)] \
        if isinstance(checks, list) else []
    port = service.get("Port", 0)
    tags = service.get("Tags") or []
    meta = service.get("Meta") or {}
    if not isinstance(port, int) or isinstance(port, bool):
        raise ValueError(f"port {port!r} is not a number")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("Tags is not a list of strings")
    if not isinstance(meta, Mapping):
        raise ValueError("Meta is not an object")
    weights = service.get("Weights")
    instance = Instance(
        service=_str(service.get("Service")),
        node=_str(node.get("Node")),
        datacenter=datacenter,
        id=_str(service.get("ID")),
        address=_str(service.get("Address")),
        node_address=_str(node.get("Address")),
        port=port,
        tags=tuple(tags),
        health=Health.worst(statuses),
        weight_passing=_weight(weights, "Passing"),
        weight_warning=_weight(weights, "Warning"),
        meta={str(k): str(v) for k, v in meta.items()},
        tagged_addresses=service_addresses(service.get("TaggedAddresses"), ignored),
    )
    return instance, node_from(node, datacenter, ignored)


def instance_from_entry(entry: object, datacenter: str) -> Instance:
    """One ``/v1/health/service/<name>`` entry as an Instance (see :func:`entry_values`)."""
    return entry_values(entry, datacenter)[0]


def service_read(name: str, index: int, entries: object, datacenter: str) -> ServiceRead:
    """A whole ``/v1/health/service/<name>`` reply: the instances dnsd can
    serve and their nodes, and one line for each entry it cannot."""
    if not entries:  # a 404 gives None
        entries = []
    if not isinstance(entries, list):
        raise ConsulUnavailable(f"health/service/{name} reply is not a list")
    instances: list[Instance] = []
    nodes: dict[str, Node] = {}
    problems: list[str] = []
    ignored: list[str] = []
    for entry in entries:
        try:
            notes: list[str] = []
            instance, node = entry_values(entry, datacenter, notes)
        except ValueError as exc:
            problems.append(str(exc))
        except Exception as exc:  # RecursionError from a meta value nested too deep...
            # ...or anything else one entry can do: it alone is left out.
            problems.append(f"cannot be read ({type(exc).__name__})")
        else:
            instances.append(instance)
            nodes.setdefault(node.name, node)
            ignored.extend(f"{instance.id}: {note}" for note in notes)
    return ServiceRead(index, tuple(instances), tuple(problems), tuple(nodes.values()),
                       tuple(ignored))


def parse_service_list(data: object) -> Tags:
    if not isinstance(data, Mapping):
        raise ConsulUnavailable("catalog/services reply is not an object")
    return {str(k): frozenset(t for t in v if isinstance(t, str)) if isinstance(v, list)
            else frozenset() for k, v in data.items()}


@dataclass(frozen=True, slots=True)
class NodeList:
    """One ``/v1/catalog/nodes`` reply, mapped."""

    addresses: Nodes            # every named node -> its address, for the diffs
    nodes: tuple[Node, ...]     # the nodes dnsd can serve, in name order
    problems: tuple[tuple[str, str], ...] = ()  # (node, why it cannot be served)
    ignored: tuple[tuple[str, str], ...] = ()   # (node, a part of it left out, and why)


def node_list(data: object, datacenter: str) -> NodeList:
    """A whole ``/v1/catalog/nodes`` reply, its nodes put in ``datacenter``,
    with their meta and tagged addresses."""
    if not isinstance(data, list):
        raise ConsulUnavailable("catalog/nodes reply is not a list")
    addresses: Nodes = {}
    found: dict[str, Node] = {}
    problems: list[tuple[str, str]] = []
    ignored: list[tuple[str, str]] = []
    for raw in data:
        name = _str(raw.get("Node")) if isinstance(raw, Mapping) else ""
        if not name or not isinstance(raw, Mapping):
            continue
        addresses[name] = _str(raw.get("Address"))
        notes: list[str] = []
        try:
            found[name] = node_from(raw, datacenter, notes)
        except ValueError as exc:
            problems.append((name, str(exc)))
        except Exception as exc:  # one node's oddity never fails the listing
            problems.append((name, f"cannot be read ({type(exc).__name__})"))
        ignored.extend((name, note) for note in notes)
    nodes = tuple(found[name] for name in sorted(found))
    return NodeList(addresses, nodes, tuple(sorted(problems)), tuple(ignored))


def parse_checks(data: object) -> Checks:
    if not isinstance(data, list):
        raise ConsulUnavailable("health/state reply is not a list")
    return {(_str(c.get("Node")), _str(c.get("CheckID"))):
            (_str(c.get("Status")), _str(c.get("ServiceID")), _str(c.get("ServiceName")))
            for c in data if isinstance(c, Mapping)}


def diff_services(old: Mapping[str, frozenset[str]], new: Mapping[str, frozenset[str]]
                  ) -> set[str] | None:
    """Services to re-read after the catalog moved; None when no diff explains it."""
    changed = {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}
    return changed or None


def diff_checks(old: Mapping[tuple[str, str], tuple[str, str, str]],
                new: Mapping[tuple[str, str], tuple[str, str, str]]
                ) -> tuple[set[str], set[str]]:
    """(services whose own checks changed, nodes whose node-level checks changed)."""
    services: set[str] = set()
    nodes: set[str] = set()
    for key in old.keys() | new.keys():
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        for value in (before, after):
            if value is None:
                continue
            _, service_id, service_name = value
            if service_id:
                services.add(service_name)
            else:
                nodes.add(key[0])
    services.discard("")
    return services, nodes


# --- prepared query definitions ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Named:
    """What a (non-template) prepared query names, to say when it cannot answer."""

    label: str                      # "prepared query <ID> ('<Name>')"
    service: str                    # Service.Service
    failover: tuple[str, ...] = ()  # Service.Failover.Datacenters


@dataclass(frozen=True, slots=True)
class Definitions:
    """One ``GET /v1/query`` reply, mapped."""

    text: str                       # the list as canonical JSON; "" when there is none
    named: tuple[Named, ...] = ()   # the services plain (non-template) queries name


def query_label(ident: object, name: object) -> str:
    """How a prepared query is named in log lines (the table names it alike)."""
    return f"prepared query {ident} ({name!r})" if name else f"prepared query {ident} (no name)"


def definitions(data: object) -> Definitions:
    """A ``/v1/query`` reply as the text a view carries.

    Canonical JSON (sorted keys, no spaces), so the same definitions always
    give the same text and an unchanged list republishes nothing. ``Token``
    is left out: dnsd never runs a query with it, and a view's text is saved
    to the state directory and shown on the status page, where an ACL token
    has no business. A 404 (an agent without the endpoint) is no definitions.
    """
    if data is None:
        data = []
    if not isinstance(data, list):
        raise ConsulUnavailable("query reply is not a list")
    kept: list[object] = []
    named: list[Named] = []
    for raw in data:
        if not isinstance(raw, Mapping):
            kept.append(raw)  # the table says it is no definition
            continue
        kept.append({k: v for k, v in raw.items() if k != "Token"})
        template = raw.get("Template")
        service = raw.get("Service")
        if (isinstance(template, Mapping) and template.get("Type")) \
                or not isinstance(service, Mapping):
            continue  # a template names its service only once asked
        failover = service.get("Failover")
        datacenters = failover.get("Datacenters") if isinstance(failover, Mapping) else None
        named.append(Named(query_label(raw.get("ID"), raw.get("Name")),
                           _str(service.get("Service")),
                           tuple(dc.lower() for dc in datacenters or ()
                                 if isinstance(dc, str))
                           if isinstance(datacenters, list) else ()))
    if not kept:
        return Definitions("")
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Definitions(text, tuple(named))
