"""The table of source kinds: which registries the configuration turns on, and
how each one's source is built. Adding a source is one module and one row here.

A row names the kind, says whether a configuration enables it, turns the
configuration into the source's own frozen settings (no source ever sees the
whole :class:`~dnsd.config.Config`), builds the source from them, and lists
the configuration fields it reads: a running source keeps the settings it was
built with, so each of those must be restart-only in the options table. A kind whose registry can
say which datacenter is local (Consul's agent does) says so, and the table
then lets it, unless the user fixed the datacenter.

Static services files are not a row: they are the embedded default, and the
app owns their lifecycle (checked before serving, re-read on SIGHUP, added and
removed with the configuration); ``static_settings`` is what they are read
with. Registry modules are imported only when their kind is enabled, so a
dnsd without Consul never loads python-consul2.

The only ``sources`` module that imports ``config``. Imports: ``config``,
``sources`` (each source module lazily).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dnsd.config import Config
from dnsd.sources.base import Source

if TYPE_CHECKING:
    from dnsd.sources.consul import ConsulSettings
    from dnsd.sources.docker import DockerSettings
    from dnsd.sources.static import StaticSettings
    from dnsd.sources.zookeeper import ZooKeeperSettings

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class SourceKind(Generic[S]):
    """One kind of registry source: a row of :data:`KINDS`."""

    name: str
    reads: tuple[str, ...]                 # the Config fields it is built from
    enabled: Callable[[Config], bool]
    settings: Callable[[Config], S]        # Config -> the source's own frozen settings
    source: Callable[[S], Source]          # settings -> a source, ready to run
    names_local_datacenter: bool = False   # its registry may say which datacenter is local

    def build(self, config: Config) -> Source:
        return self.source(self.settings(config))


# --- Consul -----------------------------------------------------------------------


def consul_settings(config: Config) -> ConsulSettings:
    from dnsd.sources.consul import ConsulSettings

    if config.consul is None:
        raise ValueError("the Consul source needs --consul")
    return ConsulSettings(url=config.consul, token=config.consul_token or None,
                          ca=config.consul_ca, datacenters=config.consul_datacenters,
                          agent_names_local=not config.datacenter_set,
                          consistent=config.consul_consistent,
                          max_reply_bytes=config.consul_max_reply * 1024 * 1024)


def _consul_source(settings: ConsulSettings) -> Source:
    from dnsd.sources.consul import ConsulSource

    return ConsulSource(settings)


# --- ZooKeeper --------------------------------------------------------------------


def zookeeper_settings(config: Config) -> ZooKeeperSettings:
    from dnsd.sources.zookeeper import ZooKeeperSettings

    if not config.zookeeper:
        raise ValueError("the ZooKeeper source needs --zookeeper")
    return ZooKeeperSettings(spec=config.zookeeper,
                             datacenter=config.zookeeper_datacenter or config.datacenter)


def _zookeeper_source(settings: ZooKeeperSettings) -> Source:
    from dnsd.sources.zookeeper import ZooKeeperSource

    return ZooKeeperSource(settings)


# --- Docker -------------------------------------------------------------------------


def docker_settings(config: Config) -> DockerSettings:
    from dnsd.sources.docker import DockerSettings, NamingSettings

    if config.docker is None:
        raise ValueError("the Docker source needs --docker")
    return DockerSettings(url=config.docker, naming=NamingSettings(
        node=config.node_name, datacenter=config.datacenter,
        published=config.docker_published, network=config.docker_network))


def _docker_source(settings: DockerSettings) -> Source:
    from dnsd.sources.docker import DockerSource

    return DockerSource(settings)


# --- static services files ----------------------------------------------------------


def static_settings(config: Config) -> StaticSettings:
    from dnsd.sources.static import StaticSettings

    return StaticSettings(node_name=config.node_name, datacenter=config.datacenter)


# --- the table ----------------------------------------------------------------------

KINDS: tuple[SourceKind[Any], ...] = (
    SourceKind("consul",
               reads=("consul", "consul_token", "consul_ca", "consul_datacenters",
                      "datacenter_set", "consul_consistent", "consul_max_reply"),
               enabled=lambda config: config.consul is not None,
               settings=consul_settings, source=_consul_source,
               names_local_datacenter=True),
    SourceKind("zookeeper",
               reads=("zookeeper", "zookeeper_datacenter", "datacenter"),
               enabled=lambda config: bool(config.zookeeper),
               settings=zookeeper_settings, source=_zookeeper_source),
    SourceKind("docker",
               reads=("docker", "docker_published", "docker_network", "node_name",
                      "datacenter"),
               enabled=lambda config: config.docker is not None,
               settings=docker_settings, source=_docker_source),
)

def build_sources(config: Config) -> list[Source]:
    """The registry sources ``config`` enables, in table order."""
    return [kind.build(config) for kind in KINDS if kind.enabled(config)]


def datacenter_fixed(config: Config) -> bool:
    """True when no enabled source may change which datacenter is local: the
    user named it, or no enabled registry can say."""
    return config.datacenter_set or not any(
        kind.names_local_datacenter and kind.enabled(config) for kind in KINDS)
