"""The table: views merged into snapshots; expected sources; prepared query texts."""

from __future__ import annotations

import json
import logging

import pytest

from dnsd.model import Instance, Node, View
from dnsd.table import Table, build_snapshot


def test_an_expected_source_is_pending_until_it_publishes() -> None:
    table = Table()
    assert table.snapshot.pending == frozenset()
    before = table.snapshot.version
    table.expect("consul", "zookeeper")
    assert table.snapshot.pending == {"consul", "zookeeper"}
    assert table.snapshot.version > before
    table.publish("consul", View())
    assert table.snapshot.pending == {"zookeeper"}
    table.publish_many({"zookeeper": View()})
    assert table.snapshot.pending == frozenset()
    version = table.snapshot.version
    table.expect("consul")  # already expected: nothing to swap
    assert table.snapshot.version == version


def test_node_fields_merge_first_non_empty() -> None:
    snapshot = build_snapshot(1, {
        "a": View(nodes=(Node("n1", "dc1", "10.0.0.1"),)),
        "b": View(nodes=(Node("n1", "dc1", "", {"rack": "r1"}, {"lan_ipv6": "fd00::1"}),)),
    })
    node = snapshot.nodes[("dc1", "n1")]
    assert (node.address, dict(node.meta), dict(node.tagged_addresses)) == (
        "10.0.0.1", {"rack": "r1"}, {"lan_ipv6": "fd00::1"})


def _query(ident: str, name: str, service: str = "web") -> dict[str, object]:
    return {"ID": ident, "Name": name, "Service": {"Service": service}}


def test_prepared_queries_merge_per_datacenter_and_parse_once(
        caplog: pytest.LogCaptureFixture) -> None:
    table = Table()
    first = json.dumps([_query("a", "one"), {"ID": "bad"}])
    caplog.set_level(logging.WARNING, "dnsd.table")
    table.publish("consul", View(prepared={"dc1": first, "DC2": "[]"}))
    table.publish("other", View(prepared={"dc1": json.dumps([_query("b", "one"),
                                                              _query("c", "two")])}))
    snapshot = table.snapshot
    assert set(snapshot.prepared) == {"dc1", "dc2"}
    assert "dc2" in snapshot.datacenters
    names = [q.name for q in snapshot.prepared["dc1"].queries]
    assert names == ["one", "two"]  # the second "one" is taken by the first source's
    warned = len(caplog.records)
    assert warned >= 2  # the bad definition, the taken name
    table.publish("third", View((Instance("web", "n1", "dc1", address="10.0.0.1"),)))
    assert len(caplog.records) == warned  # unchanged texts are not parsed again
    assert table.snapshot.prepared["dc1"] is snapshot.prepared["dc1"]


def test_prepared_text_that_is_not_a_list_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "dnsd.table")
    snapshot = build_snapshot(1, {"consul": View(prepared={"dc1": "{", "dc2": "{}"})})
    assert len(snapshot.prepared["dc1"]) == 0 and len(snapshot.prepared["dc2"]) == 0
    assert "not JSON" in caplog.text and "not a JSON list" in caplog.text
