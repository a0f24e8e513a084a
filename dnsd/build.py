"""Building one dnsd process from its configuration: each component's own
frozen settings taken from :class:`~dnsd.config.Config`, and the components
wired the one way data flows (sources -> table -> answer -> handler, forwarding
on the side).

No component takes the whole Config: this module (with ``sources.registry``
for the registry sources) is where it is read and split. The app receives the
wired :class:`Parts` and only runs their lifecycle, so a test or an embedding
program can hand it parts of its own (registry sources with short timeouts,
say) instead of subclassing it. Imports: ``answer``, ``config``, ``forward``,
``handler``, ``ratelimit``, ``server``, ``sources``, ``stats``, ``status``,
``table``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from dnsd.answer import Answerer, ZoneSettings
from dnsd.config import Config
from dnsd.forward import Forwarder, ForwardSettings, ForwardTiming
from dnsd.handler import Handler
from dnsd.ratelimit import RateLimiter
from dnsd.server import Tasks, TcpLimits, connection_cap
from dnsd.sources.base import Source
from dnsd.sources.registry import build_sources, datacenter_fixed, static_settings
from dnsd.sources.static import StaticSource
from dnsd.stats import QueryStats
from dnsd.status import StatusBoard
from dnsd.table import Table


@dataclass
class Parts:
    """Everything one dnsd process runs, wired; the app owns their lifecycle."""

    table: Table
    board: StatusBoard                 # the Sink every source reports to
    stats: QueryStats
    answerer: Answerer
    forwarder: Forwarder | None
    handler: Handler
    static_sources: list[StaticSource]  # read before serving, re-read on SIGHUP
    registry_sources: list[Source]      # their views are saved with --state-dir
    tcp_limits: TcpLimits
    tasks: Tasks = field(default_factory=Tasks)

    @property
    def sources(self) -> list[Source]:
        return [*self.static_sources, *self.registry_sources]


def zone_settings(cfg: Config) -> ZoneSettings:
    """What the answer stage needs: zones, TTLs, the health rule, NS glue,
    Consul's knobs (SOA timers, A record limit, node meta TXT, wan addresses)."""
    ns_addresses = tuple(host for host, _ in cfg.listen
                         if not ipaddress.ip_address(host).is_unspecified)
    return ZoneSettings(domains=cfg.domains, ttl=cfg.ttl, negative_ttl=cfg.negative_ttl,
                        only_passing=cfg.only_passing, ns_addresses=ns_addresses,
                        node_ttl=cfg.node_ttl, service_ttl=cfg.service_ttl,
                        a_record_limit=cfg.a_record_limit, soa_refresh=cfg.soa_refresh,
                        soa_retry=cfg.soa_retry, soa_expire=cfg.soa_expire,
                        node_meta_txt=cfg.node_meta_txt,
                        translate_wan_addrs=cfg.translate_wan_addrs)


def forward_settings(cfg: Config) -> ForwardSettings:
    """Forwarding's own settings, taken from the whole configuration."""
    # --recursor-timeout is the per-try UDP timeout (Consul's recursor_timeout);
    # TCP gets its handshake on top, and the whole attempt room for one try more.
    base = ForwardTiming()
    timing = dataclasses.replace(
        base, try_timeout=cfg.recursor_timeout,
        tcp_timeout=cfg.recursor_timeout + base.tcp_timeout - base.try_timeout,
        deadline=max(base.deadline, cfg.recursor_timeout + base.tcp_timeout))
    return ForwardSettings(upstreams=cfg.upstream, upstream_for=cfg.upstream_for,
                           policy=cfg.upstream_policy, listen=cfg.listen, domains=cfg.domains,
                           timing=timing)


def forwarder(cfg: Config) -> Forwarder | None:
    """The forwarder, or None when nothing is forwarded (``--no-forward``, or no
    upstream anywhere)."""
    if cfg.no_forward:
        return None
    built = Forwarder(forward_settings(cfg))
    return built if built.enabled else None


def rate_limiter(cfg: Config) -> RateLimiter | None:
    return RateLimiter(cfg.rate_limit) if cfg.rate_limit else None


def static_sources(cfg: Config) -> list[StaticSource]:
    settings = static_settings(cfg)
    return [StaticSource(path, settings) for path in cfg.static]


def build(cfg: Config, *, registry_sources: Sequence[Source] | None = None) -> Parts:
    """The parts of a dnsd process run with ``cfg``; ``registry_sources``
    replaces the ones the configuration enables (``sources.registry``)."""
    table = Table(cfg.datacenter, datacenter_fixed=datacenter_fixed(cfg))
    stats = QueryStats()
    answerer = Answerer(zone_settings(cfg))
    forward = forwarder(cfg)
    handler = Handler(table, answerer, forward, cfg.allow_recursion,
                      udp_answer_limit=cfg.udp_answer_limit, log_queries=cfg.query_log,
                      stats=stats, timed=cfg.metrics is not None,
                      rate_limiter=rate_limiter(cfg))
    registry = list(build_sources(cfg) if registry_sources is None else registry_sources)
    # Until a registry has been heard, a name it may know is not called absent.
    table.expect(*(source.name for source in registry))
    return Parts(table=table, board=StatusBoard(table, stats), stats=stats,
                 answerer=answerer, forwarder=forward, handler=handler,
                 static_sources=static_sources(cfg), registry_sources=registry,
                 # Raises the open-files limit where allowed; never more
                 # connections than fit.
                 tcp_limits=TcpLimits(max_connections=connection_cap()))
