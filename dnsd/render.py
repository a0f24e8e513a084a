"""Replies fitted to the size a client can take: the one place that decides which
records a reply keeps when they do not all fit, for in-zone answers and
forwarded ones alike.

The rules (RFC 1035 4.2.1, RFC 2181 9):
- whole records only, never a record cut in two;
- the answer section, then the authority section: the leading records that fit
  are kept; from the first that does not, that record and every record after it
  (in any section) are left out, and TC is set so the client retries over TCP;
- additional records are optional: they are left out first, and leaving them
  out never sets TC. They come in units (see :func:`fit`); a unit that fits is
  kept whole, one that does not is left out and the next one is tried.

Every record kept stays at its place relative to the records before it: the
kept answers and authority records are a prefix of their sections, and a
section is only started when the one before it was kept whole. A forwarded
reply relies on this, since its records point into earlier bytes of the
upstream's reply (RFC 1035 4.1.4 compression).

Imports: ``wire``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dnsd.wire import HEADER, MAX_UDP, Query, opt_record, reply_flags

# What fit() keeps: how many leading answer and authority records, which
# additional records, and whether anything owed was cut (TC). A plain tuple:
# this runs for every rendered reply.
Fitted = tuple[int, int, list[bytes], bool]


def fit(room: int, answers: Sequence[bytes], authority: Sequence[bytes] = (),
        additional: Sequence[Sequence[bytes]] = (),
        extras: Sequence[Sequence[bytes]] = ()) -> Fitted:
    """The records of a reply that fit in ``room`` bytes (see the module rules).

    ``additional`` and ``extras`` hold the additional section as units, each a
    sequence of records kept or left out together. ``extras[i]`` is the unit
    that goes with ``answers[i]`` (an SRV target's address): it is a candidate
    only when that answer is kept, and the candidates are the kept answers'
    extras, in order, then ``additional``. A record already kept is not
    repeated. The caller chooses the units: records that stand alone (built
    without compression) can be single units; a forwarded reply's additional
    section is one unit, because dropping one of its records would move the
    records after it away from the bytes their compression pointers name.
    """
    size = sum(map(len, answers))
    if size > room:
        return _leading(answers, room), 0, [], True
    if authority:
        size += sum(map(len, authority))
        if size > room:
            room -= size - sum(map(len, authority))
            return len(answers), _leading(authority, room), [], True
    kept: list[bytes] = []
    units = [*extras[:len(answers)], *additional] if extras else additional
    if len(units) == 1:
        if size + sum(map(len, units[0])) <= room:
            kept.extend(units[0])
    elif units:
        seen: set[bytes] = set()
        for unit in units:
            if len(unit) == 1:  # the usual unit: one record, without a list per unit
                record = unit[0]
                if record not in seen:
                    seen.add(record)  # one that did not fit will not fit later either
                    if size + len(record) <= room:
                        size += len(record)
                        kept.append(record)
                continue
            fresh = [r for r in unit if r not in seen]
            length = sum(map(len, fresh))
            if size + length <= room:
                size += length
                kept.extend(fresh)
                seen.update(fresh)
    return len(answers), len(authority), kept, False


def _leading(records: Sequence[bytes], room: int) -> int:
    """How many leading ``records`` fit in ``room`` bytes."""
    size = 0
    for index, record in enumerate(records):
        size += len(record)
        if size > room:
            return index
    return len(records)


def fitted_reply(query: Query, rcode: int, *, limit: int, aa: bool, ra: bool, flags: int = 0,
          answers: Sequence[bytes] = (), authority: Sequence[bytes] = (),
          additional: Sequence[Sequence[bytes]] = (),
          extras: Sequence[Sequence[bytes]] = ()) -> bytes:
    """The reply to ``query`` with these records, fitted into ``limit`` bytes.

    The client's ID and question (byte for byte: resolvers check the 0x20
    case), our OPT when the client sent one (RFC 6891 7), ``flags`` added to
    the header (AD of a forwarded answer). Records as :func:`fit` keeps them.
    """
    opt = opt_record(MAX_UDP, query.edns.do) if query.edns is not None else b""
    room = limit - 12 - len(query.question) - len(opt)
    kept_answers, kept_authority, kept_additional, tc = fit(room, answers, authority,
                                                             additional, extras)
    header = HEADER.pack(query.id, reply_flags(query, rcode, aa=aa, ra=ra, tc=tc, extra=flags),
                         1, kept_answers, kept_authority,
                         len(kept_additional) + (1 if opt else 0))
    if tc:
        answers = answers[:kept_answers]
        authority = authority[:kept_authority]
    return b"".join((header, query.question, *answers, *authority, *kept_additional, opt))
