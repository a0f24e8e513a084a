"""A real dnsd (``python -m dnsd``) forwarding to a real dnsmasq on loopback,
asked by dnspython and by ``dig``, the way users run it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess, wait_until
from tests.upstreams import Dnsmasq, ScriptedUpstream


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    with Dnsmasq(["--host-record=web.example.test,10.1.2.3",
                  "--txt-record=txt.example.test,hello from dnsmasq",
                  "--address=/example.test/"], local_ttl=120) as server:
        yield server


@pytest.fixture(scope="module")
def forwarding(dnsmasq: Dnsmasq) -> Iterator[DnsdProcess]:
    with DnsdProcess(["--static", str(SERVICES), "--upstream", dnsmasq.spec]) as proc:
        yield proc


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def test_names_outside_the_zone_resolve_through_the_upstream(forwarding) -> None:
    msg = forwarding.query("web.example.test.")
    assert msg.rcode() == dns.rcode.NOERROR and addresses(msg) == ["10.1.2.3"]
    assert msg.flags & dns.flags.RA and not msg.flags & dns.flags.AA
    tcp = forwarding.query("txt.example.test.", "TXT", tcp=True)
    assert tcp.answer[0][0].to_text() == '"hello from dnsmasq"'
    assert forwarding.query("nothing.example.test.").rcode() == dns.rcode.NXDOMAIN


def test_zone_names_are_still_answered_by_dnsd(forwarding) -> None:
    msg = forwarding.query("web.service.consul.")
    assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    assert "10.1.0.11" in addresses(msg)


def test_cached_ttl_counts_down(forwarding) -> None:
    first = forwarding.query("web.example.test.", "A", use_edns=0)
    time.sleep(1.1)
    second = forwarding.query("web.example.test.", "A", use_edns=0)
    assert second.answer[0].ttl < first.answer[0].ttl <= 120


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
def test_dig_resolves_through_dnsd(forwarding) -> None:
    out = subprocess.run(
        ["dig", "+short", "+time=2", "+tries=1", f"@{forwarding.host}", "-p",
         str(forwarding.port), "web.example.test", "A"],
        capture_output=True, text=True, timeout=10, check=True).stdout
    assert out.split() == ["10.1.2.3"]
    out = subprocess.run(
        ["dig", "+tcp", "+time=2", "+tries=1", f"@{forwarding.host}", "-p",
         str(forwarding.port), "WeB.eXaMpLe.TeSt", "A"],
        capture_output=True, text=True, timeout=10, check=True).stdout
    assert "status: NOERROR" in out and "WeB.eXaMpLe.TeSt." in out


def test_clients_outside_allow_recursion_are_refused(dnsmasq) -> None:
    with DnsdProcess(["--static", str(SERVICES), "--upstream", dnsmasq.spec,
                      "--allow-recursion", "10.0.0.0/8"]) as proc:
        refused = proc.query("web.example.test.")
        assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
        zone = proc.query("web.service.consul.")  # the zone is answered to everyone
        assert zone.rcode() == dns.rcode.NOERROR and zone.answer


def test_dead_first_upstream_fails_over_then_is_skipped(dnsmasq) -> None:
    """The first query waits out one try on the dead upstream and gets its
    answer from the next; later queries do not try the dead one at all (its
    probe asks ". NS" meanwhile). How long each takes is measured by
    ``tests/perf/forward_timing.py``."""
    with ScriptedUpstream([], mode="timeout") as dead, \
            DnsdProcess(["--upstream", dead.spec, "--upstream", dnsmasq.spec]) as proc:
        msg = proc.query("web.example.test.", timeout=10)
        assert addresses(msg) == ["10.1.2.3"]
        assert dead.count(qname="web.example.test") == 1
        assert proc.query("txt.example.test.", "TXT", timeout=10).answer
        assert dead.count(qname="txt.example.test") == 0


def test_serve_stale_when_the_upstream_dies() -> None:
    up = ScriptedUpstream(["short.test. 1 IN A 10.0.0.3"])
    try:
        with DnsdProcess(["--upstream", up.spec]) as proc:
            assert addresses(proc.query("short.test.")) == ["10.0.0.3"]
            up.mode = "servfail"
            time.sleep(1.2)
            stale = proc.query("short.test.")
            assert stale.rcode() == dns.rcode.NOERROR and addresses(stale) == ["10.0.0.3"]
            assert stale.answer[0].ttl == 30
            assert proc.query("unknown.test.").rcode() == dns.rcode.SERVFAIL
    finally:
        up.close()


def test_upstream_equal_to_own_listen_address_is_refused_at_start() -> None:
    from tests.dnsd_process import run_cli
    result = run_cli(["--listen", "127.0.0.1:53535", "--upstream", "127.0.0.1:53535"],
                     timeout=10)
    assert result.returncode != 0 and "loop" in result.stderr


def test_external_service_cname_is_chased_through_the_upstream(tmp_path: Path) -> None:
    """A service whose address is a host name answers CNAME plus the target's
    addresses, as Consul does with recursors, so glibc and curl can connect;
    the chased records take the service's TTL, as Consul gives them."""
    services = tmp_path / "services.toml"
    services.write_text('[[services]]\nname = "search"\naddress = "search.example.test"\n'
                        'port = 443\n[[services]]\nname = "gone"\n'
                        'address = "nowhere.example.test"\nport = 1\n')
    with Dnsmasq(["--host-record=search.example.test,10.9.8.7"]) as upstream, \
            DnsdProcess(["--static", str(services), "--upstream", upstream.spec]) as proc:
        reply = proc.query("search.service.consul", "A")
        assert [rrset.to_text() for rrset in reply.answer] == [
            "search.service.consul. 0 IN CNAME search.example.test.",
            "search.example.test. 0 IN A 10.9.8.7"]
        assert reply.flags & dns.flags.AA
        # SRV names the host, whose addresses ride in the additional section;
        # an unresolvable target leaves the CNAME alone
        srv = proc.query("search.service.consul", "SRV")
        assert srv.answer[0][0].target.to_text() == "search.example.test."
        assert [rrset.to_text() for rrset in srv.additional] == [
            "search.example.test. 0 IN A 10.9.8.7"]
        reply = proc.query("gone.service.consul", "A")
        assert reply.rcode() == dns.rcode.NOERROR
        assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME]


def test_a_reply_in_flight_at_sigterm_is_still_sent() -> None:
    """SIGTERM while a forwarded UDP query waits on its upstream: the listener
    stops taking queries, but the reply in flight goes out (within the grace)."""
    with ScriptedUpstream(["slow.test. 60 IN A 10.0.0.8"], delay=0.5) as up, \
            DnsdProcess(["--upstream", up.spec]) as proc, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        query = dns.message.make_query("slow.test.", "A")
        sock.settimeout(10)
        sock.sendto(query.to_wire(), (proc.host, proc.port))
        wait_until(lambda: up.count(qname="slow.test") == 1)
        proc.signal(signal.SIGTERM)
        reply = dns.message.from_wire(sock.recv(4096))
        assert reply.id == query.id and addresses(reply) == ["10.0.0.8"]
        assert proc.proc.wait(30) == 0


def test_chased_cname_keeps_only_the_chain_from_a_poisoning_upstream(tmp_path: Path) -> None:
    """An upstream adding records of other names (one of them dnsd's own) to its
    answer gets none of them into dnsd's authoritative answer."""
    services = tmp_path / "services.toml"
    services.write_text('[[services]]\nname = "search"\naddress = "search.example.test"\n'
                        'port = 443\n')
    poison = ["search.service.consul. 60 IN A 6.6.6.6", "evil.example.test. 60 IN A 6.6.6.7"]
    with ScriptedUpstream(["search.example.test. 60 IN A 10.9.8.7"], poison=poison) as up, \
            DnsdProcess(["--static", str(services), "--upstream", up.spec]) as proc:
        reply = proc.query("search.service.consul", "A")
        assert [rrset.to_text() for rrset in reply.answer] == [
            "search.service.consul. 0 IN CNAME search.example.test.",
            "search.example.test. 0 IN A 10.9.8.7"]
        assert reply.flags & dns.flags.AA


def test_forwarded_answer_drops_records_of_other_names() -> None:
    """RFC 5452 6: what the upstream adds about names it was not asked is not
    passed on, nor cached; the chain from the question is."""
    poison = ["web.service.consul. 60 IN A 6.6.6.6", "example.test. 60 IN A 6.6.6.7"]
    with ScriptedUpstream(["www.example.test. 60 IN CNAME host.example.test.",
                           "host.example.test. 60 IN A 10.1.2.3"], poison=poison) as up, \
            DnsdProcess(["--upstream", up.spec]) as proc:
        for _ in range(2):  # the second from the cache
            reply = proc.query("host.example.test.")
            assert [rrset.to_text() for rrset in reply.answer] == [
                "host.example.test. 60 IN A 10.1.2.3"]
        assert up.count() == 1
