"""Figures for the Consul source, run by hand:
``pytest -m slow -s tests/integration/test_consul_perf.py``.

- propagation: a write to the double -> the DNS answer dnsd gives changes
  (median and p99 over 200 changes: registrations of new services, new
  instances of an existing service, check critical/passing, deregistrations);
- idle HTTP requests per minute with 1,000 services and no changes.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import dns.rcode
import pytest

from tests.consul_double import ConsulDouble
from tests.integration.test_consul_e2e import ConsulApp, ask, dnsd, texts

pytestmark = pytest.mark.slow


async def _time_until_changed(app: ConsulApp, name: str, changed: object) -> float:
    started = time.perf_counter()
    while True:
        reply = await ask(app, name)
        if changed(reply):  # type: ignore[operator]
            return time.perf_counter() - started
        if time.perf_counter() - started > 5:
            raise AssertionError(f"{name} did not change")


async def test_propagation_latency() -> None:
    with ConsulDouble() as double:
        for n in range(100):
            double.register(f"base{n}", f"base{n}-1", node="node1", port=n + 1)
        async with dnsd("--consul", double.url) as app:
            await asyncio.sleep(0.5)
            latencies: dict[str, list[float]] = {"new service": [], "new instance": [],
                                                 "check": [], "deregister": []}
            for i in range(50):
                svc = f"lat{i}"
                double.register(svc, f"{svc}-1", node="node1", port=1000, status="passing")
                latencies["new service"].append(await _time_until_changed(
                    app, f"{svc}.service.consul", lambda r: r.rcode() == dns.rcode.NOERROR
                    and texts(r) == {"10.0.0.1"}))
                double.register(svc, f"{svc}-2", node="node2", node_address="10.0.0.2",
                                port=1000)
                latencies["new instance"].append(await _time_until_changed(
                    app, f"{svc}.service.consul", lambda r: len(texts(r)) == 2))
                double.set_check(f"{svc}-1", "critical", node="node1")
                latencies["check"].append(await _time_until_changed(
                    app, f"{svc}.service.consul", lambda r: texts(r) == {"10.0.0.2"}))
                double.deregister(f"{svc}-2", node="node2")
                latencies["deregister"].append(await _time_until_changed(
                    app, f"{svc}.service.consul", lambda r: r.rcode() == dns.rcode.NXDOMAIN))
    every = sorted(x for xs in latencies.values() for x in xs)
    assert len(every) == 200

    def ms(values: list[float]) -> str:
        values = sorted(values)
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        return f"median {statistics.median(values) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"

    print(f"\npropagation over {len(every)} changes (105+ services): {ms(every)}")
    for kind, values in latencies.items():
        print(f"  {kind:13} {ms(values)}")


@pytest.mark.parametrize("wait", [10.0, 300.0])
async def test_idle_requests_per_minute(wait: float) -> None:
    with ConsulDouble() as double:
        for n in range(1000):
            double.register(f"svc{n}", f"svc{n}-1", node=f"node{n % 20}",
                            node_address=f"10.0.{n % 20}.1", port=n + 1)
        ConsulApp.wait = wait
        try:
            async with dnsd("--consul", double.url) as app:
                started = time.perf_counter()
                while not texts(await ask(app, "svc999.service.consul")):
                    assert time.perf_counter() - started < 30
                    await asyncio.sleep(0.01)
                print(f"\nfull sync of 1,000 services: {time.perf_counter() - started:.2f} s")
                await asyncio.sleep(1.0)
                before = double.request_count
                await asyncio.sleep(60.0)
                idle = double.request_count - before
        finally:
            ConsulApp.wait = 2.0
    print(f"\n1,000 services, wait={wait:.0f}s: {idle} HTTP requests in 60 s of no changes")
    assert idle <= 3 * (60 / (0.9 * wait) + 1)
