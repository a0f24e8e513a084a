"""Consul prepared queries, evaluated against the table.

Owns: reading the definitions Consul lists at ``GET /v1/query`` into frozen,
validated :class:`PreparedQuery` values gathered in a :class:`QuerySet`;
choosing which query a name ``<name-or-id>.query`` selects; rendering
templates; and evaluating the chosen query against a :class:`Snapshot`,
failover included, as Consul's ``PreparedQuery.Execute`` does. Pure: no I/O,
no clock, nothing shared is mutated. Imports: ``model`` and the standard
library only.

Which query a name selects (Consul's ``PreparedQueryResolve``), the name being
lower-cased first as Consul's DNS does: a query whose ID it is; else the query
with that exact name (case-insensitive; templates too); else the template
whose name is the longest prefix of it (an empty-named template matches
everything). A template is then rendered for the name: every string of its
``Service`` (the service, tags, failover datacenters, service and node meta
values) gets ``${name.full}``, ``${name.prefix}`` (the template's name),
``${name.suffix}`` (the name minus that prefix), ``${match(N)}`` (group N of
``Template.Regexp`` searched in the name; '' when it does not match or has no
such group), ``${agent.segment}`` ('' here) and ``$${`` (a literal ``${``);
with ``RemoveEmptyTags`` the tags left empty are dropped.

Which instances answer: those of the rendered service in the datacenter the
name asks (the local one by default) that are not critical, not warning when
the query (or the caller) says only-passing, carry every listed tag and none
of the ``!``-prefixed ones (case-insensitive), carry the listed service meta,
and whose node carries the listed node meta (``NodeMeta``, the table's node
meta). When none does, the listed ``Failover.Datacenters`` are tried in order,
skipping the asked one and those the table does not hold, and the first with
such instances answers.

The rcode contract, for the answer stage: :func:`resolve` returns None, to be
answered NXDOMAIN with the SOA, when the datacenter is not in the table, when
no query matches the name (a template's own ID included: Consul refuses to run
a template by ID), and when no instance qualifies anywhere it may look (a
template whose regexp matches nothing typically renders an empty service and
lands here). Otherwise it returns a :class:`Resolution` with at least one
instance, whose ``ttl`` (``DNS.TTL`` in whole seconds, as Consul truncates it)
is None when the query sets none and the caller's service TTL applies.

What dnsd cannot evaluate from its table is said once per definition, as a
warning from :func:`parse_queries`: a filter that would let through instances
Consul leaves out (``Connect``; ``Peer``, ``SamenessGroup``, a non-default
``Namespace`` or ``Partition``) leaves the query out; one that can only narrow
or reorder the answer is ignored with a warning (``IgnoreCheckIDs``: the table
keeps one health per instance, not each check, so fewer instances answer than
in Consul; ``NearestN`` and peer failover ``Targets``: no network coordinates
or peers here, so failover goes straight to the listed datacenters). ``Near``
only orders results, which the answer stage rotates anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from dnsd.model import Health, Instance, Node


class Snapshot(Protocol):
    """What evaluation reads of the table's snapshot (``table.Snapshot`` is
    one). A protocol rather than an import: the table holds parsed query sets,
    so it imports this module, and the dependency runs one way."""

    @property
    def local_datacenter(self) -> str: ...

    @property
    def datacenters(self) -> frozenset[str]: ...

    @property
    def services(self) -> Mapping[tuple[str, str], tuple[Instance, ...]]: ...

    @property
    def nodes(self) -> Mapping[tuple[str, str], Node]: ...

TEMPLATE_TYPE = "name_prefix_match"
"""The only ``Template.Type`` Consul knows."""

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# --- Go durations (DNS.TTL) -------------------------------------------------------

_NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
          "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string, as ``time.ParseDuration`` reads it.

    A sign, then one or more decimal numbers each followed by a unit (``ns``,
    ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``): "10s", "1m30s", "1.5h",
    "-2m"; a bare "0" needs no unit. Raises ``ValueError`` otherwise.
    """
    rest = text
    negative = rest[:1] == "-"
    if rest[:1] in ("-", "+"):
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total = 0
    while rest:
        number = re.match(r"\d*(?:\.\d*)?", rest)
        digits = number.group() if number else ""
        if digits in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        rest = rest[len(digits):]
        unit = next((u for u in sorted(_NANOS, key=len, reverse=True) if rest.startswith(u)),
                    None)
        if unit is None:
            raise ValueError(f"missing or unknown unit in duration {text!r}")
        rest = rest[len(unit):]
        whole, _, fraction = digits.partition(".")
        nanos = int(whole or "0") * _NANOS[unit]
        if fraction:
            nanos += int(fraction) * _NANOS[unit] // 10 ** len(fraction)
        total += nanos
    return (-total if negative else total) / 1e9


# --- template interpolation (the subset of HIL Consul's templates use) -------------

_VARIABLES = ("name.full", "name.prefix", "name.suffix", "agent.segment")
_MATCH = re.compile(r"match\(\s*(-?\d+)\s*\)")


@dataclass(frozen=True, slots=True)
class _Variable:
    name: str


@dataclass(frozen=True, slots=True)
class _Group:
    index: int


_Piece = str | _Variable | _Group


def _compile(text: str) -> tuple[_Piece, ...]:
    """``text`` split into literals and interpolations; ValueError when an
    interpolation does not close or names something unknown."""
    pieces: list[_Piece] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):  # HIL's escape for a literal "${"
            literal.append("${")
            i += 3
        elif text.startswith("${", i):
            end = text.find("}", i)
            if end < 0:
                raise ValueError(f"unclosed '${{' in {text!r}")
            expression = text[i + 2:end].strip()
            group = _MATCH.fullmatch(expression)
            if expression in _VARIABLES:
                piece: _Piece = _Variable(expression)
            elif group:
                piece = _Group(int(group.group(1)))
            else:
                raise ValueError(f"unknown interpolation '${{{expression}}}' in {text!r}")
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(piece)
            i = end + 1
        else:
            literal.append(text[i])
            i += 1
    if literal:
        pieces.append("".join(literal))
    return tuple(pieces)


def _expand(pieces: tuple[_Piece, ...], variables: Mapping[str, str],
            groups: tuple[str, ...]) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
        elif isinstance(piece, _Variable):
            out.append(variables[piece.name])
        else:
            out.append(groups[piece.index] if 0 <= piece.index < len(groups) else "")
    return "".join(out)


def compile_regexp(text: str) -> re.Pattern[str]:
    """A ``Template.Regexp`` (Go RE2 syntax) as a Python pattern.

    RE2's ``\\z`` (end of text) is Python's ``\\Z``; other RE2-only syntax
    raises ``ValueError`` like any pattern Python cannot compile.
    """
    try:
        return re.compile(re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", text))
    except re.error as exc:
        raise ValueError(f"bad regexp {text!r}: {exc}") from None


# --- the values ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """What makes a query a template: its regexp and whether empty tags go."""

    regexp: re.Pattern[str] | None = None
    remove_empty_tags: bool = False


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    """One prepared query definition, as dnsd evaluates it.

    ``ttl`` is ``DNS.TTL`` in whole seconds (None: not set). A template's
    strings are checked when built: an interpolation that does not close or
    names something unknown raises ``ValueError``, as Consul refuses it.
    """

    id: str
    service: str
    name: str = ""
    tags: tuple[str, ...] = ()
    only_passing: bool = False
    failover_datacenters: tuple[str, ...] = ()
    service_meta: tuple[tuple[str, str], ...] = ()
    node_meta: tuple[tuple[str, str], ...] = ()
    ttl: int | None = None
    template: Template | None = None
    _compiled: tuple[tuple[_Piece, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("no ID")
        if not self.service:
            raise ValueError("no Service.Service")
        if self.ttl is not None and self.ttl < 0:
            raise ValueError(f"DNS TTL {self.ttl} is negative")
        strings = (self.service, *self.tags, *self.failover_datacenters,
                   *(value for _, value in self.service_meta),
                   *(value for _, value in self.node_meta))
        compiled: tuple[tuple[_Piece, ...], ...] = tuple(
            (s,) if self.template is None else _compile(s) for s in strings)
        object.__setattr__(self, "_compiled", compiled)

    @property
    def label(self) -> str:
        """How warnings name the query: its ID and name."""
        return _label(self.id, self.name)


def _label(ident: object, name: object) -> str:
    return f"prepared query {ident} ({name!r})" if name else f"prepared query {ident} (no name)"


@dataclass(frozen=True, slots=True)
class Rendered:
    """A query's ``Service`` strings as they apply to one asked name."""

    service: str
    tags: tuple[str, ...]
    failover_datacenters: tuple[str, ...]
    service_meta: tuple[tuple[str, str], ...]
    node_meta: tuple[tuple[str, str], ...] = ()


def render(query: PreparedQuery, name: str) -> Rendered:
    """``query``'s strings for the asked ``name`` (a template's interpolated)."""
    if query.template is None:
        return Rendered(query.service, query.tags, query.failover_datacenters,
                        query.service_meta, query.node_meta)
    groups: tuple[str, ...] = ()
    if query.template.regexp is not None:
        found = query.template.regexp.search(name)
        if found is not None:
            groups = (found.group(0), *(g or "" for g in found.groups()))
    # Go's strings.TrimPrefix: the suffix is the whole name unless it starts
    # with the template's name exactly (Consul compares case-sensitively here).
    suffix = name[len(query.name):] if name.startswith(query.name) else name
    variables = {"name.full": name, "name.prefix": query.name, "name.suffix": suffix,
                 "agent.segment": ""}
    strings = iter(_expand(pieces, variables, groups) for pieces in query._compiled)
    service = next(strings)
    tags = tuple(next(strings) for _ in query.tags)
    if query.template.remove_empty_tags:
        tags = tuple(t for t in tags if t)
    datacenters = tuple(next(strings) for _ in query.failover_datacenters)
    meta = tuple((key, next(strings)) for key, _ in query.service_meta)
    node_meta = tuple((key, next(strings)) for key, _ in query.node_meta)
    return Rendered(service, tags, datacenters, meta, node_meta)


@dataclass(frozen=True, slots=True)
class QuerySet:
    """The prepared queries of one datacenter, indexed the way names select them.

    Built from unique IDs and names (compared case-insensitively) and at most
    one empty-named template; ``ValueError`` otherwise.
    """

    queries: tuple[PreparedQuery, ...] = ()
    _by_id: Mapping[str, PreparedQuery] = field(init=False, repr=False, compare=False)
    _by_name: Mapping[str, PreparedQuery] = field(init=False, repr=False, compare=False)
    _templates: tuple[PreparedQuery, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, PreparedQuery] = {}
        by_name: dict[str, PreparedQuery] = {}
        catch_all = 0
        for query in self.queries:
            if query.id.lower() in by_id:
                raise ValueError(f"{query.label}: the ID is used twice")
            by_id[query.id.lower()] = query
            if query.name:
                if query.name.lower() in by_name:
                    raise ValueError(f"{query.label}: the name is used twice")
                by_name[query.name.lower()] = query
            elif query.template is not None:
                catch_all += 1
                if catch_all > 1:
                    raise ValueError(f"{query.label}: a second template with an empty name")
        templates = sorted((q for q in self.queries if q.template is not None),
                           key=lambda q: len(q.name), reverse=True)
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))
        object.__setattr__(self, "_by_name", MappingProxyType(by_name))
        object.__setattr__(self, "_templates", tuple(templates))

    def __len__(self) -> int:
        return len(self.queries)

    def select(self, name: str) -> PreparedQuery | None:
        """The query a DNS name selects (see the module docstring), or None.

        A template asked by its ID is None: Consul refuses to run it that way.
        """
        key = name.lower()
        if not key:
            return None
        if _UUID.match(key) and key in self._by_id:
            query = self._by_id[key]
            return None if query.template is not None else query
        exact = self._by_name.get(key)
        if exact is not None:
            return exact
        return next((t for t in self._templates if key.startswith(t.name.lower())), None)


# --- reading GET /v1/query ----------------------------------------------------------


def _strs(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} is not a list of strings")
    return tuple(value)


def _str(obj: Mapping[str, object], key: str, what: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    return value


def _obj(obj: Mapping[str, object], key: str, what: str) -> Mapping[str, object]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return value


def _definition(raw: Mapping[str, object], warn: list[str],
                label: str) -> PreparedQuery | None:
    """One listed definition as a PreparedQuery, with what dnsd evaluates
    differently from Consul added to ``warn``; None (the reason in ``warn``)
    when dnsd cannot evaluate it as Consul would. ValueError when malformed."""
    service = _obj(raw, "Service", "Service")
    template = _obj(raw, "Template", "Template")
    failover = _obj(service, "Failover", "Service.Failover")
    for key in ("Peer", "SamenessGroup"):
        if _str(service, key, f"Service.{key}"):
            warn.append(f"{label}: left out: Service.{key} reaches beyond this cluster")
            return None
    for key in ("Namespace", "Partition"):
        if _str(service, key, f"Service.{key}") not in ("", "default"):
            warn.append(f"{label}: left out: Service.{key} is not the default one")
            return None
    if service.get("Connect") is True:
        warn.append(f"{label}: left out: Service.Connect selects Connect proxies, "
                    f"which the table does not hold")
        return None
    if _strs(service.get("IgnoreCheckIDs"), "Service.IgnoreCheckIDs"):
        warn.append(f"{label}: Service.IgnoreCheckIDs ignored (the table keeps one health "
                    f"per instance): fewer instances may answer than in Consul")
    nearest = failover.get("NearestN")
    if isinstance(nearest, int) and not isinstance(nearest, bool) and nearest > 0:
        warn.append(f"{label}: Service.Failover.NearestN ignored (no network coordinates): "
                    f"failover goes to the listed datacenters only")
    datacenters = list(_strs(failover.get("Datacenters"), "Service.Failover.Datacenters"))
    targets = failover.get("Targets")
    for target in targets if isinstance(targets, list) else []:
        if isinstance(target, dict) and isinstance(target.get("Datacenter"), str) \
                and target["Datacenter"]:
            datacenters.append(target["Datacenter"])
        elif isinstance(target, dict) and target.get("PeerName"):
            warn.append(f"{label}: failover to cluster peer {target['PeerName']!r} ignored")
    meta = service.get("ServiceMeta") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("Service.ServiceMeta is not a map of strings")
    node_meta = service.get("NodeMeta") or {}
    if not isinstance(node_meta, dict) or not all(isinstance(v, str)
                                                  for v in node_meta.values()):
        raise ValueError("Service.NodeMeta is not a map of strings")
    ttl: int | None = None
    ttl_text = _str(_obj(raw, "DNS", "DNS"), "TTL", "DNS.TTL")
    if ttl_text:
        # Consul's DNS ignores a TTL it cannot use and answers with its default.
        try:
            seconds = parse_duration(ttl_text)
        except ValueError as exc:
            warn.append(f"{label}: DNS.TTL ignored: {exc}")
        else:
            if seconds < 0:
                warn.append(f"{label}: DNS.TTL {ttl_text!r} ignored: negative")
            else:
                ttl = int(seconds)
    kind = _str(template, "Type", "Template.Type")
    compiled: Template | None = None
    if kind:
        if kind != TEMPLATE_TYPE:
            raise ValueError(f"Template.Type {kind!r} is not {TEMPLATE_TYPE!r}")
        regexp = _str(template, "Regexp", "Template.Regexp")
        compiled = Template(compile_regexp(regexp) if regexp else None,
                            template.get("RemoveEmptyTags") is True)
    return PreparedQuery(
        id=_str(raw, "ID", "ID"), name=_str(raw, "Name", "Name"),
        service=_str(service, "Service", "Service.Service"),
        tags=_strs(service.get("Tags"), "Service.Tags"),
        only_passing=service.get("OnlyPassing") is True,
        failover_datacenters=tuple(datacenters),
        service_meta=tuple(sorted(meta.items())), node_meta=tuple(sorted(node_meta.items())),
        ttl=ttl, template=compiled)


def parse_queries(data: object) -> tuple[QuerySet, tuple[str, ...]]:
    """The reply of ``GET /v1/query`` as a QuerySet, and warnings.

    Never raises: a definition dnsd cannot read (no ID or Service, a bad
    template type, regexp or interpolation, a name or ID taken by an earlier
    one) is left out with a warning naming it; the others are kept.
    """
    warnings: list[str] = []
    if not isinstance(data, list):
        return QuerySet(), ("the prepared query list is not a JSON list",)
    kept: list[PreparedQuery] = []
    ids: set[str] = set()
    names: set[str] = set()
    catch_all = False
    for position, raw in enumerate(data):
        if not isinstance(raw, dict):
            warnings.append(f"prepared query #{position}: left out: not an object")
            continue
        label = _label(raw.get("ID"), raw.get("Name"))
        notes: list[str] = []
        try:
            query = _definition(raw, notes, label)
        except ValueError as exc:
            warnings.append(f"{label}: left out: {exc}")
            continue
        if query is None:
            warnings.extend(notes)
            continue
        is_catch_all = query.template is not None and not query.name
        if (query.id.lower() in ids or (query.name and query.name.lower() in names)
                or (is_catch_all and catch_all)):
            warnings.append(f"{label}: left out: its ID or name is taken by another query")
            continue
        warnings.extend(notes)
        ids.add(query.id.lower())
        if query.name:
            names.add(query.name.lower())
        catch_all = catch_all or is_catch_all
        kept.append(query)
    return QuerySet(tuple(kept)), tuple(warnings)


# --- evaluation ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a prepared query name answers: never without instances."""

    query: PreparedQuery
    service: str                    # the rendered service name
    tags: tuple[str, ...]           # the rendered tag filter
    datacenter: str                 # where the instances come from
    instances: tuple[Instance, ...]
    ttl: int | None                 # DNS.TTL seconds; None: the service TTL applies
    failovers: int = 0              # remote datacenters tried (of those the table holds)


def _qualifies(inst: Instance, only_passing: bool, required: frozenset[str],
               excluded: frozenset[str], meta: tuple[tuple[str, str], ...]) -> bool:
    # Consul's health rule, as the answer stage applies it to service names.
    if inst.health is Health.CRITICAL or (only_passing and inst.health is Health.WARNING):
        return False
    tags = {t.lower() for t in inst.tags}
    if not required <= tags or excluded & tags:
        return False
    return all(inst.meta.get(key) == value for key, value in meta)


def _node_qualifies(snapshot: Snapshot, datacenter: str, inst: Instance,
                    node_meta: tuple[tuple[str, str], ...]) -> bool:
    """Whether the instance's node carries every listed meta value (exactly)."""
    if not node_meta:
        return True
    node = snapshot.nodes.get((datacenter, inst.node.lower()))
    return node is not None and all(node.meta.get(key) == value for key, value in node_meta)


def _instances(snapshot: Snapshot, datacenter: str, rendered: Rendered,
               only_passing: bool) -> tuple[Instance, ...]:
    required = frozenset(t.lower() for t in rendered.tags if not t.startswith("!"))
    excluded = frozenset(t[1:].lower() for t in rendered.tags if t.startswith("!"))
    group = snapshot.services.get((datacenter, rendered.service.lower()), ())
    return tuple(i for i in group
                 if _qualifies(i, only_passing, required, excluded, rendered.service_meta)
                 and _node_qualifies(snapshot, datacenter, i, rendered.node_meta))


def _failover_order(listed: Iterable[str], asked: str, snapshot: Snapshot) -> list[str]:
    """The listed datacenters worth trying: each once, not the asked one, and
    only those the table holds (Consul likewise skips the ones it does not know)."""
    order: list[str] = []
    for dc in (d.lower() for d in listed):
        if dc != asked and dc in snapshot.datacenters and dc not in order:
            order.append(dc)
    return order


def resolve(queries: QuerySet, name: str, snapshot: Snapshot, *,
            datacenter: str | None = None, only_passing: bool = False) -> Resolution | None:
    """What ``<name>.query[.<datacenter>]`` answers, or None for NXDOMAIN.

    ``queries`` are the definitions of the datacenter the name asks (Consul
    keeps prepared queries per datacenter), ``datacenter`` that datacenter
    (default: the snapshot's local one). ``name`` is the label(s) before
    ``.query``, without the RFC 2782 underscore. ``only_passing`` also drops
    warning instances for every query (Consul's own DNS applies only the
    query's ``OnlyPassing``; pass False to match it exactly). See the module
    docstring for the rcode contract.
    """
    asked = (datacenter or snapshot.local_datacenter).lower()
    if asked not in snapshot.datacenters:
        return None
    name = name.lower()  # as Consul's DNS lower-cases the question
    query = queries.select(name)
    if query is None:
        return None
    rendered = render(query, name)
    passing = only_passing or query.only_passing
    found = _instances(snapshot, asked, rendered, passing)
    if found:
        return Resolution(query, rendered.service, rendered.tags, asked, found, query.ttl)
    for tried, dc in enumerate(_failover_order(rendered.failover_datacenters, asked, snapshot),
                               start=1):
        found = _instances(snapshot, dc, rendered, passing)
        if found:
            return Resolution(query, rendered.service, rendered.tags, dc, found, query.ttl,
                              tried)
    return None
