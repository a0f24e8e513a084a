"""Configuration: flags, ``DNSD_*`` environment variables and a TOML file, parsed
into one frozen :class:`Config`.

Precedence is flag > environment > file > default. Every option has the same
name in all three places (``--udp-answer-limit``, ``DNSD_UDP_ANSWER_LIMIT``,
``udp_answer_limit``). Parsing raises :class:`ConfigError` with one line naming
the bad option; it never exits (only ``cli`` does). Imports: ``errors``, ``hostport``,
``model``.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from dnsd import __version__
from dnsd.errors import ConfigError
from dnsd.hostport import HostPort, parse_hostport, parse_listen
from dnsd.model import is_hostname, is_label

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
    freebind: bool = False
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
    consul_consistent: bool = False
    consul_max_reply: int = 64  # MiB
    zookeeper: str | None = None
    zookeeper_datacenter: str | None = None
    docker: str | None = None  # the engine's URL; None: off
    docker_published: str | None = None
    docker_network: str | None = None
    upstream: tuple[HostPort, ...] | None = None  # None: from /etc/resolv.conf
    upstream_for: tuple[tuple[str, HostPort], ...] = ()
    upstream_policy: str = "sequential"
    ttl: int = 0
    negative_ttl: int = 0
    node_ttl: int | None = None  # None: --ttl
    service_ttl: tuple[tuple[str, int], ...] = ()
    a_record_limit: int = 0
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    node_meta_txt: bool = True
    translate_wan_addrs: bool = False
    recursor_timeout: float = 1.0
    udp_answer_limit: int = 0
    allow_recursion: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    workers: int = 1
    rate_limit: float = 0.0
    query_log: bool = False
    only_passing: bool = False
    state_dir: str | None = None
    metrics: HostPort | None = None
    log_level: str = "info"
    log_format: str = "text"
    no_forward: bool = False
    config_file: str | None = None

    @property
    def domains(self) -> tuple[str, ...]:
        return (self.domain,) if self.alt_domain is None else (self.domain, self.alt_domain)


# --- value parsers: str (or TOML value) -> typed value; raise ValueError with the reason


def _listen(text: str) -> HostPort:
    return parse_listen(text)


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


def _service_ttl(text: str) -> tuple[str, int]:
    name, sep, seconds = text.partition("=")
    name = name.strip().lower()
    if not sep or not name:
        raise ValueError(f"{text!r} is not NAME=SECONDS")
    # A prefix ("db-*") may end where a name could not; a whole name is a label.
    if not (is_label(name) or re.fullmatch(r"[a-z0-9_-]{0,63}\*", name)):
        raise ValueError(f"{name!r} is not a service name, a prefix ending in *, or *")
    return name, _nonneg_int(2**31 - 1)(seconds.strip())


def _mebibytes(text: str) -> int:
    value = _nonneg_int(4096)(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 30:
        raise ValueError(f"{text!r} is not more than 0 and at most 30 seconds")
    return value


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


DOCKER_SOCKET = "unix:///var/run/docker.sock"
"""The engine a bare ``--docker`` watches when ``DOCKER_HOST`` is not set."""
_DOCKER_NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _docker(text: str) -> str:
    """``unix:///PATH`` (or a bare absolute path) or ``tcp://HOST:PORT``, normalised.

    Plain ``http://`` is taken as ``tcp://``, as the docker client does. TLS
    (``https://``, ``DOCKER_TLS_VERIFY``) and ``ssh://`` are not supported."""
    if text.startswith("/"):
        text = f"unix://{text}"
    parsed = urlparse(text)
    if parsed.scheme == "unix":
        path = parsed.netloc + parsed.path if parsed.netloc else parsed.path
        if not path.startswith("/") or parsed.query or parsed.fragment:
            raise ValueError(f"{text!r} is not unix:///PATH")
        return f"unix://{path}"
    if parsed.scheme in ("tcp", "http"):
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"{text!r} has a bad port") from None
        if not parsed.hostname or port is None or parsed.path.strip("/") or parsed.query:
            raise ValueError(f"{text!r} is not tcp://HOST:PORT")
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        return f"tcp://{host}:{port}"
    raise ValueError(f"{text!r} is not unix:///PATH or tcp://HOST:PORT (TLS and ssh:// "
                     "are not supported)")


def _docker_published(text: str) -> str:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if address.is_unspecified:
        raise ValueError(f"{text!r} is where ports are bound, not an address clients "
                         "can reach; name the host's own address")
    return str(address)


def _docker_network(text: str) -> str:
    if not _DOCKER_NETWORK.fullmatch(text):
        raise ValueError(f"{text!r} is not a Docker network name")
    return text


def _level(text: str) -> str:
    level = text.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{text!r} is not one of debug, info, warning, error")
    return level


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError(f"{text!r} is not text or json")
    return text


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
    """One row of the options table: a flag, its TOML key and its ``DNSD_*``
    variable, how its text is parsed, and whether SIGHUP may change it.

    Its typed value and default are the :class:`Config` field of the same key
    (a test holds the two, the README's table and ``--help`` together)."""

    name: str                     # flag name without dashes, with '-'
    parse: Callable[[str], Any]
    help: str
    metavar: str = ""
    repeat: bool = False          # repeatable flag; list in TOML; comma list in env
    flag: bool = False            # boolean switch
    env: Sequence[str] = ()       # extra environment names after DNSD_<NAME>
    bare: bool = False            # may be given without a value (``--docker``): see _convert
    reload: bool = False          # SIGHUP applies a change; otherwise it needs a restart
    group: str = ""               # the --help section it is listed in

    @property
    def key(self) -> str:
        return self.name.replace("-", "_")


_ZONE, _SOURCES, _FORWARDING, _ANSWERS, _OPERATIONS = (
    "Listening and zone", "Sources", "Forwarding", "Answers", "Operations")

OPTIONS: tuple[Option, ...] = (
    Option("listen", _listen, "UDP and TCP listen address; IPv6 as [::1]:PORT, :PORT for "
           "every IPv4 address, PORT alone for loopback (default 127.0.0.1:8600)",
           "ADDR:PORT", repeat=True, group=_ZONE),
    Option("freebind", _text, "listen on addresses this host does not have (yet), e.g. "
           "Docker's bridge before Docker creates it (IP_FREEBIND)", flag=True, group=_ZONE),
    Option("domain", _domain, "the zone dnsd answers (default consul)", "NAME", group=_ZONE),
    Option("alt-domain", _domain, "a second zone answered the same way", "NAME",
           group=_ZONE),
    Option("datacenter", _label, "the local datacenter, used when a name omits it "
           "(default dc1, or the Consul agent's)", "NAME", group=_ZONE),
    Option("node-name", _node_name, "this node's name; static services default to it "
           "(default: host name)", "NAME", group=_ZONE),
    Option("static", _path, "services file (TOML or JSON), re-read when it changes",
           "FILE", repeat=True, reload=True, group=_SOURCES),
    Option("consul", _url, "Consul HTTP API to watch, e.g. http://127.0.0.1:8500 "
           "(also CONSUL_HTTP_ADDR)", "URL", env=("CONSUL_HTTP_ADDR",), group=_SOURCES),
    Option("consul-token", _text, "Consul ACL token (also CONSUL_HTTP_TOKEN)", "TOKEN",
           env=("CONSUL_HTTP_TOKEN",), group=_SOURCES),
    Option("consul-ca", _path, "CA bundle for an https Consul (also CONSUL_CACERT)", "FILE",
           env=("CONSUL_CACERT",), group=_SOURCES),
    Option("consul-datacenters", _label, "remote datacenters also watched (comma list)",
           "LIST", repeat=True, group=_SOURCES),
    Option("consul-consistent", _text, "read Consul through its leader only, so a cluster "
           "without a leader is an outage (default: ?stale reads from any server, Consul's "
           "allow_stale)", flag=True, group=_SOURCES),
    Option("consul-max-reply", _mebibytes, "largest Consul reply read; a larger one fails "
           "like an outage (default 64)", "MIB", group=_SOURCES),
    Option("zookeeper", _zookeeper, "ZooKeeper ensemble and registrator base path, e.g. "
           "zk1:2181,zk2:2181/services", "HOSTS/PATH", group=_SOURCES),
    Option("zookeeper-datacenter", _label, "datacenter of ZooKeeper instances "
           "(default --datacenter)", "NAME", group=_SOURCES),
    Option("docker", _docker, "watch a Docker engine and serve its containers: "
           "unix:///PATH or tcp://HOST:PORT; without a value DOCKER_HOST, else "
           f"{DOCKER_SOCKET}", "URL", bare=True, group=_SOURCES),
    Option("docker-published", _docker_published, "serve containers at their published "
           "host ports on this address instead of their own addresses", "ADDR",
           group=_SOURCES),
    Option("docker-network", _docker_network, "the network whose address a container is "
           "served at when it has several (default: the first by name)", "NAME",
           group=_SOURCES),
    Option("upstream", _upstream, "where other names go (default: nameservers of "
           "/etc/resolv.conf)", "ADDR[:PORT]", repeat=True, group=_FORWARDING),
    Option("upstream-for", _upstream_for, "per-domain upstream, like dnsmasq "
           "server=/dom/addr", "DOMAIN=ADDR[:PORT]", repeat=True, group=_FORWARDING),
    Option("upstream-policy", _policy, "order of upstream tries: sequential (default) "
           "or random", "POLICY", group=_FORWARDING),
    Option("allow-recursion", _cidr, "clients whose out-of-zone names are forwarded "
           "(default loopback and private ranges)", "CIDR", repeat=True, reload=True,
           group=_FORWARDING),
    Option("no-forward", _text, "answer only dnsd's zones: other names get REFUSED",
           flag=True, group=_FORWARDING),
    Option("recursor-timeout", _timeout, "seconds to wait for one upstream's reply over UDP "
           "before trying the next (default 1)", "SECONDS", group=_FORWARDING),
    Option("ttl", _nonneg_int(2**31 - 1), "TTL of service and node answers (default 0)",
           "SECONDS", reload=True, group=_ANSWERS),
    Option("negative-ttl", _nonneg_int(2**31 - 1), "SOA minimum: TTL of NXDOMAIN/NODATA "
           "answers (default 0)", "SECONDS", reload=True, group=_ANSWERS),
    Option("node-ttl", _nonneg_int(2**31 - 1), "TTL of node, addr and NS answers "
           "(default --ttl)", "SECONDS", reload=True, group=_ANSWERS),
    Option("service-ttl", _service_ttl, "TTL of one service's answers; NAME may end in * "
           "to match a prefix, the longest winning, or be * for every service (default "
           "--ttl)", "NAME=SECONDS", repeat=True, reload=True, group=_ANSWERS),
    Option("a-record-limit", _nonneg_int(65535), "at most N A/AAAA records in a service "
           "answer, rotated (default 0: all)", "N", reload=True, group=_ANSWERS),
    Option("soa-refresh", _nonneg_int(2**31 - 1), "SOA refresh (default 3600)", "SECONDS",
           reload=True, group=_ANSWERS),
    Option("soa-retry", _nonneg_int(2**31 - 1), "SOA retry (default 600)", "SECONDS",
           reload=True, group=_ANSWERS),
    Option("soa-expire", _nonneg_int(2**31 - 1), "SOA expire (default 86400)", "SECONDS",
           reload=True, group=_ANSWERS),
    Option("node-meta-txt", _text, "node meta as TXT in the additional section of node and "
           "SRV answers (default on; --node-meta-txt=no turns it off)", flag=True,
           reload=True, group=_ANSWERS),
    Option("translate-wan-addrs", _text, "answer instances and nodes of other datacenters "
           "at their wan tagged addresses", flag=True, reload=True, group=_ANSWERS),
    Option("udp-answer-limit", _nonneg_int(65535), "cap on answers to non-EDNS UDP queries "
           "(default 0: no cap)", "N", reload=True, group=_ANSWERS),
    Option("only-passing", _text, "leave out instances whose checks are warning", flag=True,
           reload=True, group=_ANSWERS),
    Option("workers", _workers, "processes sharing the port (default 1)", "N",
           group=_OPERATIONS),
    Option("rate-limit", _rate, "per-client UDP response rate limit (default off)", "QPS",
           reload=True, group=_OPERATIONS),
    Option("query-log", _text, "log one line per query", flag=True, reload=True,
           group=_OPERATIONS),
    Option("state-dir", _path, "where the last good table is saved and loaded at start",
           "DIR", group=_OPERATIONS),
    Option("metrics", _listen, "serve /metrics, /health, /ready, /v1/table and a status "
           "page over HTTP", "ADDR:PORT", group=_OPERATIONS),
    Option("log-level", _level, "debug, info, warning or error (default info)", "LEVEL",
           reload=True, group=_OPERATIONS),
    Option("log-format", _log_format, "text, or json: one object a line with UTC times "
           "(default text)", "FORMAT", group=_OPERATIONS),
)

_BY_KEY = {opt.key: opt for opt in OPTIONS}

RESTART_ONLY: tuple[str, ...] = (
    *(opt.key for opt in OPTIONS if not opt.reload),
    "datacenter_set",  # follows --datacenter
)
"""Config fields a running process keeps until restarted (SIGHUP logs a change)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit
        unknown = message.partition("unrecognized arguments: ")[2].split()
        if unknown and unknown[0].startswith("--"):
            flag = unknown[0].split("=", 1)[0]
            names = [f"--{opt.name}" for opt in OPTIONS] + ["--config", "--version"]
            raise ConfigError(f"{flag}: unknown option{did_you_mean(flag, names)}")
        raise ConfigError(message)


EXAMPLES = """\
examples:
  dnsd --static services.toml                   serve a services file on 127.0.0.1:8600
  dnsd --consul http://127.0.0.1:8500 --listen 127.0.0.1:53 --listen 172.17.0.1:53
  dnsd --zookeeper zk1:2181,zk2:2181/services --upstream 10.0.0.2
  dnsd --docker --listen 172.17.0.1:53 --freebind   this host's containers, no registry
  dnsd check --config /etc/dnsd/dnsd.toml      validate, then exit 0 or 2
  dnsd table --metrics 127.0.0.1:9153           what a running dnsd serves

Every option is also a TOML (or JSON) key in --config (same name, '_' for '-') and
an environment variable DNSD_<NAME>; the config file may also be named by
DNSD_CONFIG. Repeatable options take a list in the file and a comma-separated list
in the environment. Precedence: flag > environment > file > default.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dnsd",
        usage="dnsd [check] [--config FILE] [options]",
        description="DNS server for service lookup: answers <name>.service[.<dc>].<domain> "
                    "from memory, fed by Consul, ZooKeeper, the Docker engine and static files; "
                    "forwards the rest.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,  # --consul-d must not silently mean --consul-datacenters
    )
    parser.add_argument("-V", "--version", action="version", version=f"dnsd {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="configuration file: TOML, or JSON when named *.json")
    groups: dict[str, Any] = {}
    for opt in OPTIONS:
        group = groups.get(opt.group)
        if group is None:
            group = groups[opt.group] = parser.add_argument_group(opt.group.lower())
        help_text = opt.help + ("; repeatable" if opt.repeat else "")
        if opt.flag:  # --query-log, or --query-log=yes/no as the environment allows
            group.add_argument(f"--{opt.name}", nargs="?", const="true", metavar="BOOL",
                               help=help_text)
        elif opt.bare:  # --docker, or --docker URL
            group.add_argument(f"--{opt.name}", nargs="?", const="true",
                               metavar=opt.metavar, help=help_text)
        else:
            group.add_argument(f"--{opt.name}", metavar=opt.metavar, help=help_text,
                               action="append" if opt.repeat else "store")
    return parser


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _bool(text: str, where: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{where}: {text!r} is not true or false")


BARE = ""
"""The value of an option given without one (``--docker``, ``docker = true``);
:func:`load_config` replaces it with what it stands for."""


def _convert(opt: Option, raw: Any, where: str) -> Any:
    """Turn a raw flag/env/TOML value into the option's typed value."""
    try:
        if opt.flag:
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str):
                return _bool(raw, where)
            raise ValueError("must be true or false")
        if opt.bare:
            # A switch and a value at once: true/false (a bare flag is "true")
            # turn it on with its default or off; anything else is the value.
            if isinstance(raw, bool):
                return BARE if raw else None
            if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
                return BARE if _bool(raw, where) else None
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


def _read_file(path: str) -> dict[str, Any]:
    """A configuration file: JSON when it is named ``*.json``, else TOML."""
    kind = "JSON" if path.lower().endswith(".json") else "TOML"
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        data = json.loads(raw) if kind == "JSON" else tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a table of settings")
    for key in data:
        if key not in _BY_KEY:
            raise ConfigError(f"{path}: unknown key {key!r}{did_you_mean(key, _BY_KEY)}")
    return data


# Environment variables that are dnsd's but not options.
_OTHER_ENV = frozenset({"DNSD_CONFIG", "DNSD_PURE_PYTHON"})


def _check_environment(env: Mapping[str, str]) -> None:
    """A misspelt ``DNSD_*`` variable is an error, as an unknown file key is:
    silently ignoring it would run with a setting the user did not ask for."""
    known = {f"DNSD_{key.upper()}" for key in _BY_KEY} | _OTHER_ENV
    for name in env:
        if name.startswith("DNSD_") and name not in known:
            raise ConfigError(f"{name}: unknown setting{did_you_mean(name, known)}")


def _check_effects(values: Mapping[str, Any]) -> None:
    """Options that would do nothing as given are errors, not silence."""
    for key in ("consul_datacenters", "consul_consistent", "consul_max_reply"):
        if values.get(key) and not values.get("consul"):
            raise ConfigError(f"--{key.replace('_', '-')}: has no effect without --consul")
    if values.get("zookeeper_datacenter") and not values.get("zookeeper"):
        raise ConfigError("--zookeeper-datacenter: has no effect without --zookeeper")
    for key in ("docker_published", "docker_network"):
        if values.get(key) and values.get("docker") is None:
            raise ConfigError(f"--{key.replace('_', '-')}: has no effect without --docker")
    domain = values.get("domain", "consul")
    alt = values.get("alt_domain")
    for forwarded, _addr in values.get("upstream_for", ()):
        for zone in (domain, alt):
            if zone and (forwarded == zone or forwarded.endswith("." + zone)):
                raise ConfigError(f"--upstream-for: {forwarded} is inside dnsd's own zone "
                                  f"{zone}, which is never forwarded")
    if values.get("no_forward") and (values.get("upstream") or values.get("upstream_for")):
        raise ConfigError("--no-forward: conflicts with --upstream and --upstream-for")


def docker_default(env: Mapping[str, str]) -> str:
    """The engine a bare ``--docker`` means: ``DOCKER_HOST`` when set, else the
    default socket. ``DOCKER_HOST`` alone never turns the source on: many
    users have it set for their docker client."""
    host = env.get("DOCKER_HOST", "").strip()
    if not host:
        return DOCKER_SOCKET
    try:
        return _docker(host)
    except ValueError as exc:
        raise ConfigError(f"DOCKER_HOST (for --docker): {exc}") from None


def default_node_name() -> str:
    host = socket.gethostname().split(".")[0]
    return host if is_hostname(host) else "localhost"


def load_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Parse argv (without the program name), the environment and the config file."""
    env = os.environ if environ is None else environ
    ns = vars(build_parser().parse_args(list(argv)))
    _check_environment(env)
    config_file = ns.pop("config", None) or env.get("DNSD_CONFIG") or None
    file_values = _read_file(config_file) if config_file else {}

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
    if "listen" in values:  # the same address twice is one listener, not a clash
        values["listen"] = tuple(dict.fromkeys(values["listen"]))
    values.setdefault("allow_recursion",
                      tuple(ipaddress.ip_network(c) for c in DEFAULT_ALLOW_RECURSION))
    values.setdefault("node_name", default_node_name())
    values["datacenter_set"] = "datacenter" in values
    if values.get("docker") == BARE:
        values["docker"] = docker_default(env)
    values["config_file"] = config_file
    if values.get("alt_domain") and values.get("alt_domain") == values.get("domain", "consul"):
        raise ConfigError("--alt-domain: must differ from --domain")
    _check_effects(values)
    return Config(**values)
