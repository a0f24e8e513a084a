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
    path.write_text('upstream_for = ["corp.example=10.1.1.1"]\nconsul_datacenters = "dc2,dc3"\n'
                    'consul = "http://127.0.0.1:8500"\n')
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


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--consul-d", "dc2"], {}, "--consul-d: unknown option"),
    (["--tll", "5"], {}, "--tll: unknown option (did you mean --ttl?)"),
    ([], {"DNSD_TLL": "5"}, "DNSD_TLL: unknown setting (did you mean DNSD_TTL?)"),
    (["--consul-datacenters", "dc2"], {}, "has no effect without --consul"),
    (["--consul-consistent"], {}, "--consul-consistent: has no effect without --consul"),
    (["--consul-max-reply", "128"], {}, "--consul-max-reply: has no effect without --consul"),
    (["--consul", "127.0.0.1:8500", "--consul-max-reply", "0"], {}, "must be at least 1"),
    (["--consul", "127.0.0.1:8500", "--consul-max-reply", "64M"], {}, "not a whole number"),
    (["--zookeeper-datacenter", "dc2"], {}, "has no effect without --zookeeper"),
    (["--upstream-for", "web.service.consul=10.0.0.1"], {}, "inside dnsd's own zone consul"),
    (["--alt-domain", "alt", "--upstream-for", "alt=10.0.0.1"], {}, "own zone alt"),
    (["--no-forward", "--upstream", "10.0.0.1"], {}, "--no-forward: conflicts"),
    (["--query-log=maybe"], {}, "--query-log: 'maybe' is not true or false"),
    (["--log-format", "xml"], {}, "--log-format: 'xml' is not text or json"),
])
def test_mistakes_are_named_with_a_suggestion(argv: list[str], env: dict[str, str],
                                              message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(argv, environ=env)
    assert message in str(info.value)


def test_flags_take_an_optional_value_as_the_environment_does() -> None:
    assert load_config(["--query-log"], environ={}).query_log
    assert load_config(["--query-log=yes"], environ={}).query_log
    assert not load_config(["--query-log=no"], environ={"DNSD_QUERY_LOG": "1"}).query_log


def test_json_config_file_and_its_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "dnsd.json"
    path.write_text('{"ttl": 5, "listen": ["127.0.0.1:53"], "only_passing": true}')
    config = load_config(["--config", str(path)], environ={})
    assert config.ttl == 5 and config.listen == (("127.0.0.1", 53),) and config.only_passing
    path.write_text('{"tll": 5}')
    with pytest.raises(ConfigError, match=r"unknown key 'tll' \(did you mean ttl\?\)"):
        load_config(["--config", str(path)], environ={})
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a table"):
        load_config(["--config", str(path)], environ={})


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "dnsd.toml"
    path.write_text("ttl = 7\n")
    assert load_config([], environ={"DNSD_CONFIG": str(path)}).ttl == 7


def test_consul_address_from_consul_env() -> None:
    config = load_config([], environ={"CONSUL_HTTP_ADDR": "10.0.0.5:8500"})
    assert config.consul == "http://10.0.0.5:8500"
    config = load_config([], environ={"CONSUL_HTTP_ADDR": "https://consul.example:8501",
                                      "DNSD_CONSUL": "http://127.0.0.1:8500"})
    assert config.consul == "http://127.0.0.1:8500"


def test_no_forward_turns_forwarding_off() -> None:
    assert load_config(["--no-forward"], environ={}).no_forward


@pytest.mark.parametrize(("text", "expected"), [
    ("9153", ("127.0.0.1", 9153)),          # a port alone: loopback
    (":8600", ("0.0.0.0", 8600)),           # every IPv4 address, as Go and CoreDNS read it
    ("localhost:8600", ("127.0.0.1", 8600)),
    ("LOCALHOST:53", ("127.0.0.1", 53)),
    ("[::]:53", ("::", 53)),
])
def test_listen_and_metrics_forms(text: str, expected: tuple[str, int]) -> None:
    assert load_config(["--listen", text], environ={}).listen == (expected,)
    assert load_config(["--metrics", text], environ={}).metrics == expected


def test_the_same_listen_address_twice_is_one() -> None:
    config = load_config(["--listen", "127.0.0.1:53", "--listen", "localhost:53"], environ={})
    assert config.listen == (("127.0.0.1", 53),)


def test_consul_dns_knobs(tmp_path: Path) -> None:
    config = load_config([], environ={})
    assert (config.node_ttl, config.service_ttl, config.a_record_limit) == (None, (), 0)
    assert (config.soa_refresh, config.soa_retry, config.soa_expire) == (3600, 600, 86400)
    assert config.node_meta_txt and not config.translate_wan_addrs
    assert config.recursor_timeout == 1.0
    config = load_config(["--node-ttl", "5", "--service-ttl", "Web=10",
                          "--service-ttl", "db-*=20,*=1", "--a-record-limit", "3",
                          "--node-meta-txt=no", "--translate-wan-addrs",
                          "--recursor-timeout", "0.5", "--soa-retry", "60"], environ={})
    assert config.node_ttl == 5 and config.a_record_limit == 3
    assert config.service_ttl == (("web", 10), ("db-*", 20), ("*", 1))
    assert not config.node_meta_txt and config.translate_wan_addrs
    assert config.recursor_timeout == 0.5 and config.soa_retry == 60
    path = tmp_path / "c.toml"
    path.write_text('service_ttl = ["api=30"]\nnode_meta_txt = false\n')
    config = load_config(["--config", str(path)], environ={})
    assert config.service_ttl == (("api", 30),) and not config.node_meta_txt


@pytest.mark.parametrize(("args", "error"), [
    (["--service-ttl", "web"], "NAME=SECONDS"),
    (["--service-ttl", "=5"], "NAME=SECONDS"),
    (["--service-ttl", "we b=5"], "is not a service name"),
    (["--service-ttl", "a*b=5"], "is not a service name"),
    (["--service-ttl", "web=-1"], "not from 0"),
    (["--recursor-timeout", "0"], "more than 0"),
    (["--recursor-timeout", "soon"], "number of seconds"),
    (["--node-ttl", "x"], "whole number"),
])
def test_consul_dns_knob_errors(args: list[str], error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_config(args, environ={})


def test_recursor_timeout_is_the_forwarders_per_try_timeout() -> None:
    from dnsd.build import forward_settings, zone_settings
    default = forward_settings(load_config([], environ={})).timing
    assert (default.try_timeout, default.tcp_timeout, default.deadline) == (1.0, 1.5, 3.5)
    timing = forward_settings(load_config(["--recursor-timeout", "3"], environ={})).timing
    assert timing.try_timeout == 3 and timing.tcp_timeout == 3.5
    assert timing.deadline >= timing.tcp_timeout
    zone = zone_settings(load_config(["--service-ttl", "web=4", "--node-ttl", "2"],
                                     environ={}))
    assert zone.service_ttl == (("web", 4),) and zone.node_ttl == 2
