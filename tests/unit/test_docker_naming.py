"""registrator's naming rules (dnsd.sources.docker.naming), checked on inspect data
from a real Docker 20.10 engine (tests/data/docker, trimmed to the fields that
matter) and on variants of it. Each case names what it shows."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsd.model import Health
from dnsd.sources.docker import (
    ContainerInstances,
    NamingSettings,
    Problem,
    build_view,
    container_instances,
    image_base_name,
    split_tags,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "docker"
INTERNAL = NamingSettings(node="host1", datacenter="dc1")
PUBLISHED = NamingSettings(node="host1", datacenter="dc1", published="192.0.2.10")

Row = tuple[str, str, str, int, tuple[str, ...], str]
"""(service, id, address, port, tags, health) of one instance."""


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def rows(result: ContainerInstances) -> list[Row]:
    return [(i.service, i.id, i.address, i.port, i.tags, i.health.value)
            for i in result.instances]


def sources(result: ContainerInstances) -> list[str]:
    return [p.source for p in result.problems]


def variant(name: str, *, labels: dict[str, Any] | None = None,
            env: list[Any] | None = None, change: Callable[[dict[str, Any]], None] | None = None,
            ) -> dict[str, Any]:
    """A real container's data with its labels and env replaced, or changed by ``change``."""
    data = copy.deepcopy(load(name))
    if labels is not None:
        data["Config"]["Labels"] = labels
    if env is not None:
        data["Config"]["Env"] = env
    if change is not None:
        change(data)
    return data


# --- real containers, served at their own addresses (registrator's -internal) ----------

REAL_INTERNAL: list[tuple[str, list[Row], str]] = [
    # 80/tcp from the image, --expose 8080 and 53/udp. SERVICE_80_NAME=web (label)
    # carries no -80 suffix; SERVICE_NAME=envname (env) does; SERVICE_TAGS as a
    # label beats the env of the same key; SERVICE_8080_TAGS (env) beats the generic
    # label; SERVICE_53_IGNORE=yes leaves 53/udp out but still counts as a port.
    ("multi", [
        ("web", "host1:multi:80", "10.214.1.2", 80, ("fromlabel", "v1"), "passing"),
        ("envname-8080", "host1:multi:8080", "10.214.1.2", 8080, ("admin",), "passing"),
    ], ""),
    # A UDP port: ":udp" ends the id and "udp" is added to its tags.
    ("udp", [
        ("dns", "host1:udp:53:udp", "10.214.2.2", 53, ("primary", "udp"), "passing"),
        ("busybox-80", "host1:udp:80", "10.214.2.2", 80, ("primary",), "passing"),
    ], ""),
    # 53/tcp and 53/udp are two ports: one name, two ids.
    ("udponly", [
        ("bare-53", "host1:udponly:53", "10.214.2.4", 53, ("a", "b"), "passing"),
        ("bare-53", "host1:udponly:53:udp", "10.214.2.4", 53, ("a", "b", "udp"), "passing"),
    ], ""),
    # Internally every exposed port is served, published or not.
    ("published", [
        ("busybox-53", "host1:published:53:udp", "10.214.1.6", 53, ("udp",), "passing"),
        ("busybox-80", "host1:published:80", "10.214.1.6", 80, (), "passing"),
        ("busybox-8080", "host1:published:8080", "10.214.1.6", 8080, (), "passing"),
    ], ""),
    # SERVICE_NETWORK=dnsr-a picks that network's address over dnsr-b's.
    ("twonet", [("busybox", "host1:twonet:80", "10.214.1.5", 80, (), "passing")], ""),
    # The default name is the image's base name: no registry, path or tag.
    ("registry-image", [
        ("webapp", "host1:registry-image:80", "10.214.2.3", 80, (), "passing")], ""),
    # Run by image id: the id is the "image name" registrator would use.
    ("byid", [("aeafee119cc6", "host1:byid:80", "10.214.1.7", 80, (), "passing")], ""),
    # Paused, or a HEALTHCHECK not (yet) healthy: kept, but critical.
    ("paused", [("busybox", "host1:paused:80", "10.214.1.4", 80, (), "critical")], ""),
    ("health-starting", [("busybox", "host1:health:80", "10.214.1.3", 80, (), "critical")], ""),
    ("health-unhealthy", [("busybox", "host1:health:80", "10.214.1.3", 80, (), "critical")], ""),
    ("health-healthy", [("busybox", "host1:health:80", "10.214.1.3", 80, (), "passing")], ""),
    # Not running: nothing, and nothing to complain about.
    ("stopped", [], "not running (exited)"),
    ("exited", [], "not running (exited)"),
    ("created", [], "not running (created)"),
    # Restarting between two tries: Running is true, but the address is gone.
    ("restarting", [], "no address on any network"),
    # No address of its own: nothing to serve without --docker-published.
    ("hostnet", [], "no address of its own on the host network "
                    "(serve it with --docker-published)"),
    ("nonet", [], "no address on any network"),
]


@pytest.mark.parametrize(("name", "expected", "reason"), REAL_INTERNAL,
                         ids=[case[0] for case in REAL_INTERNAL])
def test_real_containers_internal(name: str, expected: list[Row], reason: str) -> None:
    result = container_instances(load(name), INTERNAL)
    assert rows(result) == expected
    assert result.reason == reason
    assert result.problems == ()


# --- real containers at their published ports (registrator's -ip) ---------------------

REAL_PUBLISHED: list[tuple[str, list[Row], str]] = [
    # Only published ports (two of three), at the given address and the host port.
    ("published", [
        ("busybox-80", "host1:published:80", "192.0.2.10", 18080, (), "passing"),
        ("busybox-8080", "host1:published:8080", "192.0.2.10", 32768, (), "passing"),
    ], ""),
    # -p 18082:80 binds 0.0.0.0 and ::, both on 18082: one instance. A single
    # published port takes no suffix.
    ("anyaddr", [("busybox", "host1:anyaddr:80", "192.0.2.10", 18082, (), "passing")], ""),
    # --net=host: exposed ports count as published on the same port (registrator).
    ("hostnet", [
        ("busybox-80", "host1:hostnet:80", "192.0.2.10", 80, (), "passing"),
        ("busybox-9999", "host1:hostnet:9999", "192.0.2.10", 9999, (), "passing"),
    ], ""),
    ("multi", [], "no published port"),
    ("restarting", [("busybox", "host1:restarting:80", "192.0.2.10", 80, (), "critical")], ""),
    ("paused", [], "no published port"),
    ("stopped", [], "not running (exited)"),
]


@pytest.mark.parametrize(("name", "expected", "reason"), REAL_PUBLISHED,
                         ids=[case[0] for case in REAL_PUBLISHED])
def test_real_containers_published(name: str, expected: list[Row], reason: str) -> None:
    result = container_instances(load(name), PUBLISHED)
    assert rows(result) == expected
    assert result.reason == reason
    assert result.problems == ()


def test_published_instances_carry_the_address_as_their_node_address() -> None:
    instance = container_instances(load("anyaddr"), PUBLISHED).instances[0]
    assert (instance.node, instance.node_address) == ("host1", "192.0.2.10")
    internal = container_instances(load("anyaddr"), INTERNAL).instances[0]
    assert internal.node_address == ""


def test_meta_is_every_other_setting_lower_cased() -> None:
    result = container_instances(load("multi"), INTERNAL)
    assert [dict(i.meta) for i in result.instances] == [{"region": "eu"}, {"region": "eu"}]


def test_node_and_datacenter_come_from_the_settings() -> None:
    naming = NamingSettings("n2.example", "east")
    instance = container_instances(load("paused"), naming).instances[0]
    assert (instance.node, instance.datacenter, instance.id) == (
        "n2.example", "east", "n2.example:paused:80")


# --- names, ids, tags, ignore, meta: variants of real data -----------------------------

Named = tuple[str, str, tuple[str, ...]]
"""(service, id, tags) of one instance."""

SETTING_CASES: list[tuple[str, str, dict[str, Any], list[Any], list[Named]]] = [
    # (case, container, labels, env, [(service, id, tags)])
    ("SERVICE_NAME takes the -<port> suffix when there are several ports",
     "udponly", {"SERVICE_NAME": "dns"}, [],
     [("dns-53", "host1:udponly:53", ()), ("dns-53", "host1:udponly:53:udp", ("udp",))]),
    ("SERVICE_<port>_NAME applies to both protocols of that port, without suffix",
     "udponly", {"SERVICE_53_NAME": "dns"}, [],
     [("dns", "host1:udponly:53", ()), ("dns", "host1:udponly:53:udp", ("udp",))]),
    ("an empty SERVICE_<port>_NAME hides SERVICE_NAME and drops the suffix",
     "udponly", {"SERVICE_NAME": "dns", "SERVICE_53_NAME": ""}, [],
     [("bare", "host1:udponly:53", ()), ("bare", "host1:udponly:53:udp", ("udp",))]),
    ("one port: no suffix",
     "paused", {"SERVICE_NAME": "api"}, [], [("api", "host1:paused:80", ())]),
    ("the env is read when no label sets the key",
     "paused", {}, ["PATH=/bin", "SERVICE_NAME=api", "SERVICE_TAGS=a,b"],
     [("api", "host1:paused:80", ("a", "b"))]),
    ("a label beats the env of the same key, whatever the order",
     "paused", {"SERVICE_NAME": "fromlabel"}, ["SERVICE_NAME=fromenv"],
     [("fromlabel", "host1:paused:80", ())]),
    ("a port-specific env beats a generic label",
     "paused", {"SERVICE_NAME": "generic"}, ["SERVICE_80_NAME=specific"],
     [("specific", "host1:paused:80", ())]),
    ("keys are lower-cased after the exact SERVICE_ prefix",
     "paused", {"SERVICE_Name": "api", "service_name": "ignored"}, [],
     [("api", "host1:paused:80", ())]),
    ("the later of two env entries wins; an entry without = is no setting",
     "paused", {}, ["SERVICE_NAME=first", "SERVICE_NAME=second", "SERVICE_TAGS"],
     [("second", "host1:paused:80", ())]),
    ("SERVICE_ID replaces the id; a UDP port's id is then left as given",
     "udp", {"SERVICE_53_ID": "dns.1"}, [],
     [("busybox-53", "dns.1", ("udp",)), ("busybox-80", "host1:udp:80", ())]),
    ("tags: comma-separated, \\, escapes, empty parts dropped, duplicates once",
     "paused", {"SERVICE_TAGS": ",,v1,,primary,v1,"}, [],
     [("busybox", "host1:paused:80", ("v1", "primary"))]),
    ("SERVICE_<port>_TAGS replaces SERVICE_TAGS for that port",
     "udp", {"SERVICE_TAGS": "all", "SERVICE_53_TAGS": "dns"}, [],
     [("busybox-53", "host1:udp:53:udp", ("dns", "udp")),
      ("busybox-80", "host1:udp:80", ("all",))]),
    ("a udp tag given already is not added twice",
     "udp", {"SERVICE_53_TAGS": "udp,x"}, [],
     [("busybox-53", "host1:udp:53:udp", ("udp", "x")), ("busybox-80", "host1:udp:80", ())]),
    ("SERVICE_IGNORE with any non-empty value leaves the whole container out",
     "udp", {"SERVICE_IGNORE": "false"}, [], []),
    ("an empty SERVICE_IGNORE ignores nothing",
     "paused", {"SERVICE_IGNORE": ""}, [], [("busybox", "host1:paused:80", ())]),
    ("SERVICE_<port>_IGNORE leaves one port out; it still counts for the suffix",
     "udp", {"SERVICE_80_IGNORE": "1"}, [], [("busybox-53", "host1:udp:53:udp", ("udp",))]),
    ("an empty SERVICE_<port>_IGNORE takes that port back from SERVICE_IGNORE",
     "udp", {"SERVICE_IGNORE": "1", "SERVICE_80_IGNORE": ""}, [],
     [("busybox-80", "host1:udp:80", ())]),
]


@pytest.mark.parametrize(("case", "name", "labels", "env", "expected"), SETTING_CASES,
                         ids=[case[0] for case in SETTING_CASES])
def test_settings(case: str, name: str, labels: dict[str, Any], env: list[Any],
                  expected: list[Named]) -> None:
    result = container_instances(variant(name, labels=labels, env=env), INTERNAL)
    assert [(i.service, i.id, i.tags) for i in result.instances] == expected
    assert result.problems == ()
    if not expected:
        assert result.reason == "every port is ignored or unusable"


def test_other_settings_become_meta_per_port() -> None:
    data = variant("udp", labels={"SERVICE_REGION": "eu", "SERVICE_53_CHECK_UDP": "true",
                                  "SERVICE_80_REGION": "us", "SERVICE_NETWORK": "dnsr-b",
                                  "SERVICE_HTTP_PATH": "/x"}, env=[])
    result = container_instances(data, INTERNAL)
    assert [dict(i.meta) for i in result.instances] == [
        {"region": "eu", "check_udp": "true", "http_path": "/x"},
        {"region": "us", "http_path": "/x"},
    ]


# --- networks ---------------------------------------------------------------------------

def _without_network_label(data: dict[str, Any]) -> None:
    data["Config"]["Labels"] = {}


@pytest.mark.parametrize(("labels", "preferred", "address"), [
    ({"SERVICE_NETWORK": "dnsr-a"}, None, "10.214.1.5"),
    ({"SERVICE_NETWORK": "dnsr-b"}, None, "10.214.2.2"),
    ({"SERVICE_NETWORK": "dnsr-a"}, "dnsr-b", "10.214.1.5"),   # the container's choice wins
    ({"SERVICE_80_NETWORK": "dnsr-b"}, "dnsr-a", "10.214.2.2"),
    ({}, "dnsr-b", "10.214.2.2"),                               # the preferred network
    ({}, "elsewhere", "10.214.1.5"),                            # not on it: first by name
    ({}, None, "10.214.1.5"),                                   # first by name
])
def test_network_choice(labels: dict[str, str], preferred: str | None, address: str) -> None:
    naming = NamingSettings("host1", "dc1", network=preferred)
    result = container_instances(variant("twonet", labels=labels), naming)
    assert [i.address for i in result.instances] == [address]
    assert result.problems == ()


def test_service_network_naming_a_network_the_container_is_not_on() -> None:
    result = container_instances(variant("twonet", labels={"SERVICE_NETWORK": "dnsr-c"}),
                                 INTERNAL)
    assert result.instances == ()
    assert [str(p) for p in result.problems] == [
        "container twonet: label SERVICE_NETWORK: the container has no address on network "
        "'dnsr-c' (it has: dnsr-a, dnsr-b)"]


def test_service_network_does_not_matter_when_published() -> None:
    data = variant("anyaddr", labels={"SERVICE_NETWORK": "nowhere"})
    assert rows(container_instances(data, PUBLISHED)) == [
        ("busybox", "host1:anyaddr:80", "192.0.2.10", 18082, (), "passing")]


def test_ipv6_only_network() -> None:
    def v6(data: dict[str, Any]) -> None:
        data["NetworkSettings"]["Networks"] = {
            "v6": {"IPAddress": "", "GlobalIPv6Address": "fd00:214::5"}}
    result = container_instances(variant("paused", change=v6), INTERNAL)
    assert [i.address for i in result.instances] == ["fd00:214::5"]


def test_container_network_mode_is_explained() -> None:
    def shared(data: dict[str, Any]) -> None:
        data["HostConfig"]["NetworkMode"] = "container:" + "ab" * 32
        data["NetworkSettings"]["Networks"] = {}
    result = container_instances(variant("paused", change=shared), INTERNAL)
    assert result.reason == "no address of its own: it shares the network of abababababab"


# --- ports --------------------------------------------------------------------------------

def test_sctp_ports_count_for_the_suffix_but_are_not_served() -> None:
    def sctp(data: dict[str, Any]) -> None:
        data["Config"]["ExposedPorts"]["9/sctp"] = {}
    assert [i.service for i in container_instances(variant("paused", change=sctp),
                                                   INTERNAL).instances] == ["busybox-80"]


def test_a_container_without_ports_is_not_served() -> None:
    def portless(data: dict[str, Any]) -> None:
        data["Config"]["ExposedPorts"] = None
        data["NetworkSettings"]["Ports"] = {}
    result = container_instances(variant("paused", change=portless), INTERNAL)
    assert (result.instances, result.reason, result.problems) == ((), "no exposed port", ())


def test_ports_come_in_number_order() -> None:
    def many(data: dict[str, Any]) -> None:
        data["Config"]["ExposedPorts"] = {"9000/tcp": {}, "443/tcp": {}, "80/tcp": {}}
    result = container_instances(variant("paused", labels={}, change=many), INTERNAL)
    assert [i.port for i in result.instances] == [80, 443, 9000]


# --- image names and tag splitting ----------------------------------------------------------

@pytest.mark.parametrize(("image", "base"), [
    ("busybox", "busybox"),
    ("busybox:1.36", "busybox"),
    ("gliderlabs/registrator:latest", "registrator"),
    ("registry.example:5000/team/webapp:1.2", "webapp"),
    ("localhost:5000/app", "app"),
    ("app@sha256:" + "0" * 64, "app"),                 # registrator would say "app@sha256"
    ("team/app:1.0@sha256:" + "0" * 64, "app"),
    ("aeafee119cc6", "aeafee119cc6"),
    ("", ""),
])
def test_image_base_name(image: str, base: str) -> None:
    assert image_base_name(image) == base


# registrator's own cases (bridge/util_test.go TestEscapedComma), in written order.
@pytest.mark.parametrize(("text", "tags"), [
    ("", []),
    ("foobar", ["foobar"]),
    ("foo,bar", ["foo", "bar"]),
    ("foo\\,bar", ["foo,bar"]),
    ("foo,bar\\,baz", ["foo", "bar,baz"]),
    ("\\,foobar\\,", [",foobar,"]),
    (",,,,foo,,,bar,,,", ["foo", "bar"]),
    (",,,,", []),
    (",,\\,,", [","]),
    ("a b, c", ["a b", " c"]),           # no trimming, as registrator
    ("x\\y", ["x\\y"]),                  # only a comma is escaped
])
def test_split_tags(text: str, tags: list[str]) -> None:
    assert split_tags(text) == tags


# --- bad input: a warning naming the container and the field, never an exception ----------

BAD_CASES: list[tuple[str, str, Callable[[dict[str, Any]], None], list[str], list[str]]] = [
    # (case, container, change, expected problem sources, services still served)
    ("a service name that is no DNS label costs only its port", "udp",
     lambda d: d["Config"].update(Labels={"SERVICE_80_NAME": "my.web"}),
     ["label SERVICE_80_NAME"], ["dns"]),
    ("an image name that is no DNS label", "paused",
     lambda d: d["Config"].update(Image="my.registry/my.app:1"), ["Config.Image"], []),
    ("a port setting naming no port", "paused",
     lambda d: d["Config"].update(Labels={"SERVICE_81_NAME": "x", "SERVICE_080_TAGS": "y"}),
     ["label SERVICE_81_NAME", "label SERVICE_080_TAGS"], ["busybox"]),
    ("tags that are no DNS labels are dropped", "paused",
     lambda d: d["Config"].update(Labels={"SERVICE_TAGS": "ok,v1.2,a b,a\\,b"}),
     ["label SERVICE_TAGS"] * 3, ["busybox"]),
    ("a setting with no key after the port", "paused",
     lambda d: d["Config"].update(Env=["SERVICE_80_=x"]), ["env SERVICE_80_"], ["busybox"]),
    ("one id for two ports of one service", "udp",
     lambda d: d["Config"].update(Labels={"SERVICE_NAME": "x", "SERVICE_53_NAME": "x",
                                          "SERVICE_80_NAME": "x", "SERVICE_ID": "same"}),
     ["label SERVICE_ID"], ["x", "x"]),
    ("labels that are not an object", "paused",
     lambda d: d["Config"].update(Labels=["SERVICE_NAME=x"]), ["Config.Labels"], ["busybox"]),
    ("a label value that is not a string", "paused",
     lambda d: d["Config"].update(Labels={"SERVICE_NAME": 5}), ["label SERVICE_NAME"],
     ["busybox"]),
    ("env that is not a list", "paused",
     lambda d: d["Config"].update(Env="SERVICE_NAME=x"), ["Config.Env"], ["busybox"]),
    ("an env entry that is not a string", "paused",
     lambda d: d["Config"].update(Env=[None, "SERVICE_NAME=api"]), ["Config.Env[0]"], ["api"]),
    ("exposed ports that are not an object", "paused",
     lambda d: d["Config"].update(ExposedPorts=["80/tcp"]), ["Config.ExposedPorts"],
     ["busybox"]),
    ("port keys that are not ports", "paused",
     lambda d: d["NetworkSettings"]["Ports"].update({"http/tcp": None, "0/tcp": None,
                                                     "70000/udp": None}),
     ["NetworkSettings.Ports"] * 3, ["busybox"]),
    ("bindings that are not a list", "paused",
     lambda d: d["NetworkSettings"]["Ports"].update({"80/tcp": "8080"}),
     ["NetworkSettings.Ports[80/tcp]"], ["busybox"]),
    ("a network that is not an object", "twonet",
     lambda d: d["NetworkSettings"]["Networks"].update({"dnsr-0": 5}),
     ["NetworkSettings.Networks.dnsr-0"], ["busybox"]),
    ("an address that is not an IP address", "twonet",
     lambda d: d["NetworkSettings"]["Networks"]["dnsr-b"].update(IPAddress="10.214.2"),
     ["NetworkSettings.Networks.dnsr-b.IPAddress"], ["busybox"]),
    ("a health that is not an object is taken as unhealthy", "paused",
     lambda d: d["State"].update(Paused=False, Health="sick"), ["State.Health"], ["busybox"]),
    ("an unknown health status is taken as unhealthy", "health-healthy",
     lambda d: d["State"]["Health"].update(Status="great"), ["State.Health.Status"],
     ["busybox"]),
    ("no name: the short id names the container", "paused",
     lambda d: d.pop("Name"), ["Name"], ["busybox"]),
    ("state that is not an object", "paused",
     lambda d: d.update(State=[]), ["State", "State.Running"], []),
    ("Running that is not a bool", "paused",
     lambda d: d["State"].update(Running="yes"), ["State.Running"], []),
    ("network settings that are not an object", "paused",
     lambda d: d.update(NetworkSettings="x"), ["NetworkSettings"], []),
]


@pytest.mark.parametrize(("case", "name", "change", "problem_sources", "served"), BAD_CASES,
                         ids=[case[0] for case in BAD_CASES])
def test_bad_input(case: str, name: str, change: Callable[[dict[str, Any]], None],
                   problem_sources: list[str], served: list[str]) -> None:
    data = variant(name, change=change)
    result = container_instances(data, INTERNAL)
    assert sources(result) == problem_sources
    assert [i.service for i in result.instances] == served
    display = data["Name"].lstrip("/") if "Name" in data else data["Id"][:12]
    assert result.container == display
    assert all(p.container == display for p in result.problems)


def test_bad_health_status_is_critical() -> None:
    data = variant("health-healthy", change=lambda d: d["State"]["Health"].update(Status=3))
    assert [i.health for i in container_instances(data, INTERNAL).instances] == [
        Health.CRITICAL]


def test_bad_host_port_when_published() -> None:
    def bad(data: dict[str, Any]) -> None:
        data["NetworkSettings"]["Ports"]["80/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "x"}]
        data["NetworkSettings"]["Ports"]["81/tcp"] = [{"HostIp": "0.0.0.0"}]
        data["NetworkSettings"]["Ports"]["82/tcp"] = [{"HostIp": "0.0.0.0", "HostPort": "82"}]
    result = container_instances(variant("anyaddr", change=bad), PUBLISHED)
    assert sources(result) == ["NetworkSettings.Ports[81/tcp]", "NetworkSettings.Ports[80/tcp]"]
    assert [(i.service, i.port) for i in result.instances] == [("busybox-82", 82)]


@pytest.mark.parametrize("data", [None, [], "x", 5])
def test_not_an_object(data: Any) -> None:
    result = container_instances(data, INTERNAL)
    assert result.instances == ()
    assert [str(p) for p in result.problems] == [
        f"container ?: inspect data: is {type(data).__name__}, not an object"]


def test_problem_text_names_container_and_source() -> None:
    result = container_instances(
        variant("udp", labels={"SERVICE_80_NAME": "a.b"}), INTERNAL)
    assert [str(p) for p in result.problems] == [
        "container udp: label SERVICE_80_NAME: service name 'a.b' (port 80/tcp) "
        "is not a DNS label"]
    assert result.problems[0] == Problem("udp", "label SERVICE_80_NAME",
                                         "service name 'a.b' (port 80/tcp) is not a DNS label")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8)
_PATHS = [("State",), ("State", "Health"), ("State", "Running"), ("State", "Paused"),
          ("Config",), ("Config", "Image"), ("Config", "Env"), ("Config", "Labels"),
          ("Config", "ExposedPorts"), ("Config", "Labels", "SERVICE_NAME"),
          ("NetworkSettings",), ("NetworkSettings", "Ports"), ("NetworkSettings", "Networks"),
          ("NetworkSettings", "Networks", "dnsr-b"), ("NetworkSettings", "Ports", "80/tcp"),
          ("HostConfig",), ("HostConfig", "NetworkMode"), ("Name",), ("Id",)]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["multi", "udp", "twonet", "published", "health-healthy"]),
       st.lists(st.tuples(st.sampled_from(_PATHS), _json), min_size=1, max_size=3),
       st.booleans())
def test_garbage_anywhere_never_raises(name: str, changes: list[tuple[tuple[str, ...], Any]],
                                       published: bool) -> None:
    data = copy.deepcopy(load(name))
    for path, value in changes:
        target: Any = data
        for key in path[:-1]:
            if not isinstance(target, dict):
                break
            target = target.setdefault(key, {})
        else:
            if isinstance(target, dict):
                target[path[-1]] = value
    result = container_instances(data, PUBLISHED if published else INTERNAL)
    for problem in result.problems:
        assert str(problem).startswith("container ")
    assert result.instances or result.reason


# --- settings and the view ----------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"node": "bad node", "datacenter": "dc1"}, "node name"),
    ({"node": "host1", "datacenter": "dc.1"}, "datacenter"),
    ({"node": "host1", "datacenter": "dc1", "published": "docker.example"}, "not an IP"),
    ({"node": "host1", "datacenter": "dc1", "published": "10.0.0.400"}, "neither"),
    ({"node": "host1", "datacenter": "dc1", "published": "a b"}, "neither"),
    ({"node": "host1", "datacenter": "dc1", "network": ""}, "network"),
])
def test_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NamingSettings(**kwargs)


def test_published_address_is_normalised() -> None:
    assert NamingSettings("host1", "dc1", published="[FD00::0001]").published == "fd00::1"


def test_view_is_ordered_by_container_name() -> None:
    names = ["udp", "multi", "paused", "stopped"]
    results = [container_instances(load(n), INTERNAL) for n in names]
    view = build_view(results)
    assert [i.id for i in view.instances] == [
        "host1:multi:80", "host1:multi:8080", "host1:paused:80",
        "host1:udp:53:udp", "host1:udp:80"]
    assert build_view(reversed(results)) == view


def test_a_label_of_many_tags_keeps_their_order_without_repeats() -> None:
    """Tens of thousands of tags in one label: each kept once, in the written
    order (a quadratic de-duplication took seconds here, holding the GIL)."""
    written = [f"t{i}" for i in range(20000)]
    data = variant("health-healthy", labels={"SERVICE_TAGS": ",".join([*written, "t7", "t1"])})
    (instance,) = container_instances(data, INTERNAL).instances
    assert list(instance.tags) == written
