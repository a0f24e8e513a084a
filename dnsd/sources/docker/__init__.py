"""The Docker source: serves a Docker engine's running containers as instances
(README.md in this package has the design).

- ``naming``: registrator's naming rules, pure (inspect data in, instances out);
- ``engine``: the interface the source needs from an engine, and its values;
- ``follow``: one session's containers and what each engine event changes;
- ``source``: the source: sessions, outage, backoff, re-listing, publishing;
- ``client``: the Engine API through docker-py (the only module that imports it).

Importing this package loads no Docker client: ``client`` is imported when a
source first runs. Imports: ``sources.docker.naming``, ``sources.docker.source``.
"""

from dnsd.sources.docker.naming import (
    ContainerInstances,
    NamingSettings,
    Problem,
    build_view,
    container_instances,
    image_base_name,
    split_tags,
)
from dnsd.sources.docker.source import DockerSettings, DockerSource

__all__ = [
    "ContainerInstances",
    "DockerSettings",
    "DockerSource",
    "NamingSettings",
    "Problem",
    "build_view",
    "container_instances",
    "image_base_name",
    "split_tags",
]
