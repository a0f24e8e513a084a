"""``dnsd --docker`` on a real Docker engine: registrator's naming rules, health,
pause, stop and start, rename, two networks, published ports, bad labels, many
containers, engine restarts with and without live-restore, ``--state-dir``, and
a client container that finds and round-robins the served names.

One private engine for the module (``tests/docker_engine.py``): networks
``dnsdt-front`` and ``dnsdt-back``, daemon.json ``dns`` naming the front
network's gateway, where dnsd listens on port 53 (Docker's embedded resolver
forwards only there), and on 127.0.0.1 for the test's own questions. dnsd also
serves a static file, so one table holds both sources. Each test runs its own
containers and removes them; the engine restarts come last. Tests wait for
what they expect with generous deadlines and never assert a duration. Needs
root and Debian's docker.io, iptables and busybox-static.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from dnsd.state import state_path
from tests.consul_double import ConsulDouble
from tests.dnsd_process import DnsdProcess, wait_until
from tests.docker_engine import Container, Engine, Healthcheck, Network, reserve_subnet
from tests.docker_engine import unavailable_reason as docker_unavailable_reason
from tests.integration.conftest_zookeeper import Registrator
from tests.upstreams import free_port
from tests.zookeeper_server import ZooKeeperServer

REASON = docker_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"DOCKER NOT RUN: {REASON}")

IMAGE = "dnsdt-busybox:latest"     # served as "dnsdt-busybox" when nothing names it
FRONT, BACK = "dnsdt-front", "dnsdt-back"
NODE = "dockerhost"
STATIC_ADDRESS = "192.0.2.50"
WAIT = 60.0  # seconds: only bounds a failure


@dataclass
class Lab:
    engine: Engine
    front: Network
    back: Network
    dnsd: DnsdProcess
    metrics: int
    workdir: Path

    @property
    def args(self) -> list[str]:
        """dnsd's arguments, for another dnsd on the same engine."""
        return ["--docker", self.engine.host, "--node-name", NODE]

    def table(self, port: int | None = None) -> dict[str, Any]:
        url = f"http://127.0.0.1:{port or self.metrics}/v1/table"
        with urllib.request.urlopen(url, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def source_state(self, port: int | None = None) -> str:
        sources = self.table(port)["sources"]
        state: str = next(v["state"] for k, v in sources.items() if k.startswith("docker:"))
        return state

    def instances(self, service: str, port: int | None = None) -> list[dict[str, Any]]:
        """The table's instances of ``service`` (every health), as /v1/table lists them."""
        for entry in self.table(port)["services"]:
            if entry["name"] == service:
                found: list[dict[str, Any]] = entry["instances"]
                return found
        return []


def addresses(dnsd: DnsdProcess, service: str) -> set[str]:
    return dnsd.addresses(f"{service}.service.consul")


def nxdomain(dnsd: DnsdProcess, service: str) -> bool:
    return dnsd.query(f"{service}.service.consul").rcode() == dns.rcode.NXDOMAIN


def wait_for(check: Callable[[], object], timeout: float = WAIT) -> None:
    wait_until(check, timeout=timeout, interval=0.02)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("docker-source")
    front_subnet = reserve_subnet()
    back_subnet = reserve_subnet()
    engine = Engine({"dns": [front_subnet.gateway]})
    try:
        engine.start()
        front = engine.create_network(FRONT, front_subnet)
        back = engine.create_network(BACK, back_subnet)
        engine.import_busybox(IMAGE)
        static = workdir / "static.toml"
        static.write_text(f'[[services]]\nname = "db"\naddress = "{STATIC_ADDRESS}"\n'
                          'port = 5432\n')
        metrics = free_port()
        with DnsdProcess(["--docker", engine.host, "--node-name", NODE,
                          "--docker-network", BACK, "--static", str(static),
                          "--listen", "127.0.0.1:0", "--listen", f"{front.gateway}:53",
                          "--metrics", f"127.0.0.1:{metrics}"]) as dnsd:
            dnsd.wait_for_log(r"dnsd\.docker: docker .*: synced")
            yield Lab(engine, front, back, dnsd, metrics, workdir)
    finally:
        engine.close()
        front_subnet.release()
        back_subnet.release()


@pytest.fixture
def boxes(lab: Lab) -> Iterator[Callable[..., Container]]:
    """Runs busybox containers (on the front network unless told otherwise)
    for one test, and removes them after it."""
    started: list[Container] = []

    def run(*command: str, name: str | None = None, network: str | None = FRONT,
            **kwargs: Any) -> Container:
        # --stop-timeout: sleep as pid 1 ignores SIGTERM; an engine restarted
        # without live-restore then waits 1 s for it, not 10.
        box = lab.engine.run(IMAGE, *(command or ("sleep", "3600")), network=network,
                             name=name or f"dnsdt-{secrets.token_hex(3)}",
                             extra=["--stop-timeout", "1"], **kwargs)
        started.append(box)
        return box

    yield run
    ids = [box.id for box in started]
    if ids:
        lab.engine.docker("rm", "-f", "-v", *ids, check=False)


def httpd(text: str) -> tuple[str, ...]:
    return ("sh", "-c", f"echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")


# --- naming -------------------------------------------------------------------------

def test_names_from_labels_env_and_the_image(lab: Lab, boxes: Callable[..., Container]) -> None:
    labelled = boxes(labels={"SERVICE_NAME": "lbl"}, env={"SERVICE_NAME": "fromenv"})
    from_env = boxes(env={"SERVICE_NAME": "envonly"})
    plain = boxes(name="dnsdt-plain")
    wait_for(lambda: addresses(lab.dnsd, "lbl") == {labelled.address()})
    wait_for(lambda: addresses(lab.dnsd, "envonly") == {from_env.address()})
    assert nxdomain(lab.dnsd, "fromenv")  # the label wins over the variable
    # No name given: the image's base name (registry, path and tag cut off).
    wait_for(lambda: plain.address() in addresses(lab.dnsd, "dnsdt-busybox"))
    ids = {i["id"] for i in lab.instances("dnsdt-busybox")}
    assert f"{NODE}:dnsdt-plain:80" in ids  # registrator's <host>:<container>:<port>


def test_several_ports_tags_ids_and_udp(lab: Lab, boxes: Callable[..., Container]) -> None:
    box = boxes(name="dnsdt-multi", expose=["8080/tcp", "53/udp"],
                labels={"SERVICE_NAME": "multi", "SERVICE_8080_NAME": "admin",
                        "SERVICE_TAGS": "blue,v1", "SERVICE_8080_TAGS": "internal",
                        "SERVICE_53_ID": "dns-of-multi", "SERVICE_REGION": "eu"})
    address = box.address()
    wait_for(lambda: addresses(lab.dnsd, "multi-80") == {address})
    # -<port> only where the name is not port-specific; tags per port.
    assert addresses(lab.dnsd, "admin") == {address}
    assert addresses(lab.dnsd, "blue.multi-80") == {address}
    assert addresses(lab.dnsd, "internal.admin") == {address}
    assert nxdomain(lab.dnsd, "blue.admin") and nxdomain(lab.dnsd, "multi")
    srv = lab.dnsd.query("_multi-53._udp.service.consul", "SRV")
    assert [rd.port for rrset in srv.answer for rd in rrset] == [53]
    (dns_instance,) = lab.instances("multi-53")
    assert dns_instance["id"] == "dns-of-multi"
    assert dns_instance["tags"] == ["blue", "v1", "udp"]
    assert {i["id"] for i in lab.instances("multi-80")} == {f"{NODE}:dnsdt-multi:80"}


def test_ignore_whole_or_one_port(lab: Lab, boxes: Callable[..., Container]) -> None:
    boxes(labels={"SERVICE_NAME": "ignored", "SERVICE_IGNORE": "true"})
    half = boxes(expose=["8080/tcp"], labels={"SERVICE_NAME": "half",
                                              "SERVICE_80_IGNORE": "yes"})
    wait_for(lambda: addresses(lab.dnsd, "half-8080") == {half.address()})
    assert nxdomain(lab.dnsd, "half-80") and nxdomain(lab.dnsd, "ignored")


def test_bad_labels_are_warned_about_and_cost_only_their_port(
        lab: Lab, boxes: Callable[..., Container]) -> None:
    boxes(name="dnsdt-badname", labels={"SERVICE_NAME": "no.dots.here"})
    boxes(name="dnsdt-noport", labels={"SERVICE_NAME": "noport", "SERVICE_9999_NAME": "x"})
    good = boxes(labels={"SERVICE_NAME": "neighbour"})
    wait_for(lambda: addresses(lab.dnsd, "neighbour") == {good.address()})
    wait_for(lambda: addresses(lab.dnsd, "noport"))  # its real port is served
    lab.dnsd.wait_for_log(r"WARNING dnsd\.docker: docker: container dnsdt-badname: "
                          r"label SERVICE_NAME: service name 'no\.dots\.here'")
    lab.dnsd.wait_for_log(r"WARNING dnsd\.docker: docker: container dnsdt-noport: "
                          r"label SERVICE_9999_NAME: names port 9999")


def test_many_containers_at_once(lab: Lab, boxes: Callable[..., Container]) -> None:
    """Started together, all served; removed together (one command), all gone."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        many = list(pool.map(lambda _: boxes(labels={"SERVICE_NAME": "many"}), range(20)))
    wanted = {box.address() for box in many}
    wait_for(lambda: len(lab.instances("many")) == 20)
    reply = lab.dnsd.query("many.service.consul", "A", tcp=True)
    assert {rd.address for rrset in reply.answer for rd in rrset} == wanted
    lab.engine.docker("rm", "-f", *(box.id for box in many))
    wait_for(lambda: nxdomain(lab.dnsd, "many"))


# --- what changes ---------------------------------------------------------------------

def test_stop_and_start(lab: Lab, boxes: Callable[..., Container]) -> None:
    box = boxes(labels={"SERVICE_NAME": "stopstart"})
    wait_for(lambda: addresses(lab.dnsd, "stopstart") == {box.address()})
    box.stop()
    wait_for(lambda: nxdomain(lab.dnsd, "stopstart"))
    box.start()
    wait_for(lambda: addresses(lab.dnsd, "stopstart") == {box.address()})
    box.kill()  # no stop event, only die
    wait_for(lambda: nxdomain(lab.dnsd, "stopstart"))


def test_health_from_the_healthcheck(lab: Lab, boxes: Callable[..., Container]) -> None:
    """starting and unhealthy are not answered; healthy is. The check turns
    healthy when a file appears."""
    check = Healthcheck(["test", "-f", "/tmp/ok"], interval=0.5, retries=1)
    box = boxes(labels={"SERVICE_NAME": "checked"}, healthcheck=check)
    wait_for(lambda: lab.instances("checked"))
    assert lab.instances("checked")[0]["health"] == "critical"  # starting, or unhealthy
    assert nxdomain(lab.dnsd, "checked")
    box.exec("touch", "/tmp/ok", check=True)
    wait_for(lambda: addresses(lab.dnsd, "checked") == {box.address()})
    box.exec("rm", "/tmp/ok", check=True)
    wait_for(lambda: nxdomain(lab.dnsd, "checked"))
    box.exec("touch", "/tmp/ok", check=True)
    wait_for(lambda: addresses(lab.dnsd, "checked") == {box.address()})


def test_pause(lab: Lab, boxes: Callable[..., Container]) -> None:
    plain = boxes(labels={"SERVICE_NAME": "pausable"})
    checked = boxes(labels={"SERVICE_NAME": "pausable-checked"}, healthcheck=Healthcheck(
        ["true"], interval=0.5, retries=1))
    wait_for(lambda: addresses(lab.dnsd, "pausable") == {plain.address()})
    wait_for(lambda: addresses(lab.dnsd, "pausable-checked") == {checked.address()})
    plain.pause()
    checked.pause()
    wait_for(lambda: nxdomain(lab.dnsd, "pausable"))
    wait_for(lambda: nxdomain(lab.dnsd, "pausable-checked"))
    plain.unpause()
    checked.unpause()
    wait_for(lambda: addresses(lab.dnsd, "pausable") == {plain.address()})
    # Pausing made its check unhealthy (with no event); the next check passes.
    wait_for(lambda: addresses(lab.dnsd, "pausable-checked") == {checked.address()})


def test_rename(lab: Lab, boxes: Callable[..., Container]) -> None:
    name = f"dnsdt-{secrets.token_hex(3)}"
    boxes(name=name, labels={"SERVICE_NAME": "renamed"})
    wait_for(lambda: [i["id"] for i in lab.instances("renamed")] == [f"{NODE}:{name}:80"])
    lab.engine.docker("rename", name, f"{name}-new")
    wait_for(lambda: [i["id"] for i in lab.instances("renamed")] == [f"{NODE}:{name}-new:80"])


def test_two_networks(lab: Lab, boxes: Callable[..., Container]) -> None:
    """dnsd runs with --docker-network dnsdt-back: a container on both networks
    is served there; SERVICE_NETWORK overrides it; connecting and disconnecting
    a running container moves it."""
    both = boxes(labels={"SERVICE_NAME": "twonets"})
    chosen = boxes(labels={"SERVICE_NAME": "chosen", "SERVICE_NETWORK": FRONT})
    for box in (both, chosen):
        lab.engine.docker("network", "connect", BACK, box.id)
    wait_for(lambda: addresses(lab.dnsd, "twonets") == {both.address(BACK)})
    wait_for(lambda: addresses(lab.dnsd, "chosen") == {chosen.address(FRONT)})
    lab.engine.docker("network", "disconnect", BACK, both.id)
    wait_for(lambda: addresses(lab.dnsd, "twonets") == {both.address(FRONT)})


def test_published_ports(lab: Lab, boxes: Callable[..., Container]) -> None:
    """--docker-published ADDR: published ports only, at ADDR and the host port."""
    published = boxes(labels={"SERVICE_NAME": "pub"}, publish=["127.0.0.1::80"])
    boxes(labels={"SERVICE_NAME": "unpub"})
    host_port = int(published.inspect()["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"])
    with DnsdProcess([*lab.args, "--docker-published", "192.0.2.10"]) as other:
        wait_for(lambda: addresses(other, "pub") == {"192.0.2.10"})
        srv = other.query("pub.service.consul", "SRV")
        assert [rd.port for rrset in srv.answer for rd in rrset] == [host_port]
        assert nxdomain(other, "unpub")
    assert addresses(lab.dnsd, "pub") == {published.address()}  # the main dnsd: own address


def test_one_table_with_a_static_file(lab: Lab, boxes: Callable[..., Container]) -> None:
    box = boxes(labels={"SERVICE_NAME": "db"})
    wait_for(lambda: addresses(lab.dnsd, "db") == {STATIC_ADDRESS, box.address()})
    states = {k.split(":")[0]: v["state"] for k, v in lab.table()["sources"].items()}
    assert states == {"static": "up", "docker": "up"}


def test_one_table_with_every_kind_of_source(lab: Lab, boxes: Callable[..., Container],
                                            tmp_path: Path) -> None:
    """Docker, a services file, Consul and registrator's ZooKeeper tree: one
    service name, an instance from each, all answered together."""
    box = boxes(labels={"SERVICE_NAME": "shared"})
    static = tmp_path / "shared.toml"
    static.write_text('[[services]]\nname = "shared"\naddress = "192.0.2.61"\nport = 80\n')
    with contextlib.ExitStack() as stack:
        consul = stack.enter_context(ConsulDouble())
        consul.register("shared", "shared-1", address="192.0.2.62", port=80)
        zookeeper = stack.enter_context(ZooKeeperServer())
        registrator = Registrator(zookeeper.hosts, "/services")
        stack.callback(registrator.close)
        registrator.register("shared", "192.0.2.63", 80)
        dnsd = stack.enter_context(DnsdProcess(
            [*lab.args, "--static", str(static), "--consul", consul.url, "--zookeeper",
             f"{zookeeper.hosts}/services", "--datacenter", "dc1"]))
        wanted = {box.address(), "192.0.2.61", "192.0.2.62", "192.0.2.63"}
        wait_for(lambda: addresses(dnsd, "shared") == wanted)


# --- a client container -------------------------------------------------------------------

def test_a_client_container_finds_and_round_robins(lab: Lab,
                                                  boxes: Callable[..., Container]) -> None:
    """Three web containers, discovered, no address configured anywhere; a
    client on the network asks Docker's resolver, which asks dnsd."""
    webs = [boxes(*httpd(f"web{i}"), labels={"SERVICE_NAME": "rr"}) for i in (1, 2, 3)]
    wait_for(lambda: addresses(lab.dnsd, "rr") == {w.address() for w in webs})
    loop = ("for i in 1 2 3 4 5 6 7 8 9; do "
            "timeout 5 wget -q -O - http://rr.service.consul/ || echo failed; done")
    result = lab.engine.run_once(IMAGE, "sh", "-c", loop, network=FRONT, timeout=90)
    served = collections.Counter(result.stdout.split())
    assert set(served) == {"web1", "web2", "web3"}, result.stdout + result.stderr
    assert sum(served.values()) == 9 and min(served.values()) >= 2, served


# --- the engine restarted (last: they stop every container) -------------------------------

def test_engine_restart_with_live_restore_keeps_containers_and_state_dir(
        lab: Lab, boxes: Callable[..., Container]) -> None:
    """While the engine is away dnsd keeps answering (stale); it re-lists when
    the engine is back. A second dnsd with --state-dir, started while the engine
    is down, serves the view it saved."""
    kept = boxes(labels={"SERVICE_NAME": "kept", "SERVICE_REGION": "eu"})
    state_dir = lab.workdir / "state"
    address = kept.address()  # asked now: the engine is going away
    wait_for(lambda: addresses(lab.dnsd, "kept") == {address})
    with DnsdProcess([*lab.args, "--state-dir", str(state_dir)]) as saver:
        wait_for(lambda: addresses(saver, "kept") == {address})
    saved = json.loads(Path(state_path(str(state_dir))).read_text())
    (view,) = saved["views"].values()
    (instance,) = [i for i in view["instances"] if i["service"] == "kept"]
    assert instance["meta"] == {"region": "eu"}

    lab.engine.set_live_restore(True)
    lab.engine.stop_daemon()
    wait_for(lambda: lab.source_state() == "stale")
    assert addresses(lab.dnsd, "kept") == {address}
    metrics = free_port()
    with DnsdProcess([*lab.args, "--state-dir", str(state_dir),
                      "--metrics", f"127.0.0.1:{metrics}"]) as restored:
        assert addresses(restored, "kept") == {address}
        wait_for(lambda: lab.source_state(metrics) == "stale")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/ready", timeout=10) as ready:
            assert ready.status == 200  # a saved view counts
        lab.engine.start()
        wait_for(lambda: lab.source_state(metrics) == "up")
        assert addresses(restored, "kept") == {address}
    wait_for(lambda: lab.source_state() == "up")
    assert addresses(lab.dnsd, "kept") == {address}
    assert kept.status == "running"


def test_engine_restart_without_live_restore_loses_containers(
        lab: Lab, boxes: Callable[..., Container]) -> None:
    gone = boxes(labels={"SERVICE_NAME": "gone"})
    wait_for(lambda: addresses(lab.dnsd, "gone") == {gone.address()})
    lab.engine.restart(live_restore=False)
    wait_for(lambda: lab.source_state() == "up")
    wait_for(lambda: nxdomain(lab.dnsd, "gone"))
    assert gone.status == "exited"
    gone.start()
    wait_for(lambda: addresses(lab.dnsd, "gone") == {gone.address()})


def test_dnsd_without_its_engine_says_why(lab: Lab, tmp_path: Path) -> None:
    missing = tmp_path / "docker.sock"
    metrics = free_port()
    with DnsdProcess(["--docker", f"unix://{missing}", "--metrics",
                      f"127.0.0.1:{metrics}"]) as alone:
        alone.wait_for_log(r"WARNING dnsd\.docker: .*no socket there")
        assert lab.source_state(metrics) == "stale"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics}/ready", timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
        else:
            raise AssertionError("ready without any view")
        # Names it could answer are not yet known: SERVFAIL, which resolvers do
        # not cache as they would an authoritative NXDOMAIN.
        assert alone.query("web.service.consul").rcode() == dns.rcode.SERVFAIL
