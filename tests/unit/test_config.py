"""Configuration parsing: a table of inputs and the value or error they give."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from dnsd.config import load_config, parse_hostport
from dnsd.errors import ConfigError


@pytest.mark.parametrize(("text", "default", "expected"), [
    ("127.0.0.1:53", None, ("127.0.0.1", 53)),
    ("[::1]:8600", None, ("::1", 8600)),
    ("10.0.0.1", 53, ("10.0.0.1", 53)),
    ("::1", 53, ("::1", 53)),
    ("[fd00::1]", 53, ("fd00::1", 53)),
])
def test_hostport(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, default) == expected


@pytest.mark.parametrize(("text", "error"), [
    ("127.0.0.1", "needs a port"),
    ("localhost:53", "not an IP address"),
    ("127.0.0.1:99999", "port"),
    ("[::1:53", "closing"),
    ("::1", "[ADDR]:PORT"),
])
def test_hostport_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_hostport(text)


def test_defaults() -> None:
    config = load_config([], environ={})
    assert config.listen == (("127.0.0.1", 8600),)
    assert config.domain == "consul" and config.datacenter == "dc1"
    assert config.ttl == 0 and config.negative_ttl == 0 and config.udp_answer_limit == 0
    assert config.upstream is None
    assert ipaddress.ip_network("172.16.0.0/12") in config.allow_recursion
    assert not config.datacenter_set


def test_repeatable_options_from_flags_env_and_file(tmp_path: Path) -> None:
    config = load_config(["--listen", "127.0.0.1:1", "--listen", "[::1]:2"], environ={})
    assert config.listen == (("127.0.0.1", 1), ("::1", 2))
    config = load_config([], environ={"DNSD_UPSTREAM": "10.0.0.1, 10.0.0.2:5353"})
    assert config.upstream == (("10.0.0.1", 53), ("10.0.0.2", 5353))
    path = tmp_path / "c.toml"
    path.write_text('upstream_for = ["corp.example=10.1.1.1"]\nconsul_datacenters = "dc2,dc3"\n')
    config = load_config(["--config", str(path)], environ={})
    assert config.upstream_for == (("corp.example", ("10.1.1.1", 53)),)
    assert config.consul_datacenters == ("dc2", "dc3")


def test_consul_token_from_consul_env() -> None:
    config = load_config([], environ={"CONSUL_HTTP_TOKEN": "secret"})
    assert config.consul_token == "secret"
    config = load_config([], environ={"CONSUL_HTTP_TOKEN": "a", "DNSD_CONSUL_TOKEN": "b"})
    assert config.consul_token == "b"


def test_domain_is_normalised() -> None:
    config = load_config(["--domain", "Example.ORG.", "--alt-domain", "alt"], environ={})
    assert config.domains == ("example.org", "alt")


@pytest.mark.parametrize(("argv", "env", "file", "message"), [
    (["--ttl", "x"], {}, "", "--ttl: 'x' is not a whole number"),
    ([], {"DNSD_WORKERS": "0"}, "", "DNSD_WORKERS: must be at least 1"),
    ([], {}, "ttl = true\n", "ttl: True is not a single value"),
    ([], {}, "listen = 5\n", "listen: must be a list of strings"),
    ([], {}, "only_passing = 3\n", "only_passing: must be true or false"),
    ([], {}, "nope = 1\n", "unknown key 'nope'"),
    ([], {}, "ttl = [\n", "not valid TOML"),
    (["--alt-domain", "consul"], {}, "", "--alt-domain: must differ"),
    (["--zookeeper", "zk://h:2181/x"], {}, "", "without a scheme"),
    (["--zookeeper", "h:port/x"], {}, "", "is not HOST:PORT"),
])
def test_errors_name_the_option(tmp_path: Path, argv: list[str], env: dict[str, str],
                                file: str, message: str) -> None:
    if file:
        path = tmp_path / "c.toml"
        path.write_text(file)
        argv = [*argv, "--config", str(path)]
    with pytest.raises(ConfigError) as info:
        load_config(argv, environ=env)
    assert message in str(info.value)
