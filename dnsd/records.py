"""Resource records in wire form, built with dnslib.

Each record is encoded alone and without name compression (except the owner,
which may point at the question, see ``QNAME_POINTER``), so a cached answer is a
list of byte strings that can be rotated and truncated freely per query.
Imports: dnslib and ``wire``.
"""

from __future__ import annotations

import struct

from dnslib import AAAA, CNAME, NS, PTR, RD, SOA, SRV, TXT, A, DNSRecord
from dnslib.label import DNSBuffer

from dnsd.wire import CLASS_IN, encode_name

# The question name always starts at offset 12 (RFC 1035 4.1.4 pointer), and it
# is echoed exactly as received, so an owner equal to the question can point there.
QNAME_POINTER = b"\xc0\x0c"
T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_TXT = 1, 2, 5, 6, 12, 16
T_AAAA, T_SRV, T_DNAME, T_RRSIG = 28, 33, 39, 46


class _FlatBuffer(DNSBuffer):  # type: ignore[misc]
    """A dnslib buffer that never compresses: records must stand alone."""

    def encode_name(self, name: object) -> None:
        self.encode_name_nocompress(name)


def _rdata(rd: RD) -> bytes:
    buf = _FlatBuffer()
    rd.pack(buf)
    return bytes(buf.data)


def record(owner: bytes, rtype: int, ttl: int, rd: RD) -> bytes:
    """One resource record; ``owner`` is a wire name or ``QNAME_POINTER``."""
    data = _rdata(rd)
    return owner + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(data)) + data


def a(owner: bytes, ttl: int, address: str) -> bytes:
    return record(owner, T_A, ttl, A(address))


def aaaa(owner: bytes, ttl: int, address: str) -> bytes:
    return record(owner, T_AAAA, ttl, AAAA(address))


def address(owner: bytes, ttl: int, ip: str) -> bytes:
    """An A or AAAA record, by the address's family."""
    return aaaa(owner, ttl, ip) if ":" in ip else a(owner, ttl, ip)


def srv(owner: bytes, ttl: int, priority: int, weight: int, port: int, target: str) -> bytes:
    return record(owner, T_SRV, ttl, SRV(priority, weight, port, target.rstrip(".") + "."))


def cname(owner: bytes, ttl: int, target: str) -> bytes:
    return record(owner, T_CNAME, ttl, CNAME(target.rstrip(".") + "."))


def ptr(owner: bytes, ttl: int, target: str) -> bytes:
    return record(owner, T_PTR, ttl, PTR(target.rstrip(".") + "."))


def ns(owner: bytes, ttl: int, target: str) -> bytes:
    return record(owner, T_NS, ttl, NS(target.rstrip(".") + "."))


def txt(owner: bytes, ttl: int, text: str) -> bytes:
    """A TXT record of one text, cut into the 255-octet strings RFC 1035 3.3.14
    allows (a client joins them again)."""
    data = text.encode("utf-8")
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return record(owner, T_TXT, ttl, TXT(chunks))


def soa(owner: bytes, zone: str, serial: int, minimum: int, refresh: int = 3600,
        retry: int = 600, expire: int = 86400) -> bytes:
    """Consul's SOA: ns/hostmaster names, its timers (3600/600/86400 unless set),
    the negative TTL as both the minimum and the record's own TTL (RFC 2308 3)."""
    rd = SOA(f"ns.{zone}.", f"hostmaster.{zone}.",
             (serial & 0xFFFFFFFF, refresh, retry, expire, minimum))
    return record(owner, T_SOA, minimum, rd)


def address_answers(reply: bytes, target: str, ttl: int | None = None) -> list[bytes]:
    """The CNAME chain that starts at ``target`` in a NOERROR reply's answer
    section, with the A and AAAA records of the names on it, each re-encoded to
    stand alone, in the reply's order; [] for any other reply (or one that won't
    parse). Records of other owners are left out: they go into an authoritative
    answer of dnsd's, and an upstream, wrong or hostile, must not be able to put
    records for other names there (least of all dnsd's own). ``ttl``, when
    given, replaces the records' own (Consul gives them the service's)."""
    try:
        parsed = DNSRecord.parse(reply)
    except Exception:  # dnslib raises several kinds on bad input
        return []
    if parsed.header.rcode != 0:
        return []
    found = [r for r in parsed.rr if r.rtype in (T_A, T_AAAA, T_CNAME)]
    chain = {_folded(target)}
    grew = True
    while grew:  # the chain's CNAMEs may come in any order
        grew = False
        for r in found:
            if r.rtype == T_CNAME and _folded(str(r.rname)) in chain:
                next_name = _folded(str(r.rdata.label))
                if next_name not in chain:
                    chain.add(next_name)
                    grew = True
    return [record(name(str(r.rname)), r.rtype, r.ttl if ttl is None else ttl, r.rdata)
            for r in found if _folded(str(r.rname)) in chain]


def _folded(text: str) -> str:
    """A name for comparing: lower case, no trailing dot (RFC 4343)."""
    return text.rstrip(".").lower()


def name(text: str) -> bytes:
    return encode_name(text)

