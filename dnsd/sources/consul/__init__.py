"""The Consul source (see README.md in this package for its design).

- ``source``: the source: one session per datacenter, outage, backoff, resync;
- ``follow``: following a synced datacenter (an object with one method per step);
- ``watch``: blocking queries: index rules, expiry slots, which services to watch;
- ``parse``: Consul's JSON as model values, and the diffs;
- ``client``: python-consul2 clients and the requests dnsd makes (the only
  module that imports python-consul2).

Imports: ``sources.consul.parse``, ``sources.consul.source``.
"""

from dnsd.sources.consul.parse import ConsulUnavailable
from dnsd.sources.consul.source import ConsulSettings, ConsulSource

__all__ = ["ConsulSettings", "ConsulSource", "ConsulUnavailable"]
