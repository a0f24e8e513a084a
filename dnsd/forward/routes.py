"""Where a name goes, apart from health and try order: the most specific
``--upstream-for`` domain containing it, else the default upstreams, which are
``--upstream`` or, without it, resolv.conf's nameservers minus dnsd's own listen
addresses. An upstream equal to a listen address is refused at start.

Generic in the upstream type: routes hold whatever the owner makes of an
address (one object per address, shared by every route naming it).
Imports: ``errors``, ``hostport``, ``wire``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from dnsd.errors import ConfigError
from dnsd.hostport import HostPort, format_hostport
from dnsd.wire import encode_name, name_suffixes

log = logging.getLogger("dnsd.forward")

U = TypeVar("U")


def default_upstreams(resolv_conf: str, own: Sequence[HostPort]) -> tuple[HostPort, ...]:
    """The ``nameserver`` lines of resolv.conf text (port 53), minus dnsd's own
    listen addresses: forwarding to ourselves would loop. Bad lines are skipped."""
    found: list[HostPort] = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            ip = ipaddress.ip_address(words[1].split("%")[0])
        except ValueError:
            continue
        addr = (words[1] if "%" in words[1] else str(ip), 53)
        if not is_own(addr, own) and addr not in found:
            found.append(addr)
    return tuple(found)


# Docker's embedded resolver. Inside a container on a user-defined network,
# resolv.conf names it, and the engine redirects 127.0.0.11:53 in the
# container's own namespace (iptables DNAT) to its resolver: a wildcard listener
# there never receives what is sent to it, so it is a real upstream.
DOCKER_RESOLVER = ipaddress.ip_address("127.0.0.11")


def is_own(addr: HostPort, own: Iterable[HostPort]) -> bool:
    """True when ``addr`` reaches one of dnsd's listen addresses. A wildcard
    listener (0.0.0.0 or ::) is reached through any loopback address too, except
    Docker's resolver 127.0.0.11, which is ours only when listened on by name."""
    try:
        ip = ipaddress.ip_address(addr[0].split("%")[0])
    except ValueError:
        return False
    for host, port in own:
        if port != addr[1]:
            continue
        try:
            mine = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            continue
        if mine == ip:
            return True
        if mine.is_unspecified and (ip.is_unspecified
                                    or (ip.is_loopback and ip != DOCKER_RESOLVER)):
            return True
    return False


def wire_key(domain: str) -> bytes:
    """A domain as the lower-cased wire name that routes and zones are keyed by."""
    return encode_name(domain.lower())


class Routes(Generic[U]):
    """Which upstreams a name goes to: the most specific ``--upstream-for``
    domain containing it, else the default upstreams."""

    def __init__(self, default: Sequence[U], per_domain: dict[bytes, tuple[U, ...]]) -> None:
        self.default = tuple(default)
        self.per_domain = per_domain

    def lookup(self, key: bytes) -> tuple[U, ...]:
        if self.per_domain:
            for suffix in name_suffixes(key):
                found = self.per_domain.get(suffix)
                if found is not None:
                    return found
        return self.default

    @property
    def empty(self) -> bool:
        return not (self.default or self.per_domain)


def build_routes(upstreams: Sequence[HostPort] | None,
                 upstream_for: Sequence[tuple[str, HostPort]], own: Sequence[HostPort],
                 resolv_conf: str, make: Callable[[HostPort], U]) -> Routes[U]:
    """The routes for these settings; ``make`` turns an address into the
    owner's upstream object. ``upstreams`` None: resolv.conf's nameservers
    (``resolv_conf`` is its path). Raises :class:`ConfigError` when a configured
    upstream is one of dnsd's own listen addresses ``own``."""
    for addr in [*(upstreams or ()), *(addr for _, addr in upstream_for)]:
        if is_own(addr, own):
            raise ConfigError(f"upstream {format_hostport(*addr)} is dnsd's own listen "
                              "address: forwarding to it would loop")
    defaults = upstreams
    if defaults is None:
        defaults = default_upstreams(read_text(resolv_conf), own)
        if not defaults:
            log.warning("no upstream in %s: names outside the zone get REFUSED", resolv_conf)
    per_domain: dict[bytes, list[U]] = {}
    for domain, addr in upstream_for:
        per_domain.setdefault(wire_key(domain), []).append(make(addr))
    return Routes([make(a) for a in defaults], {k: tuple(v) for k, v in per_domain.items()})


def read_text(path: str) -> str:
    """A file's text, or "" (logged) when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc.strerror or exc)
        return ""
