"""The DNS behaviour table (tests/integration/test_dns_cases.py) run against the
answer stage in-process: the parts ``build`` wires, fed by the same services
files, asked through the handler without a socket or a process. A case that
fails here and not there (or the reverse) points at the transport, not the
answers. The handler's crash rule is checked here too: an unexpected error
while answering is SERVFAIL, never a dropped query or a dead server."""

from __future__ import annotations

from collections.abc import Sequence

import dns.message
import dns.rcode
import pytest

from dnsd.build import Parts, build
from dnsd.config import load_config
from tests.conftest import BIG, SERVICES
from tests.integration.test_dns_cases import (
    CASES,
    NESTED,
    Case,
    check_reply,
    over_each_transport,
)

# The same options as the processes the integration table asks (tests/conftest.py
# and the ``nested`` fixture there), without the listen address.
MAIN = ["--static", str(SERVICES), "--static", str(BIG), "--alt-domain", "alt",
        "--node-name", "testnode", "--allow-recursion", "192.0.2.0/24"]
NESTED_ARGS = ["--static", str(SERVICES), "--alt-domain", "test.consul",
               "--allow-recursion", "192.0.2.0/24", "--ttl", "5", "--node-ttl", "7",
               "--service-ttl", "db=30", "--service-ttl", "web*=20",
               "--a-record-limit", "1", "--soa-refresh", "100", "--soa-retry", "10",
               "--soa-expire", "1000", "--negative-ttl", "3"]


def _parts(args: Sequence[str]) -> Parts:
    parts = build(load_config(list(args), environ={}))
    for source in parts.static_sources:
        parts.board.publish(source.name, source.load())
    return parts


@pytest.fixture(scope="module")
def main() -> Parts:
    return _parts(MAIN)


@pytest.fixture(scope="module")
def nested() -> Parts:
    return _parts(NESTED_ARGS)


def _ask(parts: Parts, case: Case, tcp: bool) -> dns.message.Message:
    query = dns.message.make_query(case.qname, case.qtype, use_edns=0)
    reply = parts.handler.handle(query.to_wire(), "127.0.0.1", tcp)
    assert isinstance(reply, bytes), "an in-zone answer never waits on anything"
    assert reply[:2] == query.to_wire()[:2]
    return dns.message.from_wire(reply)


@pytest.mark.parametrize(("case", "tcp"), over_each_transport(CASES))
def test_case(main: Parts, case: Case, tcp: bool) -> None:
    check_reply(_ask(main, case, tcp), case)


@pytest.mark.parametrize(("case", "tcp"), over_each_transport(NESTED))
def test_nested_case(nested: Parts, case: Case, tcp: bool) -> None:
    check_reply(_ask(nested, case, tcp), case)


class BrokenAnswerer:
    """An answer stage with a bug in it."""

    def lookup(self, *args: object) -> None:
        raise RuntimeError("a bug")


def test_a_crash_while_answering_is_servfail() -> None:
    parts = _parts(MAIN)
    working = parts.handler.answerer
    parts.handler.answerer = BrokenAnswerer()  # type: ignore[assignment]
    query = dns.message.make_query("web.service.consul", "A", use_edns=0)
    reply = parts.handler.handle(query.to_wire(), "127.0.0.1", False)
    assert isinstance(reply, bytes)
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == dns.rcode.SERVFAIL and msg.id == query.id
    assert msg.question[0].name == query.question[0].name and msg.edns == 0
    parts.handler.answerer = working
    after = parts.handler.handle(query.to_wire(), "127.0.0.1", False)
    assert isinstance(after, bytes) and dns.message.from_wire(after).answer  # still serving
