"""dnsd's prepared-query evaluator agrees with Consul's.

Each case creates its definitions in the Consul double over HTTP, reads them
back with ``GET /v1/query`` as dnsd will, and asks the same name of both the
double's ``execute`` and :func:`dnsd.prepared.resolve` (against a snapshot of
the same registrations): they must give the same instances, datacenter, TTL
and failover count, or both nothing. Each case also states the instances it
expects, so that agreeing on the wrong thing, or on nothing, does not pass.

Where dnsd differs on purpose (a template asked by its ID: Consul's DNS
answers SERVFAIL to the error, dnsd NXDOMAIN) "nothing" covers both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import consul
import consul.base
import pytest

from dnsd.model import Health, Instance, Node, View
from dnsd.prepared import parse_queries, resolve
from dnsd.table import build_snapshot
from tests.consul_double import ConsulDouble, go_duration

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass(frozen=True)
class Reg:
    service: str
    ident: str
    node: str
    dc: str = "dc1"
    tags: tuple[str, ...] = ()
    status: str = "passing"
    meta: dict[str, str] = field(default_factory=dict)


NODES = {"node1": "10.0.0.1", "node2": "10.0.0.2", "node3": "10.0.0.3", "node4": "10.0.0.4",
         "far2": "10.2.0.1", "far3": "10.3.0.1"}
NODE_META = {"node1": {"rack": "r1"}, "node2": {"rack": "r2"},
             "node4": {"rack": "r2", "zone": "b"}, "far3": {"rack": "r2"}}

REGISTRATIONS = (
    Reg("web", "web-1", "node1", tags=("v1", "primary"), meta={"env": "prod"}),
    Reg("web", "web-2", "node2", tags=("v2",), status="warning"),
    Reg("web", "web-3", "node3", tags=("v1", "canary"), status="critical"),
    Reg("web", "web-4", "node4", tags=("V1", "Canary")),
    Reg("db", "db-1", "node2", tags=("primary",)),
    Reg("db", "db-2", "node3", tags=("replica",), status="warning"),
    Reg("cache", "cache-1", "node1", status="critical"),
    Reg("web", "web-far", "far2", "dc2"),
    Reg("cache", "cache-far2", "far2", "dc2", status="critical"),
    Reg("api", "api-2", "far2", "dc2", tags=("v1",)),
    Reg("cache", "cache-far3", "far3", "dc3"),
    Reg("api", "api-3", "far3", "dc3", status="warning"),
)

SNAPSHOT = build_snapshot(1, {"consul": View(tuple(
    Instance(r.service, r.node, r.dc, id=r.ident, node_address=NODES[r.node], port=80,
             tags=r.tags, health=Health.worst([r.status]), meta=r.meta)
    for r in REGISTRATIONS), tuple(
    Node(r.node, r.dc, NODES[r.node], NODE_META.get(r.node, {})) for r in REGISTRATIONS))},
    "dc1")


@dataclass(frozen=True)
class Case:
    label: str
    definitions: tuple[dict[str, Any], ...]
    asked: str  # "{0}" is the first definition's ID
    expected: frozenset[str] | None  # the instances both must answer; None: nothing
    dc: str | None = None  # the datacenter asked, where the definitions live too


def q(name: str, service: str, **fields: Any) -> dict[str, Any]:
    """A definition: ``Service`` fields by keyword, plus ``template``/``regexp``/
    ``remove_empty_tags`` for templates and ``ttl`` for DNS.TTL."""
    definition: dict[str, Any] = {"Name": name}
    kind = fields.pop("template", False)
    regexp = fields.pop("regexp", "")
    remove = fields.pop("remove_empty_tags", False)
    if kind or regexp or remove:
        definition["Template"] = {"Type": "name_prefix_match", "Regexp": regexp,
                                  "RemoveEmptyTags": remove}
    if "ttl" in fields:
        definition["DNS"] = {"TTL": fields.pop("ttl")}
    if "failover" in fields:
        fields["Failover"] = {"Datacenters": fields.pop("failover")}
    definition["Service"] = {"Service": service, **fields}
    return definition


def ids(*names: str) -> frozenset[str]:
    return frozenset(names)


CASES = [
    Case("plain", (q("web", "web"),), "web", ids("web-1", "web-2", "web-4")),
    Case("every tag must match", (q("web", "web", Tags=["v1", "primary"]),), "web",
         ids("web-1")),
    Case("tags ignore case", (q("web", "web", Tags=["V1"]),), "web", ids("web-1", "web-4")),
    Case("!tag excludes", (q("web", "web", Tags=["v1", "!canary"]),), "web", ids("web-1")),
    Case("only !tags", (q("web", "web", Tags=["!V1"]),), "web", ids("web-2")),
    Case("only passing", (q("web", "web", OnlyPassing=True),), "web", ids("web-1", "web-4")),
    Case("warning answers by default", (q("db", "db"),), "db", ids("db-1", "db-2")),
    Case("service meta", (q("web", "web", ServiceMeta={"env": "prod"}),), "web",
         ids("web-1")),
    Case("node meta", (q("web", "web", NodeMeta={"rack": "r2"}),), "web",
         ids("web-2", "web-4")),
    Case("node meta: every value", (q("web", "web", NodeMeta={"rack": "r2", "zone": "b"}),),
         "web", ids("web-4")),
    Case("node meta: failover", (q("api", "api", NodeMeta={"rack": "r2"},
                                   failover=["dc2", "dc3"]),), "api", ids("api-3")),
    Case("template: node meta interpolated",
         (q("rack-", "web", NodeMeta={"rack": "${name.suffix}"}, template=True),), "rack-r1",
         ids("web-1")),
    Case("ttl", (q("web", "web", ttl="1m", Tags=["v2"]),), "web", ids("web-2")),
    Case("ttl truncated to seconds", (q("web", "web", ttl="1500ms", Tags=["v2"]),), "web",
         ids("web-2")),
    Case("nothing healthy anywhere", (q("cache", "cache"),), "cache", None),
    Case("failover: first listed with healthy instances",
         (q("cache", "cache", failover=["dc9", "dc1", "dc2", "dc3"]),), "cache",
         ids("cache-far3")),
    Case("failover: only-passing in the remote datacenter too",
         (q("api", "api", OnlyPassing=True, failover=["dc3", "dc2"]),), "api", ids("api-2")),
    Case("failover finds nothing", (q("cache", "cache", failover=["dc2"]),), "cache", None),
    Case("failover: tags apply remotely", (q("api", "api", Tags=["v1"], failover=["dc3", "dc2"]),),
         "api", ids("api-2")),
    Case("unknown name", (q("web", "web"),), "nothing", None),
    Case("by ID", (q("web", "web", Tags=["primary"]),), "{0}", ids("web-1")),
    Case("a template is not run by its ID", (q("web-", "web", template=True),), "{0}", None),
    Case("template: name.suffix", (q("svc-", "${name.suffix}", template=True),), "svc-db",
         ids("db-1", "db-2")),
    Case("template: name.full, catch-all", (q("", "${name.full}", template=True),), "db",
         ids("db-1", "db-2")),
    Case("template: name.prefix as a tag", (q("v1", "web", Tags=["${name.prefix}"],
                                              template=True),), "v1-anything",
         ids("web-1", "web-4")),
    Case("template: the longest prefix wins",
         (q("geo-", "db", template=True), q("geo-web-", "web", template=True, Tags=["v2"])),
         "geo-web-x", ids("web-2")),
    Case("template: an exact static name wins",
         (q("geo-", "db", template=True), q("geo-web", "web", Tags=["primary"])), "geo-web",
         ids("web-1")),
    Case("template: regexp groups",
         (q("geo-", "${match(1)}", Tags=["${match(2)}"], regexp=r"^geo-(\w+)-(\w+)$"),),
         "geo-web-canary", ids("web-4")),
    Case("template: a regexp that matches nothing renders no service",
         (q("geo-", "${match(1)}", Tags=["${match(2)}"], regexp=r"^geo-(\w+)-(\w+)$"),),
         "geo-nomatch", None),
    Case("template: no match, empty tag kept",
         (q("x-", "${name.suffix}", Tags=["${match(2)}"], regexp=r"^x-(\w+)-(v\d)$"),),
         "x-web", None),
    Case("template: no match, empty tag removed",
         (q("x-", "${name.suffix}", Tags=["${match(2)}"], regexp=r"^x-(\w+)-(v\d)$",
            remove_empty_tags=True),), "x-web", ids("web-1", "web-2", "web-4")),
    Case("template: regexp match, tag kept",
         (q("x-", "${match(1)}", Tags=["${match(2)}"], regexp=r"^x-(\w+)-(v\d)$",
            remove_empty_tags=True),), "x-web-v2", ids("web-2")),
    Case("template: interpolated failover datacenter",
         (q("cache-in-", "cache", failover=["${name.suffix}"], template=True),), "cache-in-dc3",
         ids("cache-far3")),
    Case("template: ttl", (q("ttl-", "${name.suffix}", ttl="45s", template=True),), "ttl-db",
         ids("db-1", "db-2")),
    Case("asked in another datacenter: its queries, local there",
         (q("api", "api", failover=["dc1", "dc3"]),), "api", ids("api-2"), dc="dc2"),
    Case("asked in another datacenter: failover from there",
         (q("db", "db", failover=["dc3", "dc1"]),), "db", ids("db-1", "db-2"), dc="dc2"),
]


Answer = tuple[frozenset[str], str, int | None, int] | None


@pytest.fixture(scope="module")
def double() -> Iterator[ConsulDouble]:
    with ConsulDouble(remote=("dc2", "dc3")) as d:
        for r in REGISTRATIONS:
            d.register(r.service, r.ident, node=r.node, node_address=NODES[r.node], port=80,
                       tags=r.tags, status=r.status, meta=r.meta, dc=r.dc,
                       node_meta=NODE_META.get(r.node))
        yield d


@pytest.fixture
def c(double: ConsulDouble) -> Iterator[Any]:
    client = consul.Consul(host="127.0.0.1", port=double.port, timeout=30)
    yield client
    for dc in double.datacenters:  # each case starts with no queries
        for query in client.query.list(dc=dc):
            client.query.delete(query["ID"], dc=dc)


def consul_answer(c: Any, asked: str, dc: str | None) -> Answer:
    try:
        reply = c.query.execute(asked, dc=dc)
    except consul.ConsulException as exc:
        assert "only be resolved up by name" in str(exc)
        return None
    if not isinstance(reply, dict) or not reply["Nodes"]:  # a 404, or no instance
        return None
    ttl = int(go_duration(reply["DNS"]["TTL"])) if reply["DNS"]["TTL"] else None
    return (frozenset(e["Service"]["ID"] for e in reply["Nodes"]), reply["Datacenter"], ttl,
            reply["Failovers"])


@pytest.mark.parametrize("case", CASES, ids=[case.label for case in CASES])
def test_dnsd_and_consul_agree(c: Any, case: Case) -> None:
    created = [
        str(c.http.post(consul.base.CB.json(is_id=True), "/v1/query",
                        params=[("dc", case.dc)] if case.dc else [],
                        data=json.dumps(definition)))
        for definition in case.definitions]
    asked = case.asked.format(*created)
    queries, warnings = parse_queries(c.query.list(dc=case.dc))
    assert warnings == ()

    found = resolve(queries, asked, SNAPSHOT, datacenter=case.dc)
    dnsd: Answer = None if found is None else (
        frozenset(i.id for i in found.instances), found.datacenter, found.ttl, found.failovers)
    assert dnsd == consul_answer(c, asked, case.dc)
    assert (None if dnsd is None else dnsd[0]) == case.expected
