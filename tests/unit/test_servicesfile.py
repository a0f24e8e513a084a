"""The services file format: dnsd's own shape, a Consul agent definition file as
it is, node meta, and every problem named (file, entry from 1, field)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dnsd.errors import ServicesFileError
from dnsd.model import Health
from dnsd.sources.servicesfile import check_services, load_services_file, snake


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_consul_agent_definition_loads_as_it_is(tmp_path: Path) -> None:
    path = _write(tmp_path, "web.json", json.dumps({"service": {
        "Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 8080,
        "Tags": ["v1"], "Meta": {"version": "2"}, "EnableTagOverride": False,
        "Weights": {"Passing": 10, "Warning": 1},
        "Checks": [{"HTTP": "http://localhost:8080/health", "Interval": "10s",
                    "Status": "warning"}, {"TCP": "localhost:8080", "Interval": "5s"}]}}))
    (inst,) = load_services_file(path, "node1", "dc1").instances
    assert (inst.service, inst.id, inst.address, inst.port, inst.tags) == (
        "web", "web-1", "10.0.0.5", 8080, ("v1",))
    assert inst.meta == {"version": "2"} and inst.weight_passing == 10
    assert inst.health is Health.WARNING  # the worst stated status; no status: not counted


def test_a_consul_services_list_and_a_critical_check(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.json", json.dumps({"services": [
        {"name": "a", "address": "10.0.0.1", "check": {"status": "critical"}},
        {"Name": "b", "Address": "10.0.0.2"}]}))
    view = load_services_file(path, "node1", "dc1")
    assert [(i.service, i.health) for i in view.instances] == [
        ("a", Health.CRITICAL), ("b", Health.PASSING)]


def test_node_meta_goes_to_the_node(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.toml", """
[[services]]
name = "web"
node = "n1"
node_address = "10.0.0.1"
node_meta = { rack = "r1", ssd = true }
[[services]]
name = "db"
node = "n1"
node_meta = { rack = "r1", ssd = true }
[[services]]
name = "cache"
address = "10.0.0.9"
node = "n2"
node_meta = { zone = "a" }
""")
    view = load_services_file(path, "default", "dc1")
    nodes = {n.name: n for n in view.nodes}
    assert nodes["n1"].meta == {"rack": "r1", "ssd": "true"} and nodes["n1"].address == "10.0.0.1"
    assert nodes["n2"].meta == {"zone": "a"} and nodes["n2"].address == ""


def test_every_problem_is_named_with_entry_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.toml", """
[[services]]
name = "web"
address = "10.0.0.400"
[[services]]
name = "api"
address = "10.0.0.2"
portt = 80
[[services]]
address = "10.0.0.3"
[[services]]
name = "db"
node = "n1"
node_meta = { rack = "r1" }
address = "10.0.0.4"
[[services]]
name = "db2"
node = "n1"
node_meta = { rack = "r2" }
address = "10.0.0.5"
""")
    problems = [str(p) for p in check_services(path, "node1", "dc1")]
    assert len(problems) == 4, problems
    assert any("entry 1 (web): address: '10.0.0.400'" in p for p in problems)
    assert any("entry 2 (api): portt: unknown field (did you mean port?)" in p
               for p in problems)
    assert any("entry 3: name: is required" in p for p in problems)
    assert any("entry 5 (db2): node_meta: node 'n1' already has other node_meta" in p
               for p in problems)
    with pytest.raises(ServicesFileError):
        load_services_file(path, "node1", "dc1")


@pytest.mark.parametrize(("key", "expected"), [
    ("EnableTagOverride", "enable_tag_override"), ("ID", "id"), ("Name", "name"),
    ("TaggedAddresses", "tagged_addresses"), ("node_meta", "node_meta"), ("HTTP", "http"),
])
def test_keys_in_any_style(key: str, expected: str) -> None:
    assert snake(key) == expected
