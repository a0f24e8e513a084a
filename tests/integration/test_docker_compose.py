"""The Compose demos: valid for Debian's docker-compose 1.29, and the static
and Docker demos brought up for real.

``docker/compose.static.yml`` and ``docker/compose.docker.yml`` run with
docker-compose 1.29 on the private engine (``tests/docker_engine.py``), with
the image the tests built (``dnsd:local``) and the test busybox image tagged as
the demos' ``busybox:1.36``. The only changes made to the shipped files: the
demo subnet moves to the test's own /24 (with a bridge name of the test's), the
host ports to free ones, and (the Docker demo) the engine's socket is the
private engine's. The Consul and ZooKeeper demos need upstream images that
cannot be pulled here: ``docker-compose config`` checks them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
import yaml

from tests.dnsd_process import wait_until
from tests.docker_engine import Engine, Subnet, reserve_subnet
from tests.docker_image import Build
from tests.docker_lab import BUSYBOX, DockerLab
from tests.upstreams import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="COMPOSE NOT RUN: docker-compose "
                                   "missing; apt-get install docker-compose")
DEMO_SUBNET = "172.28.0."
DOCKER_DEMO_SUBNET = "172.29.0."
ENGINE_SOCKET = "/var/run/docker.sock"


@needs_compose
@pytest.mark.parametrize("name", ["compose.static.yml", "compose.consul.yml",
                                  "compose.zookeeper.yml", "compose.docker.yml"])
def test_compose_file_is_valid_for_docker_compose_1_29(name: str) -> None:
    assert COMPOSE is not None
    result = subprocess.run([COMPOSE, "-f", str(DOCKER / name), "config", "-q"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass
class Demo:
    engine: Engine
    command: list[str]
    dns_port: int
    metrics_port: int
    subnet: Subnet

    def compose(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.command, *args], capture_output=True, text=True,
                              timeout=timeout, env=self.engine.env,
                              stdin=subprocess.DEVNULL)


def moved_demo(name: str, demo_subnet: str, folder: Path, subnet: Subnet, dns_port: int,
               metrics_port: int, socket: Path | None = None) -> Path:
    """Demo ``name`` (``compose.<name>.yml``, and its services file if it has one)
    in ``folder``: on ``subnet`` instead of ``demo_subnet``, on the given host
    ports and, with ``socket``, with the private engine's socket mounted where
    the engine's usually is."""
    prefix = str(subnet.network.network_address).rsplit(".", 1)[0] + "."
    text = (DOCKER / f"compose.{name}.yml").read_text()
    assert demo_subnet + "0/24" in text
    text = text.replace(demo_subnet, prefix)
    text = text.replace("127.0.0.1:8600:", f"127.0.0.1:{dns_port}:")
    text = text.replace("127.0.0.1:9153:", f"127.0.0.1:{metrics_port}:")
    if socket is not None:
        assert f"{ENGINE_SOCKET}:{ENGINE_SOCKET}:ro" in text
        text = text.replace(f"- {ENGINE_SOCKET}:", f"- {socket}:")
    doc = yaml.safe_load(text)
    doc["networks"]["demo"]["driver_opts"] = {"com.docker.network.bridge.name": subnet.bridge}
    compose_file = folder / f"compose.{name}.yml"
    compose_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    services = DOCKER / f"compose.{name}.services.toml"
    if services.exists():
        (folder / services.name).write_text(services.read_text().replace(demo_subnet, prefix))
    return compose_file


def running_demo(name: str, demo_subnet: str, docker_lab: DockerLab,
                 tmp_path_factory: pytest.TempPathFactory,
                 mount_engine: bool = False) -> Iterator[Demo]:
    """Demo ``name`` brought up with docker-compose 1.29 on the session's engine
    and the locally built image; brought down afterwards."""
    if COMPOSE is None:
        pytest.skip("COMPOSE NOT RUN: docker-compose missing; apt-get install docker-compose")
    engine = docker_lab.engine
    engine.docker("tag", BUSYBOX, "busybox:1.36")   # the demos' image, without a registry
    subnet = reserve_subnet()
    folder = tmp_path_factory.mktemp(f"compose-{name}") / "docker"
    folder.mkdir()
    dns_port, metrics_port = free_port(), free_port()
    compose_file = moved_demo(name, demo_subnet, folder, subnet, dns_port, metrics_port,
                              engine.socket if mount_engine else None)
    demo = Demo(engine, [COMPOSE, "-p", f"dnsdt-{name}-demo", "-f", str(compose_file)],
                dns_port, metrics_port, subnet)
    try:
        up = demo.compose("up", "-d", "--no-build")
        assert up.returncode == 0, up.stdout + up.stderr
        yield demo
    finally:
        down = demo.compose("down", "--volumes", "--timeout", "0")
        subnet.release()
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="module")
def demo(dnsd_image: Build, docker_lab: DockerLab,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    yield from running_demo("static", DEMO_SUBNET, docker_lab, tmp_path_factory)


def test_static_demo_spreads_requests_over_three_web_containers(demo: Demo) -> None:
    """The client's lines count answers per web container: all three serve."""
    spread: list[str] = []

    def every_web_served() -> bool:
        logs = demo.compose("logs", "--no-color", "client", timeout=60).stdout
        spread[:] = [line for line in logs.splitlines()
                     if all(f" web{i}" in line for i in (1, 2, 3))]
        return bool(spread)

    wait_until(every_web_served, timeout=120, interval=1.0)
    counts = dict((name, int(n)) for n, name in re.findall(r"(\d+) (web\d)", spread[0]))
    assert sum(counts.values()) == 9, spread[0]


def test_static_demo_from_the_host(demo: Demo) -> None:
    """The README's host-side commands: dig on the published port, /ready."""
    query = dns.message.make_query("web.service.consul", "SRV")
    reply = dns.query.udp(query, "127.0.0.1", port=demo.dns_port, timeout=5)
    ports = {rd.port for rrset in reply.answer for rd in rrset}
    addresses = {rd.address for rrset in reply.additional
                 if rrset.rdtype == dns.rdatatype.A for rd in rrset}
    assert ports == {80}
    assert addresses == {demo.subnet.address(host) for host in (11, 12, 13)}
    with urllib.request.urlopen(f"http://127.0.0.1:{demo.metrics_port}/ready",
                                timeout=5) as response:
        assert response.status == 200


# --- the Docker demo: dnsd --docker the only discovery component ----------------------

@pytest.fixture(scope="module")
def docker_demo(dnsd_image: Build, docker_lab: DockerLab,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    yield from running_demo("docker", DOCKER_DEMO_SUBNET, docker_lab, tmp_path_factory,
                            mount_engine=True)


def client_spread(demo: Demo, wanted: set[str]) -> dict[str, int]:
    """The first line of the client's log after now that counts exactly the
    web containers in ``wanted``."""
    seen = len(demo.compose("logs", "--no-color", "client", timeout=60).stdout.splitlines())
    found: dict[str, int] = {}

    def counted() -> bool:
        lines = demo.compose("logs", "--no-color", "client", timeout=60).stdout.splitlines()
        for line in lines[seen:]:
            counts = {name: int(n) for n, name in re.findall(r"(\d+) (web\d|failed)", line)}
            if set(counts) == wanted:
                found.update(counts)
                return True
        return False

    wait_until(counted, timeout=120, interval=1.0)
    return found


def test_docker_demo_finds_the_web_containers_by_their_labels(docker_demo: Demo) -> None:
    """Nothing lists the web containers: dnsd sees them start. The client's
    lines count answers per container; a stopped one drops out of them."""
    counts = client_spread(docker_demo, {"web1", "web2", "web3"})
    assert sum(counts.values()) == 9, counts
    stop = docker_demo.compose("stop", "-t", "0", "web2")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    counts = client_spread(docker_demo, {"web1", "web3"})
    assert sum(counts.values()) == 9, counts


def test_docker_demo_from_the_host(docker_demo: Demo) -> None:
    """dig from the host on the published port: the web containers, discovered."""
    prefix = str(docker_demo.subnet.network.network_address).rsplit(".", 1)[0] + "."

    def srv() -> dns.message.Message:
        query = dns.message.make_query("demo.web.service.consul", "SRV")
        return dns.query.udp(query, "127.0.0.1", port=docker_demo.dns_port, timeout=5)

    wait_until(lambda: len([rd for rrset in srv().answer for rd in rrset]) >= 2,
               timeout=60, interval=0.5)
    reply = srv()
    assert {rd.port for rrset in reply.answer for rd in rrset} == {80}
    addresses = {rd.address for rrset in reply.additional
                 if rrset.rdtype == dns.rdatatype.A for rd in rrset}
    assert addresses and all(a.startswith(prefix) for a in addresses), addresses
    with urllib.request.urlopen(f"http://127.0.0.1:{docker_demo.metrics_port}/ready",
                                timeout=5) as response:
        assert response.status == 200
