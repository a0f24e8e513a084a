"""The servers under test as processes: dnsd (through ``tests/dnsd_process.py``)
and dnsmasq (Debian's ``dnsmasq-base``), plus what /proc says about them.

CPU is read from ``/proc/PID/stat`` (utime + stime) summed over the process and
its descendants, so ``dnsd --workers N`` counts every worker. Imports: the
standard library, dnspython, ``tests.dnsd_process``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.dnsd_process import DnsdProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP right now (the caller binds it soon after)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port on loopback")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found = [pid]
    for current in found:
        found.extend(children.get(current, ()))
    return found


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``pid`` and its descendants."""
    user = system = 0
    for proc in descendants(pid):
        fields = _stat_fields(proc)
        if fields is not None:
            user += int(fields[11])  # utime (stat field 14)
            system += int(fields[12])  # stime (stat field 15)
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its descendants."""
    return sum(cpu_times(pid))


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (VmRSS), in bytes."""
    total = 0
    for proc in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def answers_query(port: int, name: str, rdtype: str = "A", timeout: float = 0.5) -> bool:
    """True when the server on 127.0.0.1:port answers ``name`` NOERROR with records."""
    try:
        reply = dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port,
                              timeout=timeout, ignore_trailing=True)
    except (OSError, dns.exception.DNSException):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def wait_answering(port: int, name: str, timeout: float = 30.0) -> float:
    """Seconds until ``name`` is answered; raises TimeoutError."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if answers_query(port, name):
            return time.monotonic() - started
        time.sleep(0.02)
    raise TimeoutError(f"127.0.0.1:{port} did not answer {name} within {timeout:.0f} s")


class Dnsmasq:
    """dnsmasq in the foreground on 127.0.0.1 (a free port), logging to a file."""

    def __init__(self, workdir: Path, label: str, args: Sequence[str], *,
                 cache_size: int = 10000) -> None:
        exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not Path(exe).exists():
            raise RuntimeError("dnsmasq not found: apt-get install dnsmasq-base")
        self.label = label
        self.log_path = workdir / f"{label}.log"
        self.port = free_port()
        argv = [exe, "-k", "--no-resolv", "--no-hosts", f"--port={self.port}",
                "--listen-address=127.0.0.1", "--bind-interfaces",
                f"--cache-size={cache_size}", f"--log-facility={self.log_path}",
                f"--pid-file={workdir / (label + '.pid')}"]
        if not any(a.startswith("--conf-file") for a in args):
            argv.append("--conf-file=/dev/null")  # never read /etc/dnsmasq.conf
        if os.geteuid() == 0:
            argv.append("--user=root")  # stay the same user: /proc readable, no drop
        self.argv = [*argv, *args]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, probe: str, timeout: float = 30.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"dnsmasq {self.label} exited: {err.strip()}")
            if answers_query(self.port, probe):
                return time.monotonic() - started
            time.sleep(0.02)
        raise TimeoutError(f"dnsmasq {self.label} did not answer {probe}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Dnsd:
    """``python -m dnsd`` on 127.0.0.1 (port 0) with the given arguments."""

    def __init__(self, label: str, args: Sequence[str],
                 env: dict[str, str] | None = None) -> None:
        self.label = label
        self.started = time.monotonic()
        # Started without waiting, so a dnsd that never listens is still stopped.
        # PYTHONPATH: the checkout's dnsd, whatever the current directory.
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        self.proc = DnsdProcess(["--listen", "127.0.0.1:0", *args], wait=False,
                                env={"PYTHONPATH": path, **(env or {})})
        try:
            self.proc.wait_listening(timeout=120.0)
        except BaseException:
            self.proc.stop()
            raise
        self.listening_after = time.monotonic() - self.started

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    @property
    def port(self) -> int:
        return self.proc.port

    def stop(self) -> None:
        self.proc.stop()
