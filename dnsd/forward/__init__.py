"""Forwarding names that are not dnsd's to upstream resolvers, split as CoreDNS
splits its forward plugin:

- ``forwarder``: the decision (cache hit, coalescing, stale, SERVFAIL/REFUSED);
- ``policy``: the try order (sequential, random);
- ``health``: upstream health, down after failures, and probing;
- ``routes``: per-domain routes, most specific wins; default upstreams;
- ``exchange``: one query to one upstream over UDP or TCP;
- ``cache``: the TTL cache of forwarded answers.
"""

from dnsd.forward.forwarder import Forwarder, ForwardSettings, ForwardTiming

__all__ = ["ForwardSettings", "ForwardTiming", "Forwarder"]
