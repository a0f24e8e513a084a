"""The Consul double's prepared queries (/v1/query), used through python-consul2
over real HTTP as a client of Consul would use them.

python-consul2's ``query.create`` and ``query.update`` always send a
``Template`` of type ``name_prefix_match``, so every query made with them is a
template. A static query therefore goes through the client's HTTP layer with
the definition as Consul documents it (:func:`create`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import consul
import consul.base
import pytest

from tests.consul_double import ConsulDouble

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble(remote=("dc2", "dc3"), rng=random.Random(7)) as d:
        d.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80,
                   tags=("v1", "primary"), status="passing", node_meta={"rack": "r1"},
                   meta={"env": "prod"})
        d.register("web", "web-2", node="node2", node_address="10.0.0.2", port=80,
                   tags=("v2",), status="warning", node_meta={"rack": "r2"})
        d.register("web", "web-3", node="node3", node_address="10.0.0.3", port=80,
                   tags=("v1", "canary"), status="critical")
        d.register("db", "db-1", node="node2", port=5432, tags=("primary",), status="passing")
        d.register("db", "db-far", node="far2", node_address="10.2.0.1", port=5432,
                   status="passing", dc="dc2")
        d.register("db", "db-far3", node="far3", node_address="10.3.0.1", port=5432,
                   status="passing", dc="dc3")
        yield d


@pytest.fixture
def c(double: ConsulDouble) -> Any:
    return consul.Consul(host="127.0.0.1", port=double.port, timeout=30)


def create(c: Any, definition: dict[str, Any], dc: str | None = None) -> str:
    """POST a definition as Consul documents it; its new ID."""
    params = [("dc", dc)] if dc else []
    return str(c.http.post(consul.base.CB.json(is_id=True), "/v1/query", params=params,
                           data=json.dumps(definition)))


def execute(c: Any, name: str, **options: Any) -> dict[str, Any]:
    reply = c.query.execute(name, **options)
    assert isinstance(reply, dict), reply
    return reply


def instances(reply: dict[str, Any]) -> set[str]:
    return {entry["Service"]["ID"] for entry in reply["Nodes"]}


# --- create, list, read, update, delete ---------------------------------------------------

def test_lifecycle_through_python_consul2(c: Any) -> None:
    made = c.query.create("web", name="web-query", tags=["v1"], onlypassing=True, ttl="10s",
                          datacenters=["dc2"])
    ident = made["ID"]
    (listed,) = c.query.list()
    assert listed["ID"] == ident and listed["Name"] == "web-query"
    assert listed["Service"]["Tags"] == ["v1"] and listed["Service"]["OnlyPassing"] is True
    assert listed["Service"]["Failover"] == {"NearestN": 0, "Datacenters": ["dc2"]}
    assert listed["DNS"] == {"TTL": "10s"}
    assert listed["Template"]["Type"] == "name_prefix_match"  # python-consul2 always sends one
    assert listed["CreateIndex"] == listed["ModifyIndex"]
    assert c.query.get(ident) == [listed]

    assert c.query.update(ident, service="db", name="db-query")
    (updated,) = c.query.get(ident)
    assert updated["Name"] == "db-query" and updated["Service"]["Tags"] is None  # replaced
    assert updated["ModifyIndex"] > updated["CreateIndex"] == listed["CreateIndex"]

    assert c.query.delete(ident)
    assert c.query.list() == []
    with pytest.raises(consul.ConsulException, match="non-existent prepared query"):
        c.query.delete(ident)
    assert c.query.get(ident)[1] is None  # a 404: python-consul2 gives (index, None)


def test_static_query_lifecycle_and_index(c: Any, double: ConsulDouble) -> None:
    ident = create(c, {"Name": "static", "Service": {"Service": "web"}})
    reply = c.http.get(lambda r: r, "/v1/query")
    assert reply.code == 200 and int(reply.headers["X-Consul-Index"]) > 1
    (listed,) = json.loads(reply.body)
    assert listed["ID"] == ident and listed["Template"] == {
        "Type": "", "Regexp": "", "RemoveEmptyTags": False}
    assert listed["Service"]["Tags"] is None and listed["Service"]["NodeMeta"] is None
    # a query by ID, by name, or not found
    assert instances(execute(c, ident)) == {"web-1", "web-2"}
    assert instances(execute(c, "STATIC")) == {"web-1", "web-2"}
    assert c.query.execute("nothing-like-it")[1] is None  # 404 "Query not found"


def test_listing_does_not_block(c: Any, double: ConsulDouble) -> None:
    create(c, {"Name": "static", "Service": {"Service": "web"}})
    index = c.http.get(lambda r: r, "/v1/query").headers["X-Consul-Index"]
    # Consul documents /v1/query as not blocking: an index and a long wait
    # still answer at once (the client's 30 s timeout would fail this otherwise).
    reply = c.http.get(lambda r: r, "/v1/query", params=[("index", index), ("wait", "10m")])
    assert reply.code == 200 and reply.headers["X-Consul-Index"] == index


def test_queries_live_in_their_datacenter(c: Any) -> None:
    create(c, {"Name": "far-db", "Service": {"Service": "db"}}, dc="dc2")
    assert c.query.list() == []
    (listed,) = c.query.list(dc="dc2")
    assert listed["Name"] == "far-db"
    reply = execute(c, "far-db", dc="dc2")
    assert instances(reply) == {"db-far"} and reply["Datacenter"] == "dc2"
    assert c.query.execute("far-db")[1] is None


# --- what Consul refuses ----------------------------------------------------------------------

REFUSED = [
    ({"Name": "q", "Service": {}}, "Invalid prepared query: Must provide a Service name"),
    ({"Service": {"Service": "web"}}, "Must be bound to a session"),
    ({"Name": "q", "Service": {"Service": "web"},
      "Session": "adf4238a-882b-9ddc-4a9d-5b6758e4159e"}, "invalid session"),
    ({"Name": "q", "Service": {"Service": "web", "Failover": {"NearestN": -1}}},
     "Bad NearestN '-1'"),
    ({"Name": "q", "Service": {"Service": "web"}, "DNS": {"TTL": "10 seconds"}},
     "Bad DNS TTL '10 seconds'"),
    ({"Name": "q", "Service": {"Service": "web"}, "DNS": {"TTL": "-5s"}}, "must be >=0"),
    ({"Name": "q", "Service": {"Service": "web"}, "Token": "<hidden>"}, "redacted token"),
    ({"Name": "q", "Service": {"Service": "web"}, "Template": {"Type": "regexp"}},
     "failed compiling template: Bad Template.Type 'regexp'"),
    ({"Name": "q", "Service": {"Service": "web"},
      "Template": {"Type": "name_prefix_match", "Regexp": "geo-(("}}, "Bad Regexp"),
    ({"Name": "q", "Service": {"Service": "web"},
      "Template": {"Type": "name_prefix_match", "Regexp": "(?=x)"}}, "Bad Regexp"),
    ({"Name": "q", "Service": {"Service": "${name.full"},
      "Template": {"Type": "name_prefix_match"}}, "Bad format '${name.full' in Service.Service"),
    ({"Name": "q", "Service": {"Service": "web", "Tags": ["${nope}"]},
      "Template": {"Type": "name_prefix_match"}},
     "Bad evaluation for '${nope}' in Service.Tags[0]: unknown variable accessed: nope"),
    ({"ID": "8f246b77-f3e1-ff88-5b48-8ec93abf3e05", "Name": "q",
      "Service": {"Service": "web"}}, "ID must be empty"),
]


@pytest.mark.parametrize(("definition", "message"), REFUSED)
def test_bad_definitions_are_refused_with_consul_s_message(c: Any, definition: dict[str, Any],
                                                           message: str) -> None:
    # Consul hands its RPC errors to HTTP clients as 500s with the message.
    with pytest.raises(consul.ConsulException, match=r"^500 ") as refused:
        create(c, definition)
    assert message in str(refused.value)
    assert c.query.list() == []


def test_names_are_unique_without_case(c: Any) -> None:
    create(c, {"Name": "Web", "Service": {"Service": "web"}})
    with pytest.raises(consul.ConsulException, match="name 'web' aliases an existing query"):
        create(c, {"Name": "web", "Service": {"Service": "db"}})
    create(c, {"Name": "", "Template": {"Type": "name_prefix_match"},
               "Service": {"Service": "${name.full}"}})
    with pytest.raises(consul.ConsulException, match="empty name already exists"):
        create(c, {"Template": {"Type": "name_prefix_match"}, "Service": {"Service": "x"}})


def test_an_undecodable_body_is_a_bad_request(c: Any) -> None:
    with pytest.raises(consul.base.BadRequest, match="Request decode failed"):
        c.http.post(consul.base.CB.json(), "/v1/query", data="{not json")
    with pytest.raises(consul.base.BadRequest, match="Request decode failed"):
        create(c, {"Name": "q", "Service": {"Service": "web", "OnlyPassing": "yes"}})


def test_updating_a_missing_query_fails(c: Any) -> None:
    with pytest.raises(consul.ConsulException, match="non-existent prepared query"):
        c.query.update("8f246b77-f3e1-ff88-5b48-8ec93abf3e05", service="web", name="x")


# --- execution --------------------------------------------------------------------------------

# (definition, asked name, instances, datacenter, failovers)
EXECUTIONS = [
    ({"Name": "q", "Service": {"Service": "web"}}, "q", {"web-1", "web-2"}, "dc1", 0),
    ({"Name": "q", "Service": {"Service": "WEB"}}, "q", {"web-1", "web-2"}, "dc1", 0),
    ({"Name": "q", "Service": {"Service": "web", "OnlyPassing": True}}, "q", {"web-1"}, "dc1",
     0),
    ({"Name": "q", "Service": {"Service": "web", "Tags": ["V1"]}}, "q", {"web-1"}, "dc1", 0),
    ({"Name": "q", "Service": {"Service": "web", "Tags": ["!v1"]}}, "q", {"web-2"}, "dc1", 0),
    ({"Name": "q", "Service": {"Service": "web", "IgnoreCheckIDs": ["service:web-3"]}}, "q",
     {"web-1", "web-2", "web-3"}, "dc1", 0),
    ({"Name": "q", "Service": {"Service": "web", "NodeMeta": {"rack": "r2"}}}, "q", {"web-2"},
     "dc1", 0),
    ({"Name": "q", "Service": {"Service": "web", "ServiceMeta": {"env": "prod"}}}, "q",
     {"web-1"}, "dc1", 0),
    # failover: unknown datacenters and the local one are skipped, each is tried once
    ({"Name": "q", "Service": {"Service": "db", "Tags": ["!primary"],
                               "Failover": {"Datacenters": ["dc9", "dc1", "dc3", "dc2"]}}},
     "q", {"db-far3"}, "dc3", 1),
    ({"Name": "q", "Service": {"Service": "db", "Tags": ["!primary"],
                               "Failover": {"NearestN": 1, "Datacenters": ["dc3"]}}},
     "q", {"db-far"}, "dc2", 1),
    ({"Name": "q", "Service": {"Service": "db", "Tags": ["primary", "x"],
                               "Failover": {"NearestN": 5, "Datacenters": ["dc2"]}}},
     "q", set(), "dc3", 2),
    # templates
    ({"Name": "geo-", "Template": {"Type": "name_prefix_match"},
      "Service": {"Service": "${name.suffix}"}}, "geo-db", {"db-1"}, "dc1", 0),
    ({"Name": "geo-", "Template": {"Type": "name_prefix_match",
                                   "Regexp": "^geo-(\\w+)-(\\w+)$"},
      "Service": {"Service": "${match(1)}", "Tags": ["${match(2)}"]}},
     "geo-web-primary", {"web-1"}, "dc1", 0),
    ({"Name": "geo-", "Template": {"Type": "name_prefix_match", "Regexp": "^geo-(\\w+)-(\\w+)$",
                                   "RemoveEmptyTags": True},
      "Service": {"Service": "web", "Tags": ["${match(2)}"]}},
     "geo-nothing", {"web-1", "web-2"}, "dc1", 0),
]


@pytest.mark.parametrize(("definition", "asked", "expected", "dc", "failovers"), EXECUTIONS)
def test_execute(c: Any, definition: dict[str, Any], asked: str, expected: set[str], dc: str,
                 failovers: int) -> None:
    create(c, definition)
    reply = execute(c, asked)
    assert instances(reply) == expected
    assert (reply["Datacenter"], reply["Failovers"]) == (dc, failovers)


def test_execute_reply_shape(c: Any) -> None:
    create(c, {"Name": "q", "Service": {"Service": "web", "OnlyPassing": True},
               "DNS": {"TTL": "30s"}})
    reply = execute(c, "q")
    assert set(reply) == {"Service", "Nodes", "DNS", "Datacenter", "Failovers"}
    assert reply["Service"] == "web" and reply["DNS"] == {"TTL": "30s"}
    (entry,) = reply["Nodes"]
    assert set(entry) == {"Node", "Service", "Checks"}
    assert entry["Node"]["Meta"] == {"rack": "r1"}
    assert {ch["CheckID"] for ch in entry["Checks"]} == {"serfHealth", "service:web-1"}


def test_resolution_order(c: Any) -> None:
    static = create(c, {"Name": "geo-db", "Service": {"Service": "web"}})
    create(c, {"Name": "geo-", "Template": {"Type": "name_prefix_match"},
               "Service": {"Service": "db"}})
    longer = create(c, {"Name": "geo-db-", "Template": {"Type": "name_prefix_match"},
                        "Service": {"Service": "${name.suffix}"}})
    create(c, {"Name": "", "Template": {"Type": "name_prefix_match"},
               "Service": {"Service": "${name.full}"}})
    assert execute(c, static)["Service"] == "web"      # an ID first
    assert execute(c, "geo-db")["Service"] == "web"    # then an exact name
    assert execute(c, "geo-db-web")["Service"] == "web"  # then the longest prefix
    assert execute(c, "geo-x")["Service"] == "db"
    assert execute(c, "db")["Service"] == "db"          # the catch-all
    with pytest.raises(consul.ConsulException, match="only be resolved up by name"):
        c.query.execute(longer)


def test_explain_shows_the_rendered_template(c: Any) -> None:
    create(c, {"Name": "geo-db", "Template": {"Type": "name_prefix_match",
                                              "Regexp": "^geo-db-(.*?)-([^\\-]+?)$"},
               "Service": {"Service": "mysql-${match(1)}", "Tags": ["${match(2)}"],
                           "Failover": {"Datacenters": ["${name.prefix}"]}}})
    query = c.query.explain("geo-db-customer-primary")["Query"]
    assert query["Service"]["Service"] == "mysql-customer"
    assert query["Service"]["Tags"] == ["primary"]
    assert query["Service"]["Failover"]["Datacenters"] == ["geo-db"]


def test_execute_limit(c: Any) -> None:
    create(c, {"Name": "q", "Service": {"Service": "web"}})
    assert len(execute(c, "q", limit=1)["Nodes"]) == 1


def test_execute_without_a_leader_needs_stale(c: Any, double: ConsulDouble) -> None:
    ident = create(c, {"Name": "q", "Service": {"Service": "web"}})
    double.set_leader(False)
    with pytest.raises(consul.ConsulException, match="No cluster leader"):
        c.query.execute("q")
    with pytest.raises(consul.ConsulException, match="No cluster leader"):
        c.query.list()
    with pytest.raises(consul.ConsulException, match="No cluster leader"):
        create(c, {"Name": "q2", "Service": {"Service": "web"}})
    stale = c.http.get(lambda r: r, f"/v1/query/{ident}/execute", params=[("stale", "1")])
    assert stale.code == 200 and stale.headers["X-Consul-KnownLeader"] == "false"
    assert {e["Service"]["ID"] for e in json.loads(stale.body)["Nodes"]} == {"web-1", "web-2"}
    listed = c.http.get(lambda r: r, "/v1/query", params=[("stale", "1")])
    assert listed.code == 200 and json.loads(listed.body)[0]["ID"] == ident


def test_python_side_matches_http(double: ConsulDouble, c: Any) -> None:
    ident = double.create_query({"Name": "q", "Service": {"Service": "web", "Tags": ["v2"]}})
    assert c.query.get(ident)[0]["Name"] == "q"
    assert instances(double.execute_query("q")) == instances(execute(c, "q")) == {"web-2"}
