"""Shared fixtures: a real dnsd serving the test services files."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dnsd_process import DnsdProcess
from tests.docker_engine import unavailable_reason as docker_unavailable_reason
from tests.docker_image import Build, build_image
from tests.docker_lab import DockerLab
from tests.docker_lab import docker_lab as start_docker_lab

DATA = Path(__file__).parent / "data"
SERVICES = DATA / "services.toml"
BIG = DATA / "big.toml"


# dnsd's two UDP loops: the compiled one (dnsd._fastudp) and the Python one it
# falls back to. The behaviour tables run against both.
UDP_LOOPS = ("compiled", "python")


def udp_loop_env(loop: str) -> dict[str, str]:
    """The environment that has a dnsd process run ``loop``; skips the test
    when the compiled loop was not built."""
    if loop == "python":
        return {"DNSD_PURE_PYTHON": "1"}
    if importlib.util.find_spec("dnsd._fastudp") is None:
        pytest.skip("dnsd._fastudp is not built")
    return {"DNSD_PURE_PYTHON": "0"}


@pytest.fixture(params=UDP_LOOPS)
def udp_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Each UDP loop in turn, as a dnsd process's environment."""
    return udp_loop_env(request.param)


def _test_dnsd(env: dict[str, str] | None = None) -> DnsdProcess:
    return DnsdProcess(["--static", str(SERVICES), "--static", str(BIG),
                        "--alt-domain", "alt", "--node-name", "testnode",
                        "--allow-recursion", "192.0.2.0/24"], env=env)


@pytest.fixture(scope="module")
def dnsd() -> Iterator[DnsdProcess]:
    """dnsd on 127.0.0.1 (port 0) serving tests/data, with a second zone ``alt``.

    Recursion is allowed only to a range tests never come from, so names
    outside the zones get REFUSED whatever upstreams the machine has.
    """
    with _test_dnsd() as proc:
        yield proc


@pytest.fixture(scope="module", params=UDP_LOOPS)
def dnsd_each_loop(request: pytest.FixtureRequest) -> Iterator[DnsdProcess]:
    """The ``dnsd`` fixture's server, once with each UDP loop."""
    with _test_dnsd(udp_loop_env(request.param)) as proc:
        yield proc


@pytest.fixture(scope="session")
def docker_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerLab]:
    """One private Docker engine per session with dnsd as its ``dns`` server
    (``tests/docker_lab.py``); skipped with the reason where it cannot run."""
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"DOCKER NOT RUN: {reason}")
    with start_docker_lab(tmp_path_factory.mktemp("docker")) as lab:
        yield lab


@pytest.fixture(scope="session")
def dnsd_image(docker_lab: DockerLab) -> Build:
    """``docker/Dockerfile`` built on the session's engine as ``dnsd:local``
    (``tests/docker_image.py``: a local Debian base, wheels from the host)."""
    return build_image(docker_lab.engine)
