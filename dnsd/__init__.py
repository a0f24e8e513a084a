"""dnsd: an embedded DNS server that answers service names from memory."""

__version__ = "0.1.0"
