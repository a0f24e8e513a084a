"""The order in which a name's upstreams are tried (``--upstream-policy``).

A policy is a small value with one method, :meth:`Policy.order`; it never looks
at health (the forwarder hands it the upstreams worth trying) and never mutates
what it is given. Randomness is injected. Imports: the stdlib only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

T = TypeVar("T")


class Policy(Protocol):
    """Chooses the try order of the upstreams it is given."""

    name: str

    def order(self, upstreams: Sequence[T]) -> list[T]: ...


class Sequential:
    """As listed: the first is asked first, the others only when it fails."""

    name = "sequential"

    def order(self, upstreams: Sequence[T]) -> list[T]:
        return list(upstreams)


class Random:
    """A fresh random order per query, spreading the load over every upstream."""

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def order(self, upstreams: Sequence[T]) -> list[T]:
        return self.rng.sample(upstreams, len(upstreams))


def policy_named(name: str, rng: random.Random) -> Policy:
    """The policy called ``name`` (config has checked it is one of these)."""
    if name == Random.name:
        return Random(rng)
    if name == Sequential.name:
        return Sequential()
    raise ValueError(f"no upstream policy {name!r}")
