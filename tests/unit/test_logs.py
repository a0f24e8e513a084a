"""Log lines: text with an offset-carrying time, JSON objects with UTC times, the
worker named under --workers, and the query log kept at --log-level warning."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from dnsd import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield out
    logs.set_worker("")
    logs.apply_levels("warning", False)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_text_lines_carry_the_time_zone(stream: io.StringIO) -> None:
    logs.setup("info", "text", stream=stream)
    logging.getLogger("dnsd").info("table version %d", 3)
    line = stream.getvalue().strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d INFO dnsd: "
                        r"table version 3", line), line


def test_json_lines_are_objects_with_utc_time(stream: io.StringIO) -> None:
    logs.setup("info", "json", stream=stream)
    logging.getLogger("dnsd.static").warning('bad "file"\nsecond line')
    record = json.loads(stream.getvalue())
    assert record["level"] == "WARNING" and record["logger"] == "dnsd.static"
    assert record["message"] == 'bad "file"\nsecond line'
    assert record["time"].endswith("+00:00") and "worker" not in record


def test_every_line_names_its_worker(stream: io.StringIO) -> None:
    logs.setup("info", "text", stream=stream)
    logs.set_worker("worker 1")
    logging.getLogger("dnsd").info("listening")
    assert " INFO dnsd [worker 1]: listening" in stream.getvalue()


def test_the_query_log_is_not_swallowed_by_a_quieter_level(stream: io.StringIO) -> None:
    logs.setup("warning", "text", query_log=True, stream=stream)
    logging.getLogger("dnsd.query").info("web.service.consul. A NOERROR")
    logging.getLogger("dnsd").info("table version 2")
    assert "web.service.consul. A NOERROR" in stream.getvalue()
    assert "table version" not in stream.getvalue()
