"""How soon ``dnsd --docker`` answers a container's stop and start, on a real engine:

    python -m tests.perf.docker_latency [--changes 50] [--background 100]

A private engine (``tests/docker_engine.py``, needs root), ``--background``
idle labelled containers so the view is not trivially small, dnsd serving it,
and one probe container stopped (``docker stop -t 0``) and started
``--changes`` times each through Debian's docker CLI, as a user would. Per
change three instants are taken on one monotonic clock:

- the CLI command returning;
- the engine's event (``die`` for a stop, ``start`` for a start) reaching a
  second subscriber in this process, like dnsd's own (docker-py, a thread);
- the first UDP answer that shows the change, from a thread asking dnsd
  every 0.5 ms from before the command is run (NXDOMAIN for a stop; the
  probe's address for a start).

Printed, median and p99 of: CLI return -> answer (0 when the answer changed
before the CLI returned), event -> answer (dnsd's own part: reading the
event, inspecting the container, naming it, swapping the table), and the
engine's event relative to the CLI return. Also the time dnsd took to list
and inspect every container at start (its "synced in" line).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import re
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import docker

from tests.dnsd_process import DnsdProcess, wait_until
from tests.docker_engine import Container, Engine, reserve_subnet

IMAGE = "dnsdt-busybox:latest"
NETWORK = "dnsdt-bench"


def query_packet(name: str, qid: int = 0x4242) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + labels + struct.pack("!HH", 1, 1)


@dataclass
class Watcher:
    """Asks dnsd for one name every ``interval`` seconds and notes the first
    instant a reply satisfies ``wanted`` (rcode, answer count)."""

    address: tuple[str, int]
    name: str
    interval: float = 0.0005
    seen_at: float | None = None
    _wanted: Callable[[int, int], bool] = field(default=lambda rcode, count: False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, wanted: Callable[[int, int], bool]) -> None:
        self.seen_at = None
        self._wanted = wanted
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        packet = query_packet(self.name)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            while not self._stop.is_set():
                sock.sendto(packet, self.address)
                try:
                    reply = sock.recv(4096)
                except TimeoutError:
                    continue
                at = time.monotonic()
                rcode = reply[3] & 0x0F
                count = struct.unpack("!H", reply[6:8])[0]
                if self._wanted(rcode, count):
                    self.seen_at = at
                    return
                time.sleep(self.interval)

    def wait(self, timeout: float = 30.0) -> float:
        assert self._thread is not None
        self._thread.join(timeout)
        self._stop.set()
        if self.seen_at is None:
            raise TimeoutError(f"{self.name}: the change was never answered")
        return self.seen_at


class EventClock:
    """A second event subscriber (docker-py on a thread): when each of the
    probe's events reached it."""

    def __init__(self, url: str, container_id: str) -> None:
        self.client = docker.APIClient(base_url=url, version="auto")
        self.stream = self.client.events(decode=True, filters={
            "container": [container_id], "event": ["die", "start"]})
        self.arrivals: dict[str, list[float]] = {"die": [], "start": []}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for event in self.stream:
            at = time.monotonic()
            with self._lock:
                self.arrivals.setdefault(event.get("Action", ""), []).append(at)

    def last(self, action: str, after: float, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [t for t in self.arrivals[action] if t >= after]
            if found:
                return found[0]
            time.sleep(0.001)
        raise TimeoutError(f"no {action} event")

    def close(self) -> None:
        self.stream.close()
        self.client.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(label: str, values: list[float]) -> str:
    ms = [1e3 * v for v in values]
    return (f"  {label}: median {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f}"
            f" ms, min {min(ms):.1f}, max {max(ms):.1f} (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50, help="stops and as many starts")
    parser.add_argument("--background", type=int, default=100,
                        help="other running containers in the view")
    args = parser.parse_args()

    subnet = reserve_subnet()
    engine = Engine({"dns": [subnet.gateway]})
    try:
        engine.start()
        engine.create_network(NETWORK, subnet)
        engine.import_busybox(IMAGE)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda n: engine.run(
                IMAGE, "sleep", "36000", network=NETWORK, name=f"dnsdt-bg-{n}",
                labels={"SERVICE_NAME": f"bg{n % 20}", "SERVICE_TAGS": "bench"}),
                range(args.background)))
        print(f"{args.background} background containers started in "
              f"{time.monotonic() - started:.0f} s")
        probe = engine.run(IMAGE, "sleep", "36000", network=NETWORK, name="dnsdt-probe",
                           labels={"SERVICE_NAME": "probe"})
        with DnsdProcess(["--docker", engine.host, "--node-name", "bench"]) as dnsd:
            synced = dnsd.wait_for_log(r"docker .*: synced in")
            match = re.search(r"synced in ([0-9.]+) s: (\d+) running containers, (\d+) instances",
                              synced)
            assert match, synced
            print(f"dnsd listed and inspected {match.group(2)} containers "
                  f"({match.group(3)} instances) in {1e3 * float(match.group(1)):.0f} ms")
            wait_until(lambda: dnsd.addresses("probe.service.consul"), timeout=30)
            run(engine, dnsd, probe, args.changes)
    finally:
        engine.close()
        subnet.release()


def run(engine: Engine, dnsd: DnsdProcess, probe: Container, changes: int) -> None:
    clock = EventClock(engine.host, probe.id)
    watcher = Watcher((dnsd.host, dnsd.port), "probe.service.consul")
    figures: dict[str, dict[str, list[float]]] = {
        kind: {"cli": [], "event": [], "engine": []} for kind in ("stop", "start")}
    try:
        for _ in range(changes):
            for kind, command, action, wanted in (
                    ("stop", ("stop", "-t", "0"), "die", lambda rcode, count: rcode == 3),
                    ("start", ("start",), "start",
                     lambda rcode, count: rcode == 0 and count > 0)):
                time.sleep(0.2)  # let the last change settle (health, table swap)
                watcher.start(wanted)
                before = time.monotonic()
                engine.docker(*command, probe.id)
                returned = time.monotonic()
                answered = watcher.wait()
                event = clock.last(action, before)
                figures[kind]["cli"].append(max(0.0, answered - returned))
                figures[kind]["event"].append(answered - event)
                figures[kind]["engine"].append(event - returned)
    finally:
        clock.close()
    for kind, values in figures.items():
        print(f"docker {kind} ({changes} changes):")
        print(summary("CLI returned -> first UDP answer showing it", values["cli"]))
        print(summary("event reached a subscriber -> first UDP answer", values["event"]))
        print(summary("event reached a subscriber, relative to the CLI return",
                      values["engine"]))


if __name__ == "__main__":
    main()
