"""Wire format on the hot path: read a query's header, question and EDNS0 OPT,
and the parts every reply shares (flags, OPT, size limit, rcode-only replies).

Hand-written on purpose: this runs for every packet, and dnslib's general parser
(``DNSRecord.parse``) costs many times more than the answer lookup itself.
Records are built with dnslib in ``records``. Imports: stdlib only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010

OPCODE_QUERY = 0
TYPE_OPT = 41     # the EDNS0 pseudo-record (RFC 6891 6.1.1)
T_ANY = 255       # QTYPE "*" (RFC 1035 3.2.3)
CLASS_IN = 1
CLASS_ANY = 255   # QCLASS "*" (RFC 1035 3.2.5)
MAX_NAME = 255    # octets in a wire-format name (RFC 1035 2.3.4)
MIN_UDP = 512     # RFC 1035 4.2.1
# DNS flag day 2020: the EDNS0 size that avoids IP fragmentation. It is both the
# size we advertise (to clients and upstreams) and the cap on a client's size.
MAX_UDP = 1232
MAX_TCP = 65535   # a TCP message's 2-byte length prefix (RFC 1035 4.2.2)
# An EDNS0 option from the local/experimental range (RFC 6891 9): the marks of
# the dnsd processes a query was forwarded by, to find forwarding loops.
OPTION_FORWARDED_BY = 65053

# RCODEs (RFC 1035 4.1.1, RFC 6891 9 for BADVERS)
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16


class Malformed(Exception):
    """The packet cannot be parsed past its header: answer FORMERR."""


@dataclass(frozen=True, slots=True)
class Edns:
    """What the client's OPT record says (RFC 6891)."""

    udp_size: int
    version: int
    do: bool
    options: bytes = b""  # the OPT record's RDATA: its options, unparsed


@dataclass(slots=True)
class Query:
    """A parsed query. ``question`` is the question section exactly as received.

    Not frozen, for speed (a frozen dataclass's __init__ costs a setattr call
    per field on the per-query path); nothing modifies one after parsing."""

    id: int
    flags: int
    qname: bytes      # wire-format name exactly as received (0x20 case kept)
    key: bytes        # ``qname`` lower-cased: the cache key
    qtype: int
    qclass: int
    question: bytes   # qname + qtype + qclass as received
    edns: Edns | None
    wire: bytes       # the whole packet

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rd(self) -> bool:
        return bool(self.flags & RD)

    def labels(self) -> list[bytes]:
        """The lower-cased labels of the name, left to right."""
        return name_labels(self.key)

    def text(self) -> str:
        """The name as text, lower-cased, with a trailing dot; for logs."""
        return name_text(self.key)


def name_labels(name: bytes) -> list[bytes]:
    """The labels of an uncompressed wire-format name, left to right."""
    out: list[bytes] = []
    pos = 0
    while pos < len(name) and name[pos]:
        length = name[pos]
        out.append(name[pos + 1:pos + 1 + length])
        pos += 1 + length
    return out


def name_text(name: bytes) -> str:
    """An uncompressed wire-format name as text with a trailing dot, for logs."""
    labels = name_labels(name)
    if not labels:
        return "."
    return ".".join(label.decode("ascii", "backslashreplace") for label in labels) + "."


def skip_name(wire: bytes, pos: int) -> int:
    """Position after a possibly compressed name; bounds- and loop-checked."""
    end = len(wire)
    hops = 0
    while True:
        if pos >= end:
            raise Malformed("name runs past the end")
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise Malformed("pointer runs past the end")
            return pos + 2
        if length & 0xC0:
            raise Malformed("unknown label type")
        pos += 1 + length
        hops += 1
        if hops > 127:
            raise Malformed("name too long")


def read_name(wire: bytes, pos: int) -> bytes:
    """The possibly compressed name at ``pos`` as an uncompressed wire-format
    name, case kept; bounds-, length- and loop-checked (raises Malformed)."""
    out = bytearray()
    end = len(wire)
    hops = 0
    while True:
        if pos >= end:
            raise Malformed("name runs past the end")
        length = wire[pos]
        if length == 0:
            out.append(0)
            return bytes(out)
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise Malformed("pointer runs past the end")
            pos = ((length & 0x3F) << 8) | wire[pos + 1]
            hops += 1
            if hops > 127:
                raise Malformed("compression pointers loop")
            continue
        if length & 0xC0:
            raise Malformed("unknown label type")
        out += wire[pos:pos + 1 + length]
        pos += 1 + length
        if len(out) > MAX_NAME:
            raise Malformed("name longer than 255 octets")


def name_suffixes(name: bytes) -> Iterable[bytes]:
    """An uncompressed wire name and each parent, longest first, ending with the root."""
    pos = 0
    while pos < len(name):
        yield name[pos:]
        if name[pos] == 0:
            return
        pos += 1 + name[pos]


def parse_query(wire: bytes) -> Query:
    """Parse a query whose header is known to be readable (``len(wire) >= 12``).

    Raises :class:`Malformed` for anything that is not one well-formed question
    with an optional OPT record: the caller answers FORMERR.
    """
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(wire)
    if qdcount != 1:
        raise Malformed(f"qdcount is {qdcount}, not 1")
    end = len(wire)
    pos = 12
    # The question name must be uncompressed: nothing precedes it to point at.
    while True:
        if pos >= end:
            raise Malformed("question name runs past the end")
        length = wire[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            raise Malformed("compressed or oversized label in the question")
        pos += 1 + length
        if pos - 12 > MAX_NAME:
            raise Malformed("question name longer than 255 octets")
    qname_end = pos
    if qname_end > end - 4:
        raise Malformed("question is cut short")
    if qname_end - 12 > MAX_NAME:
        raise Malformed("question name longer than 255 octets")
    qtype, qclass = struct.unpack_from("!HH", wire, qname_end)
    qname = wire[12:qname_end]
    pos = qname_end + 4

    edns: Edns | None = None
    # Skip answer and authority records (a query should carry none), then read
    # the additional section looking for the single OPT record.
    for index in range(ancount + nscount + arcount):
        name_start = pos
        pos = skip_name(wire, pos)
        if pos + 10 > end:
            raise Malformed("record header cut short")
        rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", wire, pos)
        pos += 10 + rdlength
        if pos > end:
            raise Malformed("record data cut short")
        if rtype == TYPE_OPT:
            if index < ancount + nscount or edns is not None or wire[name_start] != 0:
                raise Malformed("misplaced or repeated OPT record")  # RFC 6891 6.1.1
            edns = Edns(udp_size=rclass, version=(ttl >> 16) & 0xFF, do=bool(ttl & 0x8000),
                        options=wire[pos - rdlength:pos])
    # Trailing bytes after the counted records are tolerated, as most servers do.
    return Query(id=ident, flags=flags, qname=qname, key=qname.lower(), qtype=qtype,
                 qclass=qclass, question=wire[12:qname_end + 4], edns=edns, wire=wire)


def edns_option(options: bytes, code: int) -> bytes | None:
    """The data of the first option ``code`` in an OPT record's RDATA, or None.
    A malformed option list ends the search (RFC 6891 6.1.2 layout)."""
    pos = 0
    end = len(options)
    while pos + 4 <= end:
        found, length = struct.unpack_from("!HH", options, pos)
        pos += 4
        if pos + length > end:
            return None
        if found == code:
            return options[pos:pos + length]
        pos += length
    return None


def encode_name(name: str) -> bytes:
    """Wire form of a dotted name (no compression); labels must be valid already."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


def udp_limit(query: Query) -> int:
    """How large a UDP reply to this client may be: 512, or its EDNS0 size up to 1232."""
    if query.edns is None:
        return MIN_UDP
    return max(MIN_UDP, min(query.edns.udp_size, MAX_UDP))


def opt_record(udp_size: int, do: bool, ext_rcode: int = 0) -> bytes:
    """Our EDNS0 OPT record (RFC 6891 6.1.2): version 0, DO echoed (RFC 3225 3)."""
    ttl = (ext_rcode << 24) | (0x8000 if do else 0)
    return b"\x00" + struct.pack("!HHIH", TYPE_OPT, udp_size, ttl, 0)


def reply_flags(query: Query, rcode: int, *, aa: bool, ra: bool, tc: bool = False,
                extra: int = 0) -> int:
    """Header flags of a reply: QR, the query's opcode, RD and CD echoed."""
    flags = QR | (query.flags & (0x7800 | RD | CD)) | (rcode & 0xF) | extra
    if aa:
        flags |= AA
    if ra:
        flags |= RA
    if tc:
        flags |= TC
    return flags


def error_reply(packet: Query | bytes, rcode: int, *, ra: bool = False) -> bytes:
    """A reply carrying only ``rcode``: the one way every module builds one.

    For a parsed query the question is echoed byte for byte, and our OPT is added
    when the client sent one (carrying the rcode's upper bits, RFC 6891 6.1.3).
    For raw bytes that did not parse, the header alone. ``ra``: recursion is
    available (dnsd forwards)."""
    if not isinstance(packet, Query):
        ident, flags = struct.unpack_from("!HH", packet)
        flags = QR | (flags & (0x7800 | RD)) | (rcode & 0xF)
        return HEADER.pack(ident, flags, 0, 0, 0, 0)
    opt = b""
    if packet.edns is not None:
        opt = opt_record(MAX_UDP, packet.edns.do, rcode >> 4)
    flags = reply_flags(packet, rcode & 0xF, aa=False, ra=ra)
    return HEADER.pack(packet.id, flags, 1, 0, 0, 1 if opt else 0) + packet.question + opt
