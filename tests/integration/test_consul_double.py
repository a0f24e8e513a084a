"""The Consul double's catalog and consistency modes, used through python-consul2
over real HTTP as a client of Consul would use them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import consul
import consul.base
import pytest

from tests.consul_double import ConsulDouble
from tests.dnsd_process import wait_until

# python-consul2 warns about its legacy ACL and discovery-chain wrappers each
# time a client is built; nothing here uses them.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def double(clock: FakeClock) -> Iterator[ConsulDouble]:
    with ConsulDouble(clock=clock, remote=("dc2", "dc3")) as d:
        yield d


def client(double: ConsulDouble, **options: Any) -> Any:
    return consul.Consul(host="127.0.0.1", port=double.port, timeout=30, **options)


def raw_get(c: Any, path: str, **params: str) -> consul.base.Response:
    """A read through python-consul2's HTTP client, keeping status and headers."""
    return c.http.get(lambda response: response, path=path, params=list(params.items()))


# --- node meta and tagged addresses -------------------------------------------------------

def test_node_meta_from_a_catalog_register_is_served_as_meta(double: ConsulDouble) -> None:
    c = client(double)
    assert c.catalog.register("node1", "10.0.0.1", node_meta={"rack": "r1", "zone": "a"},
                              service={"Service": "web", "ID": "web-1", "Port": 80})
    c.catalog.register("node2", "10.0.0.2", node_meta={"rack": "r2"},
                       service={"Service": "web", "ID": "web-2", "Port": 80})
    _, nodes = c.catalog.nodes()
    assert {n["Node"]: n["Meta"] for n in nodes} == {"node1": {"rack": "r1", "zone": "a"},
                                                     "node2": {"rack": "r2"}}
    _, entries = c.health.service("web")
    assert {e["Node"]["Node"]: e["Node"]["Meta"]["rack"] for e in entries} == {
        "node1": "r1", "node2": "r2"}
    # ?node-meta= filters, as Consul's does
    _, nodes = c.catalog.nodes(node_meta={"rack": "r2"})
    assert [n["Node"] for n in nodes] == ["node2"]
    _, entries = c.health.service("web", node_meta={"rack": "r1", "zone": "a"})
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]


def test_a_catalog_register_replaces_the_node_meta(double: ConsulDouble) -> None:
    c = client(double)
    c.catalog.register("node1", "10.0.0.1", node_meta={"rack": "r1"})
    c.catalog.register("node1", "10.0.0.9")  # Consul stores the node as sent
    _, nodes = c.catalog.nodes()
    assert [(n["Address"], n["Meta"]) for n in nodes] == [("10.0.0.9", {})]


def test_tagged_addresses_of_nodes_and_services(double: ConsulDouble) -> None:
    double.add_node("node1", "10.0.0.1", tagged_addresses={
        "lan": "10.0.0.1", "lan_ipv4": "10.0.0.1", "lan_ipv6": "fd00::1",
        "wan": "198.51.100.1", "wan_ipv4": "198.51.100.1", "wan_ipv6": "2001:db8::1"})
    c = client(double)
    c.catalog.register("node1", "10.0.0.1", service={
        "Service": "web", "ID": "web-1", "Port": 80, "Address": "10.5.0.1",
        "TaggedAddresses": {"lan_ipv6": {"Address": "fd00::5", "Port": 8080},
                            "wan": {"Address": "198.51.100.5", "Port": 80}}},
        skipnodeupdate=True)
    double.register("web", "web-2", node="node1", port=81)
    _, nodes = c.catalog.nodes()
    assert nodes[0]["TaggedAddresses"]["lan_ipv6"] == "fd00::1"
    assert nodes[0]["TaggedAddresses"]["wan_ipv4"] == "198.51.100.1"
    _, entries = c.health.service("web")
    by_id = {e["Service"]["ID"]: e for e in entries}
    assert by_id["web-1"]["Service"]["TaggedAddresses"] == {
        "lan_ipv6": {"Address": "fd00::5", "Port": 8080},
        "wan": {"Address": "198.51.100.5", "Port": 80}}
    assert "TaggedAddresses" not in by_id["web-2"]["Service"]  # omitted when empty
    assert by_id["web-2"]["Node"]["TaggedAddresses"]["lan_ipv6"] == "fd00::1"


def test_python_side_node_meta_and_tagged_addresses(double: ConsulDouble) -> None:
    double.register("db", "db-1", node="node3", node_address="10.0.0.3", port=5432,
                    node_meta={"role": "storage"},
                    node_tagged_addresses={"lan_ipv6": "fd00::3"},
                    tagged_addresses={"lan_ipv6": {"Address": "fd00::33", "Port": 5432}})
    double.register("db", "db-2", node="node3", port=5433)  # leaves the node as it was
    _, (entry, other) = client(double).health.service("db")
    assert entry["Node"]["Meta"] == other["Node"]["Meta"] == {"role": "storage"}
    assert entry["Node"]["TaggedAddresses"] == {"lan_ipv6": "fd00::3"}
    assert entry["Service"]["TaggedAddresses"]["lan_ipv6"]["Address"] == "fd00::33"


def test_catalog_checks_and_deregistration(double: ConsulDouble) -> None:
    c = client(double)
    c.catalog.register("node1", "10.0.0.1",
                       service={"Service": "web", "ID": "web-1", "Port": 80},
                       check={"CheckID": "service:web-1", "ServiceID": "web-1"})
    _, (entry,) = c.health.service("web")
    assert [ch["Status"] for ch in entry["Checks"]] == ["critical"]  # Consul's default
    c.catalog.register("node1", "10.0.0.1", check={"CheckID": "service:web-1",
                                                   "ServiceID": "web-1", "Status": "passing"})
    assert c.health.service("web", passing=True)[1]
    c.catalog.register("node1", "10.0.0.1",
                       service={"Service": "api", "ID": "api-1", "Port": 9000})
    assert c.catalog.deregister("node1", service_id="web-1")
    assert c.health.service("web")[1] == []
    assert c.catalog.deregister("node1")  # the whole node
    assert c.health.service("api")[1] == [] and c.catalog.nodes()[1] == []


def test_catalog_register_errors_are_consul_s(double: ConsulDouble) -> None:
    c = client(double)
    with pytest.raises(consul.ConsulException, match="Must provide address"):
        c.catalog.register("node1", "")
    with pytest.raises(consul.ConsulException, match="No path to datacenter"):
        c.catalog.register("node1", "10.0.0.1", dc="nowhere")
    with pytest.raises(consul.base.BadRequest, match="decod"):
        c.catalog.register("node1", "10.0.0.1", service={"Service": "web", "Tags": "v1"})


def test_datacenters_are_listed(double: ConsulDouble) -> None:
    assert client(double).catalog.datacenters() == ["dc1", "dc2", "dc3"]


# --- consistency modes ---------------------------------------------------------------------

def test_each_request_s_consistency_mode_is_recorded(double: ConsulDouble) -> None:
    double.register("web", "web-1", status="passing")
    stale = client(double, consistency="stale")
    stale.catalog.nodes()
    stale.catalog.services(consistency="consistent")
    client(double).catalog.services()
    # python-consul2's health.service has no consistency option: it never sends
    # ?stale, whatever the client's default, so a stale health read goes through
    # the client's HTTP layer with the parameter given.
    stale.health.service("web")
    raw_get(stale, "/v1/health/service/web", stale="1")
    assert double.consistency_log == [
        ("/v1/catalog/nodes", "stale"), ("/v1/catalog/services", "consistent"),
        ("/v1/catalog/services", "default"), ("/v1/health/service/web", "default"),
        ("/v1/health/service/web", "stale")]


def test_a_leader_says_so(double: ConsulDouble) -> None:
    c = client(double)
    for mode, effective in (({}, "leader"), ({"stale": ""}, "stale"),
                            ({"consistent": ""}, "consistent")):
        reply = raw_get(c, "/v1/catalog/nodes", **mode)
        assert reply.code == 200
        assert reply.headers["X-Consul-KnownLeader"] == "true"
        assert reply.headers["X-Consul-LastContact"] == "0"
        assert reply.headers["X-Consul-Effective-Consistency"] == effective


def test_stale_and_consistent_together_are_refused(double: ConsulDouble) -> None:
    reply = raw_get(client(double), "/v1/catalog/nodes", stale="", consistent="")
    assert reply.code == 400 and "conflicting" in reply.body


def test_without_a_leader_only_stale_reads_are_served(double: ConsulDouble,
                                                      clock: FakeClock) -> None:
    double.register("web", "web-1", status="passing")
    double.set_leader(False)
    default, stale = client(double), client(double, consistency="stale")
    with pytest.raises(consul.ConsulException, match="No cluster leader"):
        default.catalog.nodes()
    with pytest.raises(consul.ConsulException, match="No cluster leader"):
        stale.catalog.services(consistency="consistent")
    with pytest.raises(consul.ConsulException, match="No cluster leader"):
        default.health.service("web")
    with pytest.raises(consul.ConsulException, match="No cluster leader"):
        default.catalog.register("node9", "10.0.0.9")  # writes need a leader
    _, nodes = stale.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["node1"]
    assert default.status.leader() == ""

    clock.now += 2.5
    first = raw_get(stale, "/v1/health/service/web", stale="1")
    assert first.code == 200 and len(first.body) > 2
    assert first.headers["X-Consul-KnownLeader"] == "false"
    assert first.headers["X-Consul-LastContact"] == "2500"
    clock.now += 1.25
    later = raw_get(stale, "/v1/catalog/services", stale="1")
    assert later.headers["X-Consul-LastContact"] == "3750"  # grows while leaderless

    double.set_leader(True)
    assert default.catalog.nodes()[1]
    assert raw_get(stale, "/v1/catalog/nodes", stale="1").headers[
        "X-Consul-LastContact"] == "0"


def test_a_stale_long_poll_keeps_blocking_without_a_leader(double: ConsulDouble) -> None:
    double.register("web", "web-1", status="passing")
    c = client(double, consistency="stale")
    index, _ = c.catalog.services()
    double.set_leader(False)
    got: dict[str, Any] = {}

    def poll() -> None:
        got["reply"] = c.catalog.services(index=index, wait="20s")

    waiter = threading.Thread(target=poll)
    waiter.start()
    # the long-poll is in (and would have failed at once if stale reads needed a leader)
    wait_until(lambda: double.requests_with_index["/v1/catalog/services"] == 1, timeout=20)
    assert "reply" not in got
    double.register("api", "api-1")  # a follower still applies what it is sent
    waiter.join(timeout=30)
    new_index, services = got["reply"]
    assert int(new_index) > int(index) and "api" in services
