"""The one exception family of dnsd.

Every error dnsd raises on purpose derives from :class:`DnsdError`; its message is
the one line a user sees. Only ``cli`` turns these into an exit status; the server
edge turns anything else into SERVFAIL.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with control characters escaped: a message naming bad input
    (a name ending in a newline, say) must still be one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class DnsdError(Exception):
    """A dnsd error whose message is fit to show a user as one line."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class ConfigError(DnsdError):
    """A bad option, environment variable or configuration file value."""


class ServicesFileError(DnsdError):
    """A services file that cannot be read or that holds an invalid entry.

    The message names the file, the entry (by its index and, when known, its
    name) and the field, e.g. ``services.toml: services[2] (web): port: must be
    an integer from 0 to 65535``.
    """

    def __init__(self, path: str, message: str, entry: str | None = None,
                 field: str | None = None) -> None:
        self.path = path
        self.entry = entry
        self.field = field
        parts = [path]
        if entry is not None:
            parts.append(entry)
        if field is not None:
            parts.append(field)
        parts.append(message)
        super().__init__(": ".join(parts))


class StateFileError(DnsdError):
    """A saved table that is corrupt, foreign or from another format version."""
