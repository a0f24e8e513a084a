"""dnsd embedded in another Python program: started off the main thread (or on
the program's own loop), services published into its table, the program's
signal handlers left alone."""

from __future__ import annotations

import signal
import threading

import dns.asyncquery
import dns.message
import dns.query
import dns.rcode
import pytest

from dnsd.embed import Dnsd
from dnsd.errors import DnsdError
from dnsd.model import Health, Instance
from tests.conftest import SERVICES


def _ask(dnsd: Dnsd, name: str, rdtype: str = "A") -> dns.message.Message:
    host, port = dnsd.addresses[0]
    return dns.query.udp(dns.message.make_query(name, rdtype), host, port=port, timeout=5)


def test_from_a_thread_with_published_services() -> None:
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                      signal.SIGHUP)}
    dnsd = Dnsd(["--listen", "127.0.0.1:0", "--no-forward", "--static", str(SERVICES)])
    dnsd.start()
    try:
        assert threading.current_thread() is threading.main_thread()
        assert _ask(dnsd, "web.service.consul").answer  # the services file, as usual
        assert _ask(dnsd, "jobs.service.consul").rcode() == dns.rcode.NXDOMAIN
        dnsd.publish("scheduler", [
            Instance("jobs", "worker1", "dc1", address="10.9.0.1", port=7000),
            Instance("jobs", "worker2", "dc1", address="10.9.0.2", port=7000),
            Instance("jobs", "worker3", "dc1", address="10.9.0.3", port=7000,
                     health=Health.CRITICAL)])
        reply = _ask(dnsd, "jobs.service.consul")
        assert {rd.address for rd in reply.answer[0]} == {"10.9.0.1", "10.9.0.2"}
        srv = _ask(dnsd, "jobs.service.consul", "SRV")
        assert {rd.port for rd in srv.answer[0]} == {7000}
        dnsd.publish("scheduler", [Instance("jobs", "worker1", "dc1", address="10.9.0.9")])
        assert {rd.address for rd in _ask(dnsd, "jobs.service.consul").answer[0]} == {
            "10.9.0.9"}
        dnsd.withdraw("scheduler")
        assert _ask(dnsd, "jobs.service.consul").rcode() == dns.rcode.NXDOMAIN
        assert _ask(dnsd, "example.org").rcode() == dns.rcode.REFUSED  # --no-forward
    finally:
        dnsd.stop()
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers


async def test_on_the_programs_own_loop() -> None:
    async with Dnsd(["--listen", "127.0.0.1:0", "--no-forward"]) as dnsd:
        dnsd.publish("app", [Instance("api", "n1", "dc1", address="10.8.0.1")])
        host, port = dnsd.addresses[0]
        reply = await dns.asyncquery.udp(dns.message.make_query("api.service.consul", "A"),
                                         host, port=port, timeout=5)
        assert reply.answer[0][0].address == "10.8.0.1"
    assert dnsd.addresses == []


def test_a_bad_start_raises_and_leaves_nothing_running(tmp_path: object) -> None:
    dnsd = Dnsd(["--listen", "127.0.0.1:0", "--static", "/nonexistent/services.toml"])
    with pytest.raises(DnsdError, match="cannot read"):
        dnsd.start()
    assert not any(t.name == "dnsd" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="not running"):
        dnsd.publish("x", [])
