"""A scripted stand-in for Consul's HTTP API: each path answers a fixed body
with an ``X-Consul-Index``, all at once, one byte at a time, or without a
Content-Length; a blocking query at the reply's own index is held briefly, as
an idle Consul holds it. For the tests (and measurements) of a Consul that
answers badly or hugely; tests/consul_double.py is the faithful one."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def entry(service: str, ip: str) -> dict[str, object]:
    return {"Node": {"Node": "node1", "Address": ip},
            "Service": {"ID": f"{service}-1", "Service": service, "Tags": [], "Address": "",
                        "Port": 80, "Meta": {}},
            "Checks": [{"Status": "passing"}]}


@dataclass
class Reply:
    body: bytes
    index: int = 10
    trickle: float = 0.0  # seconds between bytes; 0: all at once
    length: bool = True   # False: no Content-Length, the end is the connection's


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up mid-reply (dnsd stopping) is no news


class ScriptedConsul:
    """Answers ``GET <path>`` with ``replies[path]``; a blocking query at the
    reply's own index is held briefly, as an idle Consul holds it."""

    def __init__(self) -> None:
        self.replies: dict[str, Reply] = {
            "/v1/agent/self": Reply(json.dumps({"Config": {"Datacenter": "dc1"}}).encode()),
            "/v1/catalog/services": Reply(b'{"web": []}'),
            "/v1/catalog/nodes": Reply(b'[{"Node": "node1", "Address": "10.0.0.1"}]'),
            "/v1/health/state/any": Reply(b"[]"),
            "/v1/health/service/web": Reply(json.dumps([entry("web", "10.0.0.1")]).encode()),
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
                if reply.length:
                    self.send_header("Content-Length", str(len(reply.body)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
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

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set(self, path: str, body: bytes, trickle: float = 0.0, length: bool = True) -> None:
        """Answer ``path`` with ``body`` from now on, at the next index."""
        with self.lock:
            old = self.replies[path]
            self.replies[path] = Reply(body, old.index + 1, trickle, length)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
