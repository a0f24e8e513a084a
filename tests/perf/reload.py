"""Answers while a big services file is re-read: ``python -m tests.perf.reload``.

A real ``python -m dnsd --static FILE`` serving 100,000 instances (10,000
services x 10), asked for one name over UDP as fast as one client can. Prints
the longest gap between two answers (and the answers that never came) while:

- the file is replaced atomically with one changed entry (until the change is
  answered);
- one SIGHUP arrives with the file unchanged;
- 20 SIGHUPs arrive within a second, the file unchanged, then one entry
  changes: how long until that change is answered (a backlog of reloads
  delays it).

Imports: ``tests.perf.workload``, ``tests.dnsd_process``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.dnsd_process import DnsdProcess
from tests.perf.workload import Registry


class Prober(threading.Thread):
    """Asks one name in a loop and records when each answer came."""

    def __init__(self, host: str, port: int, name: str) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.name = host, port, name
        self.stopping = threading.Event()
        self.answers: list[tuple[float, set[str]]] = []
        self.lost = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            query = dns.message.make_query(self.name, "A")
            try:
                reply = dns.query.udp(query, self.host, port=self.port, timeout=30)
            except dns.exception.Timeout:
                self.lost += 1
                continue
            got = {rd.address for rrset in reply.answer for rd in rrset}
            self.answers.append((time.monotonic(), got))

    def gap_since(self, start: float) -> float:
        times = [start] + [t for t, _ in self.answers if t >= start] + [time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(times))

    def first_with(self, address: str, since: float) -> float | None:
        return next((t for t, got in self.answers if t >= since and address in got), None)


def wait_for_answer(prober: Prober, address: str, since: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (seen := prober.first_with(address, since)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{address} not answered within {timeout} s")
        time.sleep(0.05)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=10)
    args = parser.parse_args()
    text = Registry(args.services, args.instances).dnsd_toml()
    name = "svc00000.service.consul"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "services.toml"
        path.write_text(text)

        def replace(old: str, new: str) -> None:
            nonlocal text
            text = text.replace(f'address = "{old}"\n', f'address = "{new}"\n', 1)
            staged = Path(tmp) / "services.toml.new"
            staged.write_text(text)
            os.replace(staged, path)

        started = time.monotonic()
        with DnsdProcess(["--static", str(path)], timeout=300) as proc:
            print(f"{args.services * args.instances:,} instances; "
                  f"dnsd answering after {time.monotonic() - started:.1f} s")
            prober = Prober(proc.host, proc.port, name)
            prober.start()
            time.sleep(1.0)

            mark = time.monotonic()
            replace("10.0.0.1", "10.99.0.1")
            seen = wait_for_answer(prober, "10.99.0.1", mark, 120)
            print(f"atomic replace: change answered after {seen - mark:.2f} s, "
                  f"longest gap {prober.gap_since(mark):.2f} s")

            time.sleep(1.0)
            mark = time.monotonic()
            proc.signal(signal.SIGHUP)
            time.sleep(8.0)
            print(f"one SIGHUP, file unchanged: longest gap {prober.gap_since(mark):.2f} s "
                  "(over 8 s)")

            mark = time.monotonic()
            for _ in range(20):
                proc.signal(signal.SIGHUP)
                time.sleep(0.05)
            replace("10.99.0.1", "10.98.0.1")
            try:
                seen = wait_for_answer(prober, "10.98.0.1", mark, 600)
                print(f"20 SIGHUPs then a change: change answered after {seen - mark:.2f} s, "
                      f"longest gap {prober.gap_since(mark):.2f} s")
            except TimeoutError as exc:
                print(f"20 SIGHUPs then a change: {exc}")
            prober.stopping.set()
            prober.join(35)
            print(f"queries never answered (30 s timeout): {prober.lost}")


if __name__ == "__main__":
    main()
