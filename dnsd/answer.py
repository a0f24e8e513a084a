"""Answers for dnsd's zones: (question, snapshot) -> records and rcode, or "not ours".

This is the one place that decides rcodes for in-zone names (see
:meth:`Answerer.lookup`). It is pure apart from its cache of built answers, which
is keyed by snapshot version: a new snapshot empties it for free. Records are
built once per (snapshot, name, type) and rendered per query by :func:`render`,
which rotates them and has ``dnsd.render`` fit them. Imports: ``model``,
``names``, ``records``, ``render``, ``replycache``, ``table``, ``wire``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dnsd import records as rr
from dnsd.model import AddressKind, Health, Instance
from dnsd.names import ZoneName, hex_address, parse_reverse, parse_zone_name, split_zone
from dnsd.render import fitted_reply
from dnsd.replycache import ANSWERS_BYTES, ENTRY_OVERHEAD, ReplyCache
from dnsd.table import Snapshot
from dnsd.wire import NOERROR, NXDOMAIN, T_ANY, Query


@dataclass(frozen=True, slots=True)
class ZoneSettings:
    """What the answer side needs from the configuration."""

    domains: tuple[str, ...] = ("consul",)
    ttl: int = 0
    negative_ttl: int = 0
    only_passing: bool = False
    ns_addresses: tuple[str, ...] = ()  # glue for ns.<domain>: the listen addresses


@dataclass(slots=True)
class AnswerSet:
    """Built records for one (name, type) under one snapshot.

    ``extras[i]`` holds the additional records that go with ``answers[i]`` (SRV
    targets' addresses), so that what survives truncation stays consistent.
    ``pick_one``: only one of the answers is sent (a CNAME), chosen by rotation;
    ``targets[i]`` is then the name ``answers[i]`` points to, for chasing.
    ``_turn`` is this set's own rotation counter; nothing shared is shuffled.
    """

    rcode: int
    answers: tuple[bytes, ...] = ()
    authority: tuple[bytes, ...] = ()
    extras: tuple[tuple[bytes, ...], ...] = ()
    additional: tuple[bytes, ...] = ()
    pick_one: bool = False
    targets: tuple[str, ...] = ()
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
        return AnswerSet(self.rcode, tuple(self.answers[i] for i in keep), self.authority,
                         tuple(self.extras[i] for i in keep) if self.extras else (),
                         self.additional if rtype == b"\x00\x02" else (), self.pick_one)

    @property
    def size(self) -> int:
        """Bytes held, for the answer cache's bound."""
        return (ENTRY_OVERHEAD + sum(map(len, self.answers)) + sum(map(len, self.authority))
                + sum(len(r) for group in self.extras for r in group)
                + sum(map(len, self.additional)))

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


NOT_OURS = AnswerSet(rcode=-1)
"""Cached for a name outside dnsd's zones (lookup returns None for it)."""


class Answerer:
    """Builds and caches in-zone answers. One per process; call on the loop thread."""

    def __init__(self, settings: ZoneSettings) -> None:
        self.settings = settings
        self._zones = tuple(tuple(d.encode("ascii").split(b".")) for d in settings.domains)
        self._version = -1
        self._cache: ReplyCache[tuple[bytes, int], AnswerSet] = ReplyCache(ANSWERS_BYTES)
        self._soa: dict[tuple[str, bool], bytes] = {}  # (zone, owner is the qname) -> SOA

    def lookup(self, query: Query, snapshot: Snapshot) -> AnswerSet | None:
        """The answer for ``query``, or None when the name is not ours.

        The rcode contract for names in dnsd's zones:
        - a known name with records of the asked type: NOERROR with them (AA);
        - a known name without that type (a service with no IPv6 instance asked
          AAAA, the apex asked A): NOERROR, no answers, SOA in authority. Never
          NXDOMAIN: musl drops the A answer when the parallel AAAA is NXDOMAIN;
        - an unknown service, node or datacenter, a service whose every instance
          is unhealthy or lacks the asked tag, and a name that parses as nothing:
          NXDOMAIN with the SOA, as Consul answers.
        A PTR name outside the zones is ours only when the address is in the
        table. Class, opcode and EDNS errors are the handler's to answer.
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
            owner = rr.QNAME_POINTER if at_qname else rr.name(zone)
            record = rr.soa(owner, zone, int(snapshot.built_at), self.settings.negative_ttl)
            self._soa[key] = record
        return record

    # --- building ---------------------------------------------------------

    def _build(self, query: Query, snapshot: Snapshot) -> AnswerSet | None:
        labels = query.labels()
        found = split_zone(labels, self._zones)
        if found is None:
            if query.qtype in (rr.T_PTR, T_ANY):
                return self._reverse(labels, snapshot)
            return None
        index, relative = found
        zone = self.settings.domains[index]
        parsed = parse_zone_name(relative, zone)
        builder = _Builder(self, zone, query.qtype, snapshot)
        return builder.build(parsed)

    def _reverse(self, labels: list[bytes], snapshot: Snapshot) -> AnswerSet | None:
        address = parse_reverse(labels)
        if address is None:
            return None
        entries = snapshot.reverse.get(address)
        if not entries:
            return None
        zone = self.settings.domains[0]
        targets = [f"{e.name}.{e.kind}.{e.datacenter}.{zone}" for e in entries]
        return AnswerSet(NOERROR, _dedupe(
            [rr.ptr(rr.QNAME_POINTER, self.settings.ttl, t) for t in targets]))


class _Builder:
    """Builds one AnswerSet; a throwaway object so the helpers share context."""

    def __init__(self, answerer: Answerer, zone: str, qtype: int, snapshot: Snapshot) -> None:
        self.answerer = answerer
        self.s = answerer.settings
        self.zone = zone
        self.qtype = qtype
        self.snapshot = snapshot
        self.ttl = self.s.ttl

    # the two negative outcomes, both with the SOA in authority (RFC 2308 3)
    def soa(self) -> bytes:
        return self.answerer.soa(self.zone, False, self.snapshot)

    def nxdomain(self) -> AnswerSet:
        return AnswerSet(NXDOMAIN, authority=(self.soa(),))

    def nodata(self) -> AnswerSet:
        return AnswerSet(NOERROR, authority=(self.soa(),))

    def wants(self, rtype: int) -> bool:
        return self.qtype == rtype or self.qtype == T_ANY

    def build(self, parsed: ZoneName) -> AnswerSet:
        if parsed.kind == "apex":
            return self.apex()
        if parsed.kind == "ns":
            return self.addresses(list(self.s.ns_addresses))
        dc = parsed.datacenter or self.snapshot.local_datacenter
        if parsed.kind == "addr":
            return self.addresses([parsed.address])
        if dc not in self.snapshot.datacenters:
            return self.nxdomain()
        if parsed.kind == "service":
            return self.service(parsed, dc)
        if parsed.kind == "node":
            node = self.snapshot.nodes.get((dc, parsed.name))
            if node is None:
                return self.nxdomain()
            if node.address_kind is AddressKind.HOSTNAME:
                return AnswerSet(NOERROR, (rr.cname(rr.QNAME_POINTER, self.ttl, node.address),),
                                 pick_one=True, targets=(node.address,))
            return self.addresses([node.address] if node.address else [])
        return self.nxdomain()

    def apex(self) -> AnswerSet:
        answers: list[bytes] = []
        additional: list[bytes] = []
        if self.wants(rr.T_SOA):
            answers.append(self.answerer.soa(self.zone, True, self.snapshot))
        if self.wants(rr.T_NS):
            answers.append(rr.ns(rr.QNAME_POINTER, self.ttl, f"ns.{self.zone}"))
            glue = rr.name(f"ns.{self.zone}")
            additional.extend(rr.address(glue, self.ttl, ip) for ip in self.s.ns_addresses)
        if not answers:
            return self.nodata()
        return AnswerSet(NOERROR, tuple(answers), additional=tuple(additional))

    def addresses(self, ips: list[str]) -> AnswerSet:
        """A/AAAA answers for a name that exists; NODATA when none of the type."""
        records = []
        for ip in ips:
            is_v6 = ":" in ip
            if (self.wants(rr.T_AAAA) if is_v6 else self.wants(rr.T_A)):
                records.append(rr.address(rr.QNAME_POINTER, self.ttl, ip))
        if not records:
            return self.nodata()
        return AnswerSet(NOERROR, _dedupe(records))

    def service(self, parsed: ZoneName, dc: str) -> AnswerSet:
        group = self.snapshot.services.get((dc, parsed.name), ())
        tag = parsed.tag
        live = [i for i in group if healthy(i, self.s.only_passing)
                and (tag is None or any(t.lower() == tag for t in i.tags))]
        if not live:
            return self.nxdomain()
        if self.qtype == rr.T_SRV:
            return self.srv(live, dc)
        ips = [i.effective_address for i in live
               if i.effective_kind in (AddressKind.IPV4, AddressKind.IPV6)]
        if not ips:
            targets = tuple(dict.fromkeys(i.effective_address for i in live
                                          if i.effective_kind is AddressKind.HOSTNAME))
            if targets:  # an external service: one CNAME, rotated among the hosts
                hosts = tuple(rr.cname(rr.QNAME_POINTER, self.ttl, t) for t in targets)
                return AnswerSet(NOERROR, hosts, pick_one=True, targets=targets)
        return self.addresses(ips)

    def srv(self, live: list[Instance], dc: str) -> AnswerSet:
        answers: list[bytes] = []
        extras: list[tuple[bytes, ...]] = []
        for inst in live:
            extra: tuple[bytes, ...] = ()
            if inst.address_kind is AddressKind.HOSTNAME:
                target = inst.address
            elif inst.address:
                target = f"{hex_address(inst.address)}.addr.{dc}.{self.zone}"
                extra = (rr.address(rr.name(target), self.ttl, inst.address),)
            else:
                target = f"{inst.node.lower()}.node.{dc}.{self.zone}"
                if inst.node_address_kind in (AddressKind.IPV4, AddressKind.IPV6):
                    extra = (rr.address(rr.name(target), self.ttl, inst.node_address),)
                elif inst.node_address_kind is AddressKind.HOSTNAME:
                    extra = (rr.cname(rr.name(target), self.ttl, inst.node_address),)
            record = rr.srv(rr.QNAME_POINTER, self.ttl, 1, inst.weight, inst.port, target)
            if record in answers:
                continue
            answers.append(record)
            extras.append(extra)
        return AnswerSet(NOERROR, tuple(answers), extras=tuple(extras))


def render(query: Query, answer: AnswerSet, *, limit: int, answer_cap: int = 0,
           ra: bool = False, turn: int | None = None) -> bytes:
    """The reply to ``query``: rotated, capped, and fitted into ``limit`` bytes
    by :func:`dnsd.render.fitted_reply` (whole records; additional records dropped
    first without TC; TC when answers or authority do not fit).

    ``answer_cap`` (Consul's udp_answer_limit) trims answers without TC.
    ``turn`` picks the rotation; by default the answer set's own counter does.
    Each record is built to stand alone, so each additional record is a unit of
    its own, and an SRV target's address goes with its SRV record.
    """
    answers = answer.answers
    extras = answer.extras
    if len(answers) > 1:
        if turn is None:
            turn = answer.next_turn()
        else:
            turn %= len(answers)
        if turn:
            answers = answers[turn:] + answers[:turn]
            if extras:
                extras = extras[turn:] + extras[:turn]
        if answer.pick_one:
            answers = answers[:1]
        if answer_cap and len(answers) > answer_cap:
            answers = answers[:answer_cap]
    additional = [(record,) for record in answer.additional] if answer.additional else ()
    return fitted_reply(query, answer.rcode, limit=limit, aa=True, ra=ra, answers=answers,
                        authority=answer.authority, additional=additional, extras=extras)
