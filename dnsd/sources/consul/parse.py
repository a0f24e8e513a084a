"""Consul's JSON as model values, and the diffs between two catalog listings.

Pure functions, no I/O: each takes what python-consul2 decoded from one reply
and returns plain values, raising :class:`ConsulUnavailable` for a reply whose
shape is wrong as a whole. A single entry dnsd cannot serve (a service name
that is no DNS label, a bad address) is skipped and named in ``problems``; it
never fails the reply it came in. Imports: ``model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dnsd.model import Health, Instance, Node

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


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _weight(weights: object, key: str) -> int:
    if isinstance(weights, Mapping):
        value = weights.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
            return value
    return 1


def instance_from_entry(entry: object, datacenter: str) -> Instance:
    """One ``/v1/health/service/<name>`` entry as an Instance.

    Raises ``ValueError`` naming the problem for an entry dnsd cannot serve
    (a service name that is no DNS label, a bad address...).
    """
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
    return Instance(
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
    )


def service_read(name: str, index: int, entries: object, datacenter: str) -> ServiceRead:
    """A whole ``/v1/health/service/<name>`` reply: the instances dnsd can
    serve, and one line for each entry it cannot."""
    if not entries:  # a 404 gives None
        entries = []
    if not isinstance(entries, list):
        raise ConsulUnavailable(f"health/service/{name} reply is not a list")
    instances: list[Instance] = []
    problems: list[str] = []
    for entry in entries:
        try:
            instances.append(instance_from_entry(entry, datacenter))
        except ValueError as exc:
            problems.append(str(exc))
        except Exception as exc:  # RecursionError from a meta value nested too deep...
            # ...or anything else one entry can do: it alone is left out.
            problems.append(f"cannot be read ({type(exc).__name__})")
    return ServiceRead(index, tuple(instances), tuple(problems))


def parse_service_list(data: object) -> Tags:
    if not isinstance(data, Mapping):
        raise ConsulUnavailable("catalog/services reply is not an object")
    return {str(k): frozenset(t for t in v if isinstance(t, str)) if isinstance(v, list)
            else frozenset() for k, v in data.items()}


def parse_nodes(data: object) -> Nodes:
    if not isinstance(data, list):
        raise ConsulUnavailable("catalog/nodes reply is not a list")
    return {_str(n.get("Node")): _str(n.get("Address")) for n in data
            if isinstance(n, Mapping) and _str(n.get("Node"))}


@dataclass(frozen=True, slots=True)
class NodeList:
    """One ``/v1/catalog/nodes`` reply, mapped."""

    addresses: Nodes            # every named node -> its address, for the diffs
    nodes: tuple[Node, ...]     # the nodes dnsd can serve, in name order
    problems: tuple[tuple[str, str], ...] = ()  # (node, why it cannot be served)


def node_list(data: object, datacenter: str) -> NodeList:
    """A whole ``/v1/catalog/nodes`` reply, its nodes put in ``datacenter``."""
    addresses = parse_nodes(data)
    nodes: list[Node] = []
    problems: list[tuple[str, str]] = []
    for name, address in sorted(addresses.items()):
        try:
            nodes.append(Node(name, datacenter, address))
        except ValueError as exc:
            problems.append((name, str(exc)))
    return NodeList(addresses, tuple(nodes), tuple(problems))


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
