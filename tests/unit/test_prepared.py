"""Prepared queries without Consul: definitions -> QuerySet -> (name, table) -> instances."""

from __future__ import annotations

from typing import Any

import pytest

from dnsd.model import Health, Instance, Node, View
from dnsd.prepared import (
    PreparedQuery,
    QuerySet,
    Template,
    compile_regexp,
    parse_duration,
    parse_queries,
    render,
    resolve,
)
from dnsd.table import Snapshot, build_snapshot

ID1 = "8f246b77-f3e1-ff88-5b48-8ec93abf3e05"
ID2 = "0b1c2d3e-0000-4000-8000-000000000002"
ID3 = "0b1c2d3e-0000-4000-8000-000000000003"
ID4 = "0b1c2d3e-0000-4000-8000-000000000004"


def definition(ident: str = ID1, name: str = "", service: str = "web", *,
               tags: list[str] | None = None, only_passing: bool = False,
               datacenters: list[str] | None = None, ttl: str = "",
               template: str = "", regexp: str = "", remove_empty_tags: bool = False,
               **service_fields: Any) -> dict[str, Any]:
    """A definition in the shape ``GET /v1/query`` lists it (nulls included)."""
    svc: dict[str, Any] = {
        "Service": service, "Failover": {"NearestN": 0, "Datacenters": datacenters},
        "IgnoreCheckIDs": None, "OnlyPassing": only_passing, "Near": "", "Tags": tags,
        "NodeMeta": None, "ServiceMeta": None, "Connect": False}
    svc.update(service_fields)
    return {"ID": ident, "Name": name, "Session": "", "Token": "",
            "Template": {"Type": template, "Regexp": regexp,
                         "RemoveEmptyTags": remove_empty_tags},
            "Service": svc, "DNS": {"TTL": ttl}, "CreateIndex": 11, "ModifyIndex": 11}


def queries(*definitions: dict[str, Any]) -> QuerySet:
    found, warnings = parse_queries(list(definitions))
    assert not warnings, warnings
    return found


# --- durations ------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("10s", 10.0), ("1m", 60.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("2h45m", 9900.0),
    ("300ms", 0.3), ("1500us", 0.0015), ("1500µs", 0.0015), ("7ns", 7e-9),
    ("0", 0.0), ("+0", 0.0), ("-0", 0.0), ("0s", 0.0), ("-2m", -120.0), (".5s", 0.5),
    ("1.s", 1.0),
])
def test_parse_duration_reads_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "00", "s", ".s", "1x", "1sx", "1 s", "--1s",
                                  "1s2", "one second"])
def test_parse_duration_refuses_what_go_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# --- reading the list ---------------------------------------------------------------------

def test_a_full_definition_is_read() -> None:
    found, warnings = parse_queries([definition(
        name="Web-Query", service="web", tags=["primary", "!canary"], only_passing=True,
        datacenters=["dc2", "dc3"], ttl="1m30s", ServiceMeta={"env": "prod"})])
    assert warnings == ()
    (query,) = found.queries
    assert query == PreparedQuery(
        id=ID1, name="Web-Query", service="web", tags=("primary", "!canary"),
        only_passing=True, failover_datacenters=("dc2", "dc3"),
        service_meta=(("env", "prod"),), ttl=90, template=None)


def test_a_template_is_read_with_its_regexp() -> None:
    found = queries(definition(name="geo-", service="${match(1)}", template="name_prefix_match",
                               regexp=r"^geo-(\w+)$", remove_empty_tags=True))
    (query,) = found.queries
    assert query.template is not None and query.template.remove_empty_tags
    assert query.template.regexp is not None and query.template.regexp.pattern == r"^geo-(\w+)$"


@pytest.mark.parametrize(("ttl", "seconds"), [("", None), ("10s", 10), ("1m", 60),
                                              ("1500ms", 1), ("999ms", 0), ("0", 0)])
def test_dns_ttl_is_whole_seconds_truncated_as_consul_does(ttl: str,
                                                           seconds: int | None) -> None:
    (query,) = queries(definition(name="q", ttl=ttl)).queries
    assert query.ttl == seconds


# (definition, kept?, words the warning must contain)
BAD_OR_PARTLY_SUPPORTED = [
    (definition(name="q", service=""), False, "no Service.Service"),
    (definition(name="q", template="prefix_match"), False, "Template.Type 'prefix_match'"),
    (definition(name="q", template="name_prefix_match", regexp="geo-(("), False, "bad regexp"),
    (definition(name="q", template="name_prefix_match", service="${name.full"), False,
     "unclosed"),
    (definition(name="q", template="name_prefix_match", service="${name.nope}"), False,
     "unknown interpolation"),
    (definition(name="q", template="name_prefix_match", tags=["${match(x)}"]), False,
     "unknown interpolation"),
    (definition(name="q", tags="primary"), False, "Service.Tags is not a list"),  # type: ignore[arg-type]
    (definition(name="q", NodeMeta={"rack": 1}), False, "NodeMeta is not a map of strings"),
    (definition(name="q", Connect=True), False, "Connect"),
    (definition(name="q", Peer="other"), False, "Peer"),
    (definition(name="q", Namespace="team-a"), False, "Namespace"),
    (definition(name="q", IgnoreCheckIDs=["serfHealth"]), True, "IgnoreCheckIDs ignored"),
    (definition(name="q", Failover={"NearestN": 2, "Datacenters": ["dc2"]}), True,
     "NearestN ignored"),
    (definition(name="q", ttl="ten seconds"), True, "DNS.TTL ignored"),
    (definition(name="q", ttl="-5s"), True, "DNS.TTL '-5s' ignored"),
]


@pytest.mark.parametrize(("raw", "kept", "words"), BAD_OR_PARTLY_SUPPORTED)
def test_a_definition_dnsd_cannot_fully_honour_is_named_in_a_warning(
        raw: dict[str, Any], kept: bool, words: str) -> None:
    good = definition(ID2, name="good")
    found, warnings = parse_queries([good, raw, definition(ID3, name="also-good")])
    assert [q.name for q in found.queries] == (["good", "q", "also-good"] if kept
                                               else ["good", "also-good"])
    (warning,) = warnings
    assert ID1 in warning and "'q'" in warning and words in warning
    assert ("left out" in warning) is not kept


def test_ttl_that_cannot_be_used_leaves_the_default() -> None:
    found, _ = parse_queries([definition(name="q", ttl="-5s")])
    assert found.queries[0].ttl is None


def test_taken_names_and_ids_keep_the_first() -> None:
    found, warnings = parse_queries([
        definition(ID1, name="web"), definition(ID2, name="WEB"),
        definition(ID1, name="other"), definition(ID3, template="name_prefix_match"),
        definition(ID4, template="name_prefix_match"),
    ])
    assert [q.id for q in found.queries] == [ID1, ID3]
    assert len(warnings) == 3 and all("taken" in w for w in warnings)
    assert ID2 in warnings[0] and "'WEB'" in warnings[0]
    assert ID4 in warnings[2] and "(no name)" in warnings[2]


@pytest.mark.parametrize("reply", [None, {}, "[]", 3])
def test_a_reply_that_is_not_a_list_yields_nothing(reply: object) -> None:
    found, warnings = parse_queries(reply)
    assert len(found) == 0 and len(warnings) == 1


def test_an_entry_that_is_not_an_object_costs_only_itself() -> None:
    found, warnings = parse_queries([definition(name="q"), "junk", None])
    assert len(found) == 1 and len(warnings) == 2 and "#1" in warnings[0]


def test_query_set_refuses_duplicates() -> None:
    one = PreparedQuery(ID1, "web", name="Web")
    with pytest.raises(ValueError, match="name is used twice"):
        QuerySet((one, PreparedQuery(ID2, "web", name="web")))
    with pytest.raises(ValueError, match="ID is used twice"):
        QuerySet((one, PreparedQuery(ID1.upper(), "web")))
    with pytest.raises(ValueError, match="empty name"):
        QuerySet((PreparedQuery(ID2, "a", template=Template()),
                  PreparedQuery(ID3, "b", template=Template())))


def test_values_are_validated_when_built() -> None:
    with pytest.raises(ValueError, match="no ID"):
        PreparedQuery("", "web")
    with pytest.raises(ValueError, match="no Service"):
        PreparedQuery(ID1, "")
    with pytest.raises(ValueError, match="negative"):
        PreparedQuery(ID1, "web", ttl=-1)
    with pytest.raises(ValueError, match="unclosed"):
        PreparedQuery(ID1, "${name.full", template=Template())
    # Outside templates the text is taken as it is, as Consul does.
    assert PreparedQuery(ID1, "${name.full").service == "${name.full"


# --- which query a name selects ------------------------------------------------------------

SELECTION = queries(
    definition(ID1, name="web", service="web-static"),
    definition(ID2, name="geo-db", service="db-geo", template="name_prefix_match"),
    definition(ID3, name="geo-", service="geo-any", template="name_prefix_match"),
    definition(ID4, name="", service="catch-all", template="name_prefix_match"),
    definition("0b1c2d3e-0000-4000-8000-000000000005", service="by-id-only",
               Session="adf4238a-882b-9ddc-4a9d-5b6758e4159e"),
)


@pytest.mark.parametrize(("asked", "service"), [
    (ID1, "web-static"),                   # an ID
    (ID1.upper(), "web-static"),           # IDs compare without case
    ("0b1c2d3e-0000-4000-8000-000000000005", "by-id-only"),  # unnamed: by ID only
    ("web", "web-static"),                 # an exact name...
    ("WEB", "web-static"),                 # ...case-insensitive
    ("geo-db", "db-geo"),                  # a template's exact name
    ("geo-db-customer", "db-geo"),         # the longest template prefix wins...
    ("geo-cache", "geo-any"),              # ...over a shorter one
    ("webby", "catch-all"),                # a static name is no prefix
    ("anything", "catch-all"),             # the empty-named template takes the rest
    (ID2, None),                           # a template is never run by its ID
    ("", None),
])
def test_select(asked: str, service: str | None) -> None:
    query = SELECTION.select(asked)
    assert (query.service if query else None) == service


def test_without_a_catch_all_an_unknown_name_selects_nothing() -> None:
    assert queries(definition(name="web")).select("db") is None


# --- rendering templates ------------------------------------------------------------------

def template(name: str, service: str, tags: list[str] | None = None, regexp: str = "",
             remove_empty_tags: bool = False, datacenters: list[str] | None = None,
             meta: dict[str, str] | None = None) -> PreparedQuery:
    (query,) = queries(definition(name=name, service=service, tags=tags, regexp=regexp,
                                  template="name_prefix_match",
                                  remove_empty_tags=remove_empty_tags,
                                  datacenters=datacenters, ServiceMeta=meta)).queries
    return query


GEO = r"^geo-db-(.*?)-([^\-]+?)$"


@pytest.mark.parametrize(("query", "asked", "service", "tags"), [
    (template("geo-db", "${name.full}"), "geo-db-x", "geo-db-x", ()),
    (template("geo-db", "${name.prefix}"), "geo-db-x", "geo-db", ()),
    (template("geo-db", "${name.suffix}"), "geo-db-x", "-x", ()),
    (template("", "${name.suffix}"), "web", "web", ()),
    # Consul's example: the regexp picks the database and a tag out of the name.
    (template("geo-db", "mysql-${match(1)}", ["${match(2)}"], GEO),
     "geo-db-customer-primary", "mysql-customer", ("primary",)),
    (template("geo-db", "${match(0)}", ["${match(3)}", "${match(-1)}"], GEO),
     "geo-db-customer-primary", "geo-db-customer-primary", ("", "")),
    # A regexp that does not match: every group is empty.
    (template("geo-db", "db${match(1)}", ["${match(2)}"], GEO), "geo-db", "db", ("",)),
    (template("geo-db", "db${match(1)}", ["${match(2)}"], GEO, remove_empty_tags=True),
     "geo-db", "db", ()),
    # A group that takes no part in the match is empty, not an error.
    (template("x", "${match(2)}", ["${match(1)}"], r"^x(a)?(b)$"), "xb", "b", ("",)),
    (template("x", "a$${b}c ${ name.full }", ["$", "$x"]), "xy", "a${b}c xy", ("$", "$x")),
    # The suffix trims the template's name only when it matches exactly.
    (template("Geo-", "${name.suffix}"), "geo-db", "geo-db", ()),
])
def test_render(query: PreparedQuery, asked: str, service: str,
                tags: tuple[str, ...]) -> None:
    rendered = render(query, asked)
    assert (rendered.service, rendered.tags) == (service, tags)


def test_render_interpolates_failover_datacenters_and_meta() -> None:
    query = template("web-", "web", datacenters=["${name.suffix}", "dc9"],
                     meta={"env": "${match(1)}"}, regexp=r"-(\w+)$")
    rendered = render(query, "web-dc2")
    assert rendered.failover_datacenters == ("dc2", "dc9")
    assert rendered.service_meta == (("env", "dc2"),)


def test_static_queries_render_as_they_are() -> None:
    (query,) = queries(definition(name="q", service="${name.full}", tags=["t"])).queries
    assert render(query, "q").service == "${name.full}"


def test_regexp_end_of_text() -> None:
    assert compile_regexp(r"^a\z").search("a") and not compile_regexp(r"^a\\z").search("a")


# --- evaluating against the table ------------------------------------------------------------

def inst(service: str, ident: str, dc: str = "dc1", *, tags: tuple[str, ...] = (),
         health: Health = Health.PASSING, meta: dict[str, str] | None = None) -> Instance:
    return Instance(service, f"node-{ident}", dc, id=ident, node_address="10.0.0.1", port=80,
                    tags=tags, health=health, meta=meta or {})


TABLE = build_snapshot(1, {"consul": View((
    inst("web", "w1", tags=("v1", "Primary")),
    inst("web", "w2", tags=("v2",), health=Health.WARNING),
    inst("web", "w3", tags=("v1", "canary")),
    inst("web", "w4", health=Health.CRITICAL, tags=("v1",)),
    inst("web", "w5", meta={"env": "prod"}),
    inst("web", "r1", "dc2"),
    inst("api", "a2", "dc2", health=Health.CRITICAL),
    inst("api", "a3", "dc3", tags=("v1",)),
    inst("api", "a4", "dc4"),
    inst("db", "d3", "dc3", health=Health.WARNING),
), nodes=(Node("node-w1", "dc1", "10.0.0.1", {"rack": "r1"}),
          Node("node-w3", "dc1", "10.0.0.1", {"rack": "r2", "zone": "b"}),
          Node("node-a4", "dc4", "10.0.0.1", {"rack": "r2"})))}, "dc1")


def ids(found: Any) -> set[str] | None:
    return None if found is None else {i.id for i in found.instances}


# (definitions, asked name, keyword arguments, instance ids, datacenter, failovers)
RESOLVE = [
    ([definition(name="q")], "q", {}, {"w1", "w2", "w3", "w5"}, "dc1", 0),
    ([definition(name="q", tags=["v1"])], "q", {}, {"w1", "w3"}, "dc1", 0),
    ([definition(name="q", tags=["V1", "primary"])], "q", {}, {"w1"}, "dc1", 0),
    ([definition(name="q", tags=["v1", "!canary"])], "q", {}, {"w1"}, "dc1", 0),
    ([definition(name="q", tags=["!v1"])], "q", {}, {"w2", "w5"}, "dc1", 0),
    ([definition(name="q", only_passing=True)], "q", {}, {"w1", "w3", "w5"}, "dc1", 0),
    ([definition(name="q")], "q", {"only_passing": True}, {"w1", "w3", "w5"}, "dc1", 0),
    ([definition(name="q", ServiceMeta={"env": "prod"})], "q", {}, {"w5"}, "dc1", 0),
    ([definition(name="q", ServiceMeta={"env": "dev"})], "q", {}, None, None, None),
    ([definition(name="q", tags=["nope"])], "q", {}, None, None, None),
    # NodeMeta: the instance's node carries every listed value
    ([definition(name="q", NodeMeta={"rack": "r1"})], "q", {}, {"w1"}, "dc1", 0),
    ([definition(name="q", NodeMeta={"rack": "r2", "zone": "b"})], "q", {}, {"w3"}, "dc1", 0),
    ([definition(name="q", NodeMeta={"rack": "R1"})], "q", {}, None, None, None),
    ([definition(name="q", service="api", NodeMeta={"rack": "r2"},
                 datacenters=["dc3", "dc4"])], "q", {}, {"a4"}, "dc4", 2),
    ([definition(name="rack-", NodeMeta={"rack": "${name.suffix}"},
                 template="name_prefix_match")], "rack-r2", {}, {"w3"}, "dc1", 0),
    ([definition(name="q")], "Q", {}, {"w1", "w2", "w3", "w5"}, "dc1", 0),
    ([definition(name="q")], "other", {}, None, None, None),
    # Failover: the asked datacenter has nothing healthy; the first listed one
    # the table holds and that has healthy instances answers.
    ([definition(name="q", service="api", datacenters=["dc9", "dc1", "dc2", "dc3", "dc4"])],
     "q", {}, {"a3"}, "dc3", 2),
    ([definition(name="q", service="api", datacenters=["DC4", "dc3"])],
     "q", {}, {"a4"}, "dc4", 1),
    ([definition(name="q", service="api", tags=["v1"], datacenters=["dc4", "dc3"])],
     "q", {}, {"a3"}, "dc3", 2),
    ([definition(name="q", service="api", datacenters=["dc2"])], "q", {}, None, None, None),
    ([definition(name="q", service="api")], "q", {}, None, None, None),
    ([definition(name="q", service="db", only_passing=True, datacenters=["dc3"])],
     "q", {}, None, None, None),
    ([definition(name="q", service="db", datacenters=["dc3"])], "q", {}, {"d3"}, "dc3", 1),
    # Asked in another datacenter: it is the local one for the query.
    ([definition(name="q", service="web", datacenters=["dc1"])], "q", {"datacenter": "dc2"},
     {"r1"}, "dc2", 0),
    ([definition(name="q", service="api", datacenters=["dc2", "dc1", "dc4"])], "q",
     {"datacenter": "dc2"}, {"a4"}, "dc4", 2),
    ([definition(name="q")], "q", {"datacenter": "dc7"}, None, None, None),
    # Templates: the rendered service and tags select the instances.
    ([definition(name="web-", service="web", tags=["${name.suffix}"],
                 template="name_prefix_match")], "web-v2", {}, {"w2"}, "dc1", 0),
    ([definition(name="", service="${name.full}", template="name_prefix_match",
                 datacenters=["dc3"])], "api", {}, {"a3"}, "dc3", 1),
    ([definition(name="geo-", service="${match(1)}", tags=["${match(2)}"],
                 regexp=r"^geo-(\w+)-(\w+)$", template="name_prefix_match")],
     "geo-web-canary", {}, {"w3"}, "dc1", 0),
    ([definition(name="geo-", service="${match(1)}", regexp=r"^geo-(\w+)$",
                 template="name_prefix_match")], "geo-", {}, None, None, None),
]


@pytest.mark.parametrize(("defs", "asked", "kwargs", "expected", "dc", "failovers"), RESOLVE)
def test_resolve(defs: list[dict[str, Any]], asked: str, kwargs: dict[str, Any],
                 expected: set[str] | None, dc: str | None, failovers: int | None) -> None:
    found = resolve(queries(*defs), asked, TABLE, **kwargs)
    assert ids(found) == expected
    if found is not None:
        assert (found.datacenter, found.failovers) == (dc, failovers)


def test_resolution_carries_the_ttl_and_the_rendered_query() -> None:
    defs = queries(definition(name="web-", service="web", tags=["${name.suffix}"], ttl="30s",
                              template="name_prefix_match"))
    found = resolve(defs, "web-v1", TABLE)
    assert found is not None
    assert (found.service, found.tags, found.ttl) == ("web", ("v1",), 30)
    assert found.query is defs.queries[0]
    plain = resolve(queries(definition(name="q")), "q", TABLE)
    assert plain is not None and plain.ttl is None


def test_resolve_never_returns_unhealthy_instances() -> None:
    everything = resolve(queries(definition(name="q")), "q", TABLE)
    assert everything is not None
    assert all(i.health is not Health.CRITICAL for i in everything.instances)


def test_an_empty_table_answers_nothing() -> None:
    assert resolve(queries(definition(name="q")), "q", Snapshot(1, datacenters=frozenset(
        {"dc1"}))) is None
