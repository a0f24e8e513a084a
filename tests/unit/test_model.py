"""Registry values: what is a valid label, host name and address."""

from __future__ import annotations

import pytest

from dnsd.errors import ServicesFileError
from dnsd.model import (
    AddressKind,
    Instance,
    Node,
    ServiceAddress,
    View,
    classify_address,
    is_label,
)


@pytest.mark.parametrize(("text", "kind", "normal"), [
    ("10.0.0.1", AddressKind.IPV4, "10.0.0.1"),
    ("::ffff:10.0.0.1", AddressKind.IPV4, "10.0.0.1"),
    ("[fd00::1]", AddressKind.IPV6, "fd00::1"),
    ("Search.Example.ORG.", AddressKind.HOSTNAME, "search.example.org"),
    ("db.local", AddressKind.HOSTNAME, "db.local"),
    ("", AddressKind.NONE, ""),
])
def test_addresses(text: str, kind: AddressKind, normal: str) -> None:
    assert classify_address(text) == (kind, normal)


@pytest.mark.parametrize("text", [
    "999.1.1.1", "10.0.0.400", "1.2.3",  # mistyped IP addresses, not host names
    "10.0.0.1\n", "db", "-x.example.org", "a..b", "with space.example",
])
def test_not_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="neither an IP address nor a host name"):
        classify_address(text)


@pytest.mark.parametrize(("text", "ok"), [
    ("web", True), ("service_1", True), ("web-8080", True), ("web\n", False),
    ("-web", False), ("web-", False), ("", False), ("x" * 64, False),
])
def test_labels(text: str, ok: bool) -> None:
    assert is_label(text) is ok


def test_an_instance_with_a_newline_in_its_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid DNS label"):
        Instance("web\n", "node1", "dc1", address="10.0.0.1")


def test_error_messages_stay_on_one_line() -> None:
    error = ServicesFileError("s.toml", "service name 'web\n' is bad", "services[0] (web\n)")
    assert "\n" not in str(error) and "web\\n" in str(error)


def test_tagged_addresses_are_normalised_frozen_and_checked() -> None:
    node = Node("n1", "dc1", "10.0.0.1", tagged_addresses={
        "lan_ipv6": "FD00:0:0::1", "wan": "", "lan": "10.0.0.1"})
    assert node.tagged_addresses == {"lan_ipv6": "fd00::1", "lan": "10.0.0.1"}
    assert hash(node) == hash(Node("n1", "dc1", "10.0.0.1", tagged_addresses={
        "lan": "10.0.0.1", "lan_ipv6": "fd00::1"}))
    with pytest.raises(ValueError, match="tagged address wan"):
        Node("n1", "dc1", tagged_addresses={"wan": "10.0.0.400"})
    inst = Instance("web", "n1", "dc1", tagged_addresses={
        "wan": ServiceAddress("198.51.100.1", 8443)})
    assert inst.tagged_addresses["wan"].port == 8443
    assert hash(inst) is not None
    with pytest.raises(ValueError, match="tagged port"):
        ServiceAddress("10.0.0.1", 70000)


def test_a_view_keys_prepared_queries_by_lower_case_datacenter() -> None:
    view = View(prepared={"DC1": "[]"})
    assert view.prepared == {"dc1": "[]"} and view == View(prepared={"dc1": "[]"})
