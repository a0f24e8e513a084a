"""The Docker source at 1,000 containers, measured without an engine's own costs:

    python -m tests.perf.docker_relist [--containers 1000] [--events 50]

dnsd's Docker source runs in this process, with its real docker-py client,
against a double of the Engine API in another process, on a unix socket: it
answers ``/version``, ``/_ping``, ``/containers/json`` and
``/containers/{id}/json`` at once from memory (the real inspect data in
tests/data/docker, copied per container as ``tests.perf.docker_naming`` does)
and streams ``/events``; ``POST /test/health`` changes one container's health
and sends its event. The source publishes into a real table (``dnsd.table``,
through ``dnsd.status``), so a figure includes building and swapping the
snapshot. Printed:

- the re-listing: from the source's start to its first view in the table
  (one list, N inspects on 8 client threads, naming, the view, the swap);
- the view alone: naming N containers' inspect data and building the view,
  on one thread (what ``tests.perf.docker_naming`` measures);
- one event at that scale: a container's ``health_status`` event written to
  the stream -> the table holding the change (median and p99 of ``--events``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import queue
import re
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from dnsd.model import Health
from dnsd.sources.base import SourceState
from dnsd.sources.docker import DockerSettings, DockerSource, NamingSettings, build_view
from dnsd.sources.docker.naming import container_instances
from dnsd.stats import QueryStats
from dnsd.status import StatusBoard
from dnsd.table import Table
from tests.perf.docker_naming import containers

NAMING = NamingSettings("host1", "dc1")


class EngineDouble(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The Engine API's read side, from memory (see the module docstring)."""

    daemon_threads = True
    request_queue_size = 128  # dnsd connects from 8 threads at once

    def __init__(self, path: str, inspects: dict[str, dict[str, Any]]) -> None:
        self.inspects = inspects
        self.lock = threading.Lock()
        self.streams: list[queue.SimpleQueue[bytes | None]] = []
        super().__init__(path, _Handler)

    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event).encode() + b"\n"
        with self.lock:
            for stream in self.streams:
                stream.put(line)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EngineDouble

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _json(self, value: Any, status: int = 200) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """``/test/health?id=ID&status=S``: the container's health changes, and
        the engine says so."""
        path, _, query = self.path.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        if path != "/test/health" or params.get("id") not in self.server.inspects:
            self._json({"message": "no such test action"}, 404)
            return
        container_id, status = params["id"], params["status"]
        changed = copy.deepcopy(self.server.inspects[container_id])
        changed["State"]["Health"]["Status"] = status
        self.server.inspects[container_id] = changed
        self.server.emit({"Type": "container", "Action": f"health_status: {status}",
                          "Actor": {"ID": container_id,
                                    "Attributes": {"name": changed["Name"][1:]}}})
        self._json({})

    def do_GET(self) -> None:
        path = re.sub(r"^/v[0-9.]+", "", self.path.split("?", 1)[0])
        if path == "/version":
            self._json({"ApiVersion": "1.41", "Version": "20.10.24", "MinAPIVersion": "1.12"})
        elif path == "/_ping":
            body = b"OK"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(body)
        elif path == "/containers/json":
            self._json([{"Id": i} for i, d in self.server.inspects.items()
                        if d["State"]["Running"]])
        elif path.startswith("/containers/") and path.endswith("/json"):
            found = self.server.inspects.get(path.split("/")[2])
            if found is None:
                self._json({"message": "No such container"}, 404)
            else:
                self._json(found)
        elif path == "/events":
            self._events()
        else:
            self._json({"message": f"not in the double: {path}"}, 404)

    def _events(self) -> None:
        stream: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        with self.server.lock:
            self.server.streams.append(stream)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            while (line := stream.get()) is not None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
        except OSError:
            pass
        finally:
            with self.server.lock:
                self.server.streams.remove(stream)
        self.close_connection = True


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def serve(path: str, count: int) -> None:
    """The double, in its own process (``--serve``): until killed."""
    data = containers(count)
    EngineDouble(path, {d["Id"]: d for d in data}).serve_forever()


def post(path: str, url: str) -> None:
    """One POST to the double over its unix socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(f"POST {url} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        while sock.recv(4096):
            pass


async def measure(path: str, count: int, events: int) -> None:
    table = Table("dc1", datacenter_fixed=True)
    board = StatusBoard(table, QueryStats())
    source = DockerSource(DockerSettings(f"unix://{path}", NAMING))
    board.add(source.name)
    versions: list[tuple[float, int]] = []
    table.subscribe(lambda snapshot: versions.append((time.monotonic(), snapshot.version)))
    started = time.monotonic()
    task = asyncio.create_task(source.run(board))
    while board.statuses[source.name].state is not SourceState.UP:
        await asyncio.sleep(0.001)
    first = versions[0][0] - started
    instances = sum(len(v.instances) for v in table.views.values())
    print(f"re-listing {count} containers -> {instances} instances in the "
          f"table: {1e3 * first:.0f} ms (start to the first swap)")

    # One container's health flips with each event: the table must follow.
    target = next(d["Id"] for d in containers(count)
                  if d["Name"] == "/app-5" and d["State"].get("Health"))
    lags = []
    for n in range(events):
        status = "unhealthy" if n % 2 == 0 else "healthy"
        wanted = Health.CRITICAL if status == "unhealthy" else Health.PASSING
        before = len(versions)
        sent = time.monotonic()
        await asyncio.to_thread(post, path, f"/test/health?id={target}&status={status}")
        while not (len(versions) > before and any(
                i.health is wanted for view in table.views.values() for i in view.instances
                if i.id.startswith("host1:app-5:"))):
            await asyncio.sleep(0.0002)
        lags.append(versions[-1][0] - sent)
        await asyncio.sleep(0.01)
    ms = [1e3 * lag for lag in lags]
    print(f"one event with {count} containers in the view -> the table "
          f"holding it: median {statistics.median(ms):.1f} ms, p99 "
          f"{percentile(ms, 0.99):.1f} ms (n={len(ms)})")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.containers)
        return
    data = containers(args.containers)

    times = []
    for _ in range(10):
        started = time.perf_counter()
        view = build_view(container_instances(d, NAMING) for d in data)
        times.append(time.perf_counter() - started)
    print(f"naming {args.containers} containers and building the view ({len(view.instances)} "
          f"instances), one thread: median {1e3 * statistics.median(times):.0f} ms")

    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "docker.sock")
        double = subprocess.Popen([sys.executable, "-m", "tests.perf.docker_relist", "--serve",
                                   path, "--containers", str(args.containers)])
        try:
            while not Path(path).exists():
                time.sleep(0.01)
            asyncio.run(measure(path, args.containers, args.events))
        finally:
            double.terminate()
            double.wait(10)


if __name__ == "__main__":
    main()
