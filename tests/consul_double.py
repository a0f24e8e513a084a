"""A Consul HTTP API double: a real HTTP server on 127.0.0.1 that follows Consul's
documented blocking-query, consistency, catalog, health and prepared-query
semantics, for driving python-consul2.

Blocking queries (https://developer.hashicorp.com/consul/api-docs/features/blocking):
- every listing endpoint returns ``X-Consul-Index``, never 0;
- ``?index=N&wait=D`` hangs until the endpoint's index passes N or the wait
  (default 5m, capped at 10m) plus a random jitter of up to wait/16 expires; a
  return is no promise of change (a timeout returns the same index);
- ``index=0`` or no index answers at once;
- indexes are per table as in Consul: ``/v1/catalog/services`` moves with any
  service write, ``/v1/catalog/nodes`` with node writes, ``/v1/health/state/any``
  with check writes, ``/v1/health/service/<name>`` with anything touching that
  service (its instances, their checks, their nodes);
- ``?passing`` drops entries with any non-passing check (warning too), ``?tag=``
  and ``?node-meta=k:v`` filter, ``?dc=`` selects a datacenter (an unknown one
  gets 500 "No path to datacenter").

Consistency modes (api-docs/features/consistency): each request's mode is
recorded (``consistency_log``: default, stale or consistent); ``?stale`` with
``?consistent`` is a 400. Reads carry ``X-Consul-KnownLeader``,
``X-Consul-LastContact`` (milliseconds) and ``X-Consul-Effective-Consistency``.
With a leader: ``true`` and ``0``. Without one (``set_leader(False)``): default
and consistent reads and every write get 500 "No cluster leader",
``/v1/status/leader`` returns ``""``, while ``?stale`` reads (blocking ones too)
are served with ``KnownLeader: false`` and a LastContact that grows from the
moment the leader was lost (on the injectable ``clock``).

Catalog: nodes carry ``Meta`` and ``TaggedAddresses`` (``lan``, ``lan_ipv4``,
``lan_ipv6``, ``wan``, ...), services may carry ``TaggedAddresses`` of
``{"Address", "Port"}`` (left out of the JSON when empty, as Consul does). Both
are settable from Python and through ``PUT /v1/catalog/register`` (body fields
matched case-insensitively, as Consul's decoder does; a registration replaces
the node's address, meta and tagged addresses unless ``SkipNodeUpdate``) and
``PUT /v1/catalog/deregister``.

Prepared queries (api-docs/query), kept per datacenter as Consul does:
``POST /v1/query`` (create, ``{"ID": uuid}``), ``GET /v1/query`` (list),
``GET|PUT|DELETE /v1/query/<id>``, ``GET /v1/query/<id-or-name>/execute`` and
``/explain``. None of them blocks: ``?index``/``?wait`` are ignored and the
reply comes at once with the prepared-queries index. A definition Consul would
refuse is refused with Consul's message: a 500 (Consul returns its RPC errors
as 500; only an undecodable body is a 400). Execution follows Consul's
``PreparedQueryResolve`` (an ID, then an exact name, then the longest
``name_prefix_match`` template prefix, case-insensitively; a template asked by
ID is an error), renders templates (``${name.full}``, ``${name.prefix}``,
``${name.suffix}``, ``${match(N)}``, ``${agent.segment}`` (empty here), ``$${``
an escaped ``${``; ``Template.Regexp``; ``RemoveEmptyTags``) into every string
of ``Service``, then filters like Consul's ``execute``: checks (critical never,
non-passing with ``OnlyPassing``, ``IgnoreCheckIDs`` skipped), ``NodeMeta``,
``ServiceMeta``, ``Tags`` (all required, ``!tag`` excluded, case-insensitive).
With no node left it fails over: first the ``NearestN`` nearest other
datacenters (the double has no network coordinates: nearness is the order the
datacenters were given in), then the listed ``Failover.Datacenters`` it knows,
each tried once, until one has nodes; ``Failovers`` counts the tries. Results
are shuffled (``rng``), then cut to ``?limit``. Sessions, ACL tokens bound to a
query, ``Near`` sorting and Connect are not modelled (a query bound to a
session is refused as "invalid session": the double knows none; a Connect
query finds no Connect-capable instance).

Also: with ``required_token`` set, a request without that ``X-Consul-Token``
gets 403. It counts requests per path, can go backwards (a snapshot restore),
and stops and restarts on the same port, cutting open long-polls like a killed
agent.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import re
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_WAIT = 600.0
DEFAULT_WAIT = 300.0

NO_LEADER = "No cluster leader"
QUERY_NOT_FOUND = "Query not found"
REDACTED = "<hidden>"
UUID = re.compile(r"(?i)^[\da-f]{8}-[\da-f]{4}-[\da-f]{4}-[\da-f]{4}-[\da-f]{12}$")
META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")


def parse_wait(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid wait {text!r}")
    return min(float(match.group(1)) * _UNITS[match.group(2)], MAX_WAIT)


# Go's time.ParseDuration, which Consul applies to DNS.TTL: signed, a sequence of
# decimal numbers each with a unit; "0" alone needs none.
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
               "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    """Seconds in a Go duration ("10s", "1m30s", "-2h", "0"); ValueError with
    Go's message otherwise."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in ("-", "+") else text
    if body == "0":
        return 0.0
    if not body or not re.fullmatch(f"(?:{_GO_PART.pattern})+", body):
        if re.fullmatch(r"[\d.]+", body) and body.strip("."):
            raise ValueError(f'time: missing unit in duration "{text}"')
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * sum(float(n) * _GO_SECONDS[u] for n, u in _GO_PART.findall(body))


@dataclass
class _Dc:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (node, id)
    checks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (node, id)
    queries: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> definition
    nodes_index: int = 1
    services_index: int = 1
    checks_index: int = 1
    queries_index: int = 1
    service_index: dict[str, int] = field(default_factory=dict)


class ApiError(Exception):
    """A request Consul refuses: ``status`` and the text body it sends."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConsulDouble:
    """Start with ``ConsulDouble()`` (listening at once); ``url`` is its address.

    ``remote`` datacenters are known in that order, which the double also uses
    as their nearness for ``NearestN`` failover. ``clock`` times the leader's
    absence (``X-Consul-LastContact``); ``rng`` shuffles query results.
    """

    def __init__(self, datacenter: str = "dc1", remote: tuple[str, ...] = ("dc2",),
                 port: int = 0, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
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
        self._clock = clock
        self._leader_lost_at: float | None = None
        self.rng = rng or random.Random()
        self.required_token: str | None = None  # set: other tokens get 403, as ACLs do
        self.requests: Counter[str] = Counter()
        self.requests_with_index: Counter[str] = Counter()  # blocking ones (index > 0)
        self.request_log: list[tuple[float, str]] = []
        self.consistency_log: list[tuple[str, str]] = []  # (path, default|stale|consistent)
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

    @property
    def datacenters(self) -> list[str]:
        """Every known datacenter, the local one first, then by nearness."""
        return list(self._dcs)

    # --- writes (each takes the next raft index, as Consul's FSM does) ---------

    def _dc(self, dc: str | None) -> _Dc:
        return self._dcs[dc or self.datacenter]

    def _write(self) -> int:
        self._raft += 1
        return self._raft

    def _touch_service(self, dc: _Dc, name: str, idx: int) -> None:
        dc.service_index[name] = idx

    def _put_node(self, d: _Dc, dc_name: str, node: str, address: str,
                  meta: Mapping[str, str] | None, tagged: Mapping[str, str] | None,
                  idx: int) -> None:
        """Insert or replace a node (None meta or tagged: keep what it had)."""
        known = d.nodes.get(node)
        d.nodes[node] = {
            "ID": "", "Node": node, "Address": address, "Datacenter": dc_name,
            "TaggedAddresses": dict(tagged) if tagged is not None
            else dict(known["TaggedAddresses"]) if known else {},
            "Meta": dict(meta) if meta is not None else dict(known["Meta"]) if known else {},
            "CreateIndex": known["CreateIndex"] if known else idx, "ModifyIndex": idx}
        d.nodes_index = idx
        for (n, _), svc in d.services.items():
            if n == node:
                self._touch_service(d, svc["Service"], idx)

    def add_node(self, node: str, address: str, dc: str | None = None, *,
                 meta: Mapping[str, str] | None = None,
                 tagged_addresses: Mapping[str, str] | None = None) -> None:
        """Add or update a node (with a passing serfHealth, as a live agent has).

        ``meta`` (served as ``Meta``) and ``tagged_addresses`` (``{"lan_ipv6":
        "fd00::1", "wan": ...}``) replace the node's; None keeps them.
        """
        with self._cond:
            d = self._dc(dc)
            idx = self._write()
            self._put_node(d, dc or self.datacenter, node, address, meta, tagged_addresses, idx)
            if (node, "serfHealth") not in d.checks:
                d.checks[(node, "serfHealth")] = _check(node, "serfHealth", "passing", "", "",
                                                        idx)
                d.checks_index = idx
            self._notify()

    def register(self, name: str, service_id: str | None = None, *, node: str = "node1",
                 node_address: str = "10.0.0.1", address: str = "", port: int = 0,
                 tags: tuple[str, ...] = (), meta: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None, status: str | None = None,
                 dc: str | None = None, node_meta: Mapping[str, str] | None = None,
                 node_tagged_addresses: Mapping[str, str] | None = None,
                 tagged_addresses: Mapping[str, Mapping[str, Any]] | None = None) -> str:
        """Register (or update) an instance, like a catalog register; with
        ``status``, also its service check ``service:<id>``.

        ``tagged_addresses`` are the service's (``{"lan_ipv6": {"Address":
        "fd00::5", "Port": 80}}``); ``node_meta`` and ``node_tagged_addresses``
        update its node (which is created when new).
        """
        sid = service_id or name
        if (node not in self._dc(dc).nodes or node_meta is not None
                or node_tagged_addresses is not None):
            known = self._dc(dc).nodes.get(node)
            self.add_node(node, known["Address"] if known else node_address, dc,
                          meta=node_meta, tagged_addresses=node_tagged_addresses)
        with self._cond:
            d = self._dc(dc)
            idx = self._write()
            svc: dict[str, Any] = {
                "ID": sid, "Service": name, "Tags": list(tags), "Address": address,
                "Meta": dict(meta or {}), "Port": port,
                "Weights": dict(weights or {"Passing": 1, "Warning": 1}),
                "EnableTagOverride": False}
            if tagged_addresses:
                svc["TaggedAddresses"] = {k: dict(v) for k, v in tagged_addresses.items()}
            self._put_service(d, node, svc, idx)
            if status is not None:
                self._put_check(d, _check(node, f"service:{sid}", status, sid, name, idx), idx)
            self._notify()
        return sid

    def _put_service(self, d: _Dc, node: str, svc: dict[str, Any], idx: int) -> None:
        known = d.services.get((node, svc["ID"]))
        svc["CreateIndex"] = known["CreateIndex"] if known else idx
        svc["ModifyIndex"] = idx
        d.services[(node, svc["ID"])] = svc
        d.services_index = idx
        self._touch_service(d, svc["Service"], idx)
        if known is not None and known["Service"] != svc["Service"]:
            self._touch_service(d, known["Service"], idx)

    def _put_check(self, d: _Dc, check: dict[str, Any], idx: int) -> None:
        key = (check["Node"], check["CheckID"])
        known = d.checks.get(key)
        if known is not None:
            check["CreateIndex"] = known["CreateIndex"]
        d.checks[key] = check
        d.checks_index = idx
        for (n, _), s in d.services.items():
            if n == check["Node"] and (not check["ServiceID"] or s["ID"] == check["ServiceID"]):
                self._touch_service(d, s["Service"], idx)

    def deregister(self, service_id: str, node: str = "node1", dc: str | None = None) -> None:
        with self._cond:
            d = self._dc(dc)
            if (node, service_id) not in d.services:
                return
            self._remove_service(d, node, service_id, self._write())
            self._notify()

    def _remove_service(self, d: _Dc, node: str, service_id: str, idx: int) -> None:
        svc = d.services.pop((node, service_id))
        d.services_index = idx
        self._touch_service(d, svc["Service"], idx)
        for key in [k for k, c in d.checks.items()
                    if k[0] == node and c["ServiceID"] == service_id]:
            del d.checks[key]
            d.checks_index = idx

    def _remove_node(self, d: _Dc, node: str, idx: int) -> None:
        for _, sid in [k for k in d.services if k[0] == node]:
            self._remove_service(d, node, sid, idx)
        for key in [k for k in d.checks if k[0] == node]:
            del d.checks[key]
            d.checks_index = idx
        if d.nodes.pop(node, None) is not None:
            d.nodes_index = idx

    def set_check(self, service_id: str, status: str, node: str = "node1",
                  dc: str | None = None) -> None:
        """Set the status of ``service:<id>`` (an empty id: the node's serfHealth)."""
        with self._cond:
            d = self._dc(dc)
            check_id = f"service:{service_id}" if service_id else "serfHealth"
            svc = d.services.get((node, service_id)) if service_id else None
            name = svc["Service"] if svc else ""
            idx = self._write()
            self._put_check(d, _check(node, check_id, status, service_id, name, idx), idx)
            self._notify()

    def set_leader(self, leader: bool) -> None:
        with self._cond:
            if not leader and self.leader:
                self._leader_lost_at = self._clock()
            if leader:
                self._leader_lost_at = None
            self.leader = leader
            self._notify(everyone=True)

    def rewind(self, to: int = 2) -> None:
        """Make every index go backwards, as a snapshot restore can."""
        with self._cond:
            self._raft = to
            for d in self._dcs.values():
                d.nodes_index = d.services_index = d.checks_index = d.queries_index = to
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

    # --- prepared queries from Python (the same rules as over HTTP) -------------

    def create_query(self, definition: Mapping[str, Any], dc: str | None = None) -> str:
        """Create a prepared query; ApiError with Consul's message when refused."""
        with self._cond:
            return self._apply_query("create", None, definition, dc or self.datacenter)

    def execute_query(self, id_or_name: str, dc: str | None = None) -> dict[str, Any]:
        """What ``GET /v1/query/<id-or-name>/execute`` answers (ApiError if it fails)."""
        with self._cond:
            return self._execute(id_or_name, dc or self.datacenter, 0)

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
    def _entries(dc: _Dc, name: str) -> list[dict[str, Any]]:
        """``/v1/health/service/<name>`` entries (Node, Service, Checks), unfiltered.

        Service names match case-insensitively, as Consul's catalog index does.
        """
        entries = []
        for (node, sid), svc in sorted((k, v) for k, v in dc.services.items()
                                       if v["Service"].lower() == name.lower()):
            checks = [dict(c) for (n, _), c in sorted(
                (k, c) for k, c in dc.checks.items()
                if k[0] == node and c["ServiceID"] in ("", sid))]
            entries.append({"Node": copy.deepcopy(dc.nodes[node]), "Service": copy.deepcopy(svc),
                            "Checks": checks})
        return entries

    @classmethod
    def _body(cls, path: str, dc: _Dc, params: dict[str, str],
              node_meta: dict[str, str]) -> Any:
        """A known blocking endpoint's reply body (built once, when replying)."""
        if path == "/v1/catalog/services":
            tags: dict[str, set[str]] = {}
            for svc in dc.services.values():
                tags.setdefault(svc["Service"], set()).update(svc["Tags"])
            return {k: sorted(v) for k, v in sorted(tags.items())}
        if path == "/v1/catalog/nodes":
            return [copy.deepcopy(n) for _, n in sorted(dc.nodes.items())
                    if _meta_matches(n["Meta"], node_meta)]
        if path == "/v1/health/state/any":
            return [dict(c) for _, c in sorted(dc.checks.items())]
        entries = []
        for entry in cls._entries(dc, unquote(path[len("/v1/health/service/"):])):
            if "passing" in params and any(c["Status"] != "passing" for c in entry["Checks"]):
                continue
            if "tag" in params and params["tag"] not in entry["Service"]["Tags"]:
                continue
            if not _meta_matches(entry["Node"]["Meta"], node_meta):
                continue
            entries.append(entry)
        return entries

    def _meta_headers(self, index: int, mode: str) -> dict[str, str]:
        """Consul's QueryMeta headers; called with the lock held."""
        if self.leader or self._leader_lost_at is None:
            known, contact = "true", 0
        else:
            known, contact = "false", int((self._clock() - self._leader_lost_at) * 1000)
        return {"X-Consul-Index": str(max(index, 1)), "X-Consul-KnownLeader": known,
                "X-Consul-LastContact": str(max(contact, 0)),
                "X-Consul-Effective-Consistency": "leader" if mode == "default" else mode}

    def handle(self, method: str, raw_path: str, token: str | None = None,
               body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        url = urlparse(raw_path)
        path = url.path
        multi = parse_qs(url.query, keep_blank_values=True)
        params = {k: v[-1] for k, v in multi.items()}
        mode = ("stale" if "stale" in params and "consistent" not in params
                else "consistent" if "consistent" in params and "stale" not in params
                else "default")
        with self._cond:
            if self._server is None:
                return 0, {}, b""
            self.requests[path] += 1
            if params.get("index", "0") not in ("", "0"):
                self.requests_with_index[path] += 1
            self.request_log.append((time.monotonic(), path))
            self.consistency_log.append((path, mode))
        if self.required_token is not None and token != self.required_token:
            return 403, {}, b"Permission denied"
        if "stale" in params and "consistent" in params:
            return 400, {}, b"Cannot specify ?stale with ?consistent, conflicting semantics."
        if path == "/v1/agent/self" and method == "GET":
            return _json(200, {"Config": {"Datacenter": self.datacenter, "NodeName": "agent",
                                          "Server": True},
                               "Member": {"Name": "agent", "Addr": "127.0.0.1"}})
        if path == "/v1/status/leader" and method == "GET":
            return _json(200, "127.0.0.1:8300" if self.leader else "")
        if path == "/v1/catalog/datacenters" and method == "GET":
            return _json(200, self.datacenters)
        dc_name = params.get("dc") or self.datacenter
        try:
            if path in ("/v1/catalog/register", "/v1/catalog/deregister"):
                return self._catalog_write(method, path, dc_name, body)
            if path == "/v1/query" or path.startswith("/v1/query/"):
                return self._query_endpoint(method, path, dc_name, mode, params, body)
        except ApiError as exc:
            return exc.status, {}, exc.message.encode()
        if method != "GET":
            return 405, {}, b"method not allowed"
        if dc_name not in self._dcs:
            return 500, {}, b"No path to datacenter"
        node_meta = dict(_meta_pair(pair) for pair in multi.get("node-meta", []))
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
                if not self.leader and mode != "stale":
                    return 500, {}, NO_LEADER.encode()
                dc = self._dcs[dc_name]
                index = self._index(path, dc)
                if index is None:
                    return 404, {}, b"not found"
                left = deadline - time.monotonic()
                if min_index <= 0 or index > min_index or left <= 0:
                    status, headers, data = _json(200, self._body(path, dc, params, node_meta))
                    headers.update(self._meta_headers(index, mode))
                    return status, headers, data
                key = (dc_name, path)
                if key not in self._waits:
                    self._waits[key] = (threading.Condition(self._lock), [index])
                self._waits[key][0].wait(left)

    # --- catalog writes over HTTP ---------------------------------------------------

    def _catalog_write(self, method: str, path: str, dc_param: str,
                       body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method != "PUT":
            raise ApiError(405, f"method {method} not allowed")
        raw = _decode_body(body)
        dc_name = _text(raw, "Datacenter") or dc_param
        with self._cond:
            if not self.leader:
                raise ApiError(500, NO_LEADER)
            if dc_name not in self._dcs:
                raise ApiError(500, "No path to datacenter")
            d = self._dcs[dc_name]
            node = _text(raw, "Node")
            if not node:
                raise ApiError(500, "Must provide node")
            if path.endswith("/deregister"):
                self._catalog_deregister(d, node, raw)
            else:
                self._catalog_register(d, dc_name, node, raw)
            self._notify()
        return _json(200, True)

    def _catalog_register(self, d: _Dc, dc_name: str, node: str, raw: dict[str, Any]) -> None:
        skip = _flag(raw, "SkipNodeUpdate")
        address = _text(raw, "Address")
        if not address and not skip:
            raise ApiError(500, "Must provide address if SkipNodeUpdate is not set")
        service = _object(raw, "Service") if _field(raw, "Service") is not None else None
        svc: dict[str, Any] | None = None
        if service is not None:
            name, sid = _text(service, "Service"), _text(service, "ID")
            sid = sid or name
            if sid and not name:
                raise ApiError(500, "Must provide service name with ID")
            weights = _object(service, "Weights")
            svc = {"ID": sid, "Service": name, "Tags": _texts(service, "Tags") or [],
                   "Address": _text(service, "Address"), "Meta": _mapping(service, "Meta") or {},
                   "Port": _number(service, "Port"),
                   "Weights": {"Passing": _number(weights, "Passing") if weights else 1,
                               "Warning": _number(weights, "Warning") if weights else 1},
                   "EnableTagOverride": _flag(service, "EnableTagOverride")}
            tagged = _object(service, "TaggedAddresses")
            if tagged:
                svc["TaggedAddresses"] = {
                    k: {"Address": _text(_object(tagged, k), "Address"),
                        "Port": _number(_object(tagged, k), "Port")} for k in tagged}
        checks = [_object({"Checks": c}, "Checks") for c in (_list(raw, "Checks") or [])]
        if _field(raw, "Check") is not None:
            checks.append(_object(raw, "Check"))
        idx = self._write()
        if not skip or node not in d.nodes:
            # Consul stores the node as given: meta and tagged addresses replaced.
            self._put_node(d, dc_name, node, address, _mapping(raw, "NodeMeta") or {},
                           _mapping(raw, "TaggedAddresses") or {}, idx)
        if svc is not None and svc["Service"]:
            self._put_service(d, node, svc, idx)
        for c in checks:
            check_id = _text(c, "CheckID") or _text(c, "Name")
            if not check_id:
                raise ApiError(500, "Missing check ID")
            service_id = _text(c, "ServiceID")
            owner = d.services.get((node, service_id))
            check = _check(node, check_id, _text(c, "Status") or "critical", service_id,
                           owner["Service"] if owner else "", idx)
            if _text(c, "Name"):
                check["Name"] = _text(c, "Name")
            self._put_check(d, check, idx)

    def _catalog_deregister(self, d: _Dc, node: str, raw: dict[str, Any]) -> None:
        service_id, check_id = _text(raw, "ServiceID"), _text(raw, "CheckID")
        idx = self._write()
        if service_id:
            if (node, service_id) in d.services:
                self._remove_service(d, node, service_id, idx)
        elif check_id:
            check = d.checks.pop((node, check_id), None)
            if check is not None:
                d.checks_index = idx
                for (n, _), s in d.services.items():
                    if n == node and check["ServiceID"] in ("", s["ID"]):
                        self._touch_service(d, s["Service"], idx)
        else:
            self._remove_node(d, node, idx)

    # --- prepared queries over HTTP -------------------------------------------------

    def _query_endpoint(self, method: str, path: str, dc_name: str, mode: str,
                        params: dict[str, str],
                        body: bytes) -> tuple[int, dict[str, str], bytes]:
        rest = path[len("/v1/query"):].lstrip("/")
        action = ""
        for suffix in ("/execute", "/explain"):
            if rest.endswith(suffix):
                rest, action = rest[:-len(suffix)], suffix[1:]
        ident = unquote(rest)
        allowed: tuple[str, ...] = ("GET", "PUT", "DELETE")
        if path == "/v1/query":
            allowed = ("GET", "POST")
        elif action:
            allowed = ("GET",)
        if method not in allowed:
            raise ApiError(405, f"method {method} not allowed")
        with self._cond:
            if method == "GET" and not self.leader and mode != "stale":
                raise ApiError(500, NO_LEADER)
            if method != "GET" and not self.leader:
                raise ApiError(500, NO_LEADER)
            if dc_name not in self._dcs:
                raise ApiError(500, "No path to datacenter")
            d = self._dcs[dc_name]
            if method == "POST":
                return _json(200, {"ID": self._apply_query("create", None,
                                                           _decode_body(body), dc_name)})
            if method == "PUT":
                self._apply_query("update", ident, _decode_body(body) if body else {}, dc_name)
                return 200, {}, b""
            if method == "DELETE":
                self._apply_query("delete", ident, {}, dc_name)
                return 200, {}, b""
            if action == "execute":
                try:
                    limit = int(params.get("limit", "0") or 0)
                except ValueError as exc:
                    raise ApiError(500, f"Bad limit: {exc}") from None
                reply: Any = self._execute(ident, dc_name, limit)
                index = 1  # Consul's execute sets no index; it reports 1 for 0
            elif action == "explain":
                query = self._resolve_query(d, ident)
                if query is None:
                    raise ApiError(404, QUERY_NOT_FOUND)
                reply, index = {"Query": query}, 1
            elif rest:
                if not UUID.match(ident):
                    raise ApiError(500, "failed prepared query lookup: "
                                        "UUID must be 36 characters")
                found = d.queries.get(ident.lower())
                if found is None:
                    raise ApiError(404, QUERY_NOT_FOUND)
                reply, index = [copy.deepcopy(found)], d.queries_index
            else:
                reply = [copy.deepcopy(q) for _, q in sorted(d.queries.items())]
                index = d.queries_index
            status, headers, data = _json(200, reply)
            headers.update(self._meta_headers(index, mode))
            return status, headers, data

    def _apply_query(self, op: str, ident: str | None, raw: Mapping[str, Any],
                     dc_name: str) -> str:
        """Consul's PreparedQuery.Apply then its state store; with the lock held."""
        d = self._dcs[dc_name]
        query = _decode_query(raw)
        if op == "create":
            if query["ID"]:
                raise ApiError(500, "ID must be empty when creating a new prepared query")
            query["ID"] = str(uuid.uuid4())
            while query["ID"] in d.queries:
                query["ID"] = str(uuid.uuid4())
        else:
            query["ID"] = (ident or "").lower()
            if query["ID"] not in d.queries:
                raise ApiError(500, f"Cannot modify non-existent prepared query: '{ident}'")
        if op == "delete":
            del d.queries[query["ID"]]
            d.queries_index = self._write()
            return str(query["ID"])
        problem = _invalid_definition(query)
        if problem:
            raise ApiError(500, f"Invalid prepared query: {problem}")
        problem = self._conflict(d, query)
        if problem:
            raise ApiError(500, problem)
        if query["Template"]["Type"]:
            problem = _compile_template(query)
            if problem:
                raise ApiError(500, f"failed compiling template: {problem}")
        idx = self._write()
        known = d.queries.get(query["ID"])
        query["CreateIndex"] = known["CreateIndex"] if known else idx
        query["ModifyIndex"] = idx
        d.queries[query["ID"]] = query
        d.queries_index = idx
        return str(query["ID"])

    @staticmethod
    def _conflict(d: _Dc, query: dict[str, Any]) -> str:
        """The state store's integrity checks: names unique (case-insensitively),
        one catch-all template, no name that aliases an ID, sessions that exist."""
        name = query["Name"]
        others = [q for q in d.queries.values() if q["ID"] != query["ID"]]
        if name and any(q["Name"].lower() == name.lower() for q in others):
            return f"name '{name}' aliases an existing query name"
        if (not name and query["Template"]["Type"]
                and any(q["Template"]["Type"] and not q["Name"] for q in others)):
            return "a query template with an empty name already exists"
        if UUID.match(name) and name.lower() in d.queries:
            return f"name '{name}' aliases an existing query ID"
        if query["Session"]:
            return f'invalid session "{query["Session"]}"'
        return ""

    def _resolve_query(self, d: _Dc, ident: str) -> dict[str, Any] | None:
        """Consul's PreparedQueryResolve: ID, exact name, longest template prefix;
        a template is rendered for ``ident``."""
        if not ident:
            raise ApiError(500, "Missing query ID")
        if UUID.match(ident) and ident.lower() in d.queries:
            found = d.queries[ident.lower()]
            if found["Template"]["Type"]:
                raise ApiError(500, "prepared query templates can only be resolved up by "
                                    "name, not by ID")
            return copy.deepcopy(found)
        chosen = next((q for q in d.queries.values()
                       if q["Name"] and q["Name"].lower() == ident.lower()), None)
        if chosen is None:
            prefixes = [q for q in d.queries.values() if q["Template"]["Type"]
                        and ident.lower().startswith(q["Name"].lower())]
            chosen = max(prefixes, key=lambda q: len(q["Name"]), default=None)
        if chosen is None:
            return None
        if not chosen["Template"]["Type"]:
            return copy.deepcopy(chosen)
        return _render(chosen, ident)

    def _execute(self, ident: str, dc_name: str, limit: int) -> dict[str, Any]:
        """Consul's PreparedQuery.Execute, failover included; with the lock held."""
        query = self._resolve_query(self._dcs[dc_name], ident)
        if query is None:
            raise ApiError(404, QUERY_NOT_FOUND)
        nodes = self._run_query(query, dc_name, limit)
        used, failovers = dc_name, 0
        if not nodes:
            others = [dc for dc in self._dcs if dc != dc_name]  # by nearness
            failover = query["Service"]["Failover"]
            tries = others[:failover["NearestN"]] if failover["NearestN"] > 0 else []
            for dc in failover["Datacenters"] or []:
                if dc in others and dc not in tries:  # unknown ones are skipped
                    tries.append(dc)
            for dc in tries:
                failovers += 1
                used = dc
                nodes = self._run_query(query, dc, limit)
                if nodes:
                    break
        return {"Service": query["Service"]["Service"], "Nodes": nodes,
                "DNS": dict(query["DNS"]), "Datacenter": used, "Failovers": failovers}

    def _run_query(self, query: dict[str, Any], dc_name: str,
                   limit: int) -> list[dict[str, Any]]:
        """Consul's execute in one datacenter: health, meta and tag filters."""
        spec = query["Service"]
        if spec["Connect"]:
            return []  # the double has no Connect-capable instances
        ignored = set(spec["IgnoreCheckIDs"] or [])
        must = [t.lower() for t in spec["Tags"] or [] if not t.startswith("!")]
        never = [t[1:].lower() for t in spec["Tags"] or [] if t.startswith("!")]
        kept = []
        for entry in self._entries(self._dcs[dc_name], spec["Service"]):
            statuses = [c["Status"] for c in entry["Checks"] if c["CheckID"] not in ignored]
            if "critical" in statuses:
                continue
            if spec["OnlyPassing"] and any(s != "passing" for s in statuses):
                continue
            if not _meta_matches(entry["Node"]["Meta"], spec["NodeMeta"] or {}):
                continue
            if not _meta_matches(entry["Service"]["Meta"], spec["ServiceMeta"] or {}):
                continue
            tags = {t.lower() for t in entry["Service"]["Tags"]}
            if any(t not in tags for t in must) or any(t in tags for t in never):
                continue
            kept.append(entry)
        self.rng.shuffle(kept)
        return kept[:limit] if limit > 0 else kept


# --- prepared-query definitions: decoding, validation, templates ----------------------


def _field(obj: Mapping[str, Any], name: str) -> Any:
    """A body field as Consul's decoder finds it: the exact key, else any key
    equal to it case-insensitively (python-consul2 sends lower-case keys)."""
    if name in obj:
        return obj[name]
    return next((v for k, v in obj.items() if k.lower() == name.lower()), None)


def _decode_error(name: str, want: str, value: Any) -> ApiError:
    return ApiError(400, f"Request decode failed: 1 error(s) decoding: * '{name}' expected "
                         f"type '{want}', got unconvertible type '{type(value).__name__}'")


def _text(obj: Mapping[str, Any], name: str) -> str:
    value = _field(obj, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _decode_error(name, "string", value)
    return value


def _flag(obj: Mapping[str, Any], name: str) -> bool:
    value = _field(obj, name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _decode_error(name, "bool", value)
    return value


def _number(obj: Mapping[str, Any], name: str) -> int:
    value = _field(obj, name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _decode_error(name, "int", value)
    return int(value)


def _list(obj: Mapping[str, Any], name: str) -> list[Any] | None:
    value = _field(obj, name)
    if value is not None and not isinstance(value, list):
        raise _decode_error(name, "[]string", value)
    return value


def _texts(obj: Mapping[str, Any], name: str) -> list[str] | None:
    """A string list, None when absent (Go's nil slice, sent as null)."""
    values = _list(obj, name)
    if values is not None and not all(isinstance(v, str) for v in values):
        raise _decode_error(name, "[]string", values)
    return values


def _mapping(obj: Mapping[str, Any], name: str) -> dict[str, str] | None:
    value = _field(obj, name)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _decode_error(name, "map[string]string", value)
    return dict(value)


def _object(obj: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = _field(obj, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _decode_error(name, "struct", value)
    return value


def _decode_body(body: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(body or b"null")
    except ValueError as exc:
        raise ApiError(400, f"Request decode failed: {exc}") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "Request decode failed: the body is not a JSON object")
    return raw


def _decode_query(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A definition in the shape Consul stores and returns (every field present;
    absent lists and maps are null, as Go's nil)."""
    service = _object(raw, "Service")
    failover = _object(service, "Failover")
    template = _object(raw, "Template")
    return {
        "ID": _text(raw, "ID"), "Name": _text(raw, "Name"), "Session": _text(raw, "Session"),
        "Token": _text(raw, "Token"),
        "Template": {"Type": _text(template, "Type"), "Regexp": _text(template, "Regexp"),
                     "RemoveEmptyTags": _flag(template, "RemoveEmptyTags")},
        "Service": {
            "Service": _text(service, "Service"),
            "Failover": {"NearestN": _number(failover, "NearestN"),
                         "Datacenters": _texts(failover, "Datacenters")},
            "IgnoreCheckIDs": _texts(service, "IgnoreCheckIDs"),
            "OnlyPassing": _flag(service, "OnlyPassing"),
            "Near": _text(service, "Near"),
            "Tags": _texts(service, "Tags"),
            "NodeMeta": _mapping(service, "NodeMeta"),
            "ServiceMeta": _mapping(service, "ServiceMeta"),
            "Connect": _flag(service, "Connect")},
        "DNS": {"TTL": _text(_object(raw, "DNS"), "TTL")},
    }


def _invalid_definition(query: dict[str, Any]) -> str:
    """Consul's parseQuery: what is wrong with a definition, '' when nothing."""
    service = query["Service"]
    if not query["Name"] and not query["Template"]["Type"] and not query["Session"]:
        return "Must be bound to a session"
    if query["Token"] == REDACTED:
        return (f"Bad Token '{REDACTED}', it looks like a query definition with a redacted "
                f"token was submitted")
    if not service["Service"]:
        return "Must provide a Service name to query"
    if service["Failover"]["NearestN"] < 0:
        return f"Bad NearestN '{service['Failover']['NearestN']}', must be >= 0"
    for key in service["NodeMeta"] or {}:
        if not META_KEY.match(key):
            return f"Key contains invalid characters: {key!r}"
    ttl = query["DNS"]["TTL"]
    if ttl:
        try:
            seconds = go_duration(ttl)
        except ValueError as exc:
            return f"Bad DNS TTL '{ttl}': {exc}"
        if seconds < 0:
            return f"DNS TTL '{int(seconds * 1e9)}', must be >=0"
    return ""


_UNSUPPORTED_RE2 = ("(?=", "(?!", "(?<=", "(?<!")


def _regexp(text: str) -> re.Pattern[str]:
    """Compile a Template.Regexp; Go's RE2 refuses lookarounds and
    backreferences, which Python would accept."""
    for token in _UNSUPPORTED_RE2:
        if token in text:
            raise ValueError(f"error parsing regexp: invalid or unsupported Perl syntax: "
                             f"`{token}`")
    if re.search(r"\\[1-9]", text):
        raise ValueError("error parsing regexp: invalid escape sequence")
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"error parsing regexp: {exc}") from None


def _strings(service: dict[str, Any]) -> list[tuple[str, Callable[[], str],
                                                     Callable[[str], None]]]:
    """Every string inside Service (map values and list items too), as
    (path, get, set): what Consul's template walker interpolates."""
    found: list[tuple[str, Callable[[], str], Callable[[str], None]]] = []

    def visit(path: str, container: Any, key: Any) -> None:
        value = container[key]
        if isinstance(value, str):
            def get(c: Any = container, k: Any = key) -> str:
                return str(c[k])

            def put(new: str, c: Any = container, k: Any = key) -> None:
                c[k] = new
            found.append((path, get, put))
        elif isinstance(value, dict):
            is_map = key in ("NodeMeta", "ServiceMeta")  # the others are structs
            for k in sorted(value):
                visit(f"{path}[{k}]" if is_map else f"{path}.{k}", value, k)
        elif isinstance(value, list):
            for i in range(len(value)):
                visit(f"{path}[{i}]", value, i)

    for key in service:
        visit(f".{key}", service, key)
    return found


_MATCH_CALL = re.compile(r"match\(\s*(-?\d+)\s*\)")
_VARIABLE = re.compile(r"[A-Za-z_][\w.-]*")


class _BadFormat(ValueError):
    """HIL that does not parse (Consul: "Bad format")."""


class _BadEvaluation(ValueError):
    """HIL that parses but cannot be evaluated (Consul: "Bad evaluation")."""


def _interpolate(text: str, names: dict[str, str], groups: list[str]) -> str:
    """HIL as Consul's templates use it: ``${var}``, ``${match(N)}``, ``$${``."""
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("$", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:start])
        if text.startswith("$${", start):
            out.append("${")
            pos = start + 3
        elif text.startswith("${", start):
            end = text.find("}", start)
            if end < 0:
                raise _BadFormat("expected expression end '}'")
            expr = text[start + 2:end].strip()
            call = _MATCH_CALL.fullmatch(expr)
            if expr in names:
                out.append(names[expr])
            elif call:
                n = int(call.group(1))
                out.append(groups[n] if 0 <= n < len(groups) else "")
            elif _VARIABLE.fullmatch(expr):
                raise _BadEvaluation(f"unknown variable accessed: {expr}")
            else:
                raise _BadFormat(f"unsupported expression {expr!r}")
            pos = end + 1
        else:
            out.append("$")
            pos = start + 1


def _render(query: dict[str, Any], name: str) -> dict[str, Any]:
    """A template rendered for the asked ``name`` (a fresh copy)."""
    rendered = copy.deepcopy(query)
    groups: list[str] = []
    if query["Template"]["Regexp"]:
        found = _regexp(query["Template"]["Regexp"]).search(name)
        if found:
            groups = [found.group(0), *(g or "" for g in found.groups())]
    prefix = query["Name"]
    names = {"name.full": name, "name.prefix": prefix,
             "name.suffix": name[len(prefix):] if name.startswith(prefix) else name,
             "agent.segment": ""}
    for _, get, put in _strings(rendered["Service"]):
        put(_interpolate(get(), names, groups))
    if query["Template"]["RemoveEmptyTags"] and rendered["Service"]["Tags"] is not None:
        rendered["Service"]["Tags"] = [t for t in rendered["Service"]["Tags"] if t]
    return rendered


def _compile_template(query: dict[str, Any]) -> str:
    """Consul's template Compile: the type, every string's syntax, the regexp,
    then a trial render with the query's own name; '' when it compiles."""
    if query["Template"]["Type"] != "name_prefix_match":
        return f"Bad Template.Type '{query['Template']['Type']}'"
    trial = {"name.full": "", "name.prefix": "", "name.suffix": "", "agent.segment": ""}
    for path, get, _ in _strings(query["Service"]):
        try:
            _interpolate(get(), trial, [])
        except _BadFormat as exc:
            return f"Bad format '{get()}' in Service{path}: {exc}"
        except _BadEvaluation:
            pass  # reported by the trial render below, as Consul orders it
    if query["Template"]["Regexp"]:
        try:
            _regexp(query["Template"]["Regexp"])
        except ValueError as exc:
            return f"Bad Regexp: {exc}"
    for path, get, _ in _strings(query["Service"]):
        try:
            _interpolate(get(), trial, [])
        except _BadEvaluation as exc:
            return f"Bad evaluation for '{get()}' in Service{path}: {exc}"
    return ""


def _meta_matches(meta: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(meta.get(k) == v for k, v in wanted.items())


def _meta_pair(text: str) -> tuple[str, str]:
    key, _, value = text.partition(":")
    return key, value


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

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        token = self.headers.get("X-Consul-Token")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        status, headers, reply = self.owner.handle(method, self.path, token, body)
        if status == 0:
            self.close_connection = True
            return
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
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
