"""The Consul source's pure parts: index rules, diffs, JSON mapping."""

from __future__ import annotations

import json
import random

import pytest

from dnsd.model import AddressKind, Health
from dnsd.sources.consul.client import Contact, contact_of
from dnsd.sources.consul.parse import (
    ConsulUnavailable,
    Definitions,
    Named,
    definitions,
    diff_checks,
    diff_services,
    entry_values,
    instance_from_entry,
    node_list,
    parse_checks,
    parse_service_list,
    service_read,
)
from dnsd.sources.consul.watch import next_index, parse_index, plan_watches, slot_wait


def entry(**service: object) -> dict[str, object]:
    svc: dict[str, object] = {"ID": "web-1", "Service": "web", "Tags": ["v1"], "Address": "",
                              "Port": 80, "Meta": {"version": "1"},
                              "Weights": {"Passing": 5, "Warning": 2}}
    svc.update(service)
    return {"Node": {"Node": "node1", "Address": "10.0.0.1"}, "Service": svc,
            "Checks": [{"Status": "passing"}, {"Status": "passing"}]}


@pytest.mark.parametrize(("raw", "expected"), [
    ("12", 12), (7, 7), ("0", 1), ("-3", 1), ("1", 1),
])
def test_parse_index_sanitises_to_at_least_one(raw: object, expected: int) -> None:
    assert parse_index(raw) == expected


@pytest.mark.parametrize("raw", [None, "abc", "1.5", ""])
def test_parse_index_rejects_missing_or_garbage(raw: object) -> None:
    with pytest.raises(ConsulUnavailable):
        parse_index(raw)


@pytest.mark.parametrize(("previous", "returned", "expected"), [
    (10, 10, (10, False)),   # a timeout or idempotent write: no change
    (10, 11, (11, True)),    # moved forward
    (10, 4, (0, True)),      # went backwards: reset, next read is a full one
    (0, 5, (5, True)),       # the first read after a reset
])
def test_next_index_follows_consul_rules(previous: int, returned: int,
                                         expected: tuple[int, bool]) -> None:
    assert next_index(previous, returned) == expected


def test_instance_from_entry_maps_consul_fields() -> None:
    inst = instance_from_entry(entry(), "dc1")
    assert (inst.service, inst.id, inst.node, inst.datacenter) == ("web", "web-1", "node1", "dc1")
    assert inst.address == "" and inst.effective_address == "10.0.0.1"
    assert inst.port == 80 and inst.tags == ("v1",)
    assert (inst.weight_passing, inst.weight_warning) == (5, 2)
    assert dict(inst.meta) == {"version": "1"}
    assert inst.health is Health.PASSING


def test_instance_health_is_the_worst_check() -> None:
    raw = entry()
    raw["Checks"] = [{"Status": "passing"}, {"Status": "warning"}]
    assert instance_from_entry(raw, "dc1").health is Health.WARNING
    raw["Checks"] = [{"Status": "warning"}, {"Status": "critical"}]
    assert instance_from_entry(raw, "dc1").health is Health.CRITICAL
    raw["Checks"] = [{"Status": "maintenance?"}]
    assert instance_from_entry(raw, "dc1").health is Health.CRITICAL


def test_instance_service_address_and_hostname() -> None:
    assert instance_from_entry(entry(Address="10.9.9.9"), "dc1").effective_address == "10.9.9.9"
    inst = instance_from_entry(entry(Address="db.example.com"), "dc1")
    assert inst.address_kind is AddressKind.HOSTNAME


def test_instance_missing_weights_default_to_one() -> None:
    inst = instance_from_entry(entry(Weights=None), "dc1")
    assert (inst.weight_passing, inst.weight_warning) == (1, 1)


@pytest.mark.parametrize("bad", [
    "not an object",
    {"Node": {"Node": "n"}},
    entry(Service="web.v2"),          # not a DNS label
    entry(Service="bad name"),
    entry(Port="80"),
    entry(Port=70000),
    entry(Tags="v1"),
    entry(Meta=["x"]),
    entry(Address="not an address!"),
])
def test_bad_entries_raise_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        instance_from_entry(bad, "dc1")


def test_diff_services() -> None:
    old = {"web": frozenset({"a"}), "db": frozenset()}
    assert diff_services(old, dict(old)) is None  # nothing visible: the caller sweeps
    assert diff_services(old, {"web": frozenset({"a"})}) == {"db"}
    assert diff_services(old, {**old, "api": frozenset()}) == {"api"}
    assert diff_services(old, {**old, "web": frozenset({"a", "b"})}) == {"web"}


def test_diff_checks_names_services_and_nodes() -> None:
    old = {("n1", "serfHealth"): ("passing", "", ""),
           ("n1", "service:web-1"): ("passing", "web-1", "web"),
           ("n2", "service:db-1"): ("passing", "db-1", "db")}
    new = dict(old)
    assert diff_checks(old, new) == (set(), set())
    new[("n1", "service:web-1")] = ("critical", "web-1", "web")
    assert diff_checks(old, new) == ({"web"}, set())
    new = dict(old)
    new[("n1", "serfHealth")] = ("critical", "", "")
    assert diff_checks(old, new) == (set(), {"n1"})
    new = dict(old)
    del new[("n2", "service:db-1")]
    assert diff_checks(old, new) == ({"db"}, set())


def test_parsers_reject_wrong_shapes() -> None:
    with pytest.raises(ConsulUnavailable):
        parse_service_list([])
    with pytest.raises(ConsulUnavailable):
        node_list({}, "dc1")
    with pytest.raises(ConsulUnavailable):
        parse_checks("x")
    assert parse_service_list({"web": ["a", 3, None], "db": None}) == {
        "web": frozenset({"a"}), "db": frozenset()}
    assert node_list([{"Node": "n1", "Address": "10.0.0.1"}, {"Node": ""}, 7],
                     "dc1").addresses == {"n1": "10.0.0.1"}


def test_slot_wait_lands_on_the_watch_s_own_slot() -> None:
    # Slots at 3, 13, 23...: later waits take the next slot at least 5 s away.
    assert slot_wait(now=4.0, phase=3.0, wait=10.0) == pytest.approx(9.0)    # -> 13
    assert slot_wait(now=9.0, phase=3.0, wait=10.0) == pytest.approx(14.0)   # 14 s: not 4
    assert slot_wait(now=13.5, phase=3.0, wait=10.0) == pytest.approx(9.5)   # late by jitter
    assert slot_wait(now=9.0, phase=3.0, wait=10.0, first=True) == pytest.approx(4.0)
    assert slot_wait(now=1.0, phase=0.0, wait=0.0) == 0.0


def test_slot_wait_keeps_many_watches_spread_after_a_storm() -> None:
    rng = random.Random(3)
    phases = [rng.uniform(0, 300) for _ in range(256)]
    # Every watch returned at t=1000 (one change woke them all): the next
    # expiries still fall one per phase, spread over a whole wait.
    expiries = sorted(1000 + slot_wait(1000.0, p, 300.0) for p in phases)
    assert expiries[-1] - expiries[0] > 280
    per_minute = [sum(1 for t in expiries if s <= t < s + 60) for s in range(1150, 1450, 60)]
    assert max(per_minute) <= 2 * 256 / 5


def _rank(order: str) -> object:
    return lambda name: (order.index(name), name)


def test_plan_watches_fills_by_rank_and_drops_the_unknown() -> None:
    start, stop = plan_watches(set(), "abcdef", 3, _rank("fedcba"))  # type: ignore[arg-type]
    assert (start, stop) == ({"f", "e", "d"}, set())
    start, stop = plan_watches({"f", "e", "x"}, "abcdef", 3, _rank("fedcba"))  # type: ignore[arg-type]
    assert (start, stop) == ({"d"}, {"x"})
    assert plan_watches({"a"}, "abc", 0, _rank("abc")) == (set(), {"a"})  # type: ignore[arg-type]


def test_plan_watches_promotion_displaces_the_coldest() -> None:
    rank = _rank("cabd")  # c hottest ... d coldest
    start, stop = plan_watches({"a", "d"}, "abcd", 2, rank, promote=["c"])  # type: ignore[arg-type]
    assert (start, stop) == ({"c"}, {"d"})
    # A promotion colder than everything watched displaces nothing.
    start, stop = plan_watches({"c", "a"}, "abcd", 2, rank, promote=["d"])  # type: ignore[arg-type]
    assert (start, stop) == (set(), set())
    # Already watched: nothing to do.
    assert plan_watches({"c", "a"}, "abcd", 2, rank, promote=["c"]) == (set(), set())  # type: ignore[arg-type]


def test_service_read_leaves_out_only_the_entries_it_cannot_map() -> None:
    deep: object = "bottom"
    for _ in range(20_000):  # deeper than any repr() can go
        deep = [deep]
    read = service_read("web", 7, [entry(), entry(ID="web-2", Meta={"k": deep}),
                                   entry(ID="web-3", Port="80")], "dc1")
    assert [i.id for i in read.instances] == ["web-1"] and read.index == 7
    assert len(read.problems) == 2 and "RecursionError" in read.problems[0]


def test_service_list_tolerates_tags_of_the_wrong_shape() -> None:
    assert parse_service_list({"web": {"a": 1}, "db": 5, "api": ["x"]}) == {
        "web": frozenset(), "db": frozenset(), "api": frozenset({"x"})}


def test_node_meta_and_tagged_addresses_from_a_service_entry() -> None:
    raw = entry(TaggedAddresses={"lan_ipv6": {"Address": "FD00::5", "Port": 8080},
                                 "wan": {"Address": "203.0.113.5", "Port": 0},
                                 "virtual": {"Address": "", "Port": 0}})
    raw["Node"] = {"Node": "node1", "Address": "10.0.0.1", "Meta": {"rack": "r1"},
                   "TaggedAddresses": {"lan": "10.0.0.1", "lan_ipv6": "fd00::1",
                                       "wan": "198.51.100.1"}}
    notes: list[str] = []
    inst, node = entry_values(raw, "dc1", notes)
    assert {tag: (a.address, a.port) for tag, a in inst.tagged_addresses.items()} == {
        "lan_ipv6": ("fd00::5", 8080), "wan": ("203.0.113.5", 0)}  # the empty one left out
    assert (node.name, node.datacenter, node.address) == ("node1", "dc1", "10.0.0.1")
    assert dict(node.meta) == {"rack": "r1"}
    assert dict(node.tagged_addresses) == {"lan": "10.0.0.1", "lan_ipv6": "fd00::1",
                                           "wan": "198.51.100.1"}
    assert notes == []


def test_a_bad_tagged_address_or_meta_value_is_left_out_not_the_entry() -> None:
    raw = entry(TaggedAddresses={"wan": {"Address": "10.0.0.400", "Port": 1},
                                 "lan": {"Address": "10.0.0.9", "Port": "x"},
                                 "lan_ipv4": {"Address": "10.0.0.9", "Port": 81}})
    raw["Node"] = {"Node": "node1", "Address": "10.0.0.1",
                   "Meta": {"rack": "r1", "nested": {"a": 1}, "n": 3},
                   "TaggedAddresses": {"wan": "not an address!", "lan": "10.0.0.1"}}
    read = service_read("web", 3, [raw], "dc1")
    (inst,) = read.instances
    assert dict(inst.tagged_addresses) == {"lan_ipv4": inst.tagged_addresses["lan_ipv4"]}
    (node,) = read.nodes
    assert dict(node.meta) == {"rack": "r1", "n": "3"}
    assert dict(node.tagged_addresses) == {"lan": "10.0.0.1"}
    assert len(read.ignored) == 4 and all(note.startswith("web-1: ") for note in read.ignored)
    assert read.problems == ()


def test_node_list_carries_meta_and_tagged_addresses() -> None:
    listing = node_list([
        {"Node": "b", "Address": "10.0.0.2", "Meta": None, "TaggedAddresses": None},
        {"Node": "a", "Address": "10.0.0.1", "Meta": {"rack": "r1"},
         "TaggedAddresses": {"lan_ipv6": "fd00::1", "wan": "bad address!"}},
        {"Node": "bad name!", "Address": "10.0.0.3"},
    ], "dc2")
    assert [n.name for n in listing.nodes] == ["a", "b"]
    a = listing.nodes[0]
    assert (a.datacenter, dict(a.meta), dict(a.tagged_addresses)) == (
        "dc2", {"rack": "r1"}, {"lan_ipv6": "fd00::1"})
    assert listing.addresses == {"a": "10.0.0.1", "b": "10.0.0.2", "bad name!": "10.0.0.3"}
    assert [name for name, _ in listing.problems] == ["bad name!"]
    assert [name for name, _ in listing.ignored] == ["a"]


def test_prepared_definitions_are_canonical_text_without_tokens() -> None:
    first = {"ID": "6f5b1c9e-0000-0000-0000-000000000001", "Name": "web", "Token": "s3cret",
             "Service": {"Service": "web", "Failover": {"Datacenters": ["DC2"]}},
             "Template": {"Type": ""}}
    template = {"ID": "6f5b1c9e-0000-0000-0000-000000000002", "Name": "geo-",
                "Service": {"Service": "${name.suffix}"},
                "Template": {"Type": "name_prefix_match"}}
    found = definitions([first, template])
    assert "s3cret" not in found.text and "Token" not in found.text
    assert json.loads(found.text) == [{k: v for k, v in first.items() if k != "Token"},
                                      template]
    # The same definitions, keys in another order: the same text.
    assert definitions([dict(reversed(first.items())), template]).text == found.text
    assert found.named == (Named("prepared query 6f5b1c9e-0000-0000-0000-000000000001 ('web')",
                                 "web", ("dc2",)),)
    assert definitions([]) == definitions(None) == Definitions("")
    with pytest.raises(ConsulUnavailable):
        definitions({"ID": "x"})


@pytest.mark.parametrize(("headers", "expected"), [
    ({"X-Consul-KnownLeader": "true", "X-Consul-LastContact": "0"}, Contact(True, 0.0)),
    ({"X-Consul-KnownLeader": "false", "X-Consul-LastContact": "4500"}, Contact(False, 4.5)),
    ({}, Contact(True, 0.0)),                                   # an agent that sends neither
    ({"X-Consul-LastContact": "soon"}, Contact(True, 0.0)),
    ({"X-Consul-LastContact": "-5"}, Contact(True, 0.0)),
])
def test_contact_of_reply_headers(headers: dict[str, str], expected: Contact) -> None:
    assert contact_of(headers) == expected
