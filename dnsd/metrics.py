"""Operations endpoint: ``/metrics`` (Prometheus text), ``/health``, ``/ready``,
``/v1/table`` (the table as JSON) and ``/`` (a status page of the same).

Metrics are collected at scrape time from the plain counters the hot path keeps
(``stats.QueryStats``, the forwarder's and sources' counters), through a
collector on a registry of our own (no global registration), beside
prometheus-client's process and platform collectors and ``dnsd_build_info``.
The HTTP server is a few lines of asyncio: a handful of GET endpoints need no
framework. Imports: prometheus-client, ``model``, ``stats``, ``table``,
``status``, ``tableview``, ``sources.base``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dnsd import __version__
from dnsd.model import View
from dnsd.sources.base import Gauge, SourceState
from dnsd.stats import LATENCY_BUCKETS, QueryStats
from dnsd.status import SourceStatus
from dnsd.table import Table
from dnsd.tableview import table_html, table_json

log = logging.getLogger("dnsd.metrics")

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED"}
QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 65: "HTTPS", 255: "ANY"}


@dataclass
class MetricsInputs:
    """Everything the endpoint reads, as callables so values are read at scrape time."""

    stats: QueryStats
    table: Table
    statuses: Callable[[], Mapping[str, SourceStatus]]
    ready: Callable[[], tuple[bool, str]]
    forwarder_stats: Callable[[], Any | None] = lambda: None
    # (upstream, up, queries, failures) per upstream, and forward-cache entries
    upstreams: Callable[[], list[tuple[str, bool, int, int]]] = lambda: []
    forward_cache_entries: Callable[[], int | None] = lambda: None
    source_counters: Callable[[], Mapping[str, Mapping[str, int]]] = lambda: {}
    source_gauges: Callable[[], Mapping[str, Sequence[Gauge]]] = lambda: {}
    before_scrape: Callable[[], None] = lambda: None  # folds the hot path's counts in
    views: Callable[[], Mapping[str, View]] = lambda: {}  # each source's last view


class DnsdCollector(Collector):
    def __init__(self, inputs: MetricsInputs) -> None:
        self.inputs = inputs

    def collect(self) -> Iterator[Metric]:
        self.inputs.before_scrape()
        info = GaugeMetricFamily("dnsd_build_info", "dnsd's version and Python's; always 1",
                                 labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info
        stats = self.inputs.stats
        replies = CounterMetricFamily("dnsd_responses", "Replies sent, by query type, "
                                      "rcode and transport", labels=["qtype", "rcode",
                                                                     "transport"])
        for (qtype, rcode, transport), count in sorted(stats.replies.items()):
            replies.add_metric([QTYPES.get(qtype, str(qtype)), RCODES.get(rcode, str(rcode)),
                                transport], count)
        yield replies
        yield CounterMetricFamily("dnsd_dropped_packets", "Packets dropped unanswered "
                                  "(too short, or not a query)", value=stats.dropped)
        yield CounterMetricFamily("dnsd_rate_limited", "UDP replies withheld or slipped by "
                                  "the rate limit", value=stats.rate_limited)
        latency = HistogramMetricFamily("dnsd_response_seconds", "Time from query to reply")
        latency.add_metric([], _buckets(stats.latency_counts), sum_value=stats.latency_sum)
        yield latency
        propagation = HistogramMetricFamily(
            "dnsd_propagation_seconds", "Time from a source seeing a registry change to the "
            "table answering with it")
        propagation.add_metric([], _buckets(stats.propagation_counts),
                               sum_value=stats.propagation_sum)
        yield propagation

        snapshot = self.inputs.table.snapshot
        yield GaugeMetricFamily("dnsd_table_version", "Version of the served table",
                                value=snapshot.version)
        yield GaugeMetricFamily("dnsd_table_services", "Services in the table",
                                value=len(snapshot.services))
        yield GaugeMetricFamily("dnsd_table_instances", "Instances in the table",
                                value=snapshot.instance_count)
        yield GaugeMetricFamily("dnsd_table_age_seconds", "Seconds since the table last "
                                "changed", value=max(0.0, time.time() - snapshot.built_at))

        state = GaugeMetricFamily("dnsd_source_state", "1 for the state each source is in",
                                  labels=["source", "state"])
        for name, status in sorted(self.inputs.statuses().items()):
            for candidate in SourceState:
                state.add_metric([name, candidate.value],
                                 1.0 if status.state is candidate else 0.0)
        yield state
        ready, _ = self.inputs.ready()
        yield GaugeMetricFamily("dnsd_ready", "1 when every source has served a view",
                                value=1.0 if ready else 0.0)

        counters = self.inputs.source_counters()
        if counters:
            family = CounterMetricFamily("dnsd_source_events", "Source events by kind",
                                         labels=["source", "event"])
            for source, events in sorted(counters.items()):
                for event, count in sorted(events.items()):
                    family.add_metric([source, event], count)
            yield family
        yield from _gauge_families(self.inputs.source_gauges())

        upstreams = self.inputs.upstreams()
        if upstreams:
            up = GaugeMetricFamily("dnsd_upstream_up", "1 while an upstream answers, 0 while "
                                   "it is marked down and probed", labels=["upstream"])
            queries = CounterMetricFamily("dnsd_upstream_queries", "Tries sent to an upstream",
                                          labels=["upstream"])
            failures = CounterMetricFamily("dnsd_upstream_failures", "Tries that failed "
                                           "(timeout, error, or an rcode that is no answer)",
                                           labels=["upstream"])
            for name, alive, sent, failed in upstreams:
                up.add_metric([name], 1.0 if alive else 0.0)
                queries.add_metric([name], sent)
                failures.add_metric([name], failed)
            yield up
            yield queries
            yield failures
        entries = self.inputs.forward_cache_entries()
        if entries is not None:
            yield GaugeMetricFamily("dnsd_forward_cache_entries", "Answers in the forwarding "
                                    "cache", value=entries)
        fwd = self.inputs.forwarder_stats()
        if fwd is not None:
            for field_name, value in sorted(vars_of(fwd).items()):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    yield CounterMetricFamily(f"dnsd_forward_{field_name}",
                                              f"Forwarding: {field_name.replace('_', ' ')}",
                                              value=value)


def _gauge_families(gauges: Mapping[str, Sequence[Gauge]]) -> Iterator[Metric]:
    """Each source's gauges, one family per name, with the ``source`` label first."""
    families: dict[str, GaugeMetricFamily] = {}
    for source, values in sorted(gauges.items()):
        for gauge in values:
            family = families.get(gauge.name)
            if family is None:
                family = families[gauge.name] = GaugeMetricFamily(
                    gauge.name, gauge.help, labels=["source", *gauge.labels])
            family.add_metric([source, *gauge.labels.values()], gauge.value)
    yield from families.values()


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative (upper bound, count) pairs from per-bucket counts."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(LATENCY_BUCKETS, counts, strict=False):
        running += count
        buckets.append((str(bound), running))
    buckets.append(("+Inf", running + counts[-1]))
    return buckets


def vars_of(obj: Any) -> dict[str, Any]:
    """Fields of a dataclass-like stats object (slotted or not)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {name: getattr(obj, name) for name in obj.__dataclass_fields__}
    return dict(vars(obj))


class MetricsServer:
    """A tiny HTTP/1.1 server for the three operations endpoints."""

    def __init__(self, inputs: MetricsInputs) -> None:
        self.inputs = inputs
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DnsdCollector(inputs))
        ProcessCollector(registry=self.registry)   # process_cpu_seconds_total, memory, fds
        PlatformCollector(registry=self.registry)  # python_info
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port``; raises ``OSError`` when it cannot."""
        self.server = await asyncio.start_server(self._serve, host, port)
        bound = self.server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(
                self.registry)
        if path == "/health":
            return 200, "text/plain", b"ok\n"
        if path in ("/", "/v1/table"):
            ready, _ = self.inputs.ready()
            data = table_json(self.inputs.table.snapshot, self.inputs.views(),
                              self.inputs.statuses(), ready)
            if path == "/":
                return 200, "text/html; charset=utf-8", table_html(data).encode()
            return 200, "application/json", json.dumps(data, indent=1).encode() + b"\n"
        if path == "/ready":
            ready, reason = self.inputs.ready()
            stale = [f"{name}: {s.reason or 'stale'}" for name, s in
                     sorted(self.inputs.statuses().items()) if s.state is SourceState.STALE]
            lines = [reason, *(f"stale {line}" for line in stale)]
            return (200 if ready else 503), "text/plain", ("\n".join(lines) + "\n").encode()
        return 404, "text/plain", (b"not found: try /, /v1/table, /metrics, /health "
                                   b"or /ready\n")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            line = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(line) < 2 or line[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"only GET\n"
            else:
                status, ctype, body = self.respond(line[1])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}[status]
            head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
            writer.write(head if line and line[0] == "HEAD" else head + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        except Exception:
            log.exception("metrics endpoint failed")
        finally:
            writer.close()
