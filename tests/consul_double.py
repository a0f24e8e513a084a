"""A Consul HTTP API double: a real HTTP server on 127.0.0.1 that follows Consul's
documented blocking-query and health semantics, for driving python-consul2.

What it follows (https://developer.hashicorp.com/consul/api-docs/features/blocking):
- every listing endpoint returns ``X-Consul-Index``, never 0;
- ``?index=N&wait=D`` hangs until the endpoint's index passes N or the wait
  (default 5m, capped at 10m) plus a random jitter of up to wait/16 expires; a
  return is no promise of change (a timeout returns the same index);
- ``index=0`` or no index answers at once;
- indexes are per table as in Consul: ``/v1/catalog/services`` moves with any
  service write, ``/v1/catalog/nodes`` with node writes, ``/v1/health/state/any``
  with check writes, ``/v1/health/service/<name>`` with anything touching that
  service (its instances, their checks, their nodes);
- ``?passing`` drops entries with any non-passing check (warning too), ``?dc=``
  selects a datacenter (an unknown one gets 500 "No path to datacenter");
- without a leader, catalog and health reads get 500 "No cluster leader" and
  ``/v1/status/leader`` returns ``""``;
- with ``required_token`` set, a request without that ``X-Consul-Token`` gets 403.
It counts requests per path, can go backwards (a snapshot restore), and stops
and restarts on the same port, cutting open long-polls like a killed agent.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0


def parse_wait(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid wait {text!r}")
    return min(float(match.group(1)) * _UNITS[match.group(2)], MAX_WAIT)


@dataclass
class _Dc:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (node, id)
    checks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (node, id)
    nodes_index: int = 1
    services_index: int = 1
    checks_index: int = 1
    service_index: dict[str, int] = field(default_factory=dict)


class ConsulDouble:
    """Start with ``ConsulDouble()`` (listening at once); ``url`` is its address."""

    def __init__(self, datacenter: str = "dc1", remote: tuple[str, ...] = ("dc2",),
                 port: int = 0) -> None:
        self.datacenter = datacenter
        self._dcs: dict[str, _Dc] = {dc: _Dc() for dc in (datacenter, *remote)}
        self._raft = 10  # the global raft index; every write takes the next one
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        # One condition per (datacenter, blocking path), on the same lock: a write
        # wakes only the long-polls whose index it moved, as Consul's watch
        # channels do (waking all 250 of them per write would time the double).
        self._waits: dict[tuple[str, str], tuple[threading.Condition, list[int]]] = {}
        self.leader = True
        self.required_token: str | None = None  # set: other tokens get 403, as ACLs do
        self.requests: Counter[str] = Counter()
        self.requests_with_index: Counter[str] = Counter()  # blocking ones (index > 0)
        self.request_log: list[tuple[float, str]] = []
        self._open: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.start()

    # --- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        double = self

        class Handler(_Handler):
            owner = double

        server = _Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut every open connection (long-polls included)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._cond:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._notify(everyone=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ConsulDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def request_count(self) -> int:
        with self._cond:
            return sum(self.requests.values())

    # --- writes (each takes the next raft index, as Consul's FSM does) ---------

    def _dc(self, dc: str | None) -> _Dc:
        return self._dcs[dc or self.datacenter]

    def _write(self) -> int:
        self._raft += 1
        return self._raft

    def _touch_service(self, dc: _Dc, name: str, idx: int) -> None:
        dc.service_index[name] = idx

    def add_node(self, node: str, address: str, dc: str | None = None) -> None:
        with self._cond:
            d = self._dc(dc)
            idx = self._write()
            known = d.nodes.get(node)
            d.nodes[node] = {"ID": "", "Node": node, "Address": address,
                             "Datacenter": dc or self.datacenter, "TaggedAddresses": {},
                             "Meta": {}, "CreateIndex": known["CreateIndex"] if known else idx,
                             "ModifyIndex": idx}
            d.nodes_index = idx
            if (node, "serfHealth") not in d.checks:
                d.checks[(node, "serfHealth")] = _check(node, "serfHealth", "passing", "", "",
                                                        idx)
                d.checks_index = idx
            for (n, _), svc in d.services.items():
                if n == node:
                    self._touch_service(d, svc["Service"], idx)
            self._notify()

    def register(self, name: str, service_id: str | None = None, *, node: str = "node1",
                 node_address: str = "10.0.0.1", address: str = "", port: int = 0,
                 tags: tuple[str, ...] = (), meta: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None, status: str | None = None,
                 dc: str | None = None) -> str:
        """Register (or update) an instance, like a catalog register; with
        ``status``, also its service check ``service:<id>``."""
        sid = service_id or name
        if node not in self._dc(dc).nodes:
            self.add_node(node, node_address, dc)
        with self._cond:
            d = self._dc(dc)
            idx = self._write()
            known = d.services.get((node, sid))
            d.services[(node, sid)] = {
                "ID": sid, "Service": name, "Tags": list(tags), "Address": address,
                "Meta": dict(meta or {}), "Port": port,
                "Weights": dict(weights or {"Passing": 1, "Warning": 1}),
                "EnableTagOverride": False,
                "CreateIndex": known["CreateIndex"] if known else idx, "ModifyIndex": idx}
            d.services_index = idx
            self._touch_service(d, name, idx)
            if status is not None:
                d.checks[(node, f"service:{sid}")] = _check(node, f"service:{sid}", status,
                                                            sid, name, idx)
                d.checks_index = idx
            self._notify()
        return sid

    def deregister(self, service_id: str, node: str = "node1", dc: str | None = None) -> None:
        with self._cond:
            d = self._dc(dc)
            svc = d.services.pop((node, service_id), None)
            if svc is None:
                return
            idx = self._write()
            d.services_index = idx
            self._touch_service(d, svc["Service"], idx)
            for key in [k for k, c in d.checks.items()
                        if k[0] == node and c["ServiceID"] == service_id]:
                del d.checks[key]
                d.checks_index = idx
            self._notify()

    def set_check(self, service_id: str, status: str, node: str = "node1",
                  dc: str | None = None) -> None:
        """Set the status of ``service:<id>`` (an empty id: the node's serfHealth)."""
        with self._cond:
            d = self._dc(dc)
            check_id = f"service:{service_id}" if service_id else "serfHealth"
            svc = d.services.get((node, service_id)) if service_id else None
            name = svc["Service"] if svc else ""
            idx = self._write()
            known = d.checks.get((node, check_id))
            check = _check(node, check_id, status, service_id, name, idx)
            if known is not None:
                check["CreateIndex"] = known["CreateIndex"]
            d.checks[(node, check_id)] = check
            d.checks_index = idx
            for (n, _), s in d.services.items():
                if n == node and (not service_id or s["ID"] == service_id):
                    self._touch_service(d, s["Service"], idx)
            self._notify()

    def set_leader(self, leader: bool) -> None:
        with self._cond:
            self.leader = leader
            self._notify(everyone=True)

    def rewind(self, to: int = 2) -> None:
        """Make every index go backwards, as a snapshot restore can."""
        with self._cond:
            self._raft = to
            for d in self._dcs.values():
                d.nodes_index = d.services_index = d.checks_index = to
                d.service_index = {k: to for k in d.service_index}
            self._notify(everyone=True)

    def _notify(self, everyone: bool = False) -> None:
        """Wake the long-polls whose index moved (all of them: ``everyone``);
        called with the lock held, after a write."""
        self._cond.notify_all()
        for (dc_name, path), (cond, seen) in self._waits.items():
            index = self._index(path, self._dcs[dc_name])
            if everyone or index != seen[0]:
                seen[0] = index if index is not None else 0
                cond.notify_all()

    # --- reads -------------------------------------------------------------------

    @staticmethod
    def _index(path: str, dc: _Dc) -> int | None:
        """A blocking endpoint's index (cheap: checked on every wake-up), None
        for an unknown path."""
        if path == "/v1/catalog/services":
            return dc.services_index
        if path == "/v1/catalog/nodes":
            return dc.nodes_index
        if path == "/v1/health/state/any":
            return dc.checks_index
        if path.startswith("/v1/health/service/"):
            name = unquote(path[len("/v1/health/service/"):])
            return max(dc.service_index.get(name, dc.services_index), 1)
        return None

    @staticmethod
    def _body(path: str, dc: _Dc, params: dict[str, str]) -> Any:
        """A known blocking endpoint's reply body (built once, when replying)."""
        if path == "/v1/catalog/services":
            tags: dict[str, set[str]] = {}
            for svc in dc.services.values():
                tags.setdefault(svc["Service"], set()).update(svc["Tags"])
            return {k: sorted(v) for k, v in sorted(tags.items())}
        if path == "/v1/catalog/nodes":
            return [dict(n) for _, n in sorted(dc.nodes.items())]
        if path == "/v1/health/state/any":
            return [dict(c) for _, c in sorted(dc.checks.items())]
        name = unquote(path[len("/v1/health/service/"):])
        entries = []
        for (node, sid), svc in sorted((k, v) for k, v in dc.services.items()
                                       if v["Service"] == name):
            checks = [dict(c) for (n, _), c in sorted(
                (k, c) for k, c in dc.checks.items()
                if k[0] == node and c["ServiceID"] in ("", sid))]
            if "passing" in params and any(c["Status"] != "passing" for c in checks):
                continue
            if "tag" in params and params["tag"] not in svc["Tags"]:
                continue
            entries.append({"Node": dict(dc.nodes[node]), "Service": dict(svc),
                            "Checks": checks})
        return entries

    def handle(self, method: str, raw_path: str,
               token: str | None = None) -> tuple[int, dict[str, str], bytes]:
        url = urlparse(raw_path)
        path = url.path
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        with self._cond:
            if self._server is None:
                return 0, {}, b""
            self.requests[path] += 1
            if params.get("index", "0") not in ("", "0"):
                self.requests_with_index[path] += 1
            self.request_log.append((time.monotonic(), path))
        if self.required_token is not None and token != self.required_token:
            return 403, {}, b"Permission denied"
        if method != "GET":
            return 405, {}, b"method not allowed"
        if path == "/v1/agent/self":
            return _json(200, {"Config": {"Datacenter": self.datacenter, "NodeName": "agent",
                                          "Server": True},
                               "Member": {"Name": "agent", "Addr": "127.0.0.1"}})
        if path == "/v1/status/leader":
            return _json(200, "127.0.0.1:8300" if self.leader else "")
        dc_name = params.get("dc") or self.datacenter
        if dc_name not in self._dcs:
            return 500, {}, b"No path to datacenter"
        try:
            wait = parse_wait(params["wait"]) if "wait" in params else DEFAULT_WAIT
            min_index = int(params.get("index", "0") or 0)
        except ValueError as exc:
            return 400, {}, str(exc).encode()
        deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
        with self._cond:
            while True:
                if self._server is None:
                    return 0, {}, b""  # stopped: drop the connection
                if not self.leader:
                    return 500, {}, b"No cluster leader"
                dc = self._dcs[dc_name]
                index = self._index(path, dc)
                if index is None:
                    return 404, {}, b"not found"
                left = deadline - time.monotonic()
                if min_index <= 0 or index > min_index or left <= 0:
                    status, headers, data = _json(200, self._body(path, dc, params))
                    headers["X-Consul-Index"] = str(index)
                    headers["X-Consul-KnownLeader"] = "true"
                    return status, headers, data
                key = (dc_name, path)
                if key not in self._waits:
                    self._waits[key] = (threading.Condition(self._lock), [index])
                self._waits[key][0].wait(left)


def _check(node: str, check_id: str, status: str, service_id: str, service_name: str,
           idx: int) -> dict[str, Any]:
    return {"Node": node, "CheckID": check_id,
            "Name": "Serf Health Status" if check_id == "serfHealth" else f"check {check_id}",
            "Status": status, "Notes": "", "Output": "", "ServiceID": service_id,
            "ServiceName": service_name, "ServiceTags": [], "CreateIndex": idx,
            "ModifyIndex": idx}


def _json(status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


class _Server(ThreadingHTTPServer):
    # Consul (Go) listens with the kernel's full backlog; socketserver's 5
    # would drop SYNs when a watcher opens hundreds of long-polls at once.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client (dnsd) that exits or drops its long-polls resets connections:
        # that is normal, not worth socketserver's traceback on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: ConsulDouble
    protocol_version = "HTTP/1.1"  # keep-alive, as Consul's Go server does

    def setup(self) -> None:
        super().setup()
        # Go's net/http (Consul) sets TCP_NODELAY; without it, headers and body
        # sent in two writes meet delayed ACKs and every reply takes 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.owner._cond:
            self.owner._open.add(self.connection)

    def finish(self) -> None:
        with self.owner._cond:
            self.owner._open.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        token = self.headers.get("X-Consul-Token")
        status, headers, body = self.owner.handle(method, self.path, token)
        if status == 0:
            self.close_connection = True
            return
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def register_web(double: ConsulDouble) -> None:
    """The two ``web`` instances the end-to-end tests start from: one on its
    node's address (10.0.0.1, tag v1), one with its own (10.5.0.2, tag v2)."""
    double.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80,
                    tags=("v1",), status="passing")
    double.register("web", "web-2", node="node2", node_address="10.0.0.2", address="10.5.0.2",
                    port=81, tags=("v2",), status="passing")
