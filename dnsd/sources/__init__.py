"""Sources: each owns one registry connection and publishes whole views.

A source never touches the table's internals and never blocks the event loop.
The narrow interface every source implements lives in ``dnsd.sources.base``.
"""
