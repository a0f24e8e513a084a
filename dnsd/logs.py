"""Logging: where dnsd's lines go and what they look like.

``text`` (the default) is one line per event with an ISO 8601 local time that
carries its offset (``2026-12-06T03:30:01.123+00:00``), so lines from several
hosts sort and compare. ``json`` is one object per line (time in UTC, level,
logger, message, and any fields) written by python-json-logger, which owns the
escaping. Under ``--workers N`` every line says which worker wrote it. The query
log (``--query-log``) has its own logger, ``dnsd.query``, kept at INFO so that
``--log-level warning`` quiets dnsd without swallowing the lines asked for.
Imports: the standard library and python-json-logger.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

QUERY_LOGGER = "dnsd.query"


class _Worker(logging.Filter):
    """Stamps each record with the worker that wrote it ("" in a single process)."""

    def __init__(self) -> None:
        super().__init__()
        self.label = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.label
        return True


class TextFormatter(logging.Formatter):
    """``TIME LEVEL logger[ worker N]: message``, the time with its UTC offset."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(worker)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        when = datetime.datetime.fromtimestamp(record.created).astimezone()
        return when.isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        label = getattr(record, "worker", "")
        saved = record.__dict__.get("worker")
        record.worker = f" [{label}]" if label else ""
        try:
            return super().format(record)
        finally:
            record.worker = saved


class UtcJsonFormatter(JsonFormatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s",
                         rename_fields={"levelname": "level", "name": "logger"},
                         timestamp="time")

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["time"] = datetime.datetime.fromtimestamp(
            record.created, tz=datetime.UTC).isoformat(timespec="milliseconds")
        if not log_data.get("worker"):
            log_data.pop("worker", None)


_worker = _Worker()


def setup(level: str = "info", fmt: str = "text", *, query_log: bool = False,
          stream: TextIO | None = None) -> None:
    """Configure the root logger for the dnsd process (the command calls this)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(UtcJsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_worker)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    apply_levels(level, query_log)


def apply_levels(level: str, query_log: bool) -> None:
    """Set dnsd's log level, keeping the query log's lines when it is on."""
    logging.getLogger().setLevel(getattr(logging, level.upper()))
    logging.getLogger(QUERY_LOGGER).setLevel(logging.INFO if query_log else logging.NOTSET)


def set_worker(label: str) -> None:
    """Name the process in every line from now on (``worker 1``, ``supervisor``)."""
    _worker.label = label
