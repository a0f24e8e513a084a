"""End to end: a real dnsd (``python -m dnsd --zookeeper HOST:PORT/BASE``) answers
for what a registrator stand-in writes to a real ZooKeeper, over real DNS."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.dnsd_process import DnsdProcess, wait_until
from tests.integration import conftest_zookeeper as fixtures
from tests.integration.conftest_zookeeper import Registrator
from tests.zookeeper_server import ZooKeeperServer

zookeeper = fixtures.zookeeper  # the fixture, by name
registrator = fixtures.registrator


@pytest.fixture
def dnsd(zookeeper: ZooKeeperServer, registrator: Registrator) -> Iterator[DnsdProcess]:
    with DnsdProcess(["--zookeeper", f"{zookeeper.hosts}{registrator.base}",
                      "--node-name", "testnode", "--allow-recursion", "192.0.2.0/24"]) as proc:
        proc.wait_for_log(r"ZooKeeper .*: up")
        yield proc


def addresses(reply: dns.message.Message) -> set[str]:
    return {rd.address for rrset in reply.answer if rrset.rdtype in (
        dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset}


def wait_answer(proc: DnsdProcess, name: str, check: Callable[[dns.message.Message], bool],
                rdtype: str = "A", timeout: float = 30.0) -> dns.message.Message:
    replies: list[dns.message.Message] = []

    def answered() -> bool:
        replies.append(proc.query(name, rdtype))
        return check(replies[-1])

    wait_until(answered, timeout, interval=0.005, what=f"the expected {name} {rdtype}")
    return replies[-1]


def test_register_a_srv_tags_and_remove(dnsd: DnsdProcess, registrator: Registrator) -> None:
    reg = registrator
    reg.register("web", "10.0.0.1", 8080, tags=["http"], attrs={"version": "1"})
    reg.register("web", "10.0.0.2", 8081)
    reg.register("dns-53", "10.0.0.3", 53, tags=["udp"])
    reply = wait_answer(dnsd, "web.service.consul",
                        lambda r: addresses(r) == {"10.0.0.1", "10.0.0.2"})
    assert reply.flags & dns.flags.AA

    srv = dnsd.query("web.service.dc1.consul", "SRV")
    records = sorted((rd.port, rd.weight, rd.priority, str(rd.target))
                     for rrset in srv.answer for rd in rrset)
    assert records == [(8080, 1, 1, "0a000001.addr.dc1.consul."),
                       (8081, 1, 1, "0a000002.addr.dc1.consul.")]
    assert {rd.address for rrset in srv.additional if rrset.rdtype == dns.rdatatype.A
            for rd in rrset} == {"10.0.0.1", "10.0.0.2"}

    assert addresses(dnsd.query("http.web.service.consul")) == {"10.0.0.1"}
    udp = wait_answer(dnsd, "_dns-53._udp.service.consul", lambda r: bool(r.answer), "SRV")
    assert [rd.port for rrset in udp.answer for rd in rrset] == [53]
    # The node is named after the address.
    assert addresses(dnsd.query("10.0.0.1.node.consul")) == {"10.0.0.1"}

    reg.deregister("web", "10.0.0.1:8080")
    wait_answer(dnsd, "web.service.consul", lambda r: addresses(r) == {"10.0.0.2"})
    reg.deregister("web", "10.0.0.2:8081")
    wait_answer(dnsd, "web.service.consul", lambda r: r.rcode() == dns.rcode.NXDOMAIN)


def test_node_meta_attributes_answer_node_txt(dnsd: DnsdProcess,
                                              registrator: Registrator) -> None:
    # registrator's Attrs for SERVICE_NODE=host1 and SERVICE_NODE_META_RACK=r1
    registrator.register("meta", "10.0.3.1", 80,
                         attrs={"node": "host1", "node_meta_rack": "r1", "version": "1"})
    reply = wait_answer(dnsd, "host1.node.consul", lambda r: bool(r.answer), "TXT")
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ['"rack=r1"']
    srv = dnsd.query("meta.service.consul", "SRV")
    assert {rd.to_text() for rrset in srv.additional if rrset.rdtype == dns.rdatatype.TXT
            for rd in rrset} == {'"rack=r1"'}
    assert addresses(dnsd.query("host1.node.consul")) == {"10.0.3.1"}
    registrator.deregister("meta", "10.0.3.1:80")
    wait_answer(dnsd, "host1.node.consul", lambda r: r.rcode() == dns.rcode.NXDOMAIN, "TXT")


def test_ipv6_and_malformed_nodes(dnsd: DnsdProcess, registrator: Registrator) -> None:
    reg = registrator
    reg.create("api", "fd00::7:443", b"")                 # no JSON: the name serves
    reg.create("api", "10.0.0.8:443", b"{not json")
    reg.create("api", "garbage", b"\x00\x01")             # skipped, logged
    # Three writes, possibly three swaps: wait for each to show.
    wait_answer(dnsd, "api.service.consul",
                lambda r: addresses(r) == {"fd00::7"}, rdtype="AAAA")
    wait_answer(dnsd, "api.service.consul", lambda r: addresses(r) == {"10.0.0.8"})
    dnsd.wait_for_log(r"skipping .*/api/garbage")


def test_zookeeper_down_keeps_answering_then_catches_up(
        zookeeper: ZooKeeperServer, dnsd: DnsdProcess, registrator: Registrator) -> None:
    reg = registrator
    reg.register("web", "10.0.1.1", 80)
    wait_answer(dnsd, "web.service.consul", lambda r: addresses(r) == {"10.0.1.1"})
    zookeeper.stop()
    try:
        dnsd.wait_for_log(r"stale.*connection to ZooKeeper lost")
        for _ in range(5):  # the last table keeps serving
            assert addresses(dnsd.query("web.service.consul")) == {"10.0.1.1"}
            time.sleep(0.1)
    finally:
        zookeeper.start()
    wait_until(lambda: reg.client.connected, what="the registrator stand-in to reconnect")
    reg.register("web", "10.0.1.2", 80)
    reg.deregister("web", "10.0.1.1:80")
    wait_answer(dnsd, "web.service.consul", lambda r: addresses(r) == {"10.0.1.2"},
                timeout=20)


def measure_latency(dnsd: DnsdProcess, reg: Registrator, changes: int) -> list[float]:
    """Seconds from a znode create/delete to the first DNS answer showing it."""
    reg.register("lat", "10.2.0.1", 80)  # a steady instance keeps the service node
    wait_answer(dnsd, "lat.service.consul", lambda r: "10.2.0.1" in addresses(r))
    latencies = []
    for n in range(changes):
        adding = n % 2 == 0
        started = time.monotonic()
        if adding:
            reg.register("lat", "10.2.0.2", 80)
        else:
            reg.deregister("lat", "10.2.0.2:80")
        while ("10.2.0.2" in addresses(dnsd.query("lat.service.consul"))) != adding:
            if time.monotonic() - started > 30:
                raise AssertionError(f"change {n} not visible after 30 s")
        latencies.append(time.monotonic() - started)
    return latencies


def report(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{len(ordered)} changes: median {statistics.median(ordered) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms")


def test_propagation_is_fast(dnsd: DnsdProcess, registrator: Registrator) -> None:
    latencies = measure_latency(dnsd, registrator, 20)
    print(report(latencies))  # figures only: the slow variant measures properly


@pytest.mark.slow
def test_propagation_latency_200_changes(dnsd: DnsdProcess, registrator: Registrator) -> None:
    latencies = measure_latency(dnsd, registrator, 200)
    print(report(latencies))
    ordered = sorted(latencies)
    assert ordered[int(len(ordered) * 0.99)] < 0.05


def test_state_dir_serves_the_saved_table_when_zookeeper_is_down_at_start(
        zookeeper: ZooKeeperServer, registrator: Registrator, tmp_path: Path) -> None:
    state = f"{tmp_path}/state"
    args = ["--zookeeper", f"{zookeeper.hosts}{registrator.base}", "--state-dir", state]
    with DnsdProcess(args) as proc:
        proc.wait_for_log(r"ZooKeeper .*: up")
        registrator.register("web", "10.0.0.7", 8080)
        wait_answer(proc, "web.service.consul", lambda r: addresses(r) == {"10.0.0.7"})
        wait_until(lambda: os.path.exists(os.path.join(state, "table.json")))  # debounced
    zookeeper.stop()
    try:
        with DnsdProcess(args) as proc:  # ZooKeeper is down: only the saved table can answer
            reply = proc.query("web.service.consul")
            assert addresses(reply) == {"10.0.0.7"}
    finally:
        zookeeper.start()
