"""A forwarding loop: dnsd's upstream is, through some path, dnsd itself.

Real processes on loopback: two dnsd pointing at each other, and one dnsd whose
upstream is a dnsmasq whose upstream is that dnsd. The query that comes back is
answered SERVFAIL once and logged once; it is never forwarded again, no upstream
is marked down (no try waited for a timeout), and each process saw the name as
many times as the path is long: no storm. Packets are counted from each
process's own log (dnsd ``--query-log``, dnsmasq ``--log-queries``).
"""

from __future__ import annotations

import time

import dns.rcode

from tests.dnsd_process import DnsdProcess, wait_until
from tests.upstreams import Dnsmasq, free_port

LOOP_LOG = "forwarding loop"


def seen(proc: DnsdProcess, name: str) -> int:
    """Queries for ``name`` that ``proc`` answered (its query log)."""
    return sum(1 for line in proc.lines if "dnsd.query" in line and f" {name} " in line)


def test_two_dnsd_pointing_at_each_other() -> None:
    port_a, port_b = free_port(), free_port()
    with DnsdProcess(["--listen", f"127.0.0.1:{port_a}", "--upstream", f"127.0.0.1:{port_b}",
                      "--query-log"]) as a, \
            DnsdProcess(["--listen", f"127.0.0.1:{port_b}", "--upstream",
                         f"127.0.0.1:{port_a}", "--query-log"]) as b:
        reply = a.query("loop.example.test.", timeout=4)
        assert reply.rcode() == dns.rcode.SERVFAIL
        wait_until(lambda: seen(a, "loop.example.test.") >= 2, timeout=5)
        time.sleep(1.5)  # room for a storm to show, were there one
        assert seen(a, "loop.example.test.") == 2  # the client's query, then our own back
        assert seen(b, "loop.example.test.") == 1
        log = a.log + "\n" + b.log
        assert log.count(LOOP_LOG) == 1, log
        assert " is down " not in log, log
        # The other way round too: the loop is found wherever it starts.
        assert b.query("other.example.test.", timeout=4).rcode() == dns.rcode.SERVFAIL
        wait_until(lambda: seen(b, "other.example.test.") >= 2, timeout=5)
        assert seen(a, "other.example.test.") == 1


def test_dnsd_behind_a_dnsmasq_that_forwards_back() -> None:
    port = free_port()
    # --address=/invalid/: dnsmasq answers its readiness probe itself, before dnsd runs.
    with Dnsmasq([f"--server=127.0.0.1#{port}", "--address=/invalid/", "--log-queries"]
                 ) as dnsmasq, \
            DnsdProcess(["--listen", f"127.0.0.1:{port}", "--upstream", dnsmasq.spec,
                         "--query-log"]) as proc:
        reply = proc.query("loop.example.test.", timeout=4)
        assert reply.rcode() == dns.rcode.SERVFAIL
        wait_until(lambda: seen(proc, "loop.example.test.") >= 2, timeout=5)
        time.sleep(1.5)
        assert seen(proc, "loop.example.test.") == 2
        assert proc.log.count(LOOP_LOG) == 1, proc.log
        assert " is down " not in proc.log, proc.log
        output = dnsmasq.output()
        assert output.count("query[A] loop.example.test from") == 1, output
