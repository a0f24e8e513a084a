"""Thin UDP and TCP protocol classes that move bytes between sockets and the
handler. They know no DNS rules beyond TCP's two-byte framing (RFC 1035 4.2.2).

Every task a protocol starts is tracked so shutdown can drain and cancel them.
The UDP loop has a compiled half, ``dnsd._fastudp``, used when it was built
and ``DNSD_PURE_PYTHON`` is not set (read once, at import); without it the
same loop runs in Python and behaves the same. Imports: ``handler`` (its
types and key limit) and ``_fastudp`` when present.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import resource
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from dnsd.handler import KEY_LIMIT, Reply, UdpCaches

try:
    from dnsd import _fastudp
except ImportError:  # not built (no compiler where dnsd was installed): the Python loop
    _fastudp = None  # type: ignore[assignment]

log = logging.getLogger("dnsd.server")

PURE_PYTHON_ENV = "DNSD_PURE_PYTHON"
# The compiled UDP loop, or None: not built, or turned off to compare or test.
FASTUDP = None if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0") else _fastudp

HandleFn = Callable[[bytes, str, bool, int], Reply | Awaitable[Reply]]


class Tasks:
    """The set of in-flight tasks of all protocols, for graceful shutdown."""

    def __init__(self) -> None:
        self.active: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.active.add(task)
        task.add_done_callback(self.active.discard)
        return task

    async def drain(self, timeout: float) -> None:
        if self.active:
            _, pending = await asyncio.wait(set(self.active), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


FD_RESERVE = 256  # descriptors kept for everything but TCP clients (upstreams, files)


def connection_cap(wanted: int = 1024, reserve: int = FD_RESERVE) -> int:
    """How many TCP connections this process can hold: ``wanted``, or fewer when
    the open-files limit would not leave ``reserve`` descriptors for the rest
    (forwarding, registries, files), after raising the soft limit to the hard
    one where allowed. Without the reserve, a full set of idle client
    connections makes every forwarded query fail with EMFILE."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = wanted + reserve
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            if new > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
    except (OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - reserve))


def client_key(address: str) -> str:
    """Whose connection this is, for the per-client cap: the address, or for
    IPv6 its /64 (one host can hold a whole /64 of addresses)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
    return str(ip)


class TcpLimits:
    """Bounds that keep one TCP client from holding more than its share: a cap on
    connections in all and per client, an idle timeout, queries in flight per
    connection, and bytes buffered for a client that does not read."""

    def __init__(self, max_connections: int = 1024, idle_timeout: float = 10.0,
                 max_in_flight: int = 32, max_buffered: int = 256 * 1024,
                 per_client: int | None = None) -> None:
        self.max_connections = max_connections
        self.per_client = per_client if per_client is not None else max(8, max_connections // 16)
        self.idle_timeout = idle_timeout
        self.max_in_flight = max_in_flight
        self.max_buffered = max_buffered
        self.open = 0
        self.by_client: dict[str, int] = {}

    def admit(self, client: str) -> bool:
        """Count a new connection from ``client`` in, if the caps allow it."""
        held = self.by_client.get(client, 0)
        if self.open >= self.max_connections or held >= self.per_client:
            return False
        self.open += 1
        self.by_client[client] = held + 1
        return True

    def release(self, client: str) -> None:
        self.open -= 1
        held = self.by_client.get(client, 1) - 1
        if held > 0:
            self.by_client[client] = held
        else:
            self.by_client.pop(client, None)


class TcpProtocol(asyncio.Protocol):
    """One per TCP connection: several pipelined queries, answered as each is
    ready (RFC 7766 6.2.1.1), an idle timeout, and backpressure both ways: it
    stops reading while too many queries are in flight or the client is not
    reading its replies."""

    def __init__(self, handle: HandleFn, tasks: Tasks, limits: TcpLimits) -> None:
        self.handle = handle
        self.tasks = tasks
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.port = 0
        self.buffer = bytearray()
        self.in_flight = 0
        self.reading_paused = False
        self.writing_paused = False
        self.idle: asyncio.TimerHandle | None = None
        self.counted = ""  # the client key this connection is counted under
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        self.port = peer[1] if peer else 0
        key = client_key(self.client)
        if not self.limits.admit(key):
            log.debug("tcp connection cap reached (%d open, %d from %s); closing a new "
                      "connection", self.limits.open, self.limits.by_client.get(key, 0), key)
            transport.abort()  # type: ignore[attr-defined]
            return
        self.counted = key
        transport.set_write_buffer_limits(high=self.limits.max_buffered)  # type: ignore[attr-defined]
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.limits.release(self.counted)
            self.counted = ""
        if self.idle is not None:
            self.idle.cancel()
        self.transport = None

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.limits.idle_timeout, self._idle_out)

    def _idle_out(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.in_flight:
            self._arm_idle()
        elif self.writing_paused or transport.get_write_buffer_size():
            # The client is not reading its replies: close() would wait for it
            # to, holding the connection and its buffers for as long as it likes.
            transport.abort()
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 65537 + self.limits.max_buffered:
            self.transport.abort()  # type: ignore[union-attr]
            return
        self._process()

    def _process(self) -> None:
        buf = self.buffer
        while len(buf) >= 2 and self.transport is not None and not self.reading_paused:
            (size,) = struct.unpack_from("!H", buf)
            if len(buf) < 2 + size:
                break
            message = bytes(buf[2:2 + size])
            del buf[:2 + size]
            # Only a whole query counts as activity: a client trickling bytes
            # (slowloris) is closed after the idle timeout like a silent one.
            self._arm_idle()
            reply = self.handle(message, self.client, True, self.port)
            if reply is None:
                continue
            if isinstance(reply, bytes):
                self._write(reply)
            else:
                self.in_flight += 1
                self.tasks.spawn(self._write_later(reply))
                self._update_reading()

    async def _write_later(self, pending: Awaitable[Reply]) -> None:
        try:
            reply = await pending
            if reply is not None:
                self._write(reply)
        finally:
            self.in_flight -= 1
            if self.eof and self.in_flight == 0 and self.transport is not None:
                self.transport.close()
            self._update_reading()
            if self.buffer and not self.reading_paused:
                self._process()

    def _write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack("!H", len(reply)) + reply)

    def _update_reading(self) -> None:
        if self.transport is None:
            return
        should_pause = self.in_flight >= self.limits.max_in_flight or self.writing_paused
        if should_pause and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()
        elif not should_pause and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        # The client is not reading its replies: stop reading its queries.
        self.writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._update_reading()
        if self.buffer and not self.reading_paused:
            self._process()

    def eof_received(self) -> bool | None:
        # Half-close: finish what is in flight, then close (RFC 7766 6.2.3).
        if self.in_flight == 0 and self.transport is not None:
            self.transport.close()
            return None
        self.eof = True
        return True


# Linux values; Python's socket module lacks IP_PKTINFO.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_CMSG_SPACE = socket.CMSG_SPACE(20)
_READS_PER_WAKEUP = 64
_BATCH = 32  # datagrams per recvmmsg/sendmmsg in the compiled loop
_MAX_QUERY = 4096  # larger UDP queries are not DNS; they arrive cut and get FORMERR


class UdpSocket:
    """One UDP listen socket, read directly with ``loop.add_reader``.

    Hand-written rather than asyncio's datagram transport on purpose: the
    benchmark against dnsmasq showed 10-15% less CPU per answer this way (no
    transport object, protocol callback and send buffering per packet). A reply
    that cannot be sent at once is dropped, as a UDP server must; the client
    retries. On a wildcard address (0.0.0.0 or ::) each reply leaves from the
    address its query came to, via IP_PKTINFO / IPV6_PKTINFO (RFC 1122
    4.1.3.5; stub resolvers drop replies from an unexpected source).

    With the compiled loop (``compiled``: default when it is built), datagrams
    are read and replies sent in batches (recvmmsg/sendmmsg), pktinfo
    included, and a query found in the young generation of the handler's UDP
    reply caches (``caches``: the handler's
    :meth:`~dnsd.handler.Handler.udp_caches`) is answered in C with the same
    hit counting, rotation and timing as the handler's hot path; every other
    datagram goes to ``handle`` as in the Python loop.
    """

    def __init__(self, sock: socket.socket, handle: HandleFn, tasks: Tasks,
                 *, pktinfo: bool = False, caches: Callable[[], UdpCaches | None] | None = None,
                 compiled: bool | None = None) -> None:
        self.sock = sock
        self.handle = handle
        self.tasks = tasks
        self.caches = caches
        self.v6 = sock.family == socket.AF_INET6
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self.reading_stopped = False
        if compiled and FASTUDP is None:
            raise RuntimeError("the compiled UDP loop (dnsd._fastudp) is not available")
        self.reader = None
        if pktinfo:
            if self.v6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        if FASTUDP is not None and compiled is not False:
            self.reader = FASTUDP.Reader(sock.fileno(), _BATCH, _MAX_QUERY, pktinfo, self.v6)
            self.fallback = self._handle_one
            self.loop.add_reader(sock.fileno(), self._readable_batched)
        elif pktinfo:
            self.loop.add_reader(sock.fileno(), self._readable_pktinfo)
        else:
            self.loop.add_reader(sock.fileno(), self._readable)

    @property
    def compiled(self) -> bool:
        """Whether the compiled loop reads this socket."""
        return self.reader is not None

    def stop_reading(self) -> None:
        """Take no more queries; replies still in flight can be sent."""
        if not self.reading_stopped:
            self.reading_stopped = True
            self.loop.remove_reader(self.sock.fileno())

    def close(self) -> None:
        if not self.closed:
            self.stop_reading()
            self.closed = True
            if self.reader is not None:
                self.reader.close()
            self.sock.close()

    def _readable_batched(self) -> None:
        reader = self.reader
        assert reader is not None
        caches = self.caches() if self.caches is not None else None
        try:
            if caches is None:
                reader.serve(_READS_PER_WAKEUP, None, None, None, KEY_LIMIT, self.fallback,
                             None, ())
            else:
                reader.serve(_READS_PER_WAKEUP, caches.replies, caches.forwarded,
                             caches.allowed, KEY_LIMIT, self.fallback, caches.stats,
                             caches.buckets)
        except OSError as exc:
            log.debug("udp error: %s", exc)
        except Exception:  # a last guard, as in the Python loop
            log.exception("unexpected error in the UDP loop")
        if reader.send_errors:
            count, code = reader.take_errors()
            log.debug("udp send failed for %d replies: %s", count, os.strerror(code))

    def _handle_one(self, data: bytes, addr: Any,
                    cmsg: list[tuple[int, int, bytes]] | None = None) -> bytes | None:
        """One datagram the compiled loop did not answer itself: the handler's
        reply to send now, or None (dropped, or sent when it is ready). On a
        wildcard address ``cmsg`` is what :meth:`_reply_cmsg` makes of the
        datagram's pktinfo, for a reply the handler sends later (the compiled
        loop sends the others with it)."""
        try:
            reply = self.handle(data, addr[0], False, addr[1])
        except Exception:  # the handler answers SERVFAIL itself; this is a last guard
            log.exception("unexpected error handling a packet from %s", addr[0])
            return None
        if reply is None or isinstance(reply, bytes):
            return reply
        self.tasks.spawn(self._send_later(reply, addr, cmsg))
        return None

    def _readable(self) -> None:
        recvfrom, sendto, handle = self.sock.recvfrom, self.sock.sendto, self.handle
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, addr = recvfrom(_MAX_QUERY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("udp error: %s", exc)
                continue
            try:
                reply = handle(data, addr[0], False, addr[1])
            except Exception:  # the handler answers SERVFAIL itself; this is a last guard
                log.exception("unexpected error handling a packet from %s", addr[0])
                continue
            if reply is None:
                continue
            if isinstance(reply, bytes):
                try:
                    sendto(reply, addr)
                except (BlockingIOError, InterruptedError):
                    pass  # the socket buffer is full: drop, as a UDP server must
                except OSError as exc:
                    log.debug("udp send to %s failed: %s", addr[0], exc)
            else:
                self.tasks.spawn(self._send_later(reply, addr, None))

    def _readable_pktinfo(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(_MAX_QUERY, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("udp error: %s", exc)
                continue
            cmsg = self._reply_cmsg(ancdata)
            reply = self.handle(data, addr[0], False, addr[1])
            if reply is None:
                continue
            if isinstance(reply, bytes):
                self._send(reply, addr, cmsg)
            else:
                self.tasks.spawn(self._send_later(reply, addr, cmsg))

    def _reply_cmsg(self, ancdata: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
        for level, kind, data in ancdata:
            if not self.v6 and level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                # struct in_pktinfo {ifindex; spec_dst; addr}: reply from addr
                return [(level, kind, b"\x00\x00\x00\x00" + data[8:12] + b"\x00" * 4)]
            if self.v6 and level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
                # struct in6_pktinfo {addr; ifindex}: keep both (link-local scope)
                return [(level, kind, data[:20])]
        return []

    def _send(self, reply: bytes, addr: Any, cmsg: list[tuple[int, int, bytes]] | None) -> None:
        if self.closed:
            return
        try:
            if cmsg:
                self.sock.sendmsg([reply], cmsg, 0, addr)
            else:
                self.sock.sendto(reply, addr)
        except (BlockingIOError, InterruptedError):
            pass  # the socket buffer is full: drop, as a UDP server must
        except OSError as exc:
            log.debug("udp send to %s failed: %s", addr[0], exc)

    async def _send_later(self, pending: Awaitable[Reply], addr: Any,
                          cmsg: list[tuple[int, int, bytes]] | None) -> None:
        reply = await pending
        if reply is not None:
            self._send(reply, addr, cmsg)
