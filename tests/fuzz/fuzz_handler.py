"""Coverage-guided fuzzing of the query parser and handler with atheris.

Run by hand (not part of ``make test``):

    pip install atheris
    python -m tests.fuzz.fuzz_handler -max_total_time=300

The invariant is the one tests/unit/test_handler_fuzz.py checks: no exception
escapes, every reply echoes the ID with QR set and an allowed rcode, and the
next valid query is answered correctly.
"""

from __future__ import annotations

import sys

import dns.message


def main() -> None:
    import atheris  # imported here: an optional tool, not a dependency

    with atheris.instrument_imports():
        from dnsd.answer import Answerer, ZoneSettings
        from dnsd.handler import Handler
        from dnsd.model import Instance, View
        from dnsd.table import Table

    table = Table()
    table.publish("fuzz", View(tuple(Instance("web", f"n{i}", "dc1", address=f"10.0.0.{i}")
                                     for i in range(1, 4))))
    handler = Handler(table, Answerer(ZoneSettings()), None, [])
    valid = dns.message.make_query("web.service.consul", "A").to_wire()
    allowed = {0, 1, 3, 4, 5}

    def one_input(data: bytes) -> None:
        reply = handler.handle(data, "127.0.0.1", False)
        if reply is not None:
            assert isinstance(reply, bytes)
            assert reply[:2] == data[:2] and reply[2] & 0x80
            assert reply[3] & 0xF in allowed or reply[3] & 0xF == 0  # BADVERS is 0 + OPT
        after = handler.handle(valid, "127.0.0.1", False)
        assert isinstance(after, bytes) and after[3] & 0xF == 0

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
