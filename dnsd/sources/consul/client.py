"""Talking to Consul through python-consul2: clients built the way dnsd needs
them, the requests dnsd makes (each with the mapping of its reply, so that a
client thread hands the loop finished model values), and errors in one line.
The only module that imports python-consul2 (and ``requests``).

python-consul2's synchronous client is used from daemon threads, one client
(and so one ``requests`` session, which is not meant to be shared across
threads) per thread; its asyncio client opens a new HTTP session for every
request, so it is not used. Imports: python-consul2, ``requests``,
``sources.consul.parse``, ``sources.consul.watch``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import urlparse

import consul
import requests

from dnsd.sources.consul.parse import (
    Checks,
    ConsulUnavailable,
    Definitions,
    NodeList,
    ServiceRead,
    Tags,
    definitions,
    node_list,
    parse_checks,
    parse_service_list,
    service_read,
)
from dnsd.sources.consul.watch import parse_index

T = TypeVar("T")

Client = Any  # consul.Consul: python-consul2 ships no type hints
Job = Callable[[Client], T]

MAX_REPLY_BYTES = 64 * 1024 * 1024
"""The largest reply read from Consul. Far above a big catalog (a node list is
a few hundred bytes a node), it stops a runaway or hostile reply from taking
the process's memory; a reply past it fails the read like an outage."""

_CHUNK = 1024 * 1024

ERRORS: tuple[type[BaseException], ...] = (
    consul.base.ConsulException, requests.exceptions.RequestException,
    ValueError, KeyError, TypeError, RecursionError)
"""What a request (and decoding its reply) may raise when Consul is unreachable,
refuses, or answers with something that is not what the API promises (JSON
nested deeper than the decoder's stack is a RecursionError)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the agent's HTTP API is and how to talk to it."""

    scheme: str
    host: str
    port: int
    verify: bool | str  # a CA bundle's path, or True for the system's
    token: str | None
    max_reply_bytes: int = MAX_REPLY_BYTES

    @classmethod
    def from_url(cls, url: str, token: str | None = None, ca: str | None = None,
                 max_reply_bytes: int = MAX_REPLY_BYTES) -> Endpoint:
        parsed = urlparse(url)
        scheme = parsed.scheme or "http"
        return cls(scheme=scheme, host=parsed.hostname or "127.0.0.1",
                   port=parsed.port or (443 if scheme == "https" else 8500),
                   verify=ca or True, token=token or None, max_reply_bytes=max_reply_bytes)


class ReplyTooLarge(ConsulUnavailable):
    """A reply longer than the bound; the message names the endpoint and the bound."""


class _BoundedHTTPClient(consul.std.HTTPClient):  # type: ignore[misc]
    """python-consul2's HTTP client, reading each reply up to a bound.

    Its own client reads the whole body, then keeps it twice (bytes and text).
    This one streams it, stops at ``max_bytes``, and hands a 200 reply's body
    to the JSON decoder as bytes, so only one copy is ever held.
    """

    def __init__(self, *args: Any, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_bytes = max_bytes

    def get(self, callback: Callable[[Any], T], path: str,
            params: Any = None, headers: Any = None) -> T:
        uri = self.uri(path, params)
        with self.session.get(uri, headers=headers, verify=self.verify, cert=self.cert,
                              timeout=self.timeout, stream=True) as response:
            body = self._read(response, path)
            code, reply_headers = response.status_code, response.headers
        # The JSON decoder takes the bytes as they are: no text copy of a big reply.
        text: bytearray | str = body if code == 200 else body.decode("utf-8", "replace")
        return callback(consul.base.Response(code, reply_headers, text, body))

    def _read(self, response: requests.Response, path: str) -> bytearray:
        limit = self.max_bytes
        too_large = ReplyTooLarge(f"{path}: reply larger than {limit:,} bytes "
                                  "(the bound on Consul replies)")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > limit:
                raise too_large
        return body


def connect(endpoint: Endpoint, timeout: float) -> Client:
    """A python-consul2 client whose requests give up after ``timeout`` seconds
    without a byte, and whose replies are read up to ``endpoint.max_reply_bytes``."""
    with warnings.catch_warnings():
        # python-consul2 warns about legacy APIs whenever a client is built,
        # whichever endpoints are used; dnsd uses none of them.
        warnings.simplefilter("ignore", DeprecationWarning)
        client = consul.Consul(host=endpoint.host, port=endpoint.port, scheme=endpoint.scheme,
                               verify=endpoint.verify)
    # python-consul2 lets CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN override its
    # arguments; dnsd's own precedence (flag > env) was applied in config, so
    # rebuild the connection and the token from what dnsd decided.
    client.http = _BoundedHTTPClient(endpoint.host, endpoint.port, endpoint.scheme,
                                     endpoint.verify, None, timeout,
                                     max_bytes=endpoint.max_reply_bytes)
    client.token = endpoint.token
    client.dc = None
    return client


def describe(exc: BaseException) -> str:
    """One line for an error from python-consul2 or requests."""
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, consul.base.ACLPermissionDenied):
        return "permission denied (check --consul-token)"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# --- the requests dnsd makes --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """How current the server that answered a read was (Consul's ``QueryMeta``,
    sent as ``X-Consul-KnownLeader`` and ``X-Consul-LastContact``): whether it
    knew a leader, and how long before replying it last heard from one (0 when
    the leader itself answered)."""

    known_leader: bool = True
    last_contact: float = 0.0  # seconds


def contact_of(headers: Mapping[str, str]) -> Contact:
    """The :class:`Contact` a reply's headers state; missing or garbled
    headers (an agent too old to send them) count as a current leader."""
    known = str(headers.get("X-Consul-KnownLeader", "true")).strip().lower() != "false"
    try:
        milliseconds = float(str(headers.get("X-Consul-LastContact", "0")))
    except ValueError:
        milliseconds = 0.0
    if not milliseconds >= 0:  # negative, or NaN
        milliseconds = 0.0
    return Contact(known, milliseconds / 1000.0)


Raw = tuple[object, object, Contact]
"""What one GET gives: the raw ``X-Consul-Index``, the decoded body (None for
a 404) and the reply's :class:`Contact`."""


def _raw(response: Any) -> Raw:
    """python-consul2's callback for every read dnsd makes: its status rules
    (4xx and 5xx raise; a 404 is no body), then the body and the headers."""
    consul.base.CB._status(response)
    data = None if response.code == 404 else json.loads(response.body)
    headers = response.headers
    return headers.get("X-Consul-Index"), data, contact_of(headers)


Ask = Callable[[Client, int | None, str | None], Raw]


def get(path: str, dc: str | None, stale: bool) -> Ask:
    """A GET of ``path`` in datacenter ``dc`` (None: the agent's), blocking
    from an index for at most a wait when given one.

    ``stale``: any server may answer (Consul's ``allow_stale``), so reads go
    on while the cluster has no leader. Sent as ``?stale`` on every read
    through the HTTP client itself: python-consul2's ``health.*`` and
    ``query.list`` cannot send it whatever the client's consistency setting.
    """

    def ask(client: Client, index: int | None, wait: str | None) -> Raw:
        params: list[tuple[str, str]] = [("dc", dc)] if dc else []
        if index:
            params.append(("index", str(index)))
            if wait:
                params.append(("wait", wait))
        if stale:
            params.append(("stale", "1"))
        headers = {"X-Consul-Token": client.token} if client.token else None
        result: Raw = client.http.get(_raw, path=path, params=params, headers=headers)
        return result

    return ask


Reply = tuple[int, T | None, Contact]
"""A read's result: the reply's index, its data mapped (None when the index did
not move: an unchanged reply is not worth mapping), and its :class:`Contact`."""


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """One endpoint dnsd reads: how to ask for it, and how to map its reply
    (given the reply's index) to model values."""

    ask: Ask
    mapping: Callable[[int, object], T]
    indexed: bool = True  # False: the endpoint sends no meaningful X-Consul-Index

    def job(self, index: int = 0, wait: str | None = None) -> Job[Reply[T]]:
        """A read from ``index`` (0: a full, non-blocking one) for at most ``wait``."""
        ask, mapping, indexed = self.ask, self.mapping, self.indexed

        def run(client: Client) -> Reply[T]:
            raw, data, contact = ask(client, index or None, wait)
            returned = parse_index(raw) if indexed else 1
            if index and returned == index:
                return returned, None, contact
            return returned, mapping(returned, data), contact

        return run


def catalog_services(dc: str | None, stale: bool) -> Query[Tags]:
    return Query(get("/v1/catalog/services", dc, stale),
                 lambda _, data: parse_service_list(data))


def catalog_nodes(dc: str | None, dc_name: str, stale: bool) -> Query[NodeList]:
    """``/v1/catalog/nodes`` of datacenter ``dc``, its nodes put in ``dc_name``."""
    return Query(get("/v1/catalog/nodes", dc, stale),
                 lambda _, data: node_list(data, dc_name))


def health_checks(dc: str | None, stale: bool) -> Query[Checks]:
    return Query(get("/v1/health/state/any", dc, stale), lambda _, data: parse_checks(data))


def health_service(name: str, dc: str | None, dc_name: str, stale: bool) -> Query[ServiceRead]:
    """``/v1/health/service/<name>`` of datacenter ``dc`` (None: the agent's),
    its instances put in datacenter ``dc_name``."""
    return Query(get(f"/v1/health/service/{name}", dc, stale),
                 lambda index, entries: service_read(name, index, entries, dc_name))


def prepared_queries(dc: str | None, stale: bool) -> Query[Definitions]:
    """``/v1/query`` of datacenter ``dc``: its prepared query definitions.
    Not a blocking endpoint (Consul ignores ``index`` there): read whole."""
    return Query(get("/v1/query", dc, stale), lambda _, data: definitions(data),
                 indexed=False)


def agent_datacenter(client: Client) -> str:
    """The agent's own datacenter (``/v1/agent/self``), lower-cased."""
    agent = client.agent.self()
    config = agent.get("Config") if isinstance(agent, Mapping) else None
    name = config.get("Datacenter") if isinstance(config, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ConsulUnavailable("agent/self names no datacenter")
    return name.lower()
