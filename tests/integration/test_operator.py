"""What an operator sees: the table as JSON (/v1/table), as a status page in a
real headless Chromium, and in the terminal (``dnsd table``); ``dnsd check``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess, run_cli, wait_until
from tests.upstreams import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("DNSD_TEST_ARTIFACTS", tempfile.gettempdir()))


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[DnsdProcess, int]]:
    """dnsd with a services file (up) and a Consul that is not there (stale)."""
    metrics = free_port()
    dead_consul = f"http://127.0.0.1:{free_port()}"
    with DnsdProcess(["--static", str(SERVICES), "--consul", dead_consul,
                      "--metrics", f"127.0.0.1:{metrics}"]) as proc:
        def stale() -> bool:
            data = json.loads(_get(f"http://127.0.0.1:{metrics}/v1/table")[2])
            return any(s["state"] == "stale" for s in data["sources"].values())
        wait_until(stale)
        yield proc, metrics


def test_v1_table_lists_sources_services_and_instances(served: tuple[DnsdProcess, int]) -> None:
    _, metrics = served
    status, ctype, body = _get(f"http://127.0.0.1:{metrics}/v1/table")
    assert status == 200 and ctype == "application/json"
    data = json.loads(body)
    assert data["version"] >= 1 and data["local_datacenter"] == "dc1"
    sources = data["sources"]
    assert sources[f"static:{SERVICES}"] == {"state": "up", "reason": ""}
    consul = next(v for k, v in sources.items() if k.startswith("consul:"))
    assert consul["state"] == "stale" and consul["reason"]
    web = next(s for s in data["services"] if s["name"] == "web" and s["datacenter"] == "dc1")
    addresses = {i["address"] for i in web["instances"]}
    assert addresses == {"10.1.0.11", "10.1.0.12", "10.1.0.13"}
    first = web["instances"][0]
    assert set(first) == {"id", "address", "port", "tags", "node", "health", "source"}
    assert first["source"] == f"static:{SERVICES}"
    assert {i["health"] for s in data["services"] for i in s["instances"]} >= {
        "passing", "critical"}


def test_dnsd_table_prints_it(served: tuple[DnsdProcess, int]) -> None:
    _, metrics = served
    result = run_cli(["table", "--metrics", f"127.0.0.1:{metrics}"])
    assert result.returncode == 0, result.stderr
    assert "web.service.dc1" in result.stdout and "10.1.0.11:8080" in result.stdout
    assert "! consul:" in result.stdout  # the stale source stands out
    as_json = run_cli(["table", "--metrics", f"127.0.0.1:{metrics}", "--json"])
    assert json.loads(as_json.stdout)["sources"]


def test_dnsd_table_without_a_server_says_so() -> None:
    result = run_cli(["table", "--metrics", f"127.0.0.1:{free_port()}"])
    assert result.returncode == 2 and "cannot read" in result.stderr
    result = run_cli(["table"], env={"DNSD_METRICS": ""})
    assert result.returncode == 2 and "--metrics" in result.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_status_page_in_a_real_browser(served: tuple[DnsdProcess, int],
                                       tmp_path: Path) -> None:
    _, metrics = served
    url = f"http://127.0.0.1:{metrics}/"
    assert _get(url)[1].startswith("text/html")
    flags = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=412,915"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert 'class="service">web.service.dc1' in dom
    assert 'class="source stale"' in dom and 'class="state stale">stale' in dom
    assert "10.1.0.11:8080" in dom
    shot = SHOTS / "dnsd-status-page.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120,
                   check=True)
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"status page screenshot: {shot}")


def test_check_accepts_a_good_configuration_and_binds_nothing(tmp_path: Path) -> None:
    result = run_cli(["check", "--static", str(SERVICES), "--listen", "127.0.0.1:1"])
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout


def test_check_names_each_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[services]]\nname = "web"\naddress = "10.0.0.400"\n'
                   '[[services]]\nname = "api"\naddress = "10.0.0.2"\nprot = 80\n')
    result = run_cli(["check", "--static", str(SERVICES), "--static", str(bad)])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(str(bad) in line for line in lines)
    assert "entry 1 (web): address" in lines[0]
    assert "entry 2 (api): prot: unknown field (did you mean port?)" in lines[1]
    result = run_cli(["check", "--ttl", "soon"])
    assert result.returncode == 2 and "--ttl" in result.stderr
