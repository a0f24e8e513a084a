"""Sources: each owns one registry connection and publishes whole views.

A source never touches the table's internals and never blocks the event loop.

- ``base``: the Source and Sink protocols, SourceState (the narrow interface);
- ``backoff``: capped exponential backoff with jitter (the one copy);
- ``threads``: client threads for blocking libraries, and the hop to the loop;
- ``publisher``: coalesced publication, once-per-change state and warnings;
- ``registry``: the table of source kinds (the only module reading Config);
- ``static``: services files; ``zookeeper``: registrator's tree in ZooKeeper;
  ``consul``: a Consul catalog (a package; see its README.md).

A new source is one module (or package) taking its own frozen settings and
using the shared pieces above, plus one row in ``registry.KINDS``.
"""
