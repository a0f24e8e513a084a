"""The ZooKeeper source's pure parts: the connect string, child names, and what
registrator's znode data turns into (no server needed)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dnsd.config import load_config
from dnsd.model import AddressKind
from dnsd.sources.registry import zookeeper_settings
from dnsd.sources.zookeeper import (
    ZooKeeperSource,
    endpoint_from_name,
    node_name_for,
    parse_instance,
    split_zookeeper,
)


def body(**fields: object) -> bytes:
    base: dict[str, object] = {"Name": "web", "IP": "10.0.0.5", "PublicPort": 8080,
                               "PrivatePort": 80, "ContainerID": "abc", "Tags": None,
                               "Attrs": None}
    base.update(fields)
    return json.dumps(base, separators=(",", ":")).encode()


@pytest.mark.parametrize(("spec", "hosts", "base"), [
    ("zk1:2181,zk2:2181/services", "zk1:2181,zk2:2181", "/services"),
    ("127.0.0.1:2181", "127.0.0.1:2181", "/"),
    ("127.0.0.1:2181/", "127.0.0.1:2181", "/"),
    ("zk:2181/a/b", "zk:2181", "/a/b"),
    ("[::1]:2181/services", "[::1]:2181", "/services"),
])
def test_split_zookeeper(spec: str, hosts: str, base: str) -> None:
    assert split_zookeeper(spec) == (hosts, base)


@pytest.mark.parametrize(("child", "expected"), [
    ("10.0.0.5:8080", ("10.0.0.5", 8080)),
    ("fd00::5:8080", ("fd00::5", 8080)),           # split on the last ':'
    ("[fd00::5]:8080", ("fd00::5", 8080)),
    ("::ffff:10.0.0.9:53", ("10.0.0.9", 53)),      # v4-mapped is answered as A
    ("host-1.example:443", ("host-1.example", 443)),
    ("10.0.0.5", None),                            # no port
    ("10.0.0.5:", None),
    ("10.0.0.5:0", None),
    ("10.0.0.5:65536", None),
    ("10.0.0.5:80a", None),
    ("10.0.0.5:٣", None),                          # a non-ASCII digit
    ("0.0.0.0:80", None),                          # a listen address, not an endpoint
    ("[::]:80", None),
    ("container-abc", None),
    (":8080", None),
    ("bad host:80", None),
    ("", None),
])
def test_endpoint_from_name(child: str, expected: tuple[str, int] | None) -> None:
    assert endpoint_from_name(child) == expected


def test_node_name_for_addresses() -> None:
    assert node_name_for("10.0.0.5", AddressKind.IPV4) == "10.0.0.5"
    assert node_name_for("fd00::5", AddressKind.IPV6) == "fd000000000000000000000000000005"
    assert node_name_for("db.example", AddressKind.HOSTNAME) == "db.example"


def test_registrator_json_is_preferred() -> None:
    data = body(IP="10.0.0.7", PublicPort=9000, Tags=["http", "udp"],
                Attrs={"version": "1.2", "region": "eu"})
    parsed = parse_instance("web", "10.0.0.5:8080", data, "dc2")
    inst = parsed.instance
    assert inst is not None and parsed.problem == ""
    assert (inst.service, inst.address, inst.port) == ("web", "10.0.0.7", 9000)
    assert inst.node == "10.0.0.7" and inst.node_address == "10.0.0.7"
    assert inst.datacenter == "dc2"
    assert inst.tags == ("http", "udp")
    assert dict(inst.meta) == {"version": "1.2", "region": "eu"}
    assert inst.weight == 1
    assert inst.id == "10.0.0.5:8080"


@pytest.mark.parametrize("data", [
    b"",                          # no data: the seeds' consumer never wrote any
    b"   ",
    b"{not json",
    b"\xff\xfe\x00garbage",
    b"[1, 2]",
    b'"a string"',
    body(IP="", PublicPort=8080),
    body(IP="0.0.0.0"),
    body(PublicPort=0),
    body(PublicPort="http"),
    body(PublicPort=True),
    body(IP=None, PublicPort=None),
])
def test_name_is_the_fallback(data: bytes) -> None:
    parsed = parse_instance("web", "10.0.0.5:8080", data, "dc1")
    assert parsed.instance is not None
    assert (parsed.instance.address, parsed.instance.port) == ("10.0.0.5", 8080)
    assert bool(parsed.problem) == bool(data.strip())


def test_neither_json_nor_name_is_skipped() -> None:
    parsed = parse_instance("web", "container-abc", b"{oops", "dc1")
    assert parsed.instance is None
    assert "not JSON" in parsed.problem and "container-abc" in parsed.problem


def test_json_rescues_an_odd_name() -> None:
    parsed = parse_instance("web", "container-abc", body(), "dc1")
    assert parsed.instance is not None
    assert (parsed.instance.address, parsed.instance.port) == ("10.0.0.5", 8080)


@pytest.mark.parametrize("service", ["bad.name", "web service", "-web", "", "x" * 64, "wéb"])
def test_service_names_that_are_no_label_are_skipped(service: str) -> None:
    parsed = parse_instance(service, "10.0.0.5:8080", body(), "dc1")
    assert parsed.instance is None and "service name" in parsed.problem


def test_registrator_service_names() -> None:
    for service in ("service_1", "web-8080", "Web"):
        assert parse_instance(service, "10.0.0.5:8080", body(), "dc1").instance is not None


def test_ipv6_instance_gets_a_hex_node() -> None:
    parsed = parse_instance("web", "fd00::5:8080", b"", "dc1")
    inst = parsed.instance
    assert inst is not None
    assert inst.address_kind is AddressKind.IPV6 and inst.address == "fd00::5"
    assert inst.node == "fd000000000000000000000000000005"


def test_node_from_json_or_attrs() -> None:
    named = parse_instance("web", "10.0.0.5:8080", body(Node="host1"), "dc1").instance
    assert named is not None and named.node == "host1"
    attr = parse_instance("web", "10.0.0.5:8080", body(Attrs={"node": "host2.rack"}), "dc1")
    assert attr.instance is not None and attr.instance.node == "host2.rack"
    bad = parse_instance("web", "10.0.0.5:8080", body(Node="not a node!"), "dc1")
    assert bad.instance is not None and bad.instance.node == "10.0.0.5"
    assert "node" in bad.problem


def test_node_meta_from_node_meta_attrs() -> None:
    # What registrator writes for SERVICE_NODE_META_RACK=r1 and SERVICE_NODE=host1.
    parsed = parse_instance("web", "10.0.0.5:8080", body(Attrs={
        "node": "host1", "node_meta_rack": "r1", "node_meta_": "no key", "version": "2"}), "dc1")
    assert parsed.instance is not None and parsed.instance.node == "host1"
    assert dict(parsed.node_meta) == {"rack": "r1"}
    # The attributes stay the instance's meta, as they were before.
    assert dict(parsed.instance.meta) == {"node": "host1", "node_meta_rack": "r1",
                                          "node_meta_": "no key", "version": "2"}
    assert dict(parse_instance("web", "10.0.0.5:8080", body(), "dc1").node_meta) == {}


def test_bad_tags_and_attrs_are_dropped_not_fatal() -> None:
    parsed = parse_instance("web", "10.0.0.5:8080",
                            body(Tags="http", Attrs=["x"]), "dc1")
    assert parsed.instance is not None
    assert parsed.instance.tags == () and dict(parsed.instance.meta) == {}
    assert "Tags" in parsed.problem and "Attrs" in parsed.problem
    mixed = parse_instance("web", "10.0.0.5:8080",
                           body(Tags=["a", 1, None, ""], Attrs={"n": 1, "b": True,
                                                                 "deep": {"x": 1}}), "dc1")
    assert mixed.instance is not None
    assert mixed.instance.tags == ("a",)
    assert dict(mixed.instance.meta) == {"n": "1", "b": "true"}


def test_source_name_base_and_datacenter() -> None:
    config = load_config(["--zookeeper", "zk1:2181,zk2:2181/services", "--datacenter", "east"])
    source = ZooKeeperSource(zookeeper_settings(config))
    assert source.name == "zookeeper:zk1:2181,zk2:2181/services"
    assert (source.hosts, source.base, source.datacenter) == (
        "zk1:2181,zk2:2181", "/services", "east")
    config = load_config(["--zookeeper", "zk1/services", "--zookeeper-datacenter", "zk"])
    assert ZooKeeperSource(zookeeper_settings(config)).datacenter == "zk"
    with pytest.raises(ValueError, match="zookeeper"):
        zookeeper_settings(load_config([]))


@given(service=st.text(max_size=70), child=st.text(max_size=80), data=st.binary(max_size=200))
def test_parse_never_raises(service: str, child: str, data: bytes) -> None:
    parsed = parse_instance(service, child, data, "dc1")
    assert parsed.instance is not None or parsed.problem


@given(fields=st.dictionaries(st.sampled_from(["IP", "PublicPort", "Tags", "Attrs", "Node"]),
                              st.recursive(st.none() | st.booleans() | st.integers()
                                           | st.floats() | st.text(max_size=20),
                                           lambda inner: st.lists(inner, max_size=3)
                                           | st.dictionaries(st.text(max_size=5), inner,
                                                             max_size=3),
                                           max_leaves=8)))
def test_parse_any_json_shape(fields: dict[str, object]) -> None:
    parsed = parse_instance("web", "10.0.0.5:8080", json.dumps(fields).encode(), "dc1")
    assert parsed.instance is not None  # the name always rescues it


@pytest.mark.parametrize(("data", "problem"), [
    (b"[" * 50_000, "nested too deeply"),
    (b'{"Tags": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "nested too deeply"),
    (b'{"IP": "10.0.0.7", "PublicPort": 9000, "Attrs": {"k": "' + b"x" * 70_000 + b'"}}',
     "more than"),
])
def test_hostile_data_falls_back_to_the_name(data: bytes, problem: str) -> None:
    parsed = parse_instance("web", "10.0.0.5:8080", data, "dc1")
    assert parsed.instance is not None
    assert (parsed.instance.address, parsed.instance.port) == ("10.0.0.5", 8080)
    assert problem in parsed.problem
