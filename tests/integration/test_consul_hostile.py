"""The Consul source against a Consul that answers badly: JSON nested deeper
than any decoder's stack, replies far larger than any catalog, bytes trickled
one at a time. The source must stay up (stale, with the reason), back off,
and recover when the answers do; never crash its task.

A small scripted HTTP server stands in for Consul here: each path answers a
fixed body with an ``X-Consul-Index``, optionally one byte at a time."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from dnsd.sources.base import SourceState
from dnsd.sources.consul import ConsulSettings, ConsulSource
from tests.sinks import RecordingSink


def _entry(service: str, ip: str) -> dict[str, object]:
    return {"Node": {"Node": "node1", "Address": ip},
            "Service": {"ID": f"{service}-1", "Service": service, "Tags": [], "Address": "",
                        "Port": 80, "Meta": {}},
            "Checks": [{"Status": "passing"}]}


@dataclass
class Reply:
    body: bytes
    index: int = 10
    trickle: float = 0.0  # seconds between bytes; 0: all at once


class ScriptedConsul:
    """Answers ``GET <path>`` with ``replies[path]``; a blocking query at the
    reply's own index is held briefly, as an idle Consul holds it."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {
            "/v1/agent/self": Reply(json.dumps({"Config": {"Datacenter": "dc1"}}).encode()),
            "/v1/catalog/services": Reply(b'{"web": []}'),
            "/v1/catalog/nodes": Reply(b'[{"Node": "node1", "Address": "10.0.0.1"}]'),
            "/v1/health/state/any": Reply(b"[]"),
            "/v1/health/service/web": Reply(json.dumps([_entry("web", "10.0.0.1")]).encode()),
        }
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                url = urlparse(self.path)
                with owner.lock:
                    owner.requests[url.path] += 1
                    reply = owner.replies.get(url.path)
                if reply is None:
                    self.send_error(404)
                    return
                query = parse_qs(url.query)
                if query.get("index") == [str(reply.index)]:
                    time.sleep(0.3)  # a blocking query with nothing new
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Consul-Index", str(reply.index))
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                try:
                    if reply.trickle:
                        for i in range(len(reply.body)):
                            self.wfile.write(reply.body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                    else:
                        self.wfile.write(reply.body)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set(self, path: str, body: bytes, **reply: float) -> None:
        with self.lock:
            old = self.replies[path]
            self.replies[path] = Reply(body, old.index + 1, **reply)  # type: ignore[arg-type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def consul() -> Iterator[ScriptedConsul]:
    server = ScriptedConsul()
    try:
        yield server
    finally:
        server.close()


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
                   what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(consul: ScriptedConsul, **settings: object
                  ) -> AsyncIterator[tuple[asyncio.Task[None], RecordingSink]]:
    options: dict[str, object] = {"wait": 1.0, "backoff_base": 0.05, "backoff_cap": 0.3}
    options.update(settings)
    source = ConsulSource(dataclasses.replace(ConsulSettings(url=consul.url),
                                              **options))  # type: ignore[arg-type]
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        yield task, sink
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_deeply_nested_json_is_an_outage_not_a_crash(consul: ScriptedConsul) -> None:
    consul.set("/v1/health/service/web", b"[" * 100_000)
    async with running(consul) as (task, sink):
        await wait_for(lambda: sink.state is SourceState.STALE or task.done(), what="STALE")
        assert not task.done(), task.exception() if task.done() else None
        assert "RecursionError" in sink.reason
        reads = consul.requests["/v1/health/service/web"]
        await wait_for(lambda: consul.requests["/v1/health/service/web"] >= reads + 2,
                       what="retries")
        assert not task.done()
        consul.set("/v1/health/service/web", json.dumps([_entry("web", "10.0.0.7")]).encode())
        await wait_for(lambda: sink.state is SourceState.UP, what="UP")
        assert [i.address or i.node_address for i in sink.instances("web")] == ["10.0.0.7"]


async def test_a_failing_agent_is_retried_and_logged_once(consul: ScriptedConsul,
                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "dnsd.consul")
    consul.set("/v1/agent/self", b"[" * 100_000)
    async with running(consul, backoff_base=0.1, backoff_cap=0.4) as (task, _):
        await wait_for(lambda: consul.requests["/v1/agent/self"] >= 6, what="six tries")
        assert not task.done()
    # Logged once, not once per retry.
    assert len([r for r in caplog.records if "RecursionError" in r.getMessage()]) == 1
