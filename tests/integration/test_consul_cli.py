"""The Consul source through the command line, as a user runs it: a separate
dnsd process watching the Consul API double over real HTTP."""

from __future__ import annotations

import json
import re
import statistics
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.consul_double import ConsulDouble, register_web
from tests.dnsd_process import DnsdProcess, wait_until
from tests.upstreams import free_port


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble() as d:
        register_web(d)
        yield d


def test_consul_registrations_through_the_cli(double: ConsulDouble, tmp_path: Path) -> None:
    state = tmp_path / "state"
    args = ["--consul", double.url, "--state-dir", str(state)]
    with DnsdProcess(args) as proc:
        wait_until(lambda: proc.addresses("web.service.consul") == {"10.0.0.1", "10.5.0.2"})
        srv = proc.query("web.service.dc1.consul", "SRV")
        assert {rd.target.to_text() for rd in srv.answer[0]} == {
            "node1.node.dc1.consul.", "0a050002.addr.dc1.consul."}

        double.register("api", "api-1", node="node1", node_address="10.0.0.1", port=9)
        wait_until(lambda: proc.addresses("api.service.consul") == {"10.0.0.1"})
        double.set_check("web-1", "critical", node="node1")
        wait_until(lambda: proc.addresses("web.service.consul") == {"10.5.0.2"})

        double.stop()  # the registry goes away: answers go on
        proc.wait_for_log("serving the last table")
        assert proc.addresses("web.service.consul") == {"10.5.0.2"}
        assert proc.addresses("api.service.consul") == {"10.0.0.1"}
        wait_until(lambda: (state / "table.json").exists(), timeout=30)

    # restart dnsd with Consul still down: the saved table answers once listening
    with DnsdProcess(args) as proc:
        assert proc.addresses("api.service.consul") == {"10.0.0.1"}
        assert proc.query("web.service.consul", "A").rcode() == dns.rcode.NOERROR

        double.restart()  # back: a full resync picks up what changed meanwhile
        double.deregister("api-1", node="node1")
        wait_until(lambda: proc.query("api.service.consul", "A").rcode() == dns.rcode.NXDOMAIN,
               timeout=10)


def test_propagation_latency_through_the_cli(double: ConsulDouble) -> None:
    """Write to the registry, time until dnsd's answer changes (printed; the
    200-change figures come from tests/integration/test_consul_perf.py, marked slow)."""
    metrics = free_port()
    with DnsdProcess(["--consul", double.url, "--metrics", f"127.0.0.1:{metrics}"]) as proc:
        wait_until(lambda: proc.addresses("web.service.consul") == {"10.0.0.1", "10.5.0.2"})
        lags = []
        for i in range(20):
            double.register(f"svc{i}", f"svc{i}-1", node="node1", node_address="10.0.0.1")
            lags.append(wait_until(lambda i=i: proc.query(f"svc{i}.service.consul", "A").rcode()
                               == dns.rcode.NOERROR))
            double.set_check("web-2", "critical" if i % 2 == 0 else "passing", node="node2")
            want = {"10.0.0.1"} if i % 2 == 0 else {"10.0.0.1", "10.5.0.2"}
            lags.append(wait_until(lambda want=want: proc.addresses("web.service.consul") == want))
        lags.sort()
        print(f"consul propagation over {len(lags)} changes: median "
              f"{statistics.median(lags) * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms")
        # dnsd's own share of that lag is exported (watch return -> table swap)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=3) as resp:
            text = resp.read().decode()
        count = re.search(r"^dnsd_propagation_seconds_count (\S+)$", text, re.M)
        assert count is not None and float(count.group(1)) >= 20


def test_same_tags_instance_add_and_remove_latency_with_300_services() -> None:
    """The case no catalog diff explains: an instance added to or removed from a
    service whose tag set stays the same, with no check of its own. 300
    services is past the 256 watched individually, so both paths are timed: s1
    is watched from the start; s99 is not, until a sweep finds it changed."""
    with ConsulDouble() as double:
        for n in range(300):
            double.register(f"s{n}", f"s{n}-1", node="node1", node_address="10.0.0.1", port=80)
        with DnsdProcess(["--consul", double.url]) as proc:
            wait_until(lambda: proc.query("s299.service.consul", "A").rcode() == dns.rcode.NOERROR,
                   timeout=60)
            polled = double.requests_with_index
            # The per-service long-polls start once the first sync is served.
            wait_until(lambda: polled["/v1/health/service/s1"], timeout=60)
            assert not polled["/v1/health/service/s99"]
            lags: dict[str, list[float]] = {"add": [], "remove": []}
            for k in range(24):
                service = "s1" if k % 2 == 0 else "s99"
                address = f"10.1.{k // 200}.{k % 200 + 1}"
                double.register(service, f"{service}-x{k}", node=f"n{k}", node_address=address,
                                port=80)
                lags["add"].append(wait_until(
                    lambda s=service, a=address: a in proc.addresses(f"{s}.service.consul"),
                    timeout=60))
                double.deregister(f"{service}-x{k}", node=f"n{k}")
                lags["remove"].append(wait_until(
                    lambda s=service, a=address: a not in proc.addresses(f"{s}.service.consul"),
                    timeout=60))
            assert polled["/v1/health/service/s99"]  # promoted to a watch of its own
    for kind, values in lags.items():
        values.sort()
        print(f"same-tags instance {kind} over 300 services: median "
              f"{statistics.median(values) * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms")


def _query_request(double: ConsulDouble, method: str, path: str,
                   definition: dict[str, object] | None = None) -> bytes:
    """A prepared query write over HTTP, as an operator sends it."""
    data = None if definition is None else json.dumps(definition).encode()
    request = urllib.request.Request(f"{double.url}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as reply:
        return bytes(reply.read())


def test_prepared_queries_through_the_cli(double: ConsulDouble) -> None:
    """Definitions are re-read on their own period (5 s: Consul cannot block on
    them): a new query, an update and a deletion each answer after a re-read."""
    with DnsdProcess(["--consul", double.url]) as proc:
        wait_until(lambda: proc.addresses("web.service.consul") == {"10.0.0.1", "10.5.0.2"})
        assert proc.query("web.query.consul", "A").rcode() == dns.rcode.NXDOMAIN
        ident = json.loads(_query_request(double, "POST", "/v1/query", {
            "Name": "web", "Service": {"Service": "web"}}))["ID"]
        wait_until(lambda: proc.addresses("web.query.consul") == {"10.0.0.1", "10.5.0.2"})
        _query_request(double, "PUT", f"/v1/query/{ident}", {
            "Name": "web", "Service": {"Service": "web", "Tags": ["v2"]}, "DNS": {"TTL": "15s"}})
        wait_until(lambda: proc.addresses("web.query.consul") == {"10.5.0.2"})
        srv = proc.query("_web._tcp.query.consul", "SRV")
        assert [(rrset.ttl, rd.port) for rrset in srv.answer for rd in rrset] == [(15, 81)]
        _query_request(double, "DELETE", f"/v1/query/{ident}")
        wait_until(lambda: proc.query("web.query.consul", "A").rcode() == dns.rcode.NXDOMAIN)
