"""User-space instructions per answer, which do not depend on the machine's load:
``python -m tests.perf.instructions`` (needs Debian's ``valgrind``).

dnsd runs under ``valgrind --tool=callgrind``, once with the compiled UDP loop
and once with the Python one (``DNSD_PURE_PYTHON=1``), serving the benchmark's
registry (``--services`` x ``--instances``). After a warm-up pass that fills the
reply caches, the counters are zeroed (``callgrind_control -z``), ``--answers``
A queries are asked in bursts of ``--burst`` (several datagrams per wakeup, as
under load), and the counters are dumped: the instructions the whole process
executed (event loop, interpreter, dnsd) divided by the answers. The kernel's
part (the socket calls themselves) is not counted. Imports: the standard
library, dnspython, ``tests.perf``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import dns.message

from tests.perf.servers import REPO, answers_query, free_port
from tests.perf.workload import Registry

LOOPS = {"compiled": "0", "python": "1"}  # DNSD_PURE_PYTHON


def ask(port: int, wires: list[bytes], count: int, burst: int) -> int:
    """Ask ``count`` queries, ``burst`` at a time; return the answers received."""
    got = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(30)
        sent = 0
        while sent < count:
            n = min(burst, count - sent)
            for i in range(n):
                sock.sendto(wires[(sent + i) % len(wires)], ("127.0.0.1", port))
            for _ in range(n):
                sock.recv(4096)
                got += 1
            sent += n
    return got


def total_instructions(dump: Path) -> int:
    """The event total of a callgrind dump: its ``summary:`` line (what
    callgrind_annotate calls PROGRAM TOTALS), else its ``totals:`` line."""
    text = dump.read_text(errors="replace")
    for field in ("summary", "totals"):
        match = re.search(rf"^{field}:\s+(\d+)", text, re.MULTILINE)
        if match is not None:
            return int(match.group(1))
    raise RuntimeError(f"no totals in {dump}")


def measure(loop: str, services: Path, probe: str, wires: list[bytes], answers: int,
            burst: int, work: Path) -> float:
    port = free_port()
    out = work / f"callgrind.{loop}"
    env = {**os.environ, "DNSD_PURE_PYTHON": LOOPS[loop],
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable,
         "-m", "dnsd", "--listen", f"127.0.0.1:{port}", "--static", str(services)],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not answers_query(port, probe, timeout=2.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsd under valgrind did not answer ({loop})")
            time.sleep(1)
        ask(port, wires, max(2000, 4 * len(wires)), burst)  # warm: every reply rendered
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                       capture_output=True)
        got = ask(port, wires, answers, burst)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                       capture_output=True)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    dumps = sorted(work.glob(f"callgrind.{loop}.{proc.pid}.*"))
    if not dumps:
        raise RuntimeError(f"no callgrind dump for {loop}")
    return total_instructions(dumps[0]) / got


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.instructions",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--answers", type=int, default=20_000)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--qtype", default="A")
    parser.add_argument("--loop", action="append", choices=tuple(LOOPS),
                        help="measure only this loop (repeatable; default both)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 2
    reg = Registry(args.services, args.instances)
    wires = [dns.message.make_query(reg.name(i), args.qtype).to_wire()
             for i in range(reg.services)]
    with tempfile.TemporaryDirectory(prefix="dnsd-instructions-") as tmp:
        work = Path(tmp)
        services = work / "services.toml"
        services.write_text(reg.dnsd_toml())
        for loop in args.loop or LOOPS:
            per = measure(loop, services, reg.name(0), wires, args.answers, args.burst, work)
            print(f"{loop:8} UDP loop: {per:8,.0f} instructions per answer "
                  f"({args.qtype}, {args.services} names, bursts of {args.burst})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
