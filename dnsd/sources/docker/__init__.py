"""The Docker source: serves a Docker engine's running containers as instances.

``naming`` holds registrator's naming rules as pure functions (inspect data in,
instances out). Importing this package loads no Docker client.
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

__all__ = [
    "ContainerInstances",
    "NamingSettings",
    "Problem",
    "build_view",
    "container_instances",
    "image_base_name",
    "split_tags",
]
