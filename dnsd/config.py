"""Configuration: flags, ``DNSD_*`` environment variables and a TOML file, parsed
into one frozen :class:`Config`.

Precedence is flag > environment > file > default. Every option has the same
name in all three places (``--udp-answer-limit``, ``DNSD_UDP_ANSWER_LIMIT``,
``udp_answer_limit``). Parsing raises :class:`ConfigError` with one line naming
the bad option; it never exits (only ``cli`` does). Imports: ``errors``, ``model``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from dnsd import __version__
from dnsd.errors import ConfigError
from dnsd.model import is_hostname, is_label

HostPort = tuple[str, int]

DEFAULT_ALLOW_RECURSION = (
    "127.0.0.0/8", "::1/128",            # loopback
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918 (Docker bridges)
    "100.64.0.0/10",                      # RFC 6598 shared address space
    "fc00::/7", "fe80::/10",              # RFC 4193 unique local, link local
)


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting dnsd runs with, validated. Built only by :func:`load_config`."""

    listen: tuple[HostPort, ...] = (("127.0.0.1", 8600),)
    domain: str = "consul"
    alt_domain: str | None = None
    datacenter: str = "dc1"
    datacenter_set: bool = False  # True when the user chose it (Consul's agent may not override)
    node_name: str = "localhost"
    static: tuple[str, ...] = ()
    consul: str | None = None
    consul_token: str | None = None
    consul_ca: str | None = None
    consul_datacenters: tuple[str, ...] = ()
    zookeeper: str | None = None
    zookeeper_datacenter: str | None = None
    upstream: tuple[HostPort, ...] | None = None  # None: from /etc/resolv.conf
    upstream_for: tuple[tuple[str, HostPort], ...] = ()
    upstream_policy: str = "sequential"
    ttl: int = 0
    negative_ttl: int = 0
    udp_answer_limit: int = 0
    allow_recursion: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    workers: int = 1
    rate_limit: float = 0.0
    query_log: bool = False
    freebind: bool = False
    only_passing: bool = False
    state_dir: str | None = None
    metrics: HostPort | None = None
    log_level: str = "info"
    config_file: str | None = None

    @property
    def domains(self) -> tuple[str, ...]:
        return (self.domain,) if self.alt_domain is None else (self.domain, self.alt_domain)


# --- value parsers: str (or TOML value) -> typed value; raise ValueError with the reason


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 0 to 65535")
    return int(text)


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def parse_hostport(text: str, default_port: int | None = None) -> HostPort:
    """``ADDR:PORT``, ``[V6]:PORT``; with ``default_port``, also ``ADDR`` and bare ``V6``."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError(f"{text!r} has no closing ']'")
        if not rest:
            if default_port is None:
                raise ValueError(f"{text!r} needs a port: [ADDR]:PORT")
            return _ip(host), default_port
        if not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [ADDR]:PORT")
        return _ip(host), _port(rest[1:])
    if text.count(":") > 1:  # a bare IPv6 address
        if default_port is None:
            raise ValueError(f"{text!r}: write IPv6 with a port as [ADDR]:PORT")
        return _ip(text), default_port
    host, sep, port = text.partition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"{text!r} needs a port: ADDR:PORT")
        return _ip(host), default_port
    return _ip(host), _port(port)


def _listen(text: str) -> HostPort:
    return parse_hostport(text)


def _upstream(text: str) -> HostPort:
    return parse_hostport(text, 53)


def _domain(text: str) -> str:
    name = text.strip().rstrip(".").lower()
    if not is_hostname(name):
        raise ValueError(f"{text!r} is not a valid domain name")
    return name


def _label(text: str) -> str:
    if not is_label(text):
        raise ValueError(f"{text!r} is not a valid DNS label")
    return text.lower()


def _node_name(text: str) -> str:
    if not is_hostname(text):
        raise ValueError(f"{text!r} is not a valid node name")
    return text


def _nonneg_int(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not 0 <= value <= limit:
            raise ValueError(f"{value} is not from 0 to {limit}")
        return value
    return parse


def _workers(text: str) -> int:
    value = _nonneg_int(256)(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0 <= value < 1e9:
        raise ValueError(f"{text!r} must be 0 (off) or a positive rate")
    return value


def _cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an address range (CIDR)") from None


def _upstream_for(text: str) -> tuple[str, HostPort]:
    domain, sep, addr = text.partition("=")
    if not sep:
        raise ValueError(f"{text!r} is not DOMAIN=ADDR[:PORT]")
    return _domain(domain), _upstream(addr)


def _url(text: str) -> str:
    parsed = urlparse(text if "://" in text else f"http://{text}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    try:
        parsed.port  # noqa: B018 - validates the port
    except ValueError:
        raise ValueError(f"{text!r} has a bad port") from None
    return text if "://" in text else f"http://{text}"


def _zookeeper(text: str) -> str:
    hosts, _, path = text.partition("/")
    if "://" in text:
        raise ValueError(f"{text!r}: write HOST:PORT[,HOST:PORT...]/PATH, without a scheme")
    if not hosts:
        raise ValueError(f"{text!r} names no ZooKeeper host")
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "2181")
        if not name or not port.isdigit():
            raise ValueError(f"{host!r} is not HOST:PORT")
    if path and not all(path.split("/")):
        raise ValueError(f"path {'/' + path!r} has an empty component")
    return text


def _level(text: str) -> str:
    level = text.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{text!r} is not one of debug, info, warning, error")
    return level


def _policy(text: str) -> str:
    if text not in ("sequential", "random"):
        raise ValueError(f"{text!r} is not sequential or random")
    return text


def _text(text: str) -> str:
    return text


def _path(text: str) -> str:
    if not text:
        raise ValueError("is empty")
    return text


@dataclass(frozen=True, slots=True)
class Option:
    name: str                     # flag name without dashes, with '-'
    parse: Callable[[str], Any]
    help: str
    metavar: str = ""
    repeat: bool = False          # repeatable flag; list in TOML; comma list in env
    flag: bool = False            # boolean switch
    env: Sequence[str] = ()       # extra environment names after DNSD_<NAME>

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("listen", _listen, "UDP and TCP listen address; IPv6 as [::1]:PORT (default "
           "127.0.0.1:8600)", "ADDR:PORT", repeat=True),
    Option("domain", _domain, "the zone dnsd answers (default consul)", "NAME"),
    Option("alt-domain", _domain, "a second zone answered the same way", "NAME"),
    Option("datacenter", _label, "the local datacenter, used when a name omits it "
           "(default dc1, or the Consul agent's)", "NAME"),
    Option("node-name", _node_name, "this node's name; static services default to it "
           "(default: host name)", "NAME"),
    Option("static", _path, "services file (TOML or JSON), re-read when it changes",
           "FILE", repeat=True),
    Option("consul", _url, "Consul HTTP API to watch, e.g. http://127.0.0.1:8500", "URL"),
    Option("consul-token", _text, "Consul ACL token (also CONSUL_HTTP_TOKEN)", "TOKEN",
           env=("CONSUL_HTTP_TOKEN",)),
    Option("consul-ca", _path, "CA bundle for an https Consul (also CONSUL_CACERT)", "FILE",
           env=("CONSUL_CACERT",)),
    Option("consul-datacenters", _label, "remote datacenters also watched (comma list)",
           "LIST", repeat=True),
    Option("zookeeper", _zookeeper, "ZooKeeper ensemble and registrator base path, e.g. "
           "zk1:2181,zk2:2181/services", "HOSTS/PATH"),
    Option("zookeeper-datacenter", _label, "datacenter of ZooKeeper instances "
           "(default --datacenter)", "NAME"),
    Option("upstream", _upstream, "where other names go (default: nameservers of "
           "/etc/resolv.conf)", "ADDR[:PORT]", repeat=True),
    Option("upstream-for", _upstream_for, "per-domain upstream, like dnsmasq "
           "server=/dom/addr", "DOMAIN=ADDR[:PORT]", repeat=True),
    Option("upstream-policy", _policy, "order of upstream tries: sequential (default) "
           "or random", "POLICY"),
    Option("ttl", _nonneg_int(2**31 - 1), "TTL of service and node answers (default 0)",
           "SECONDS"),
    Option("negative-ttl", _nonneg_int(2**31 - 1), "SOA minimum: TTL of NXDOMAIN/NODATA "
           "answers (default 0)", "SECONDS"),
    Option("udp-answer-limit", _nonneg_int(65535), "cap on answers to non-EDNS UDP queries "
           "(default 0: no cap)", "N"),
    Option("allow-recursion", _cidr, "clients whose out-of-zone names are forwarded "
           "(default loopback and private ranges)", "CIDR", repeat=True),
    Option("freebind", _text, "listen on addresses this host does not have (yet), e.g. "
           "Docker's bridge before Docker creates it (IP_FREEBIND)", flag=True),
    Option("workers", _workers, "processes sharing the port (default 1)", "N"),
    Option("rate-limit", _rate, "per-client UDP response rate limit (default off)", "QPS"),
    Option("query-log", _text, "log one line per query", flag=True),
    Option("only-passing", _text, "leave out instances whose checks are warning", flag=True),
    Option("state-dir", _path, "where the last good table is saved and loaded at start",
           "DIR"),
    Option("metrics", _listen, "serve /metrics, /health and /ready over HTTP", "ADDR:PORT"),
    Option("log-level", _level, "debug, info, warning or error (default info)", "LEVEL"),
)

_BY_KEY = {opt.key: opt for opt in OPTIONS}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dnsd",
        description="DNS server for service lookup: answers <name>.service[.<dc>].<domain> "
                    "from memory, fed by Consul, ZooKeeper and static files; forwards the rest.",
        epilog="Every option is also a TOML key (same name, '_' for '-') and an environment "
               "variable DNSD_<NAME>. Precedence: flag > environment > file > default.",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"dnsd {__version__}")
    parser.add_argument("--config", metavar="FILE.toml", help="TOML configuration file")
    for opt in OPTIONS:
        if opt.flag:
            parser.add_argument(f"--{opt.name}", action="store_true", help=opt.help)
        else:
            parser.add_argument(f"--{opt.name}", metavar=opt.metavar, help=opt.help,
                                action="append" if opt.repeat else "store")
    return parser


def _bool(text: str, where: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{where}: {text!r} is not true or false")


def _convert(opt: Option, raw: Any, where: str) -> Any:
    """Turn a raw flag/env/TOML value into the option's typed value."""
    try:
        if opt.flag:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str):
                return _bool(raw, where)
            raise ValueError("must be true or false")
        if opt.repeat:
            items: list[Any]
            if isinstance(raw, str):
                items = [part for part in raw.split(",") if part.strip()]
            elif isinstance(raw, list):
                items = []
                for item in raw:
                    if not isinstance(item, str | int):
                        raise ValueError(f"{item!r} is not a string")
                    items.extend(p for p in str(item).split(",") if p.strip())
            else:
                raise ValueError("must be a list of strings")
            return tuple(opt.parse(item.strip()) for item in items)
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError(f"{raw!r} is not a single value")
        return opt.parse(str(raw).strip())
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in _BY_KEY:
            raise ConfigError(f"{path}: unknown key {key!r}")
    return data


def default_node_name() -> str:
    host = socket.gethostname().split(".")[0]
    return host if is_hostname(host) else "localhost"


def load_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Parse argv (without the program name), the environment and the config file."""
    env = os.environ if environ is None else environ
    ns = vars(build_parser().parse_args(list(argv)))
    config_file = ns.pop("config", None) or env.get("DNSD_CONFIG") or None
    file_values = _read_toml(config_file) if config_file else {}

    values: dict[str, Any] = {}
    for opt in OPTIONS:
        if opt.key in ns:
            raw = ns[opt.key]
            if opt.repeat:  # each flag occurrence may itself be a comma list
                raw = ",".join(raw)
            values[opt.key] = _convert(opt, raw, f"--{opt.name}")
            continue
        env_names = (f"DNSD_{opt.key.upper()}", *opt.env)
        env_name = next((n for n in env_names if env.get(n)), None)
        if env_name is not None:
            values[opt.key] = _convert(opt, env[env_name], env_name)
        elif opt.key in file_values:
            values[opt.key] = _convert(opt, file_values[opt.key], f"{config_file}: {opt.key}")

    if values.get("listen") == ():
        raise ConfigError("--listen: no address given")
    values.setdefault("allow_recursion",
                      tuple(ipaddress.ip_network(c) for c in DEFAULT_ALLOW_RECURSION))
    values.setdefault("node_name", default_node_name())
    values["datacenter_set"] = "datacenter" in values
    values["config_file"] = config_file
    if values.get("alt_domain") and values.get("alt_domain") == values.get("domain", "consul"):
        raise ConfigError("--alt-domain: must differ from --domain")
    return Config(**values)
