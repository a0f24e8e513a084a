"""The one fit-to-size rule set, without sockets: whole records, answers then
authority with TC when cut, additional units dropped first without TC."""

from __future__ import annotations

import pytest

from dnsd.render import Fitted, fit

A = [b"a" * 10, b"b" * 10, b"c" * 10]
NS = [b"n" * 10]


@pytest.mark.parametrize(("case", "room", "additional", "extras", "expected"), [
    ("everything fits", 100, [[b"x" * 5]], (), (3, 1, [b"x" * 5], False)),
    ("additional left out without TC", 42, [[b"x" * 5]], (), (3, 1, [], False)),
    ("an answer cut: TC, nothing after it", 25, [[b"x" * 5]], (), (2, 0, [], True)),
    ("authority cut: TC", 35, (), (), (3, 0, [], True)),
    ("a unit is kept whole or not at all", 46, [[b"x" * 5, b"y" * 5]], (),
     (3, 1, [], False)),
    ("a unit that does not fit is skipped, the next is tried", 47,
     [[b"x" * 8], [b"y" * 6]], (), (3, 1, [b"y" * 6], False)),
    ("extras of kept answers come first, each record once", 100, [[b"g" * 3]],
     [[b"e" * 4], [b"e" * 4], [b"f" * 4]], (3, 1, [b"e" * 4, b"f" * 4, b"g" * 3],
                                                   False)),
])
def test_fit(case: str, room: int, additional, extras, expected: Fitted) -> None:
    assert fit(room, A, NS, additional, extras) == expected, case


def test_extras_of_cut_answers_are_not_candidates() -> None:
    extras = [[b"e" * 4], [b"f" * 4], [b"g" * 4]]
    assert fit(25, A, (), (), extras) == (2, 0, [], True)
    assert fit(20 + 8, A[:2], (), (), extras) == (2, 0, [b"e" * 4, b"f" * 4], False)
