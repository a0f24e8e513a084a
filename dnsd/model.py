"""Registry values: what sources publish and the table holds.

Frozen, slotted and validated when built, so a value that exists is a value the
rest of dnsd may trust. Knows nothing of DNS wire format or of any registry.
Imports: the standard library and ``errors`` only.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

# A DNS label as Consul and registrator names use it: letters, digits, hyphen and
# underscore (registrator writes ``service_1``), 1 to 63 octets, no edge hyphen.
# fullmatch: "$" would also match before a final newline ("web\n").
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


class Health(enum.Enum):
    """The aggregated health of an instance: the worst of its checks."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"

    @classmethod
    def worst(cls, statuses: list[str]) -> Health:
        """The worst of Consul check statuses; unknown ones count as critical."""
        worst = cls.PASSING
        for status in statuses:
            if status == "passing":
                continue
            if status == "warning":
                worst = cls.WARNING
            else:
                return cls.CRITICAL
        return worst


V = TypeVar("V")


class FrozenMap(Mapping[str, V], Generic[V]):
    """An immutable, hashable mapping from strings.

    Frozen values must hold frozen parts: a plain dict inside a frozen
    dataclass can still be changed, and makes the value unhashable (the idea
    of dnspython's ``dns/immutable.py``). Compares equal to any mapping with
    the same items, so ``inst.meta == {"version": "1"}`` reads naturally.
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: dict[str, V] = {str(k): v for k, v in pairs}
        self._hash: int | None = None

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class Meta(FrozenMap[str]):
    """An immutable string-to-string mapping (service or node meta, a node's
    tagged addresses, a view's prepared query texts)."""

    __slots__ = ()

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        super().__init__((str(k), str(v)) for k, v in pairs)


NO_META = Meta()


def freeze_meta(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> Meta:
    """``value`` as :class:`Meta` (itself when it already is one)."""
    if isinstance(value, Meta):
        return value
    return Meta(value) if value else NO_META


class AddressKind(enum.Enum):
    NONE = "none"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    HOSTNAME = "hostname"


def is_label(text: str) -> bool:
    """True when ``text`` is one DNS label under dnsd's rules (underscores allowed)."""
    return bool(_LABEL.fullmatch(text))


def is_hostname(text: str) -> bool:
    """True when ``text`` is a dotted DNS name (an optional trailing dot) of valid labels."""
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    return all(is_label(part) for part in name.split("."))


def is_host_address(text: str) -> bool:
    """True when ``text`` can be an external service's host name: a dotted name
    (at least two labels) whose last label is not all digits, so that
    ``10.0.0.400`` or ``1.2.3`` (a mistyped IP address) is never taken for a
    host name (RFC 3696 2: a top-level domain is not all-numeric)."""
    name = text[:-1] if text.endswith(".") else text
    return (is_hostname(name) and "." in name
            and not name.rsplit(".", 1)[1].isdigit())


def classify_address(text: str) -> tuple[AddressKind, str]:
    """Classify and normalise an address: an IP in canonical form, or a host name
    (see :func:`is_host_address`).

    Raises ``ValueError`` naming the problem when it is neither.
    """
    if not text:
        return AddressKind.NONE, ""
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        if is_host_address(text):
            return AddressKind.HOSTNAME, text.rstrip(".").lower()
        raise ValueError(f"{text!r} is neither an IP address nor a host name (one with "
                         "a dot, not ending in a number)") from None
    if ip.version == 4:
        return AddressKind.IPV4, str(ip)
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return AddressKind.IPV4, str(mapped)
    return AddressKind.IPV6, ip.compressed


# Tagged address keys Consul gives nodes and services, and that answers use.
LAN, LAN_IPV4, LAN_IPV6 = "lan", "lan_ipv4", "lan_ipv6"
WAN, WAN_IPV4, WAN_IPV6 = "wan", "wan_ipv4", "wan_ipv6"


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """One tagged address of a service (Consul's ``ServiceAddress``): an address,
    normalised by :func:`classify_address`, and a port (0: the service's own)."""

    address: str
    port: int = 0
    kind: AddressKind = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"tagged port {self.port} is not from 0 to 65535")
        kind, address = classify_address(self.address)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "kind", kind)


NO_SERVICE_ADDRESSES: FrozenMap[ServiceAddress] = FrozenMap()


def freeze_node_addresses(value: Mapping[str, str]) -> Meta:
    """A node's tagged addresses, each normalised; empty ones left out.
    ``ValueError`` names a tag whose address is neither an IP nor a host name."""
    if not value:
        return NO_META
    out = {}
    for tag, text in value.items():
        try:
            kind, address = classify_address(text)
        except ValueError as exc:
            raise ValueError(f"tagged address {tag}: {exc}") from None
        if kind is not AddressKind.NONE:
            out[tag] = address
    return Meta(out) if out else NO_META


def freeze_service_addresses(value: Mapping[str, ServiceAddress]
                             ) -> FrozenMap[ServiceAddress]:
    """A service's tagged addresses as a frozen mapping; empty ones left out."""
    if isinstance(value, FrozenMap) and all(a.address for a in value.values()):
        return value
    kept = {tag: a for tag, a in value.items() if a.address}
    return FrozenMap(kept) if kept else NO_SERVICE_ADDRESSES


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered instance of a service.

    ``address`` is the service's own address ('' when it has none, and then the
    node's address serves); both are kept normalised by :func:`classify_address`.
    """

    service: str
    node: str
    datacenter: str
    id: str = ""
    address: str = ""
    node_address: str = ""
    port: int = 0
    tags: tuple[str, ...] = ()
    health: Health = Health.PASSING
    weight_passing: int = 1
    weight_warning: int = 1
    meta: Mapping[str, str] = NO_META
    tagged_addresses: Mapping[str, ServiceAddress] = NO_SERVICE_ADDRESSES
    """Consul's ``Service.TaggedAddresses`` (``lan_ipv4``, ``wan``, ...)."""
    address_kind: AddressKind = field(init=False)
    node_address_kind: AddressKind = field(init=False)

    def __post_init__(self) -> None:
        if not is_label(self.service):
            raise ValueError(f"service name {self.service!r} is not a valid DNS label")
        if not is_hostname(self.node):
            raise ValueError(f"node name {self.node!r} is not a valid DNS name")
        if not is_label(self.datacenter):
            raise ValueError(f"datacenter {self.datacenter!r} is not a valid DNS label")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not from 0 to 65535")
        for weight in (self.weight_passing, self.weight_warning):
            if not 0 <= weight <= 65535:
                raise ValueError(f"weight {weight} is not from 0 to 65535")
        kind, address = classify_address(self.address)
        node_kind, node_address = classify_address(self.node_address)
        object.__setattr__(self, "meta", freeze_meta(self.meta))
        object.__setattr__(self, "tagged_addresses",
                           freeze_service_addresses(self.tagged_addresses))
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "address_kind", kind)
        object.__setattr__(self, "node_address", node_address)
        object.__setattr__(self, "node_address_kind", node_kind)
        # One copy of each repeated string: a table of 100k instances otherwise
        # holds 100k copies of "dc1", of each node name and of each tag.
        object.__setattr__(self, "service", sys.intern(self.service))
        object.__setattr__(self, "node", sys.intern(self.node))
        object.__setattr__(self, "datacenter", sys.intern(self.datacenter))
        if node_address:
            object.__setattr__(self, "node_address", sys.intern(node_address))
        object.__setattr__(self, "tags", tuple(sys.intern(t) for t in self.tags))
        if not self.id:
            object.__setattr__(self, "id", f"{self.service}-{address or node_address}-{self.port}")

    @property
    def effective_address(self) -> str:
        """The address clients connect to: the service's own, else the node's."""
        return self.address or self.node_address

    @property
    def effective_kind(self) -> AddressKind:
        return self.address_kind if self.address else self.node_address_kind

    @property
    def weight(self) -> int:
        """The SRV weight Consul gives: the warning weight while a check warns."""
        return self.weight_warning if self.health is Health.WARNING else self.weight_passing


@dataclass(frozen=True, slots=True)
class Node:
    """A node (host) known to a registry, answerable as ``<node>.node.<dc>``.

    The one home of node data: its address, its meta (served as TXT records,
    as Consul serves ``NodeMeta``) and its tagged addresses (Consul's
    ``TaggedAddresses``: ``lan_ipv6`` answers AAAA, ``wan`` remote askers)."""

    name: str
    datacenter: str
    address: str = ""
    meta: Mapping[str, str] = NO_META
    tagged_addresses: Mapping[str, str] = NO_META
    address_kind: AddressKind = field(init=False)

    def __post_init__(self) -> None:
        if not is_hostname(self.name):
            raise ValueError(f"node name {self.name!r} is not a valid DNS name")
        if not is_label(self.datacenter):
            raise ValueError(f"datacenter {self.datacenter!r} is not a valid DNS label")
        kind, address = classify_address(self.address)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "address_kind", kind)
        object.__setattr__(self, "meta", freeze_meta(self.meta))
        object.__setattr__(self, "tagged_addresses",
                           freeze_node_addresses(self.tagged_addresses))


@dataclass(frozen=True, slots=True)
class View:
    """A source's complete current view: every instance and node it knows.

    Sources publish whole views; the table never receives a partial update.
    Nodes named only by instances need not be listed in ``nodes``.
    """

    instances: tuple[Instance, ...] = ()
    nodes: tuple[Node, ...] = ()
    local_datacenter: str | None = None
    """The datacenter the registry calls local (Consul's agent), if it says."""
    prepared: Mapping[str, str] = NO_META
    """Prepared query definitions by datacenter: the JSON list ``GET /v1/query``
    returns there, as text (the table parses it once per change). Text keeps
    the view frozen, comparable and savable as it is."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "prepared", freeze_meta(
            {dc.lower(): text for dc, text in self.prepared.items()}
            if any(dc != dc.lower() for dc in self.prepared) else self.prepared))
