"""Real upstream resolvers on loopback for the forwarding tests.

- :class:`ScriptedUpstream`: a tiny DNS server (UDP and TCP on one 127.0.0.1
  port, run by a thread) answering from zone-text records, that can be told to
  time out, answer SERVFAIL or REFUSED, truncate over UDP (full answer over TCP),
  answer with a wrong ID or a wrong question, or reject EDNS with FORMERR, and
  can add records of other names to every answer (``poison``), as a hostile or
  broken upstream would. It records every query it receives.
- :class:`Dnsmasq`: Debian's dnsmasq on a free loopback port, serving a few test
  records and nothing else (``--no-resolv --no-hosts``).
- :class:`BlackHole`: a bound UDP/TCP port that never answers (a dead upstream
  that times out, unlike a closed port that answers with ICMP unreachable).
"""

from __future__ import annotations

import contextlib
import selectors
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from dnslib import QTYPE, RCODE, RR, DNSRecord

SOA = "test. {ttl} IN SOA ns.test. hostmaster.test. 1 3600 600 86400 {minimum}"

MODES = ("answer", "timeout", "servfail", "refused", "truncate", "wrong_id",
         "wrong_id_then_right", "wrong_question", "formerr_edns")


@dataclass
class Received:
    transport: str      # "udp" or "tcp"
    qname: str
    qtype: str
    ident: int
    source_port: int
    edns: bool


def _bind_pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """A UDP socket and a listening TCP socket on the same free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, port))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(64)
        return udp, tcp
    raise RuntimeError("no free port for a UDP and TCP pair")


def free_port(host: str = "127.0.0.1") -> int:
    udp, tcp = _bind_pair(host)
    port: int = udp.getsockname()[1]
    udp.close()
    tcp.close()
    return port


class ScriptedUpstream:
    """A scriptable DNS server on ``host`` (127.0.0.1 or ::1; UDP and TCP, same port).

    ``records`` are zone-file lines (``"a.test. 300 IN A 10.0.0.1"``). A name with
    no records gets NXDOMAIN, a name lacking the asked type NODATA; both carry
    the SOA :data:`SOA` (``soa_ttl``, ``soa_minimum``) in authority unless
    ``negative_soa`` is False. ``poison`` lines are appended to the answer
    section of every positive answer, whatever the question. ``tcp_queries``:
    answer that many queries on a TCP connection, then close it (0: no limit;
    idle connections close after 5 s either way). ``mode`` (one of
    :data:`MODES`) and ``records`` may be changed while it runs.
    """

    def __init__(self, records: Iterable[str] = (), *, mode: str = "answer",
                 soa_ttl: int = 300, soa_minimum: int = 60, negative_soa: bool = True,
                 delay: float = 0.0, host: str = "127.0.0.1",
                 poison: Iterable[str] = (), tcp_queries: int = 0) -> None:
        self.mode = mode
        self.tcp_queries = tcp_queries  # >0: close a TCP connection after that many
        self.poison = [record for line in poison for record in RR.fromZone(line)]
        self.soa_ttl = soa_ttl
        self.soa_minimum = soa_minimum
        self.negative_soa = negative_soa
        self.delay = delay
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self.set_records(records)
        self.udp, self.tcp = _bind_pair(host)
        self.host = host
        self.port: int = self.udp.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def spec(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def set_records(self, records: Iterable[str]) -> None:
        parsed: list[RR] = []
        for line in records:
            parsed.extend(RR.fromZone(line))
        with self._lock:
            self._records = parsed

    def count(self, transport: str | None = None, qname: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.received
                       if (transport is None or r.transport == transport)
                       and (qname is None or r.qname == qname.lower().rstrip(".") + "."))

    # --- serving ------------------------------------------------------------

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ, "udp")
        sel.register(self.tcp, selectors.EVENT_READ, "accept")
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                try:
                    if key.data == "udp":
                        data, addr = self.udp.recvfrom(65535)
                        for reply in self._replies(data, "udp", addr[1]):
                            self.udp.sendto(reply, addr)
                    elif key.data == "accept":
                        conn, _ = self.tcp.accept()
                        threading.Thread(target=self._serve_tcp, args=(conn,),
                                         daemon=True).start()
                except OSError:
                    continue
        sel.close()

    def _serve_tcp(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn:
            answered = 0
            try:
                while not self._stop.is_set() and not (
                        self.tcp_queries and answered >= self.tcp_queries):
                    head = conn.recv(2, socket.MSG_WAITALL)
                    if len(head) < 2:
                        return
                    (length,) = struct.unpack("!H", head)
                    data = conn.recv(length, socket.MSG_WAITALL)
                    for reply in self._replies(data, "tcp", conn.getpeername()[1]):
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                    answered += 1
            except OSError:
                return

    def _replies(self, data: bytes, transport: str, source_port: int) -> list[bytes]:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return []
        q = request.q
        with self._lock:
            self.received.append(Received(transport, str(q.qname).lower(),
                                          QTYPE.get(q.qtype), request.header.id, source_port,
                                          any(rr.rtype == 41 for rr in request.ar)))
            records = list(self._records)
        mode = self.mode
        if self.delay:
            time.sleep(self.delay)
        if mode == "timeout":
            return []
        reply = request.reply()
        reply.ar = []  # never echo the query's OPT back
        if mode in ("servfail", "refused"):
            reply.header.rcode = RCODE.SERVFAIL if mode == "servfail" else RCODE.REFUSED
            return [reply.pack()]
        if mode == "formerr_edns" and any(rr.rtype == 41 for rr in request.ar):
            reply.header.rcode = RCODE.FORMERR
            return [reply.pack()]
        if mode == "truncate" and transport == "udp":
            reply.header.tc = 1
            return [reply.pack()]
        name = q.qname
        same_name = [rr for rr in records if rr.rname == name]
        matching = [rr for rr in same_name if rr.rtype == q.qtype or q.qtype == QTYPE.ANY]
        if matching:
            for rr in matching:
                reply.add_answer(rr)
            for rr in self.poison:
                reply.add_answer(rr)
        else:
            if not same_name:
                reply.header.rcode = RCODE.NXDOMAIN
            if self.negative_soa:
                reply.add_auth(*RR.fromZone(SOA.format(ttl=self.soa_ttl,
                                                       minimum=self.soa_minimum)))
        full: bytes = reply.pack()
        if mode == "wrong_id":
            return [_with_id(full, request.header.id ^ 0x5A5A)]
        if mode == "wrong_question":
            other = request.reply()
            other.q.qname = "wrong.question.test."
            other.add_answer(*RR.fromZone("wrong.question.test. 60 IN A 192.0.2.66"))
            return [other.pack()]
        if mode == "wrong_id_then_right":
            decoy = request.reply()
            decoy.add_answer(*RR.fromZone(f"{name} 60 IN A 192.0.2.99"))
            return [_with_id(decoy.pack(), request.header.id ^ 0x1111), full]
        return [full]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.udp.close()
        self.tcp.close()

    def __enter__(self) -> ScriptedUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_id(wire: bytes, ident: int) -> bytes:
    return struct.pack("!H", ident) + wire[2:]


class BlackHole:
    """A UDP and TCP port that accepts and never answers: a dead upstream that
    costs a full timeout (a closed port would be refused at once)."""

    def __init__(self) -> None:
        self.udp, self.tcp = _bind_pair()
        self.port: int = self.udp.getsockname()[1]
        self.addr = ("127.0.0.1", self.port)
        self.spec = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Dnsmasq:
    """Debian's dnsmasq on 127.0.0.1 and a free port, serving only ``args``'
    records (``--host-record``, ``--address``, ``--txt-record``...) with TTL
    ``local_ttl``."""

    def __init__(self, args: Sequence[str], local_ttl: int = 60, timeout: float = 10.0
                 ) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self.host = "127.0.0.1"
        last = ""
        for _ in range(5):
            self._output: str | None = None
            self.port = free_port()
            self.proc = subprocess.Popen(
                [binary, "--no-resolv", "--no-hosts", "-d", "-k", "--port", str(self.port),
                 "--listen-address", self.host, "--bind-interfaces", "--conf-file=/dev/null",
                 "--pid-file=", f"--local-ttl={local_ttl}", "--log-facility=-", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True)
            if self._wait_ready(timeout):
                return
            last = self._stop_and_output()
        raise RuntimeError(f"dnsmasq did not start:\n{last}")

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def spec(self) -> str:
        return f"{self.host}:{self.port}"

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        probe = dns.message.make_query("ready.invalid.", dns.rdatatype.A)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError, dns.exception.Timeout):
                dns.query.udp(probe, self.host, port=self.port, timeout=0.2)
                return True
            time.sleep(0.05)
        return False

    def _stop_and_output(self) -> str:
        if self._output is not None:
            return self._output
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self._output = out or ""
        return self._output

    def output(self) -> str:
        """Stop dnsmasq and return everything it logged (``--log-queries`` lines)."""
        return self._stop_and_output()

    def close(self) -> None:
        self._stop_and_output()

    def __enter__(self) -> Dnsmasq:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
