"""The deployment files: ``docker/`` and ``resolv-examples/``, without an engine.

The Dockerfile and compose files are checked for consistency (YAML parses,
images pinned, ports, addresses and registry URLs agree, every dnsd flag exists
and parses with dnsd's own option parser), and the image's runtime recipe (its
ENV, CMD and HEALTHCHECK) is run in a network namespace. The image itself is
built and run on a real engine by ``test_docker_image.py``, the static Compose
demo by ``test_docker_compose.py``. The resolver snippets run where the program
exists on Debian: dnsmasq and Unbound are started with the snippets unmodified,
forwarding ``consul.`` to a dnsd on 127.0.0.1:8600 as the snippets say, and a
service is resolved through them.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from dnsd import __version__
from dnsd.config import Config, load_config
from tests.dnsd_process import DnsdProcess, run_cli
from tests.netns import Netns, unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
EXAMPLES = ROOT / "resolv-examples"
NO_NS = unavailable_reason()
needs_netns = pytest.mark.skipif(NO_NS is not None, reason=f"SNIPPETS NOT RUN: {NO_NS}")

# Private addresses on purpose: dnsmasq's stop-dns-rebind and Unbound's
# private-address would drop them if the snippets did not exempt consul.
SERVICES = """
[[services]]
name = "web"
id = "web-1"
address = "10.1.0.11"
port = 8080

[[services]]
name = "web"
id = "web-2"
address = "10.1.0.12"
port = 8080
"""
WEB = {"10.1.0.11", "10.1.0.12"}


@pytest.fixture(scope="module")
def help_flags() -> set[str]:
    result = run_cli(["--help"])
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", result.stdout))


def check_dnsd_args(args: list[str], help_flags: set[str],
                    environ: dict[str, str] | None = None) -> Config:
    """Every flag exists in ``dnsd --help`` and the whole line parses as dnsd would."""
    used = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
    assert used <= help_flags, f"flags dnsd does not have: {used - help_flags}"
    return load_config(args, environ=environ or {})


# -- Dockerfile -------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


class Dockerfile:
    def __init__(self, path: Path) -> None:
        self.instructions = dockerfile_instructions(path)
        last_from = max(i for i, (op, _) in enumerate(self.instructions) if op == "FROM")
        self.final = self.instructions[last_from:]   # the stage that becomes the image

    def all(self, op: str, final_only: bool = True) -> list[str]:
        source = self.final if final_only else self.instructions
        return [args for name, args in source if name == op]

    def one(self, op: str) -> str:
        found = self.all(op)
        assert len(found) == 1, f"{op}: {found}"
        return found[0]

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {pair!r}: use KEY=VALUE"
                env[key] = value
        return env

    def exec_form(self, op: str) -> list[str]:
        value = json.loads(self.one(op))
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value

    @property
    def healthcheck(self) -> list[str]:
        options, _, command = self.one("HEALTHCHECK").partition("CMD ")
        assert re.fullmatch(r"(--[a-z-]+=\S+\s*)*", options), options
        value = json.loads(command)
        assert isinstance(value, list)
        return value

    @property
    def copies(self) -> dict[str, Path]:
        """Image path -> repository path, for the final stage's COPY from the context."""
        out = {}
        for args in self.all("COPY"):
            if args.startswith("--from"):
                continue
            *sources, dest = args.split()
            assert len(sources) == 1, args
            out[dest] = ROOT / sources[0]
        return out


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(DOCKER / "Dockerfile")


def test_dockerfile_shape(dockerfile: Dockerfile, help_flags: set[str]) -> None:
    # The base: an argument pinned by Debian codename, the same for both stages.
    args = dict(a.split("=", 1) for a in dockerfile.all("ARG", final_only=False) if "=" in a)
    assert re.fullmatch(r"python:3\.1[1-9]-slim-bookworm", args["BASE"]), args["BASE"]
    assert dockerfile.all("FROM", final_only=False) == ["${BUILDER} AS build", "${BASE}"]
    # The build stage is the same Python with a compiler (the compiled UDP loop).
    assert args["BUILDER"] == args["BASE"].replace("-slim", ""), args["BUILDER"]
    assert args["VERSION"] == __version__
    labels = " ".join(dockerfile.all("LABEL"))
    for key in ("title", "description", "licenses", "version", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    # Non-root by number (a runtime can check it without /etc/passwd), pip only,
    # and no capability or setuid anywhere: --cap-drop ALL must work.
    assert dockerfile.one("USER") == "10053:10053"
    run = " ".join(dockerfile.all("RUN", final_only=False))
    assert "--uid 10053" in run and "--gid 10053" in run
    for forbidden in ("setcap", "apt-get", "chmod u+s", "cap_net_bind_service"):
        assert forbidden not in run, forbidden
    assert dockerfile.exec_form("ENTRYPOINT") == ["/opt/dnsd/bin/dnsd"]
    assert json.loads(dockerfile.one("VOLUME")) == ["/var/lib/dnsd"]
    # Every source the build copies exists in the context (the repository root)
    # and gets past .dockerignore.
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text()
               .splitlines() if line.startswith("!")]
    for args_ in dockerfile.all("COPY", final_only=False):
        if not args_.startswith("--from"):
            for source in args_.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert any(source == a or source.startswith(a + "/") for a in allowed), source
    for dest, repo_path in dockerfile.copies.items():
        assert repo_path.is_file(), (dest, repo_path)

    env = dockerfile.env
    config = check_dnsd_args(dockerfile.exec_form("CMD"), help_flags, env)
    assert config.listen == (("0.0.0.0", 53),)
    assert config.metrics is not None
    assert config.state_dir == "/var/lib/dnsd"
    exposed = set(dockerfile.one("EXPOSE").split())
    assert {"53/udp", "53/tcp", f"{config.metrics[1]}/tcp"} <= exposed
    # The health check asks the running dnsd, wherever its configuration says.
    assert dockerfile.healthcheck == ["/opt/dnsd/bin/python", "-m", "dnsd.healthcheck"]
    assert set(dockerfile.copies) >= set(config.static)


@needs_netns
def test_dockerfile_runtime_passes_its_healthcheck(dockerfile: Dockerfile,
                                                   tmp_path: Path) -> None:
    """Run the image's recipe: its ENV and CMD (COPY paths mapped back to the
    repository), then its HEALTHCHECK, which must fail before dnsd is up."""
    env = {**dockerfile.env, "DNSD_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    copies = dockerfile.copies
    args = [str(copies.get(arg, arg)) for arg in dockerfile.exec_form("CMD")]
    interpreter, *check = dockerfile.healthcheck
    assert interpreter.startswith("/opt/dnsd/bin/python")
    with Netns() as ns:
        dnsd = ns.popen([sys.executable, "-m", "dnsd", *args], env=env, cwd=str(ROOT),
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # In the image dnsd is process 1; here, name its process.
        healthcheck = [sys.executable, *check, "--pid", str(dnsd.pid)]
        deadline = time.monotonic() + 60
        while (result := ns.run(healthcheck, timeout=10)).returncode != 0:
            assert time.monotonic() < deadline, f"HEALTHCHECK never passed: {result.stdout}"
            time.sleep(0.2)
        assert result.stdout.startswith("healthy: GET http://127.0.0.1:9153/ready: 200")
        dig = ns.run(["dig", "@127.0.0.1", "+short", "+time=2", "web.service.consul"])
        assert {"198.51.100.11", "198.51.100.12", "198.51.100.13"} == set(dig.stdout.split())


# -- compose files -------------------------------------------------------------------

REGISTRIES = {
    "compose.consul.yml": ("consul", "consul", 8500),
    "compose.zookeeper.yml": ("zookeeper", "zookeeper", 2181),
}


def published(ports: list[str]) -> set[tuple[int, str]]:
    """(container port, protocol) of each compose port mapping."""
    out = set()
    for mapping in ports:
        target, _, proto = str(mapping).rpartition(":")[2].partition("/")
        out.add((int(target), proto or "tcp"))
    return out


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_compose_file(name: str, dockerfile: Dockerfile, help_flags: set[str]) -> None:
    registry, scheme, registry_port = REGISTRIES[name]
    doc: dict[str, Any] = yaml.safe_load((DOCKER / name).read_text())
    services: dict[str, Any] = doc["services"]
    assert set(services) == {registry, "registrator", "dnsd", "web", "client"}
    for service_name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (service_name, image)

    # dnsd: built from this repository's Dockerfile; its flags parse.
    dnsd = services["dnsd"]
    context = (DOCKER / dnsd["build"]["context"]).resolve()
    assert context == ROOT and (context / dnsd["build"]["dockerfile"]).is_file()
    config = check_dnsd_args(dnsd["command"], help_flags, dockerfile.env)
    assert config.metrics is not None
    dns_port = config.listen[0][1]
    assert {(dns_port, "udp"), (dns_port, "tcp"), (config.metrics[1], "tcp")} <= \
        published(dnsd["ports"])
    assert_locked_down(dnsd)

    # registrator and dnsd name the same registry service and port.
    registrator = services["registrator"]
    assert "/var/run/docker.sock:/tmp/docker.sock" in registrator["volumes"]
    assert "-internal" in registrator["command"]
    url = urlparse(registrator["command"][-1])
    assert (url.scheme, url.hostname, url.port) == (scheme, registry, registry_port)
    assert (registry_port, "tcp") in published(services[registry]["ports"])
    if scheme == "consul":
        assert config.consul == f"http://{registry}:{registry_port}"
    else:
        assert config.zookeeper == f"{registry}:{registry_port}{url.path}"

    # Containers resolve through dnsd's fixed address on the demo network.
    address = ipaddress.ip_address(dnsd["networks"]["demo"]["ipv4_address"])
    subnet = ipaddress.ip_network(doc["networks"]["demo"]["ipam"]["config"][0]["subnet"])
    assert address in subnet
    web, client = services["web"], services["client"]
    for service in (web, client):
        assert service["dns"] == [str(address)]
        assert service["depends_on"]["dnsd"]["condition"] == "service_healthy"
    assert web["deploy"]["replicas"] == 3
    service_name = web["environment"]["SERVICE_NAME"]
    assert f"http://{service_name}.service.{config.domain}/" in " ".join(client["command"])


def assert_locked_down(dnsd: dict[str, Any]) -> None:
    """As the image allows: no capability at all, nothing writable but its volume."""
    assert dnsd["cap_drop"] == ["ALL"] and "cap_add" not in dnsd
    assert dnsd["read_only"] is True
    assert dnsd["security_opt"] == ["no-new-privileges:true"]


def test_compose_files_have_no_name_key() -> None:
    """docker-compose 1.29 (Debian's) rejects a top-level ``name``."""
    for path in DOCKER.glob("compose.*.yml"):
        assert "name" not in yaml.safe_load(path.read_text()), path.name


def test_static_compose_demo(dockerfile: Dockerfile, help_flags: set[str]) -> None:
    doc: dict[str, Any] = yaml.safe_load((DOCKER / "compose.static.yml").read_text())
    services: dict[str, Any] = doc["services"]
    assert set(services) == {"dnsd", "web1", "web2", "web3", "client"}
    dnsd = services["dnsd"]
    assert dnsd["image"] == "dnsd:local"
    assert (DOCKER / dnsd["build"]["context"]).resolve() == ROOT
    assert_locked_down(dnsd)
    config = check_dnsd_args(dnsd["command"], help_flags, dockerfile.env)
    (mount,) = dnsd["volumes"]
    source, target, mode = mount.split(":")
    assert config.static == (target,) and mode == "ro"
    served = tomllib.loads((DOCKER / source).read_text())["services"]

    subnet = ipaddress.ip_network(doc["networks"]["demo"]["ipam"]["config"][0]["subnet"])
    dnsd_address = dnsd["networks"]["demo"]["ipv4_address"]
    webs = {name: s for name, s in services.items() if name.startswith("web")}
    web_addresses = {s["networks"]["demo"]["ipv4_address"] for s in webs.values()}
    assert all(ipaddress.ip_address(a) in subnet for a in {dnsd_address, *web_addresses})
    # The services file names exactly the web containers, at their port.
    assert {s["address"] for s in served} == web_addresses
    assert {(s["name"], s["port"]) for s in served} == {("web", 80)}
    for web in webs.values():
        assert web["image"] == "busybox:1.36" and "80" in " ".join(web["command"])
    client = services["client"]
    assert client["dns"] == [dnsd_address]
    assert client["depends_on"]["dnsd"]["condition"] == "service_healthy"
    assert "http://web.service.consul/" in " ".join(client["command"])


# -- resolv-examples ------------------------------------------------------------------

def unit_file() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((EXAMPLES / "dnsd.service").read_text())
    return parser


def test_systemd_unit(help_flags: set[str]) -> None:
    unit = unit_file()
    service = unit["Service"]
    exec_start = shlex.split(service["ExecStart"].replace("${STATE_DIRECTORY}", "/var/lib/dnsd"))
    assert exec_start[0].endswith("/dnsd")
    config = check_dnsd_args(exec_start[1:], help_flags)
    assert ("127.0.0.1", 53) in config.listen
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert service["DynamicUser"] == "yes" and "User" not in service
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # Ready once answering (sd_notify from dnsd, any worker); before Docker, so
    # containers started at boot find it; docker0 bound even before it exists
    # (or on a host without it), so no failure and restart loop.
    assert service["Type"] == "notify" and service["NotifyAccess"] == "all"
    assert "docker.service" in unit["Unit"]["Before"].split()
    assert "docker.service" not in unit["Unit"].get("After", "")
    assert config.freebind
    assert service["RestartPreventExitStatus"] == "2"   # bad configuration: exit status 2
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # Docker's daemon.json names an address this unit listens on.
    daemon = json.loads((EXAMPLES / "daemon.json").read_text())
    for server in daemon["dns"]:
        assert (str(ipaddress.ip_address(server)), 53) in config.listen


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd's own checker, with ExecStart pointing at this dnsd."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("UNIT NOT VERIFIED: systemd-analyze missing (Debian package systemd)")
    dnsd = Path(sys.executable).with_name("dnsd")
    assert dnsd.exists(), dnsd
    unit = tmp_path / "dnsd.service"
    unit.write_text((EXAMPLES / "dnsd.service").read_text()
                    .replace("/usr/local/bin/dnsd", str(dnsd)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dnsd.service" not in result.stderr, result.stderr


def test_resolv_conf_example() -> None:
    lines = [line.split() for line in (EXAMPLES / "resolv.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert [words for words in lines if words[0] == "nameserver"] == \
        [["nameserver", "127.0.0.1"]]          # dnsd alone, on port 53 of the unit
    options = next(words[1:] for words in lines if words[0] == "options")
    assert {"ndots:1", "timeout:1", "attempts:3"} <= set(options)
    text = (EXAMPLES / "resolv.conf").read_text()
    assert all(word in text for word in ("ndots", "timeout", "attempts", "only nameserver"))


def test_systemd_resolved_snippet() -> None:
    parser = configparser.RawConfigParser()
    parser.read_string((EXAMPLES / "resolved.conf").read_text())
    assert parser["Resolve"]["DNS"] == "127.0.0.1:8600"  # dnsd's default --listen
    assert parser["Resolve"]["Domains"] == "~consul"
    assert load_config([], environ={}).listen == (("127.0.0.1", 8600),)


@pytest.fixture(scope="module")
def snippet_ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Netns, DnsdProcess]]:
    if NO_NS is not None:
        pytest.skip(f"SNIPPETS NOT RUN: {NO_NS}")
    services = tmp_path_factory.mktemp("deploy") / "services.toml"
    services.write_text(SERVICES)
    with Netns() as ns:
        # The address every snippet names: dnsd's default listen address.
        dnsd = ns.dnsd(["--listen", "127.0.0.1:8600", "--static", str(services),
                        "--node-name", "deploy", "--upstream", "127.0.0.1:9"])
        yield ns, dnsd


def dig_short(ns: Netns, server: str, name: str, rdtype: str = "A") -> set[str]:
    result = ns.run(["dig", f"@{server}", "+short", "+time=2", "+tries=2", name, rdtype])
    assert result.returncode == 0, result.stdout + result.stderr
    return set(result.stdout.splitlines())


def test_dnsmasq_snippet(snippet_ns: tuple[Netns, DnsdProcess]) -> None:
    dnsmasq = shutil.which("dnsmasq")
    if dnsmasq is None:
        pytest.skip("SNIPPET NOT RUN: dnsmasq missing; apt-get install dnsmasq-base")
    ns, _ = snippet_ns
    ns.popen([dnsmasq, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll",
              "--listen-address=127.0.0.2", "--bind-interfaces", "--port=53", "--pid-file=",
              "--user=root", "--stop-dns-rebind", "--log-facility=-",
              f"--conf-file={EXAMPLES / 'dnsmasq.conf'}"],
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:  # dnsmasq has no "ready" line on stdout: ask until it answers
        result = ns.run(["dig", "@127.0.0.2", "+short", "+time=1", "+tries=1",
                         "web.service.consul"])
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(result.stdout.split()) == WEB, result.stdout
    assert dig_short(ns, "127.0.0.2", "_web._tcp.service.consul", "SRV") == {
        "1 1 8080 0a01000b.addr.dc1.consul.", "1 1 8080 0a01000c.addr.dc1.consul."}


def test_unbound_snippet(snippet_ns: tuple[Netns, DnsdProcess], tmp_path: Path) -> None:
    unbound = shutil.which("unbound")
    if unbound is None:
        pytest.skip("SNIPPET NOT RUN: unbound missing; apt-get install unbound")
    ns, _ = snippet_ns
    conf = tmp_path / "unbound.conf"
    # A minimal server, filtering private addresses as a hardened resolver does,
    # then the snippet exactly as shipped.
    conf.write_text(f"""server:
    interface: 127.0.0.3
    port: 53
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "{tmp_path}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    private-address: 10.0.0.0/8
    private-address: 172.16.0.0/12
    private-address: 192.168.0.0/16
include: "{EXAMPLES / 'unbound.conf'}"
""")
    check = subprocess.run(["unbound-checkconf", str(conf)], capture_output=True, text=True,
                           timeout=20)
    assert check.returncode == 0, check.stdout + check.stderr
    log = tmp_path / "unbound.log"
    with log.open("wb") as log_file:
        proc = ns.popen([unbound, "-d", "-c", str(conf)], stdout=log_file, stderr=log_file)
    deadline = time.monotonic() + 60
    while True:
        result = ns.run(["dig", "@127.0.0.3", "+short", "+time=1", "+tries=1",
                         "web.service.consul"])
        if (result.returncode == 0 and result.stdout) or time.monotonic() > deadline:
            break
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    assert set(result.stdout.split()) == WEB, result.stdout + log.read_text()
    assert dig_short(ns, "127.0.0.3", "web.service.consul", "SRV") == {
        "1 1 8080 0a01000b.addr.dc1.consul.", "1 1 8080 0a01000c.addr.dc1.consul."}
