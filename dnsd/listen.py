"""Listening: a UDP and a TCP socket on the same address and port, wrapped in
the server's protocol classes.

Port 0 picks one port free for both protocols (the UDP socket chooses, TCP must
get the same one; it is retried when TCP finds it taken). ``pick_ports`` does
that once for ``--workers``, whose processes then all bind the chosen ports
with SO_REUSEPORT. Imports: ``errors``, ``handler`` (a type), ``hostport``, ``server``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dnsd.errors import DnsdError
from dnsd.handler import UdpCaches
from dnsd.hostport import HostPort, format_hostport
from dnsd.server import HandleFn, Tasks, TcpLimits, TcpProtocol, UdpSocket

PORT_ATTEMPTS = 20  # port 0: how many UDP-chosen ports to try before giving up
TCP_BACKLOG = 1024
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux <linux/in.h>


class ListenError(DnsdError):
    """An address dnsd was told to listen on cannot be bound."""


def bind_error(option: str, host: str, port: int, exc: OSError) -> ListenError:
    """One line naming the option, the address and why, with the usual remedy."""
    why = exc.strerror or str(exc)
    hint = ""
    if exc.errno == errno.EACCES and 0 < port < 1024:
        hint = ("; ports below 1024 need root or the CAP_NET_BIND_SERVICE capability "
                "(systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)")
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "; no interface of this host has that address"
    return ListenError(f"{option} {format_hostport(host, port)}: cannot listen: {why}{hint}")


@dataclass
class Listener:
    """One listen address: its UDP socket and TCP server."""

    host: str
    port: int
    udp: UdpSocket
    tcp: asyncio.AbstractServer

    def stop(self) -> None:
        """Take no new queries or connections; replies in flight may still go out."""
        self.udp.stop_reading()
        self.tcp.close()

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def _socket(family: int, kind: int, reuse_port: bool, freebind: bool = False
            ) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if freebind:
            # Bind an address the host does not have yet (a bridge that appears
            # later); the socket receives as soon as it does. Works for IPv6 too.
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # [::]:53 serves IPv6 only, so 0.0.0.0:53 can be listed beside it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_pair(host: str, port: int, *, reuse_port: bool = False, freebind: bool = False
              ) -> tuple[socket.socket, socket.socket]:
    """A bound UDP socket and a bound TCP socket (not yet listening) on one port.

    Raises :class:`ListenError` naming ``--listen``, the address and why."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    attempts = PORT_ATTEMPTS if port == 0 else 1
    for attempt in range(attempts):
        udp = _socket(family, socket.SOCK_DGRAM, reuse_port, freebind)
        try:
            udp.bind((host, port))
        except OSError as exc:
            udp.close()
            raise bind_error("--listen", host, port, exc) from None
        bound = udp.getsockname()[1]
        tcp = _socket(family, socket.SOCK_STREAM, reuse_port, freebind)
        try:
            tcp.bind((host, bound))
        except OSError as exc:
            tcp.close()
            udp.close()
            if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                continue
            raise bind_error("--listen", host, bound, exc) from None
        return udp, tcp
    raise AssertionError("unreachable")


def pick_ports(listen: Sequence[HostPort], freebind: bool = False) -> tuple[HostPort, ...]:
    """``listen`` with each port 0 replaced by a port free for UDP and TCP."""
    picked = []
    for host, port in listen:
        if port == 0:
            udp, tcp = bind_pair(host, 0, freebind=freebind)
            port = udp.getsockname()[1]
            udp.close()
            tcp.close()
        picked.append((host, port))
    return tuple(picked)


async def listen(host: str, port: int, handle: HandleFn, tasks: Tasks, limits: TcpLimits,
                 *, reuse_port: bool = False,
                 bound: tuple[socket.socket, socket.socket] | None = None,
                 caches: Callable[[], UdpCaches | None] | None = None) -> Listener:
    """Serve DNS on ``host:port`` over UDP and TCP (port 0: one free port for both);
    ``bound``: the pair :func:`bind_pair` already bound for it; ``caches``: the
    handler's reply caches the compiled UDP loop may answer from itself."""
    udp_sock, tcp_sock = bound or bind_pair(host, port, reuse_port=reuse_port)
    try:
        tcp_sock.listen(TCP_BACKLOG)
        udp = UdpSocket(udp_sock, handle, tasks,
                        pktinfo=ipaddress.ip_address(host).is_unspecified, caches=caches)
    except BaseException:
        udp_sock.close()
        tcp_sock.close()
        raise
    try:
        tcp = await asyncio.get_running_loop().create_server(
            lambda: TcpProtocol(handle, tasks, limits), sock=tcp_sock)
    except BaseException:
        udp.close()
        tcp_sock.close()
        raise
    return Listener(host, udp_sock.getsockname()[1], udp, tcp)
