"""The options table is the one list of options: the Config fields, the README's
table and ``--help`` must agree with it, so adding an option is one row (and a
Config field), and forgetting one of the others fails here."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from dnsd.config import OPTIONS, RESTART_ONLY, Config, build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
DERIVED = {"datacenter_set", "config_file"}  # Config fields no option sets directly


def test_every_option_has_a_config_field_and_back() -> None:
    fields = {f.name for f in dataclasses.fields(Config)} - DERIVED
    assert fields == {opt.key for opt in OPTIONS}


def _readme_options() -> set[str]:
    text = README.read_text()
    section = text.split("\n## Options", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `--([a-z0-9-]+)", section, re.M))


def test_the_readme_table_lists_every_option() -> None:
    assert _readme_options() == {opt.name for opt in OPTIONS}


def test_help_shows_every_option() -> None:
    text = build_parser().format_help()
    shown = set(re.findall(r"--([a-z0-9-]+)", text))
    assert {opt.name for opt in OPTIONS} <= shown


def test_what_sighup_cannot_change_comes_from_the_table() -> None:
    assert set(RESTART_ONLY) == {opt.key for opt in OPTIONS if not opt.reload} | {
        "datacenter_set"}
