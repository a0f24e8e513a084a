"""``python -m dnsd.healthcheck [--pid PID]``: is the running dnsd serving?

The image's HEALTHCHECK. It reads the running dnsd's command line and
environment from ``/proc/PID`` (PID 1 by default: the image's entrypoint, also
found after ``docker run --init``'s ``docker-init --``) and loads its
configuration exactly as dnsd did (:func:`dnsd.config.load_config`), so the
check follows ``--metrics``, ``DNSD_METRICS`` or a config file wherever they
put it. Then it asks that dnsd:

- with a metrics address: ``GET /ready`` (200 once every source has served a
  view, live or restored; 503 with the reason before that);
- without one: the SOA of its zone, over UDP, on its first listen address.

Exit status 0 when healthy, 1 when not (Docker's contract), with one line on
stdout saying what was asked and what came back; Docker keeps it in the
container's health log. Imports: ``config``, ``errors``, ``hostport``,
``records``, ``wire``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from dnsd.config import Config, load_config
from dnsd.errors import DnsdError
from dnsd.hostport import HostPort
from dnsd.records import T_SOA
from dnsd.wire import CLASS_IN

TIMEOUT = 2.0       # Docker's default HEALTHCHECK timeout is 30 s; the image's is 3 s
NAMES = ("Ok", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")


def dnsd_args(cmdline: Sequence[str]) -> list[str] | None:
    """The arguments dnsd was given, from a process's command line, or None when
    the process is not dnsd. Knows ``dnsd ARGS``, ``python /path/bin/dnsd ARGS``,
    ``python -m dnsd ARGS`` and an init in front (``docker-init -- dnsd ARGS``)."""
    for i, word in enumerate(cmdline):
        if word == "--":
            continue
        if word.startswith("--"):
            return None              # an option before any program named dnsd
        if os.path.basename(word) == "dnsd":
            return list(cmdline[i + 1:])
        if word == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] == "dnsd":
            return list(cmdline[i + 2:])
    return None


def read_process(pid: int, proc: Path = Path("/proc")) -> tuple[list[str], dict[str, str]]:
    """A process's command line and environment (readable for its own user)."""
    base = proc / str(pid)
    cmdline = (base / "cmdline").read_bytes().split(b"\0")
    environ = (base / "environ").read_bytes().split(b"\0")
    argv = [word.decode(errors="surrogateescape") for word in cmdline if word]
    env = {}
    for item in environ:
        key, sep, value = item.decode(errors="surrogateescape").partition("=")
        if sep:
            env[key] = value
    return argv, env


def reachable(host: str) -> str:
    """Where to reach a listener bound to ``host`` from the same namespace."""
    if host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def check_ready(metrics: HostPort, timeout: float = TIMEOUT) -> tuple[bool, str]:
    host, port = metrics
    host = reachable(host)
    url = f"http://[{host}]:{port}/ready" if ":" in host else f"http://{host}:{port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(512).decode(errors="replace")
            return True, f"GET {url}: {response.status} {first_line(body)}"
    except urllib.error.HTTPError as exc:
        body = exc.read(512).decode(errors="replace")
        return False, f"GET {url}: {exc.code} {first_line(body)}"
    except OSError as exc:
        return False, f"GET {url}: {getattr(exc, 'reason', exc)}"


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def soa_query(domain: str, ident: int) -> bytes:
    labels = b"".join(bytes([len(label)]) + label.encode("ascii")
                      for label in domain.strip(".").split(".") if label)
    return struct.pack("!HHHHHH", ident, 0, 1, 0, 0, 0) + labels + b"\0" + \
        struct.pack("!HH", T_SOA, CLASS_IN)


def check_dns(listen: HostPort, domain: str, timeout: float = TIMEOUT) -> tuple[bool, str]:
    host, port = listen
    host = reachable(host)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    ident = secrets.randbelow(0x10000)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            sock.send(soa_query(domain, ident))
            while True:
                reply = sock.recv(4096)
                if len(reply) >= 12 and struct.unpack_from("!H", reply)[0] == ident:
                    break
        except OSError as exc:
            return False, f"SOA {domain}. at {shown}: {exc.strerror or exc}"
    flags, _, answers = struct.unpack_from("!HHH", reply, 2)
    rcode = flags & 0xF
    name = NAMES[rcode] if rcode < len(NAMES) else str(rcode)
    healthy = bool(flags & 0x8000) and rcode == 0 and answers > 0
    return healthy, f"SOA {domain}. at {shown}: {name}, {answers} answer(s)"


def check(config: Config, timeout: float = TIMEOUT) -> tuple[bool, str]:
    """Healthy or not, and what was asked: /ready when metrics are served, else DNS."""
    if config.metrics is not None:
        return check_ready(config.metrics, timeout)
    return check_dns(config.listen[0], config.domain, timeout)


def main(argv: Sequence[str] | None = None, proc: Path = Path("/proc"),
         environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnsd.healthcheck",
                                     description="Check the running dnsd: /ready on its "
                                     "metrics address, else its zone's SOA.")
    parser.add_argument("--pid", type=int, default=1,
                        help="the dnsd process whose configuration to use (default: 1)")
    args = parser.parse_args(argv)
    try:
        cmdline, env = read_process(args.pid, proc)
    except OSError as exc:
        print(f"unhealthy: cannot read process {args.pid}: {exc.strerror or exc}")
        return 1
    dnsd = dnsd_args(cmdline)
    if dnsd is None:
        print(f"unhealthy: process {args.pid} is not dnsd: {' '.join(cmdline)[:200]}")
        return 1
    try:
        config = load_config(dnsd, env if environ is None else environ)
    except DnsdError as exc:
        print(f"unhealthy: dnsd's configuration: {exc}")
        return 1
    healthy, said = check(config)
    print(("healthy: " if healthy else "unhealthy: ") + said)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
