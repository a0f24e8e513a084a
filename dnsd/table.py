"""The table: every source's latest view merged into one immutable snapshot.

A new snapshot is built aside and swapped in with one assignment, so a reader
holding ``table.snapshot`` never sees half an update (the versioned-zone idea of
dnspython's ``dns/versioned.py``). Each swap bumps ``version``, which answer
caches use as their key. Knows nothing of DNS wire format. Prepared query
definitions, which views carry as text, are parsed here once per change of
their text (a bad one is logged once and left out). Imports: ``model``,
``prepared``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import MappingProxyType

from dnsd.model import AddressKind, Instance, Node, View
from dnsd.prepared import QuerySet, parse_queries

log = logging.getLogger("dnsd.table")

PARSED_KEEP = 64  # parsed prepared query lists kept for reuse (a few per datacenter)

ServiceKey = tuple[str, str]
"""(datacenter, service name), both lower-cased."""

NodeKey = tuple[str, str]
"""(datacenter, node name), both lower-cased."""


@dataclass(frozen=True, slots=True)
class ReverseEntry:
    """What an address in the table belongs to, for PTR answers."""

    kind: str  # "node" or "service"
    datacenter: str
    name: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One immutable merged view of every source. Never mutated once built."""

    version: int
    local_datacenter: str = "dc1"
    services: Mapping[ServiceKey, tuple[Instance, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    nodes: Mapping[NodeKey, Node] = field(default_factory=lambda: MappingProxyType({}))
    datacenters: frozenset[str] = frozenset()
    reverse: Mapping[str, tuple[ReverseEntry, ...]] = field(
        default_factory=lambda: MappingProxyType({}))
    built_at: float = 0.0
    prepared: Mapping[str, QuerySet] = field(default_factory=lambda: MappingProxyType({}))
    """Prepared queries by datacenter (lower case), every source's merged."""
    pending: frozenset[str] = frozenset()
    """Registry sources the table expects (:meth:`Table.expect`) that have not
    published a view yet: names they could answer are not known to be absent."""

    @property
    def instance_count(self) -> int:
        return sum(len(group) for group in self.services.values())


def build_snapshot(version: int, views: Mapping[str, View], local_datacenter: str = "dc1",
                   datacenter_fixed: bool = True, expected: frozenset[str] = frozenset(),
                   parsed: MutableMapping[tuple[str, ...], QuerySet] | None = None
                   ) -> Snapshot:
    """Merge views (in source-name order, so the result is deterministic).

    An instance id seen twice in one (datacenter, service) keeps the first; a
    node's address, meta and tagged addresses are each the first non-empty
    ones any source gives. Unless the local datacenter is fixed by the user,
    the first one a registry reports wins. ``expected`` sources without a
    view are ``pending``. Prepared queries of one datacenter from several
    sources are one list, in source order (a later query whose ID or name is
    taken is left out); ``parsed`` caches the parsed lists by their texts.
    """
    if not datacenter_fixed:
        reported = [views[s].local_datacenter for s in sorted(views)]
        local_datacenter = next((dc for dc in reported if dc), local_datacenter)
    local_datacenter = local_datacenter.lower()
    services: dict[ServiceKey, list[Instance]] = {}
    seen_ids: set[tuple[str, str, str]] = set()
    nodes: dict[NodeKey, Node] = {}
    dcs = {local_datacenter}
    for source in sorted(views):
        view = views[source]
        for node in view.nodes:
            key = (node.datacenter.lower(), node.name.lower())
            nodes[key] = _merge_node(nodes.get(key), node)
            dcs.add(key[0])
        for inst in view.instances:
            dc = inst.datacenter.lower()
            svc = inst.service.lower()
            ident = (dc, svc, inst.id)
            if ident in seen_ids:
                continue
            seen_ids.add(ident)
            services.setdefault((dc, svc), []).append(inst)
            dcs.add(dc)
            nkey = (dc, inst.node.lower())
            known = nodes.get(nkey)
            if known is None or (not known.address and inst.node_address):
                nodes[nkey] = _merge_node(known, Node(inst.node, inst.datacenter,
                                                      inst.node_address))
    texts: dict[str, list[str]] = {}
    for source in sorted(views):
        for dc, text in views[source].prepared.items():
            texts.setdefault(dc, []).append(text)
            dcs.add(dc)

    # address -> names, insertion-ordered and deduplicated (dict keys as a set)
    reverse: dict[str, dict[ReverseEntry, None]] = {}
    ips = (AddressKind.IPV4, AddressKind.IPV6)
    for (dc, _), node in nodes.items():
        if node.address_kind in ips:
            reverse.setdefault(node.address, {})[ReverseEntry("node", dc, node.name)] = None
    for (dc, _svc), group in services.items():
        entry = None
        for inst in group:
            if inst.address_kind in ips:
                if entry is None or entry.name != inst.service:
                    entry = ReverseEntry("service", dc, inst.service)
                reverse.setdefault(inst.address, {})[entry] = None

    return Snapshot(
        version=version,
        local_datacenter=local_datacenter,
        services=MappingProxyType({k: tuple(v) for k, v in services.items()}),
        nodes=MappingProxyType(nodes),
        datacenters=frozenset(dcs),
        reverse=MappingProxyType({k: tuple(v) for k, v in reverse.items()}),
        built_at=time.time(),
        prepared=MappingProxyType({dc: _query_set(dc, tuple(group), parsed)
                                   for dc, group in texts.items()}),
        pending=frozenset(expected - views.keys()),
    )


def _query_set(datacenter: str, texts: tuple[str, ...],
               parsed: MutableMapping[tuple[str, ...], QuerySet] | None) -> QuerySet:
    """The prepared queries of one datacenter from their JSON texts, parsed
    (and their problems logged) only when ``parsed`` has not seen them."""
    if parsed is not None and texts in parsed:
        return parsed[texts]
    definitions: list[object] = []
    for text in texts:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            log.warning("prepared queries of %s: not JSON, left out: %s", datacenter, exc)
            continue
        if not isinstance(data, list):
            log.warning("prepared queries of %s: not a JSON list, left out", datacenter)
            continue
        definitions.extend(data)
    queries, warnings = parse_queries(definitions)
    for warning in warnings:
        log.warning("prepared queries of %s: %s", datacenter, warning)
    if parsed is not None:
        parsed[texts] = queries
    return queries


def _merge_node(known: Node | None, node: Node) -> Node:
    """``known`` completed by ``node``: each field's first non-empty value."""
    if known is None:
        return node
    if ((known.address or not node.address) and (known.meta or not node.meta)
            and (known.tagged_addresses or not node.tagged_addresses)):
        return known
    return Node(known.name, known.datacenter, known.address or node.address,
                known.meta or node.meta, known.tagged_addresses or node.tagged_addresses)


class Table:
    """Holds each source's latest view and the current merged snapshot.

    Call only from the event loop thread (sources on other threads hop to the
    loop first). ``on_swap`` callbacks run after each swap, with the new snapshot.
    """

    def __init__(self, local_datacenter: str = "dc1", datacenter_fixed: bool = True) -> None:
        self._views: dict[str, View] = {}
        self._local_datacenter = local_datacenter
        self._datacenter_fixed = datacenter_fixed
        self._expected: frozenset[str] = frozenset()
        self._parsed: dict[tuple[str, ...], QuerySet] = {}
        self._on_swap: list[Callable[[Snapshot], None]] = []
        self.snapshot: Snapshot = build_snapshot(1, {}, local_datacenter, datacenter_fixed)

    @property
    def views(self) -> Mapping[str, View]:
        """A read-only map of source name to its last published view."""
        return MappingProxyType(self._views)

    def subscribe(self, callback: Callable[[Snapshot], None]) -> None:
        self._on_swap.append(callback)

    def expect(self, *sources: str) -> Snapshot:
        """Say that these registry sources will publish: until each has, its
        name is in ``snapshot.pending``, and the answer stage does not call a
        name absent that the source might know (no cacheable NXDOMAIN)."""
        expected = self._expected | frozenset(sources)
        if expected == self._expected:
            return self.snapshot
        self._expected = expected
        return self._swap()

    def publish(self, source: str, view: View) -> Snapshot:
        """Replace ``source``'s view and swap in a freshly merged snapshot.

        Publishing a view equal to the current one swaps nothing (a registry
        that reports "no change" must not flush answer caches).
        """
        if self._views.get(source) == view:
            return self.snapshot
        self._views[source] = view
        return self._swap()

    def publish_many(self, views: Mapping[str, View]) -> Snapshot:
        """Replace several views at once (used to restore a saved table)."""
        self._views.update(views)
        return self._swap()

    def remove(self, source: str) -> Snapshot:
        if self._views.pop(source, None) is None:
            return self.snapshot
        return self._swap()

    def _swap(self) -> Snapshot:
        if len(self._parsed) > PARSED_KEEP:
            self._parsed.clear()  # texts of the past: parsing again is the only cost
        snapshot = build_snapshot(self.snapshot.version + 1, self._views,
                                  self._local_datacenter, self._datacenter_fixed,
                                  self._expected, self._parsed)
        self.snapshot = snapshot  # the one assignment readers can observe
        for callback in self._on_swap:
            callback(snapshot)
        return snapshot

