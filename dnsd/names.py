"""The name parser: what an in-zone question name asks for, as Consul reads it.

Pure functions over lower-cased labels; no table, no records. Kept apart from
lookup and record building (the lesson of Consul's own ``agent/dns/parser.go``).
Imports: the standard library only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Label kinds Consul knows. dnsd serves service, node and addr; the others parse
# (so the datacenter rules apply) and then find nothing: NXDOMAIN, as in Consul
# without prepared queries or Connect.
_KINDS = frozenset({"service", "node", "addr", "query", "connect", "ingress", "virtual"})


@dataclass(frozen=True, slots=True)
class ZoneName:
    """An in-zone name taken apart.

    ``kind`` is ``apex``, ``ns`` (the name server name), ``service``, ``node``,
    ``addr``, another Consul kind, or ``invalid`` (parses as nothing: NXDOMAIN).
    ``datacenter`` is None when the name omits it (the local one applies).
    """

    kind: str
    zone: str
    name: str = ""
    tag: str | None = None
    datacenter: str | None = None
    address: str = ""


def split_zone(labels: list[bytes], zones: tuple[tuple[bytes, ...], ...]
               ) -> tuple[int, list[bytes]] | None:
    """Which zone (index into ``zones``) holds the name, and the labels before it."""
    for index, zone in enumerate(zones):
        size = len(zone)
        if len(labels) >= size and tuple(labels[len(labels) - size:]) == zone:
            return index, labels[:len(labels) - size]
    return None


def parse_zone_name(relative: list[bytes], zone: str) -> ZoneName:
    """Parse the labels left of the zone (all lower-case)."""
    try:
        parts = [label.decode("ascii") for label in relative]
    except UnicodeDecodeError:
        return ZoneName("invalid", zone)
    if not parts:
        return ZoneName("apex", zone)
    if parts == ["ns"]:
        return ZoneName("ns", zone)
    # The rightmost kind label splits the name: what follows is the datacenter.
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in _KINDS:
            break
    else:
        return ZoneName("invalid", zone)
    kind = parts[index]
    before, after = parts[:index], parts[index + 1:]
    if len(after) > 1:  # namespaces/partitions are not served
        return ZoneName("invalid", zone)
    datacenter = after[0] if after else None
    if not before:
        return ZoneName("invalid", zone)

    if kind == "service":
        if len(before) == 2 and before[0].startswith("_") and before[1].startswith("_"):
            # RFC 2782: _name._tag; _tcp and _udp are protocols, not tag filters.
            tag: str | None = before[1][1:]
            if tag in ("tcp", "udp"):
                tag = None
            return ZoneName("service", zone, before[0][1:], tag, datacenter)
        # Consul joins extra labels into the tag: a.b.web.service -> tag "a.b".
        tag = ".".join(before[:-1]) or None
        return ZoneName("service", zone, before[-1], tag, datacenter)
    if kind == "node":
        return ZoneName("node", zone, ".".join(before), None, datacenter)
    if kind == "addr":
        address = parse_hex_address(before[0]) if len(before) == 1 else None
        if address is None:
            return ZoneName("invalid", zone)
        return ZoneName("addr", zone, before[0], None, datacenter, address)
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
