"""The name parser: what an in-zone question name asks for, as Consul reads it.

Pure functions over lower-cased labels; no table, no records. Kept apart from
lookup and record building (the lesson of Consul's own ``agent/dns/parser.go``).
Imports: the standard library only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Label kinds Consul knows. dnsd serves service, node, addr and query; the
# others parse (so the datacenter rules apply) and then find nothing: NXDOMAIN,
# as in Consul without Connect.
_KINDS = frozenset({"service", "node", "addr", "query", "connect", "ingress", "virtual"})


@dataclass(frozen=True, slots=True)
class ZoneName:
    """An in-zone name taken apart.

    ``kind`` is ``apex``, ``ns`` (the name server name), ``service``, ``node``,
    ``addr``, ``query`` (a prepared query: ``name`` is its name or ID), another
    Consul kind, or ``invalid`` (parses as nothing: NXDOMAIN). ``datacenter`` is
    None when the name omits it (the local one applies).
    """

    kind: str
    zone: str
    name: str = ""
    tag: str | None = None
    datacenter: str | None = None
    address: str = ""


def split_zone(labels: list[bytes], zones: tuple[tuple[bytes, ...], ...]
               ) -> tuple[int, list[bytes]] | None:
    """Which zone (index into ``zones``) holds the name, and the labels before it.

    The most specific zone wins: with ``consul`` and ``test.consul`` both
    served, ``x.node.test.consul`` is ``x.node`` in ``test.consul`` (as Consul
    trims the longer of its domain and alt domain first)."""
    best: tuple[int, list[bytes]] | None = None
    for index, zone in enumerate(zones):
        size = len(zone)
        if (len(labels) >= size and tuple(labels[len(labels) - size:]) == zone
                and (best is None or size > len(zones[best[0]]))):
            best = index, labels[:len(labels) - size]
    return best


def parse_locality(labels: list[str]) -> tuple[bool, str | None]:
    """The datacenter the labels after the kind name, as Consul's open-source
    edition reads them: none; ``<dc>``; or ``<dc>.dc`` (also twice, the last
    one winning). Anything else (``.peer``, ``.ns``, ``.ap``: cluster peers,
    namespaces and partitions, which dnsd does not serve) is (False, None)."""
    if not labels:
        return True, None
    if len(labels) == 1:
        return True, labels[0]
    if len(labels) not in (2, 4):
        return False, None
    datacenter = None
    for value, key in zip(labels[::2], labels[1::2], strict=True):
        if key != "dc":
            return False, None
        datacenter = value
    return True, datacenter


def parse_zone_name(relative: list[bytes], zone: str, srv: bool = False) -> ZoneName:
    """Parse the labels left of the zone (all lower-case).

    ``srv``: the question asks SRV, where Consul also reads the RFC 2782 form
    without ``.service`` (``_db._tcp.consul``, ``_db._primary.dc1.consul``).
    """
    try:
        parts = [label.decode("ascii") for label in relative]
    except UnicodeDecodeError:
        return ZoneName("invalid", zone)
    if not parts:
        return ZoneName("apex", zone)
    if parts == ["ns"]:
        return ZoneName("ns", zone)
    # The rightmost kind label splits the name: what follows is the datacenter.
    # Asked SRV, an underscore label splits it too, and is part of the name.
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in _KINDS:
            kind = parts[index]
            before, after = parts[:index], parts[index + 1:]
            break
        if srv and parts[index].startswith("_"):
            kind = "service"
            before, after = parts[:index + 1], parts[index + 1:]
            break
    else:
        return ZoneName("invalid", zone)
    if not before:
        return ZoneName("invalid", zone)

    if kind == "addr":  # Consul ignores what follows addr: the address says it all
        address = parse_hex_address(before[0]) if len(before) == 1 else None
        if address is None:
            return ZoneName("invalid", zone)
        return ZoneName("addr", zone, before[0], None, after[0] if after else None, address)
    if kind == "query":
        # Only <name>.query[.<dc>]; the name may hold dots. _<name>._<proto>
        # is RFC 2782's form: the protocol label is ignored.
        if len(after) > 1:
            return ZoneName("invalid", zone)
        if len(before) >= 2 and before[0].startswith("_") and before[-1].startswith("_"):
            name = ".".join(before[:-1])[1:]
        else:
            name = ".".join(before)
        return ZoneName("query", zone, name, None, after[0] if after else None)
    found, datacenter = parse_locality(after)
    if not found:
        return ZoneName("invalid", zone)
    if kind == "service":
        if len(before) == 2 and before[0].startswith("_") and before[1].startswith("_"):
            # RFC 2782: _name._tag; only _tcp means "no tag" (as in Consul: _udp
            # is a tag like any other).
            tag: str | None = before[1][1:]
            if tag == "tcp":
                tag = None
            return ZoneName("service", zone, before[0][1:], tag, datacenter)
        # Consul joins extra labels into the tag: a.b.web.service -> tag "a.b".
        tag = ".".join(before[:-1]) or None
        return ZoneName("service", zone, before[-1], tag, datacenter)
    if kind == "node":
        return ZoneName("node", zone, ".".join(before), None, datacenter)
    return ZoneName(kind, zone, ".".join(before), None, datacenter)


def parse_hex_address(label: str) -> str | None:
    """``0a000001`` -> ``10.0.0.1``; 32 hex digits -> an IPv6 address; else None."""
    if len(label) not in (8, 32):
        return None
    try:
        raw = bytes.fromhex(label)
    except ValueError:
        return None
    return str(ipaddress.ip_address(raw))


def hex_address(address: str) -> str:
    """The label Consul uses for an address in ``<hex>.addr.<dc>.<domain>``."""
    return ipaddress.ip_address(address).packed.hex()


def parse_reverse(labels: list[bytes]) -> str | None:
    """The address a PTR name asks about (RFC 1035 3.5, RFC 3596 2.5), or None."""
    try:
        parts = [label.decode("ascii") for label in labels]
    except UnicodeDecodeError:
        return None
    if parts[-2:] == ["in-addr", "arpa"] and len(parts) == 6:
        octets = parts[:4][::-1]
        if all(o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets):
            return ".".join(str(int(o)) for o in octets)
        return None
    if parts[-2:] == ["ip6", "arpa"] and len(parts) == 34:
        nibbles = parts[:32][::-1]
        if all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
            return str(ipaddress.IPv6Address(bytes.fromhex("".join(nibbles))))
    return None
