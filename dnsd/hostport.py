"""Addresses with ports: ``HostPort``, reading ``ADDR:PORT`` / ``[V6]:PORT`` text
and writing it back, so that an IPv6 address is shown in brackets everywhere
(logs, errors, metrics labels) by one function. Imports: the stdlib only.
"""

from __future__ import annotations

import ipaddress

HostPort = tuple[str, int]


def format_hostport(host: str, port: int) -> str:
    """``host:port``, or ``[host]:port`` for an IPv6 address (RFC 3986 3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 0 to 65535")
    return int(text)


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def parse_listen(text: str) -> HostPort:
    """A listen address: ``ADDR:PORT``, ``[V6]:PORT``, ``localhost:PORT``,
    ``:PORT`` (every IPv4 address, as Go and CoreDNS read it) or a bare ``PORT``
    (loopback only: the safe reading of a number alone)."""
    text = text.strip()
    if text.isdigit():
        return "127.0.0.1", _port(text)
    if text.startswith(":") and text[1:].isdigit():
        return "0.0.0.0", _port(text[1:])
    host, sep, port = text.rpartition(":")
    if sep and host.lower() == "localhost":
        return "127.0.0.1", _port(port)
    return parse_hostport(text)


def parse_hostport(text: str, default_port: int | None = None) -> HostPort:
    """``ADDR:PORT``, ``[V6]:PORT``; with ``default_port``, also ``ADDR`` and bare ``V6``.

    Raises ValueError with the reason (the caller names the option)."""
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
