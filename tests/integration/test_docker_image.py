"""The project's image, built and run on a real Docker engine.

``docker/Dockerfile`` is built from the repository root (``tests/docker_image.py``:
a local Debian base and wheels, since no registry is reachable here), then run
the way the README and the Compose files run it: on a user-defined network,
published on loopback, with every capability dropped, a read-only root
filesystem and its non-root user; and asked for service names, forwarded names
and container names, ``/ready``, and its HEALTHCHECK's verdict wherever the
metrics address is. Needs root and a private engine (``tests/docker_engine.py``).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.dnsd_process import wait_until
from tests.docker_engine import DOCKER, Container
from tests.docker_image import ROOT, Build, base_image
from tests.docker_lab import NETWORK, OUTSIDE_ADDRESS, OUTSIDE_NAME, DockerLab
from tests.upstreams import free_port

IMAGE = "dnsd:local"
EXAMPLE_WEB = {"198.51.100.11", "198.51.100.12", "198.51.100.13"}  # docker/services.toml
# Checks every second instead of every 10 s: the same command, sooner.
FAST_HEALTH = ["--health-interval=1s"]


def addresses(reply: dns.message.Message) -> set[str]:
    return {rd.address for rrset in reply.answer
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset}


def ask(server: str, name: str, rdtype: str = "A", port: int = 53,
        tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, server, port=port, timeout=5)
    return dns.query.udp(query, server, port=port, timeout=5)


@pytest.fixture(scope="module")
def image(dnsd_image: Build, docker_lab: DockerLab) -> dict[str, Any]:
    inspected: list[dict[str, Any]] = json.loads(
        docker_lab.engine.docker("image", "inspect", dnsd_image.tag).stdout)
    return inspected[0]


def test_image_build(dnsd_image: Build, image: dict[str, Any]) -> None:
    """Built from a small context (.dockerignore), small, labelled, non-root,
    with a volume for its state and a HEALTHCHECK that asks dnsd itself."""
    context = re.search(r"transferring context: ([0-9.]+)([kM]?B)", dnsd_image.output)
    assert context, dnsd_image.output
    size = float(context.group(1)) * {"B": 1, "kB": 1e3, "MB": 1e6}[context.group(2)]
    assert size < 2e6, f"build context {context.group(0)}: .dockerignore lets too much in"
    assert dnsd_image.size < 200e6, dnsd_image.size
    config = image["Config"]
    assert config["User"] == "10053:10053"
    assert set(config["Volumes"]) == {"/var/lib/dnsd"}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "dnsd"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert config["Healthcheck"]["Test"] == ["CMD", "/opt/dnsd/bin/python", "-m",
                                             "dnsd.healthcheck"]


@pytest.fixture(scope="module")
def readme_run(dnsd_image: Build, docker_lab: DockerLab) -> Iterator[tuple[Container, int]]:
    """As the README runs it: defaults, published on loopback."""
    port = free_port()
    container = docker_lab.engine.run(
        IMAGE, name="dnsdt-image-readme", network=NETWORK,
        publish=[f"127.0.0.1:{port}:53/udp", f"127.0.0.1:{port}:53/tcp"], extra=FAST_HEALTH)
    yield container, port
    container.remove()


def test_readme_run_answers_on_the_published_port(readme_run: tuple[Container, int]) -> None:
    container, port = readme_run
    container.wait_health("healthy")
    assert addresses(ask("127.0.0.1", "web.service.consul", port=port)) == EXAMPLE_WEB
    assert addresses(ask("127.0.0.1", "web.service.consul", port=port, tcp=True)) == \
        EXAMPLE_WEB
    assert addresses(ask("127.0.0.1", "api.service.consul", "AAAA", port=port)) == \
        {"2001:db8::12"}


@pytest.fixture(scope="module")
def locked_down(dnsd_image: Build, docker_lab: DockerLab) -> Iterator[Container]:
    """As the Compose files run it: no capabilities, read-only, no new privileges."""
    container = docker_lab.engine.run(
        IMAGE, name="dnsdt-image-locked", network=NETWORK, ip=docker_lab.network.address(53),
        cap_drop=["ALL"], read_only=True,
        extra=["--security-opt", "no-new-privileges", *FAST_HEALTH])
    yield container
    container.remove()


def test_locked_down_container_is_healthy_and_answers(docker_lab: DockerLab,
                                                      locked_down: Container) -> None:
    locked_down.wait_health("healthy")
    server = locked_down.address()
    assert addresses(ask(server, "web.service.consul")) == EXAMPLE_WEB
    # Outside its zone, through Docker's resolver (127.0.0.11): the engine's
    # dns (dnsd on the host), then that dnsd's upstream.
    assert addresses(ask(server, OUTSIDE_NAME)) == {OUTSIDE_ADDRESS}
    # Container names: Docker's resolver knows them.
    assert addresses(ask(server, "dnsdt-image-locked")) == {server}
    with urllib.request.urlopen(f"http://{server}:9153/ready", timeout=5) as response:
        assert response.status == 200


def test_locked_down_container_has_no_privilege(locked_down: Container) -> None:
    """Non-root, no effective or permitted capability, nothing writable but
    its state volume: port 53 is bound without any of it."""
    status = locked_down.exec("cat", "/proc/1/status", check=True).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[0] == "10053"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0
    assert locked_down.exec("touch", "/var/lib/dnsd/probe").returncode == 0
    assert locked_down.exec("touch", "/etc/dnsd/probe").returncode != 0
    # No file capability on the interpreter (it made the image fail to start
    # under --cap-drop ALL).
    probe = locked_down.exec("/opt/dnsd/bin/python", "-c",
                             "import os, sys\n"
                             "try: os.getxattr(os.path.realpath(sys.executable), "
                             "'security.capability')\n"
                             "except OSError: print('none')")
    assert probe.stdout.strip() == "none", probe.stdout + probe.stderr


def health_log(container: Container) -> list[dict[str, Any]]:
    health = container.inspect()["State"].get("Health") or {}
    return list(health.get("Log") or [])


def test_healthcheck_follows_the_metrics_address(dnsd_image: Build,
                                                 docker_lab: DockerLab) -> None:
    """The same HEALTHCHECK, wherever the configuration puts metrics: a flag
    after the image name, metrics off (then the zone's SOA on port 53), and a
    registry that never answers (/ready says 503 and why)."""
    cases = {
        "metrics-flag": (["--static", "/etc/dnsd/services.toml",
                          "--metrics", "127.0.0.1:9999"], {},
                         "healthy: GET http://127.0.0.1:9999/ready: 200"),
        "metrics-off": ([], {"DNSD_METRICS": ""},
                        "healthy: SOA consul. at 127.0.0.1:53: Ok"),
        "waiting": (["--consul", f"http://127.0.0.1:{free_port()}"], {},
                    "unhealthy: GET http://127.0.0.1:9153/ready: 503"),
    }
    started: dict[str, Container] = {}
    try:
        for name, (args, env, _) in cases.items():
            started[name] = docker_lab.engine.run(
                IMAGE, *args, name=f"dnsdt-health-{name}", network=NETWORK, env=env,
                cap_drop=["ALL"], read_only=True, extra=FAST_HEALTH)
        for name in ("metrics-flag", "metrics-off"):
            started[name].wait_health("healthy")
            assert health_log(started[name])[-1]["Output"].startswith(cases[name][2])
        waiting = started["waiting"]
        wait_until(lambda: any(entry["Output"].startswith(cases["waiting"][2])
                               for entry in health_log(waiting)), timeout=30, interval=0.2)
        assert all(entry["ExitCode"] == 1 for entry in health_log(waiting))
        assert waiting.health() != "healthy"
    finally:
        for container in started.values():
            container.remove()


def free_privileged_port() -> int:
    """A port below 1024 free for UDP and TCP on 127.0.0.1 (binding it needs
    CAP_NET_BIND_SERVICE outside a container's own network namespace)."""
    for port in range(1000, 900, -1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                udp.bind(("127.0.0.1", port))
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 901-1000")


def test_host_network_needs_root_with_one_capability(dnsd_image: Build,
                                                     docker_lab: DockerLab) -> None:
    """With --network host the host's ip_unprivileged_port_start applies: the
    image's user cannot bind a low port; root with only NET_BIND_SERVICE can."""
    port = free_privileged_port()
    # An upstream on loopback: this namespace is the host's, and so is its resolv.conf.
    args = ["--listen", f"127.0.0.1:{port}", "--static", "/etc/dnsd/services.toml",
            "--upstream", "127.0.0.1:9"]
    refused = docker_lab.engine.docker(
        "run", "--rm", "--network", "host", "--cap-drop", "ALL", "--read-only",
        "--env", "DNSD_METRICS=", IMAGE, *args, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Permission denied" in refused.stderr and "CAP_NET_BIND_SERVICE" in refused.stderr
    container = docker_lab.engine.run(
        IMAGE, *args, name="dnsdt-image-host", network="host", user="0:0",
        cap_drop=["ALL"], cap_add=["NET_BIND_SERVICE"], read_only=True,
        env={"DNSD_METRICS": ""})
    try:
        wait_until(lambda: container.status != "running" or "listening on" in
                   container.logs(), timeout=30, interval=0.2)
        assert addresses(ask("127.0.0.1", "web.service.consul", port=port)) == EXAMPLE_WEB, \
            container.logs()
    finally:
        container.remove()


@pytest.mark.slow
def test_classic_builder_builds_the_image(dnsd_image: Build, docker_lab: DockerLab) -> None:
    """Debian's docker.io 20.10 and docker-compose 1.29 build with the classic
    builder unless told otherwise: the Dockerfile needs nothing BuildKit-only.
    About a minute on vfs (the classic builder copies the root filesystem per
    step): run by `make test-docker`, not `make test`."""
    from dnsd import __version__

    base = base_image(docker_lab.engine)
    result = subprocess.run(
        [DOCKER, "build", "--network", "none", "-f", "docker/Dockerfile",
         "--build-arg", f"BASE={base}", "--build-arg", f"BUILDER={base}",
         "-t", "dnsd:classic", "."],
        cwd=ROOT, env={**docker_lab.engine.env, "DOCKER_BUILDKIT": "0"},
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Successfully tagged dnsd:classic" in result.stdout
    version = docker_lab.engine.run_once("dnsd:classic", "--version", network="none")
    assert version.stdout.strip() == f"dnsd {__version__}", version.stdout + version.stderr
    docker_lab.engine.docker("rmi", "dnsd:classic")
