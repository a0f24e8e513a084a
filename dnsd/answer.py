"""Answers for dnsd's zones: (question, snapshot) -> records and rcode, or "not ours".

This is the one place that decides rcodes for in-zone names (see
:meth:`Answerer.lookup`). It is pure apart from its cache of built answers, which
is keyed by snapshot version: a new snapshot empties it for free. Records are
built once per (snapshot, name, type) and rendered per query by :func:`render`,
which rotates them and has ``dnsd.render`` fit them. Imports: ``model``,
``names``, ``prepared``, ``records``, ``render``, ``replycache``, ``table``,
``wire``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dnsd import records as rr
from dnsd.model import (
    LAN_IPV4,
    LAN_IPV6,
    WAN,
    WAN_IPV4,
    WAN_IPV6,
    AddressKind,
    Health,
    Instance,
    Node,
    classify_address,
)
from dnsd.names import ZoneName, hex_address, parse_reverse, parse_zone_name, split_zone
from dnsd.prepared import resolve
from dnsd.render import fitted_reply
from dnsd.replycache import ANSWERS_BYTES, ENTRY_OVERHEAD, ReplyCache
from dnsd.table import Snapshot
from dnsd.wire import NOERROR, NXDOMAIN, SERVFAIL, T_ANY, Query

log = logging.getLogger("dnsd.answer")

# How many in-zone names a CNAME chain may pass through before dnsd stops
# following it (Consul's own limit): an address naming itself cannot loop.
MAX_CHAIN = 3

_IPS = (AddressKind.IPV4, AddressKind.IPV6)


@dataclass(frozen=True, slots=True)
class ZoneSettings:
    """What the answer side needs from the configuration."""

    domains: tuple[str, ...] = ("consul",)
    ttl: int = 0                    # service and node answers, unless set below
    negative_ttl: int = 0           # the SOA minimum
    only_passing: bool = False
    ns_addresses: tuple[str, ...] = ()  # glue for ns.<domain>: the listen addresses
    node_ttl: int | None = None     # node, addr and NS answers (None: ``ttl``)
    service_ttl: tuple[tuple[str, int], ...] = ()  # (name, or prefix ending in *, seconds)
    a_record_limit: int = 0         # A/AAAA records per service answer (0: all)
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    node_meta_txt: bool = True      # node meta TXT in node and SRV answers' additional section
    translate_wan_addrs: bool = False  # remote datacenters answered at their wan addresses


@dataclass(slots=True)
class AnswerSet:
    """Built records for one (name, type) under one snapshot.

    ``extras[i]`` holds the additional records that go with ``answers[i]`` (SRV
    targets' addresses), so that what survives truncation stays consistent;
    ``late[i]`` more of them (node meta TXT), kept only when room is left after
    every kept answer's extras. ``pick_one``: only one of the answers is sent (a
    CNAME), chosen by rotation, followed by ``chains[i]`` (the records of an
    in-zone target). ``targets[i]`` is an external name that ``answers[i]``
    points to, for the handler to chase upstream ('' when there is none);
    chased records take ``ttl``. ``cap``: at most so many answers per reply
    (``--a-record-limit``), after rotation. ``_turn`` is this set's own rotation
    counter; nothing shared is shuffled.
    """

    rcode: int
    answers: tuple[bytes, ...] = ()
    authority: tuple[bytes, ...] = ()
    extras: tuple[tuple[bytes, ...], ...] = ()
    additional: tuple[bytes, ...] = ()
    pick_one: bool = False
    targets: tuple[str, ...] = ()
    chains: tuple[tuple[bytes, ...], ...] = ()
    late: tuple[tuple[bytes, ...], ...] = ()
    cap: int = 0
    ttl: int = 0
    _turn: int = field(default=0)

    def one_rrset(self) -> AnswerSet:
        """Only the first RRset: RFC 8482 4.1's minimal reply to ANY over UDP,
        so an ANY query returns no more than the plain query for that type."""
        if not self.answers or self.answers[0][:2] != rr.QNAME_POINTER:
            return self
        rtype = self.answers[0][2:4]
        keep = [i for i, rec in enumerate(self.answers)
                if rec[:2] == rr.QNAME_POINTER and rec[2:4] == rtype]
        if len(keep) == len(self.answers):
            return self

        def kept(items: tuple[tuple[bytes, ...], ...]) -> tuple[tuple[bytes, ...], ...]:
            return tuple(items[i] for i in keep) if items else ()

        return AnswerSet(self.rcode, tuple(self.answers[i] for i in keep), self.authority,
                         kept(self.extras),
                         self.additional if rtype == b"\x00\x02" else (), self.pick_one,
                         tuple(self.targets[i] for i in keep) if self.targets else (),
                         kept(self.chains), kept(self.late), self.cap, self.ttl)

    @property
    def size(self) -> int:
        """Bytes held, for the answer cache's bound."""
        return (ENTRY_OVERHEAD + sum(map(len, self.answers)) + sum(map(len, self.authority))
                + sum(len(r) for group in (*self.extras, *self.chains, *self.late)
                      for r in group)
                + sum(map(len, self.additional)) + sum(map(len, self.targets)))

    def next_turn(self) -> int:
        """The rotation offset for the next reply: each record leads in turn."""
        turn = self._turn
        self._turn = turn + 1
        return turn % len(self.answers) if self.answers else 0


def healthy(inst: Instance, only_passing: bool) -> bool:
    """Consul's rule: critical is never answered; warning unless only-passing."""
    if inst.health is Health.CRITICAL:
        return False
    return not (only_passing and inst.health is Health.WARNING)


def _dedupe(items: Sequence[bytes]) -> tuple[bytes, ...]:
    return tuple(dict.fromkeys(items))


def translate(address: str, tagged: Mapping[str, str], qtype: int, wan: bool) -> str:
    """The address Consul answers for a node or service (its agent's
    ``TranslateAddress``): asked A, the tagged ``lan_ipv4`` if any; asked AAAA,
    the tagged ``lan_ipv6`` if any; asked anything else (SRV, ANY), ``lan_ipv6``,
    else ``lan_ipv4``; otherwise the address itself. ``wan`` (a remote
    datacenter under ``--translate-wan-addrs``): the ``wan``, ``wan_ipv4`` and
    ``wan_ipv6`` tags first. The caller drops an address of the wrong family."""
    v4 = tagged.get(LAN_IPV4, "")
    v6 = tagged.get(LAN_IPV6, "")
    if wan:
        address = tagged.get(WAN) or address
        v4 = tagged.get(WAN_IPV4) or v4
        v6 = tagged.get(WAN_IPV6) or v6
    if v6 and qtype != rr.T_A:
        return v6
    if v4 and qtype != rr.T_AAAA:
        return v4
    return address


def _kind(address: str) -> AddressKind:
    """The kind of an address already normalised by the model."""
    if not address:
        return AddressKind.NONE
    if ":" in address:
        return AddressKind.IPV6
    return classify_address(address)[0]


def meta_text(key: str, value: str) -> str:
    """One node meta entry as Consul writes it in TXT: ``key=value`` (RFC 1464:
    a backquote escapes backquotes, ``=`` and edge spaces of the key, and
    backquotes of the value), or the value alone for keys starting with
    ``rfc1035-``."""
    if key.lower().startswith("rfc1035-"):
        return value
    key = key.replace("`", "``").replace("=", "`=")
    stripped = key.lstrip(" ")
    key = "` " * (len(key) - len(stripped)) + stripped
    stripped = key.rstrip(" ")
    key = stripped + "` " * (len(key) - len(stripped))
    return f"{key}={value.replace('`', '``')}"


def ttl_for_service(rules: Sequence[tuple[str, int]], name: str, default: int) -> int:
    """Consul's ``service_ttl``: the exact name's TTL, else the longest prefix
    ending in ``*`` that matches (``*`` alone matches all), else ``default``."""
    best, length = default, -1
    for pattern, seconds in rules:
        if pattern == name:
            return seconds
        if pattern.endswith("*") and name.startswith(pattern[:-1]) and len(pattern) > length:
            best, length = seconds, len(pattern)
    return best


NOT_OURS = AnswerSet(rcode=-1)
"""Cached for a name outside dnsd's zones (lookup returns None for it)."""


class Answerer:
    """Builds and caches in-zone answers. One per process; call on the loop thread."""

    def __init__(self, settings: ZoneSettings) -> None:
        self.settings = settings
        self.zones = tuple(tuple(d.encode("ascii").split(b".")) for d in settings.domains)
        self.node_ttl = settings.ttl if settings.node_ttl is None else settings.node_ttl
        self._service_rules = tuple((name.lower(), ttl) for name, ttl in settings.service_ttl)
        self._service_ttls: dict[str, int] = {}
        self._version = -1
        self._cache: ReplyCache[tuple[bytes, int], AnswerSet] = ReplyCache(ANSWERS_BYTES)
        self._soa: dict[tuple[str, bool], bytes] = {}  # (zone, owner is the qname) -> SOA

    def lookup(self, query: Query, snapshot: Snapshot) -> AnswerSet | None:
        """The answer for ``query``, or None when the name is not ours.

        The rcode contract for names in dnsd's zones (the most specific zone
        holds a name):
        - a known name with records of the asked type: NOERROR with them (AA);
        - a known name without that type (a service with no IPv6 instance asked
          AAAA, the apex asked A, a node without meta asked TXT): NOERROR, no
          answers, SOA in authority. Never NXDOMAIN: musl drops the A answer
          when the parallel AAAA is NXDOMAIN;
        - an address that is a host name: NOERROR with a CNAME, followed by the
          target's records when the target is in dnsd's zones (the handler
          chases an external one upstream);
        - an unknown service, node, datacenter or prepared query, a service
          (or prepared query) whose every instance is unhealthy or lacks the
          asked tag, and a name that parses as nothing: NXDOMAIN with the SOA,
          as Consul answers; a prepared query that cannot be evaluated is
          logged and NXDOMAIN too;
        - but while a registry source has not served its first view
          (``snapshot.pending``), such an unknown service, node, datacenter or
          prepared query is SERVFAIL, not AA: it may exist there, and an
          NXDOMAIN would be cached by resolvers (RFC 2308). A name that
          parses as nothing is NXDOMAIN still.
        A PTR name outside the zones is ours only when the address is in the
        table: one PTR, a node's name before a service's, TTL 0 (as Consul).
        Class, opcode and EDNS errors are the handler's to answer.
        """
        if snapshot.version != self._version:
            self._cache.clear()
            self._soa.clear()
            self._version = snapshot.version
        cache_key = (query.key, query.qtype)
        found = self._cache.get(cache_key)
        if found is None:
            found = self._build(query, snapshot) or NOT_OURS
            self._cache.put(cache_key, found)
        return None if found is NOT_OURS else found

    def soa(self, zone: str, at_qname: bool, snapshot: Snapshot) -> bytes:
        """The zone's SOA record, built once per table version.

        Its serial is the time the table was built, so it changes when the
        table does and only then (two negative answers a second apart carry
        the same serial). ``at_qname``: owned by the question's name (the
        apex asked SOA), else by the zone's name (negative answers)."""
        key = (zone, at_qname)
        record = self._soa.get(key)
        if record is None:
            s = self.settings
            owner = rr.QNAME_POINTER if at_qname else rr.name(zone)
            record = rr.soa(owner, zone, int(snapshot.built_at), s.negative_ttl,
                            s.soa_refresh, s.soa_retry, s.soa_expire)
            self._soa[key] = record
        return record

    def service_ttl(self, name: str) -> int:
        """The TTL of a service's answers (``--service-ttl``, else ``--ttl``)."""
        ttl = self._service_ttls.get(name)
        if ttl is None:
            ttl = ttl_for_service(self._service_rules, name, self.settings.ttl)
            if len(self._service_ttls) < 65536:  # names come from the table, not from askers
                self._service_ttls[name] = ttl
        return ttl

    def in_zone(self, name: str) -> tuple[str, ZoneName] | None:
        """A host name (normalised, no trailing dot) in dnsd's zones, parsed."""
        found = split_zone(name.encode("ascii").split(b"."), self.zones)
        if found is None:
            return None
        index, relative = found
        zone = self.settings.domains[index]
        return zone, parse_zone_name(relative, zone)

    # --- building ---------------------------------------------------------

    def _build(self, query: Query, snapshot: Snapshot) -> AnswerSet | None:
        labels = query.labels()
        found = split_zone(labels, self.zones)
        if found is None:
            if query.qtype in (rr.T_PTR, T_ANY):
                return self._reverse(labels, snapshot)
            return None
        index, relative = found
        zone = self.settings.domains[index]
        parsed = parse_zone_name(relative, zone, srv=query.qtype == rr.T_SRV)
        builder = _Builder(self, zone, query.qtype, snapshot, chain=(query.text()[:-1],))
        return builder.build(parsed)

    def _reverse(self, labels: list[bytes], snapshot: Snapshot) -> AnswerSet | None:
        address = parse_reverse(labels)
        if address is None:
            return None
        entries = snapshot.reverse.get(address)
        if not entries:
            return None
        # One name, as Consul answers: a node's before a service's, the local
        # datacenter's first; TTL 0, as Consul's.
        local = snapshot.local_datacenter
        entry = min(entries, key=lambda e: (e.kind != "node", e.datacenter != local))
        target = f"{entry.name}.{entry.kind}.{entry.datacenter}.{self.settings.domains[0]}"
        return AnswerSet(NOERROR, (rr.ptr(rr.QNAME_POINTER, 0, target),))


class _Builder:
    """Builds one AnswerSet; a throwaway object so the helpers share context.

    ``owner`` is the wire name the records belong to: the question (a pointer
    to it) or, when following an in-zone CNAME, the target's name; then
    ``chain`` holds the names followed to get here (the question first) and
    ``chased_ttl`` gives every record the TTL of the name that pointed here
    (as Consul does).
    """

    def __init__(self, answerer: Answerer, zone: str, qtype: int, snapshot: Snapshot,
                 owner: bytes = rr.QNAME_POINTER, chain: tuple[str, ...] = (),
                 chased_ttl: int | None = None) -> None:
        self.answerer = answerer
        self.s = answerer.settings
        self.zone = zone
        self.qtype = qtype
        self.snapshot = snapshot
        self.owner = owner
        self.chain = chain
        self.chased_ttl = chased_ttl

    # the negative outcomes, both with the SOA in authority (RFC 2308 3)
    def soa(self) -> bytes:
        return self.answerer.soa(self.zone, False, self.snapshot)

    def nxdomain(self) -> AnswerSet:
        return AnswerSet(NXDOMAIN, authority=(self.soa(),))

    def nodata(self) -> AnswerSet:
        return AnswerSet(NOERROR, authority=(self.soa(),))

    def missing(self) -> AnswerSet:
        """A name the table does not hold: NXDOMAIN, or SERVFAIL while a
        registry source that might hold it has not been heard yet."""
        if self.snapshot.pending:
            return AnswerSet(SERVFAIL)
        return self.nxdomain()

    def wants(self, rtype: int) -> bool:
        return self.qtype == rtype or self.qtype == T_ANY

    def fits(self, kind: AddressKind) -> bool:
        """Whether an address of this kind answers the question's type."""
        if kind is AddressKind.IPV4:
            return self.wants(rr.T_A)
        return kind is AddressKind.IPV6 and self.wants(rr.T_AAAA)

    def node_ttl(self) -> int:
        return self.answerer.node_ttl if self.chased_ttl is None else self.chased_ttl

    def service_ttl(self, name: str) -> int:
        return self.answerer.service_ttl(name) if self.chased_ttl is None else self.chased_ttl

    def wan(self, dc: str) -> bool:
        return self.s.translate_wan_addrs and dc != self.snapshot.local_datacenter

    def build(self, parsed: ZoneName) -> AnswerSet:
        if parsed.kind == "apex":
            return self.apex()
        if parsed.kind == "ns":
            return self.addresses(list(self.s.ns_addresses), self.node_ttl())
        if parsed.kind == "addr":
            return self.addresses([parsed.address], self.node_ttl())
        if parsed.kind == "invalid":
            return self.nxdomain()
        dc = parsed.datacenter or self.snapshot.local_datacenter
        if dc not in self.snapshot.datacenters:
            return self.missing()
        if parsed.kind == "service":
            return self.service(parsed, dc)
        if parsed.kind == "node":
            return self.node(parsed, dc)
        if parsed.kind == "query":
            return self.prepared(parsed, dc)
        return self.nxdomain()  # connect, ingress, virtual: nothing dnsd serves

    def apex(self) -> AnswerSet:
        answers: list[bytes] = []
        additional: list[bytes] = []
        ttl = self.node_ttl()
        if self.wants(rr.T_SOA):
            at_qname = self.owner == rr.QNAME_POINTER  # else the zone's own name, the same
            answers.append(self.answerer.soa(self.zone, at_qname, self.snapshot))
        if self.wants(rr.T_NS):
            answers.append(rr.ns(self.owner, ttl, f"ns.{self.zone}"))
            glue = rr.name(f"ns.{self.zone}")
            additional.extend(rr.address(glue, ttl, ip) for ip in self.s.ns_addresses)
        if not answers:
            return self.nodata()
        return AnswerSet(NOERROR, tuple(answers), additional=tuple(additional))

    def addresses(self, ips: list[str], ttl: int) -> AnswerSet:
        """A/AAAA answers for a name that exists; NODATA when none of the type."""
        records = [rr.address(self.owner, ttl, ip) for ip in ips if self.fits(_kind(ip))]
        if not records:
            return self.nodata()
        return AnswerSet(NOERROR, _dedupe(records))

    # --- nodes ------------------------------------------------------------

    def meta_txt(self, owner: bytes, node: Node | None, ttl: int) -> tuple[bytes, ...]:
        """A node's meta as TXT records, one per key (sorted), as Consul serves them."""
        if node is None or not node.meta:
            return ()
        return tuple(rr.txt(owner, ttl, meta_text(key, node.meta[key]))
                     for key in sorted(node.meta))

    def node(self, parsed: ZoneName, dc: str) -> AnswerSet:
        node = self.snapshot.nodes.get((dc, parsed.name))
        if node is None:
            return self.missing()
        ttl = self.node_ttl()
        meta = self.meta_txt(self.owner, node, ttl)
        if self.qtype == rr.T_TXT:
            return AnswerSet(NOERROR, meta) if meta else self.nodata()
        address = translate(node.address, node.tagged_addresses, self.qtype, self.wan(dc))
        kind = _kind(address)
        extra = meta if self.s.node_meta_txt or self.qtype == T_ANY else ()
        if kind is AddressKind.HOSTNAME and self.qtype in (rr.T_A, rr.T_AAAA, T_ANY):
            found = self.cnames([address], ttl)
            found.additional = extra
            return found
        answers: tuple[bytes, ...] = (
            (rr.address(self.owner, ttl, address),) if self.fits(kind) else ())
        if self.qtype == T_ANY:
            answers += meta
        elif not answers:
            return self.nodata()
        return AnswerSet(NOERROR, answers, additional=() if self.qtype == T_ANY else extra)

    # --- CNAMEs -------------------------------------------------------------

    def cnames(self, targets: Sequence[str], ttl: int) -> AnswerSet:
        """One CNAME per host name, of which each reply carries one (rotated);
        an in-zone target's records follow it, an external one is for the
        handler to chase."""
        answers, chains, external = [], [], []
        for target in dict.fromkeys(targets):
            answers.append(rr.cname(self.owner, ttl, target))
            chain = self.follow(target, self.qtype, ttl)
            chains.append(chain if chain is not None else ())
            external.append("" if chain is not None else target)
        return AnswerSet(NOERROR, tuple(answers), pick_one=True,
                         targets=tuple(external) if any(external) else (),
                         chains=tuple(chains), ttl=ttl)

    def follow(self, target: str, qtype: int, ttl: int) -> tuple[bytes, ...] | None:
        """The records an in-zone ``target`` answers for ``qtype`` (a CNAME's
        chain, never forwarded: the name is dnsd's), with ``ttl``; None when
        the target is not in dnsd's zones. An empty chain when it has none,
        or the chain is too long."""
        found = self.answerer.in_zone(target)
        if found is None:
            return None
        if target in self.chain or len(self.chain) > MAX_CHAIN:
            log.debug("CNAME chain %s -> %s loops or is too long; not followed",
                      " -> ".join(self.chain), target)
            return ()
        zone, parsed = found
        sub = _Builder(self.answerer, zone, qtype, self.snapshot, rr.name(target),
                       (*self.chain, target), ttl)
        result = sub.build(parsed)
        if result.rcode != NOERROR or not result.answers:
            return ()
        if result.pick_one:
            return (result.answers[0], *result.chains[0])
        return result.answers

    def names_itself(self, host: str, inst: Instance, dc: str) -> bool:
        """Whether a service's host name address is a name of that very service
        (Consul then answers the node's address instead of a CNAME loop)."""
        found = self.answerer.in_zone(host)
        if found is None:
            return False
        parsed = found[1]
        return (parsed.kind == "service" and parsed.name == inst.service.lower()
                and (parsed.datacenter or self.snapshot.local_datacenter) == dc)

    # --- services ---------------------------------------------------------

    def service(self, parsed: ZoneName, dc: str) -> AnswerSet:
        group = self.snapshot.services.get((dc, parsed.name), ())
        tag = parsed.tag
        live = [i for i in group if healthy(i, self.s.only_passing)
                and (tag is None or any(t.lower() == tag for t in i.tags))]
        if not live:
            return self.missing()
        return self.instances(live, dc, self.service_ttl(parsed.name))

    def prepared(self, parsed: ZoneName, dc: str) -> AnswerSet:
        """A prepared query, evaluated against the table (``dnsd.prepared``)."""
        queries = self.snapshot.prepared.get(dc)
        if queries is None:
            return self.missing()
        try:
            found = resolve(queries, parsed.name, self.snapshot, datacenter=dc,
                            only_passing=self.s.only_passing)
        except Exception:  # a definition dnsd cannot evaluate harms no other name
            log.warning("prepared query %r in %s could not be evaluated", parsed.name, dc,
                        exc_info=True)
            return self.nxdomain()
        if found is None:
            return self.missing()
        ttl = found.ttl if found.ttl is not None else self.service_ttl(found.service.lower())
        if self.chased_ttl is not None:
            ttl = self.chased_ttl
        return self.instances(list(found.instances), found.datacenter, ttl)

    def instances(self, live: list[Instance], dc: str, ttl: int) -> AnswerSet:
        """The records of healthy instances for the question's type."""
        if self.qtype == rr.T_SRV:
            return self.srv(live, dc, ttl)
        if self.qtype not in (rr.T_A, rr.T_AAAA, T_ANY):
            return self.nodata()
        wan = self.wan(dc)
        records: list[bytes] = []
        hosts: list[str] = []
        for inst in live:
            node = self.snapshot.nodes.get((dc, inst.node.lower()))
            address, kind = self.instance_address(inst, node, self.qtype, wan, dc)
            if kind is AddressKind.HOSTNAME:
                hosts.append(address)
            elif self.fits(kind):
                records.append(rr.address(self.owner, ttl, address))
        if records:
            return AnswerSet(NOERROR, _dedupe(records), cap=self.s.a_record_limit)
        if hosts:  # an external service: one CNAME, rotated among the hosts
            return self.cnames(hosts, ttl)
        return self.nodata()

    def instance_address(self, inst: Instance, node: Node | None, qtype: int, wan: bool,
                         dc: str) -> tuple[str, AddressKind]:
        """The address an instance is answered at, and its kind (Consul's
        rules): its own, translated; else its node's; a host name naming the
        service itself gives way to the node's address. Without tagged
        addresses, the kinds the model worked out are used as they are."""
        own, own_kind = inst.address, inst.address_kind
        if inst.tagged_addresses:
            own = translate(own, {t: a.address for t, a in inst.tagged_addresses.items()},
                            qtype, wan)
            own_kind = inst.address_kind if own == inst.address else _kind(own)
        node_address, node_kind = inst.node_address, inst.node_address_kind
        if node is not None and node.tagged_addresses:
            node_address = translate(node_address, node.tagged_addresses, qtype, wan)
            if node_address != inst.node_address:
                node_kind = _kind(node_address)
        if not own:
            return node_address, node_kind
        if (own_kind is AddressKind.HOSTNAME and node_kind in _IPS
                and self.names_itself(own, inst, dc)):
            return node_address, node_kind
        return own, own_kind

    def srv(self, live: list[Instance], dc: str, ttl: int) -> AnswerSet:
        """SRV records as Consul builds them: priority 1, the health weight, a
        target of the node's name when the instance is at its node's own
        address, of ``<hex>.addr`` for another IP address (its own, or a
        translated one), or the host name; the target's records go with it."""
        wan = self.wan(dc)
        answers: list[bytes] = []
        seen: set[bytes] = set()
        extras: list[tuple[bytes, ...]] = []
        late: list[tuple[bytes, ...]] = []
        targets: list[str] = []
        for inst in live:
            node = self.snapshot.nodes.get((dc, inst.node.lower()))
            address, kind = self.instance_address(inst, node, rr.T_SRV, wan, dc)
            node_fqdn = f"{inst.node.lower()}.node.{dc}.{self.zone}"
            external = ""
            if kind is AddressKind.HOSTNAME:
                target = address
                chain = [*(self.follow(address, rr.T_A, ttl) or ()),
                         *(self.follow(address, rr.T_AAAA, ttl) or ())]
                extra = _dedupe(chain)
                if self.answerer.in_zone(address) is None:
                    external = address
            elif kind in _IPS:
                at_node = (not inst.address or self.names_itself(inst.address, inst, dc)) \
                    and address == inst.node_address
                target = node_fqdn if at_node else \
                    f"{hex_address(address)}.addr.{dc}.{self.zone}"
                extra = (rr.address(rr.name(target), ttl, address),)
            else:
                continue
            port = inst.port
            wan_address = inst.tagged_addresses.get(WAN) if wan else None
            if wan_address is not None and wan_address.port:
                port = wan_address.port
            record = rr.srv(self.owner, ttl, 1, inst.weight, port, target)
            if record in seen:
                continue
            seen.add(record)
            answers.append(record)
            extras.append(extra)
            targets.append(external)
            late.append(self.meta_txt(rr.name(node_fqdn), node, ttl)
                        if self.s.node_meta_txt else ())
        if not answers:
            return self.nodata()
        return AnswerSet(NOERROR, tuple(answers), extras=tuple(extras),
                         targets=tuple(targets) if any(targets) else (),
                         late=tuple(late) if any(late) else (), ttl=ttl)


def render(query: Query, answer: AnswerSet, *, limit: int, answer_cap: int = 0,
           ra: bool = False, turn: int | None = None) -> bytes:
    """The reply to ``query``: rotated, capped, and fitted into ``limit`` bytes
    by :func:`dnsd.render.fitted_reply` (whole records; additional records dropped
    first without TC; TC when answers or authority do not fit).

    ``answer_cap`` (Consul's udp_answer_limit) and the answer set's own ``cap``
    (``--a-record-limit``) trim answers without TC. ``turn`` picks the
    rotation; by default the answer set's own counter does. Each record is
    built to stand alone, so each additional record is a unit of its own, an
    SRV target's address goes with its SRV record, and node meta TXT comes
    after every kept answer's addresses. SERVFAIL is not authoritative.
    """
    answers = answer.answers
    extras = answer.extras
    late = answer.late
    chain: tuple[bytes, ...] = ()
    if len(answers) > 1 or answer.pick_one:
        if turn is None:
            turn = answer.next_turn()
        else:
            turn %= len(answers)
        if turn:
            answers = answers[turn:] + answers[:turn]
            if extras:
                extras = extras[turn:] + extras[:turn]
            if late:
                late = late[turn:] + late[:turn]
        if answer.pick_one:
            answers = answers[:1]
            if answer.chains:
                chain = answer.chains[turn]
        caps = [c for c in (answer_cap, answer.cap) if c]
        if caps and len(answers) > min(caps):
            answers = answers[:min(caps)]
    additional: list[tuple[bytes, ...]] = []
    for group in late[:len(answers)]:
        additional.extend((record,) for record in group)
    additional.extend((record,) for record in answer.additional)
    return fitted_reply(query, answer.rcode, limit=limit, aa=answer.rcode != SERVFAIL, ra=ra,
                        answers=answers + chain if chain else answers,
                        authority=answer.authority, additional=additional, extras=extras)
