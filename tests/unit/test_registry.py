"""The table of source kinds: what a configuration turns on, and how it is built."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import dnsd.sources
from dnsd.config import RESTART_ONLY, Config, load_config
from dnsd.sources.registry import (
    KINDS,
    build_sources,
    consul_settings,
    datacenter_fixed,
    static_settings,
    zookeeper_settings,
)

SOURCES = Path(dnsd.sources.__file__).parent


def test_nothing_configured_builds_nothing() -> None:
    assert build_sources(load_config([])) == []


def test_each_enabled_kind_builds_its_source_in_table_order() -> None:
    config = load_config(["--zookeeper", "zk1:2181/services", "--consul", "127.0.0.1:8500"])
    names = [source.name for source in build_sources(config)]
    assert names == ["consul:http://127.0.0.1:8500", "zookeeper:zk1:2181/services"]


def test_settings_carry_what_the_configuration_says() -> None:
    config = load_config(["--consul", "https://consul:8501", "--consul-token", "t",
                          "--consul-ca", "/ca.pem", "--consul-datacenters", "dc2,dc3",
                          "--zookeeper", "zk:2181/x", "--datacenter", "east",
                          "--node-name", "n1"], environ={})
    consul = consul_settings(config)
    assert (consul.url, consul.token, consul.ca, consul.datacenters) == (
        "https://consul:8501", "t", "/ca.pem", ("dc2", "dc3"))
    assert not consul.agent_names_local  # --datacenter given: the agent may not override
    zookeeper = zookeeper_settings(config)
    assert (zookeeper.hosts, zookeeper.base, zookeeper.datacenter) == ("zk:2181", "/x", "east")
    assert static_settings(config) == dataclasses.replace(
        static_settings(config), node_name="n1", datacenter="east")
    with pytest.raises(ValueError, match="--consul"):
        consul_settings(load_config([]))


def test_consul_reads_stale_with_a_64_mib_bound_unless_told_otherwise() -> None:
    plain = consul_settings(load_config(["--consul", "127.0.0.1:8500"], environ={}))
    assert not plain.consistent and plain.max_reply_bytes == 64 * 1024 * 1024
    told = consul_settings(load_config(["--consul", "127.0.0.1:8500", "--consul-consistent",
                                        "--consul-max-reply", "256"], environ={}))
    assert told.consistent and told.max_reply_bytes == 256 * 1024 * 1024


@pytest.mark.parametrize(("args", "fixed"), [
    ([], True),                                               # no registry: dc1 it is
    (["--zookeeper", "zk:2181"], True),                       # ZooKeeper cannot say
    (["--consul", "127.0.0.1:8500"], False),                  # the agent may say
    (["--consul", "127.0.0.1:8500", "--datacenter", "x"], True),  # the user said
])
def test_datacenter_fixed(args: list[str], fixed: bool) -> None:
    assert datacenter_fixed(load_config(args, environ={})) is fixed


def test_every_field_a_kind_reads_exists_and_needs_a_restart() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    for kind in KINDS:
        assert set(kind.reads) <= fields, kind.name
        assert set(kind.reads) <= set(RESTART_ONLY)
    assert len({kind.name for kind in KINDS}) == len(KINDS)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_the_registry_reads_the_configuration() -> None:
    readers = {path.relative_to(SOURCES).as_posix() for path in SOURCES.rglob("*.py")
               if "dnsd.config" in _imports(path)}
    assert readers == {"registry.py"}


@pytest.mark.parametrize(("library", "home"), [
    ("consul", "consul/client.py"), ("requests", "consul/client.py"), ("kazoo", "zookeeper"),
    ("docker", "docker/client.py"),
])
def test_each_client_library_is_imported_by_its_source_only(library: str, home: str) -> None:
    users = {path.relative_to(SOURCES).as_posix() for path in SOURCES.rglob("*.py")
             if any(m == library or m.startswith(library + ".") for m in _imports(path))}
    assert users and all(user.startswith(home) for user in users), users
