"""The answer side without sockets: table -> records -> rendered replies."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode

from dnsd.answer import Answerer, ZoneSettings, render
from dnsd.model import Health, Instance, View
from dnsd.table import Table
from dnsd.wire import parse_query, udp_limit


def _table(*instances: Instance) -> Table:
    table = Table()
    table.publish("test", View(tuple(instances)))
    return table


def _ask(answerer: Answerer, table: Table, name: str, qtype: str = "A",
         **kwargs: object) -> dns.message.Message:
    msg = dns.message.make_query(name, qtype, **kwargs)
    query = parse_query(msg.to_wire())
    found = answerer.lookup(query, table.snapshot)
    assert found is not None
    return dns.message.from_wire(render(query, found, limit=udp_limit(query)))


def test_new_snapshot_invalidates_cached_answers() -> None:
    table = _table(Instance("web", "n1", "dc1", address="10.0.0.1"))
    answerer = Answerer(ZoneSettings())
    assert _ask(answerer, table, "web.service.consul").answer[0][0].address == "10.0.0.1"
    table.publish("test", View((Instance("web", "n1", "dc1", address="10.0.0.2"),)))
    assert _ask(answerer, table, "web.service.consul").answer[0][0].address == "10.0.0.2"


def test_publishing_an_equal_view_keeps_the_version() -> None:
    table = _table(Instance("web", "n1", "dc1", address="10.0.0.1"))
    version = table.snapshot.version
    table.publish("test", View((Instance("web", "n1", "dc1", address="10.0.0.1"),)))
    assert table.snapshot.version == version


def test_health_filter_and_only_passing() -> None:
    table = _table(Instance("db", "n1", "dc1", address="10.0.0.1"),
                   Instance("db", "n1", "dc1", address="10.0.0.2", health=Health.WARNING),
                   Instance("db", "n1", "dc1", address="10.0.0.3", health=Health.CRITICAL))
    got = _ask(Answerer(ZoneSettings()), table, "db.service.consul")
    assert {r.address for r in got.answer[0]} == {"10.0.0.1", "10.0.0.2"}
    got = _ask(Answerer(ZoneSettings(only_passing=True)), table, "db.service.consul")
    assert {r.address for r in got.answer[0]} == {"10.0.0.1"}


def test_warning_weight_in_srv() -> None:
    table = _table(Instance("db", "n1", "dc1", address="10.0.0.1", weight_passing=10,
                            weight_warning=3, health=Health.WARNING, port=5))
    got = _ask(Answerer(ZoneSettings()), table, "db.service.consul", "SRV")
    assert got.answer[0][0].weight == 3 and got.answer[0][0].priority == 1


def test_duplicate_addresses_are_one_a_record() -> None:
    table = _table(Instance("web", "n1", "dc1", address="10.0.0.1", port=1),
                   Instance("web", "n1", "dc1", address="10.0.0.1", port=2))
    got = _ask(Answerer(ZoneSettings()), table, "web.service.consul")
    assert len(got.answer[0]) == 1
    got = _ask(Answerer(ZoneSettings()), table, "web.service.consul", "SRV")
    assert len(got.answer[0]) == 2 and len(got.additional) == 1


def test_truncation_keeps_whole_records_and_sets_tc() -> None:
    table = _table(*(Instance("big", "n1", "dc1", address=f"10.0.{i // 200}.{i % 200 + 1}")
                     for i in range(300)))
    answerer = Answerer(ZoneSettings())
    got = _ask(answerer, table, "big.service.consul", use_edns=False)
    assert got.flags & dns.flags.TC and 0 < len(got.answer[0]) < 300
    msg = dns.message.make_query("big.service.consul", "A")
    query = parse_query(msg.to_wire())
    found = answerer.lookup(query, table.snapshot)
    assert found is not None
    full = dns.message.from_wire(render(query, found, limit=65535))
    assert len(full.answer[0]) == 300 and not full.flags & dns.flags.TC


def test_not_ours() -> None:
    table = _table(Instance("web", "n1", "dc1", address="10.0.0.1"))
    answerer = Answerer(ZoneSettings())
    for name in ("example.org", "consul.example.org", "9.9.9.9.in-addr.arpa"):
        query = parse_query(dns.message.make_query(name, "PTR").to_wire())
        assert answerer.lookup(query, table.snapshot) is None


def test_alt_domain_and_datacenter_from_registry() -> None:
    table = Table("dc1", datacenter_fixed=False)
    table.publish("consul", View((Instance("web", "n1", "east", address="10.0.0.1"),),
                                 local_datacenter="east"))
    answerer = Answerer(ZoneSettings(domains=("consul", "alt")))
    got = _ask(answerer, table, "web.service.alt", "SRV")
    assert got.answer[0][0].target.to_text() == "0a000001.addr.east.alt."
    assert _ask(answerer, table, "web.service.dc1.consul").rcode() == dns.rcode.NXDOMAIN


def test_soa_serial_is_the_table_build_time_and_only_changes_with_it() -> None:
    table = _table(Instance("web", "n1", "dc1", address="10.0.0.1"))
    answerer = Answerer(ZoneSettings())
    serials = {_ask(answerer, table, f"nope{n}.service.consul").authority[0][0].serial
               for n in range(3)}
    serials.add(_ask(answerer, table, "consul", "SOA").answer[0][0].serial)
    assert serials == {int(table.snapshot.built_at)}
