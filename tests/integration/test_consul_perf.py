"""Figures for the Consul source, run by hand:
``pytest -m slow -s tests/integration/test_consul_perf.py``.

dnsd runs as its own process (``python -m dnsd --consul``), the double in the
test process, as a user would run them against Consul.

- propagation: a write to the double -> the DNS answer dnsd gives changes
  (median and p99 over 200 changes: registrations of new services, new
  instances of an existing service with the same tags and no check, check
  critical, deregistrations of an instance), with 200 base services (every
  service watched individually) and with 1,000 (past the 256 watched);
- idle HTTP requests per minute with 1,000 services and no changes, with
  Consul's default 5-minute wait (and the prepared query definitions' 5 s).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import dns.message
import dns.rcode
import pytest

from tests.consul_double import ConsulDouble
from tests.dnsd_process import DnsdProcess

pytestmark = pytest.mark.slow


def _texts(reply: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in reply.answer for rd in rrset}


def _time_until(proc: DnsdProcess, name: str,
                changed: Callable[[dns.message.Message], bool]) -> float:
    started = time.perf_counter()
    while not changed(proc.query(name, "A")):
        if time.perf_counter() - started > 10:
            raise AssertionError(f"{name} did not change")
        time.sleep(0.001)
    return time.perf_counter() - started


def _ms(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"median {statistics.median(values) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


@pytest.mark.parametrize("base", [200, 1000])
def test_propagation_latency(base: int) -> None:
    latencies: dict[str, list[float]] = {"new service": [], "same-tags instance": [],
                                         "check": [], "deregister": []}
    with ConsulDouble() as double:
        for n in range(base):
            double.register(f"base{n}", f"base{n}-1", node=f"node{n % 20}",
                            node_address=f"10.0.{n % 20}.1", port=n + 1)
        with DnsdProcess(["--consul", double.url]) as proc:
            _time_until(proc, f"base{base - 1}.service.consul",
                        lambda r: r.rcode() == dns.rcode.NOERROR)
            time.sleep(1.0)
            for i in range(50):
                svc = f"lat{i}"
                double.register(svc, f"{svc}-1", node="node1", node_address="10.0.1.1",
                                port=1000, status="passing")
                latencies["new service"].append(_time_until(
                    proc, f"{svc}.service.consul", lambda r: _texts(r) == {"10.0.1.1"}))
                double.register(svc, f"{svc}-2", node=f"new{i}", node_address="10.9.0.2",
                                port=1000)
                latencies["same-tags instance"].append(_time_until(
                    proc, f"{svc}.service.consul", lambda r: len(_texts(r)) == 2))
                double.set_check(f"{svc}-1", "critical", node="node1")
                latencies["check"].append(_time_until(
                    proc, f"{svc}.service.consul", lambda r: _texts(r) == {"10.9.0.2"}))
                double.deregister(f"{svc}-2", node=f"new{i}")
                latencies["deregister"].append(_time_until(
                    proc, f"{svc}.service.consul", lambda r: r.rcode() == dns.rcode.NXDOMAIN))
    every = [x for xs in latencies.values() for x in xs]
    assert len(every) == 200
    print(f"\npropagation over {len(every)} changes ({base} base services): {_ms(every)}")
    for kind, values in latencies.items():
        print(f"  {kind:18} {_ms(values)}")


def test_idle_requests_per_minute() -> None:
    with ConsulDouble() as double:
        for n in range(1000):
            double.register(f"svc{n}", f"svc{n}-1", node=f"node{n % 20}",
                            node_address=f"10.0.{n % 20}.1", port=n + 1)
        with DnsdProcess(["--consul", double.url]) as proc:
            started = time.perf_counter()
            _time_until(proc, "svc999.service.consul", lambda r: r.rcode() == dns.rcode.NOERROR)
            print(f"\nfull sync of 1,000 services: {time.perf_counter() - started:.2f} s")
            time.sleep(2.0)
            before = double.request_count
            time.sleep(60.0)
            idle = double.request_count - before
    # 3 catalog long-polls + 256 service long-polls, each expiring once per
    # 300 s on its own slot: (3 + 256) / 5 = 52 a minute on average; plus the
    # prepared query definitions, read every 5 s: 12 a minute.
    print(f"1,000 services, wait 300 s: {idle} HTTP requests in 60 s of no changes "
          f"(expected about {(3 + 256) / 5 + 12:.0f})")
    assert 35 <= idle <= 100
