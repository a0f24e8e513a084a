"""``python -m dnsd.healthcheck`` against real dnsd processes: it follows the
metrics address wherever the flags or the environment put it, asks the DNS
port when metrics are off, and is unhealthy until dnsd can answer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import SERVICES
from tests.dnsd_process import DnsdProcess
from tests.upstreams import free_port


def healthcheck(pid: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dnsd.healthcheck", "--pid", str(pid)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_follows_the_metrics_address(where: str) -> None:
    port = free_port()
    metrics = f"127.0.0.1:{port}"
    args, env = ["--static", str(SERVICES)], {}
    if where == "flag":
        args += ["--metrics", metrics]
    else:
        env["DNSD_METRICS"] = metrics
    with DnsdProcess(args, env=env) as proc:
        proc.wait_for_log("metrics on")
        result = healthcheck(proc.proc.pid)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == f"healthy: GET http://{metrics}/ready: 200 ok\n"


def test_asks_the_zone_soa_when_metrics_are_off() -> None:
    port = free_port()
    with DnsdProcess(["--listen", f"127.0.0.1:{port}", "--static", str(SERVICES),
                      "--domain", "test"], env={"DNSD_METRICS": ""}) as proc:
        result = healthcheck(proc.proc.pid)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == f"healthy: SOA test. at 127.0.0.1:{port}: Ok, 1 answer(s)\n"


def test_unhealthy_until_every_source_has_served_a_view() -> None:
    """A registry that never answers: /ready says 503 and why."""
    port = free_port()
    with DnsdProcess(["--consul", f"http://127.0.0.1:{free_port()}",
                      "--metrics", f"127.0.0.1:{port}"]) as proc:
        proc.wait_for_log("metrics on")
        result = healthcheck(proc.proc.pid)
        assert result.returncode == 1
        assert result.stdout.startswith(f"unhealthy: GET http://127.0.0.1:{port}/ready: 503 ")


def test_unhealthy_when_nothing_answers() -> None:
    """The process is dnsd by its command line but not (yet) serving."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "dnsd", "--listen", f"127.0.0.1:{free_port()}"])
    try:
        result = healthcheck(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: SOA consul. at 127.0.0.1:")
