"""Real resolvers against a real dnsd: glibc (getent, curl), musl, c-ares (Node.js),
Go's pure resolver, Java's JNDI DNS provider, dig and dnspython's stub resolver.

Stub resolvers only speak to port 53 of the addresses in ``/etc/resolv.conf``, so
the whole module runs inside one network namespace (``tests/netns.py``) where dnsd
listens on 127.0.0.1:53 and ``resolv-examples/resolv.conf`` is the resolv.conf.
Three HTTP servers on 127.0.0.11-13:8080 are registered as ``web``, so curl shows
round-robin in which server answers; ``tests/data/big.toml`` is the 50-instance
service every client must resolve (truncated over UDP, complete over TCP).

Programs are built once per session into a temporary directory. A client whose
Debian package is missing is skipped with the package to install in the reason;
everything runs offline.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.rcode
import dns.rdatatype
import pytest

from tests.dnsd_process import DnsdProcess
from tests.netns import Netns, unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "tests" / "clients"
BIG = ROOT / "tests" / "data" / "big.toml"
RESOLV_CONF = ROOT / "resolv-examples" / "resolv.conf"

WEB = {"127.0.0.11", "127.0.0.12", "127.0.0.13"}
BIG_ADDRS = {f"10.50.0.{i}" for i in range(1, 51)}
DUAL = {"127.0.0.21", "fd00::21"}
A, AAAA, SRV = 1, 28, 33

SERVICES = """
[[services]]
name = "web"
id = "web-11"
address = "127.0.0.11"
port = 8080
node = "node11"

[[services]]
name = "web"
id = "web-12"
address = "127.0.0.12"
port = 8080
node = "node12"

[[services]]
name = "web"
id = "web-13"
address = "127.0.0.13"
port = 8080
node = "node13"
weights = { passing = 5, warning = 1 }

[[services]]
name = "dual"
id = "dual-4"
address = "127.0.0.21"
port = 9000
node = "node21"

[[services]]
name = "dual"
id = "dual-6"
address = "fd00::21"
port = 9000
node = "node21"
"""

_QUERY_LINE = re.compile(r"dnsd\.query: \S+ (udp|tcp) id=\d+ (\S+) (\S+) (\S+) answers=")

NO_NS = unavailable_reason()
pytestmark = pytest.mark.skipif(NO_NS is not None, reason=f"REAL CLIENTS NOT TESTED: {NO_NS}")


def _need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"REAL CLIENT NOT TESTED: `{program}` missing; "
                    f"apt-get install {package}")
    return path


# -- fixtures: programs (once per session), the namespace (once per module) -----

@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients")


@pytest.fixture(scope="session")
def musl_getaddrinfo(build_dir: Path) -> Path:
    cc = _need("musl-gcc", "musl-tools")
    out = build_dir / "getaddrinfo-musl"
    # -static: the binary carries musl's resolver, whatever libc the host has.
    subprocess.run([cc, "-static", "-O2", "-Wall", "-Werror", "-o", str(out),
                    str(CLIENTS / "getaddrinfo.c")], check=True, timeout=60)
    return out


@pytest.fixture(scope="session")
def go_resolve(build_dir: Path) -> Path:
    go = _need("go", "golang-go")
    out = build_dir / "goresolve"
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(build_dir),
        "GOCACHE": str(Path.home() / ".cache" / "go-build"),
        "GOPATH": str(build_dir / "gopath"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",      # standard library only: never the network
        "CGO_ENABLED": "0",    # the pure Go resolver, no libc in the way
    }
    result = subprocess.run([go, "build", "-o", str(out), "main.go"], cwd=CLIENTS / "goresolve",
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def ns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Netns]:
    with Netns() as netns:
        netns.write_resolv_conf(RESOLV_CONF.read_text())
        yield netns


@pytest.fixture(scope="module")
def web_servers(ns: Netns, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Three http.server processes, each serving a ``whoami`` file with its address."""
    procs = []
    for addr in sorted(WEB):
        root = tmp_path_factory.mktemp("web")
        (root / "whoami").write_text(addr)
        procs.append(ns.popen([sys.executable, "-u", "-m", "http.server", "8080", "--bind",
                               addr, "--directory", str(root)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
    for proc in procs:  # http.server prints "Serving HTTP on ..." once it has bound
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready and b"Serving HTTP" in proc.stdout.readline()
    return WEB


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    path = tmp_path_factory.mktemp("services") / "clients.toml"
    path.write_text(SERVICES)
    return ["--static", str(path), "--static", str(BIG), "--node-name", "clients",
            "--upstream", "127.0.0.1:9"]


@pytest.fixture(scope="module")
def dnsd(ns: Netns, services: list[str]) -> DnsdProcess:
    """dnsd on 127.0.0.1:53 (the resolv.conf's nameserver), logging every query."""
    # Port 8600 too: the resolver snippets in resolv-examples name 127.0.0.1:8600.
    return ns.dnsd(["--listen", "127.0.0.1:53", "--listen", "127.0.0.1:8600",
                    "--query-log", *services])


@pytest.fixture(scope="module")
def plain_dnsd(ns: Netns, services: list[str]) -> str:
    """A second dnsd, on 127.0.0.2:53, run as operators run it (no --query-log);
    returns the resolv.conf that names it."""
    ns.dnsd(["--listen", "127.0.0.2:53", *services])
    return RESOLV_CONF.read_text().replace("nameserver 127.0.0.1", "nameserver 127.0.0.2")


# -- helpers ---------------------------------------------------------------------

def queries_after(dnsd: DnsdProcess, mark: int,
                  until: Callable[[list[tuple[str, str, int, str]]], bool],
                  timeout: float = 20.0) -> list[tuple[str, str, int, str]]:
    """The (transport, name, type, rcode) query-log entries after line ``mark``,
    waiting (the log is read by a thread) until ``until`` holds or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        seen = []
        for line in dnsd.lines[mark:]:
            match = _QUERY_LINE.search(line)
            if match:
                seen.append((match.group(1), match.group(2).lower().rstrip("."),
                             int(dns.rdatatype.from_text(match.group(3))),
                             str(int(dns.rcode.from_text(match.group(4))))))
        if until(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def getent_addresses(output: str) -> list[str]:
    return [line.split()[0] for line in output.splitlines() if line.strip()]


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# -- glibc -----------------------------------------------------------------------

def test_glibc_getent_hosts(ns: Netns, dnsd: DnsdProcess) -> None:
    found = ns.run(["getent", "hosts", "web.service.dc1.consul"])
    assert found.returncode == 0, found.stderr
    assert set(getent_addresses(found.stdout)) == WEB
    assert found.stdout.split()[1] == "web.service.dc1.consul"

    mark = len(dnsd.lines)
    missing = ns.run(["getent", "hosts", "nope.service.dc1.consul"])
    assert missing.returncode == 2  # getent: "key not found"
    expected = ("udp", "nope.service.dc1.consul", A, "3")  # NXDOMAIN
    seen = queries_after(dnsd, mark, lambda q: expected in q)
    assert expected in seen


def test_glibc_getent_ahosts_asks_a_and_aaaa(ns: Netns, dnsd: DnsdProcess) -> None:
    mark = len(dnsd.lines)
    web = ns.run(["getent", "ahosts", "web.service.dc1.consul"])
    assert web.returncode == 0, web.stderr
    assert set(getent_addresses(web.stdout)) == WEB
    seen = queries_after(dnsd, mark, lambda q: len(q) >= 2)
    # Both families asked (on one socket, in parallel); the AAAA is NODATA, not an error.
    assert ("udp", "web.service.dc1.consul", A, "0") in seen
    assert ("udp", "web.service.dc1.consul", AAAA, "0") in seen

    dual = ns.run(["getent", "ahosts", "dual.service.consul"])
    assert dual.returncode == 0, dual.stderr
    assert set(getent_addresses(dual.stdout)) == DUAL


def test_glibc_large_answer_retried_over_tcp(ns: Netns, dnsd: DnsdProcess) -> None:
    mark = len(dnsd.lines)
    big = ns.run(["getent", "ahosts", "big.service.consul"])
    assert big.returncode == 0, big.stderr
    assert set(getent_addresses(big.stdout)) == BIG_ADDRS
    seen = queries_after(dnsd, mark, lambda q: ("tcp", "big.service.consul", A, "0") in q)
    assert ("udp", "big.service.consul", A, "0") in seen   # truncated: 50 A > 512 bytes
    assert ("tcp", "big.service.consul", A, "0") in seen   # then complete over TCP


def test_glibc_options_use_vc_speaks_tcp_only(ns: Netns, dnsd: DnsdProcess) -> None:
    with ns.resolv_conf(RESOLV_CONF.read_text() + "options use-vc\n"):
        mark = len(dnsd.lines)
        web = ns.run(["getent", "ahosts", "web.service.dc1.consul"])
        big = ns.run(["getent", "ahosts", "big.service.consul"])
    assert web.returncode == 0 and big.returncode == 0, web.stderr + big.stderr
    assert set(getent_addresses(web.stdout)) == WEB
    assert set(getent_addresses(big.stdout)) == BIG_ADDRS
    seen = queries_after(dnsd, mark, lambda q: len(q) >= 4)
    assert {(e[1], e[2]) for e in seen} >= {("web.service.dc1.consul", A),
                                           ("web.service.dc1.consul", AAAA),
                                           ("big.service.consul", A)}
    assert {e[0] for e in seen} == {"tcp"}, seen


def test_glibc_options_single_request(ns: Netns, dnsd: DnsdProcess) -> None:
    with ns.resolv_conf(RESOLV_CONF.read_text() + "options single-request\n"):
        mark = len(dnsd.lines)
        web = ns.run(["getent", "ahosts", "web.service.dc1.consul"])
        missing = ns.run(["getent", "ahosts", "nope.service.dc1.consul"])
    assert web.returncode == 0, web.stderr
    assert set(getent_addresses(web.stdout)) == WEB
    assert missing.returncode == 2
    seen = queries_after(dnsd, mark, lambda q: len(q) >= 3)
    assert ("udp", "web.service.dc1.consul", A, "0") in seen
    assert ("udp", "web.service.dc1.consul", AAAA, "0") in seen


def test_curl_round_robin_across_three_servers(ns: Netns, plain_dnsd: str,
                                               web_servers: set[str]) -> None:
    curl = _need("curl", "curl")
    answered = []
    with ns.resolv_conf(plain_dnsd):
        for _ in range(6):
            result = ns.run([curl, "-sS", "--noproxy", "*", "--max-time", "5",
                             "-w", " %{remote_ip}", "http://web.service.dc1.consul:8080/whoami"])
            assert result.returncode == 0, result.stderr
            body, remote_ip = result.stdout.split()
            assert body == remote_ip  # the server curl connected to is the one that answered
            answered.append(body)
    # Each lookup gets the addresses in a new order and curl takes the first:
    # the load spreads over every server.
    assert set(answered) == web_servers, answered


def first_addresses(ns: Netns, command: list[str], times: int = 3) -> list[str]:
    firsts = []
    for _ in range(times):
        result = ns.run(command)
        assert result.returncode == 0, result.stderr
        firsts.append(result.stdout.split()[0])
    return firsts


def test_rotation_seen_by_clients_sending_cookies(ns: Netns, plain_dnsd: str) -> None:
    dig = _need("dig", "dnsutils")
    with ns.resolv_conf(plain_dnsd):
        firsts = first_addresses(ns, [dig, "+short", "web.service.dc1.consul"])
    assert len(set(firsts)) == 3, firsts


def test_rotation_with_query_log(ns: Netns, dnsd: DnsdProcess) -> None:
    firsts = first_addresses(ns, ["getent", "ahosts", "web.service.dc1.consul"])
    assert len(set(firsts)) == 3, firsts


# -- musl ------------------------------------------------------------------------

def test_musl_getaddrinfo(ns: Netns, dnsd: DnsdProcess, musl_getaddrinfo: Path) -> None:
    mark = len(dnsd.lines)
    web = ns.run([str(musl_getaddrinfo), "web.service.dc1.consul"])
    assert web.returncode == 0, web.stderr
    assert {line.split()[1] for line in web.stdout.splitlines()} == WEB
    # musl sends A and AAAA together and gives up on the name if either is
    # NXDOMAIN: the A-only service's AAAA must be NOERROR with no records.
    seen = queries_after(dnsd, mark, lambda q: len(q) >= 2)
    assert ("udp", "web.service.dc1.consul", AAAA, "0") in seen

    missing = ns.run([str(musl_getaddrinfo), "nope.service.dc1.consul"])
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.strip() == "nope.service.dc1.consul: error: Name does not resolve"


def test_musl_large_service(ns: Netns, dnsd: DnsdProcess, musl_getaddrinfo: Path) -> None:
    big = ns.run([str(musl_getaddrinfo), "big.service.consul"])
    assert big.returncode == 0, big.stderr
    addrs = [line.split()[1] for line in big.stdout.splitlines()]
    # musl before 1.2.4 (Debian 12 ships 1.2.3) has no TCP fallback: it uses the
    # whole records of the truncated 512-byte answer, which must still be valid.
    assert len(addrs) >= 25 and set(addrs) <= BIG_ADDRS, addrs


# -- c-ares (Node.js) ----------------------------------------------------------------

def test_cares_node(ns: Netns, dnsd: DnsdProcess) -> None:
    node = _need("node", "nodejs")
    result = ns.run([node, str(CLIENTS / "cares_resolve.js"), "127.0.0.1",
                     "A:web.service.dc1.consul", "SRV:_web._tcp.service.consul",
                     "A:nope.service.consul", "A:big.service.consul", "SRV:big.service.consul"])
    assert result.returncode == 0, result.stderr
    web, srv, missing, big_a, big_srv = json_lines(result.stdout)
    assert set(web["records"]) == WEB
    assert sorted(srv["records"]) == [
        "1 1 8080 7f00000b.addr.dc1.consul",
        "1 1 8080 7f00000c.addr.dc1.consul",
        "1 5 8080 7f00000d.addr.dc1.consul",
    ]
    assert missing == {"type": "A", "name": "nope.service.consul", "code": "ENOTFOUND"}
    assert set(big_a["records"]) == BIG_ADDRS
    assert len(big_srv["records"]) == 50


# -- Go --------------------------------------------------------------------------

def test_go_pure_resolver(ns: Netns, dnsd: DnsdProcess, go_resolve: Path) -> None:
    result = ns.run([str(go_resolve), "-server", "127.0.0.1:53",
                     "A:web.service.dc1.consul", "HOST:dual.service.consul",
                     "SRV:web.service.consul", "A:nope.service.consul"])
    assert result.returncode == 1, result.stderr  # 1: one lookup (nope) failed
    web, dual, srv, missing = json_lines(result.stdout)
    assert set(web["records"]) == WEB
    assert set(dual["records"]) == DUAL
    assert sorted(srv["records"]) == [
        "1 1 8080 7f00000b.addr.dc1.consul.",
        "1 1 8080 7f00000c.addr.dc1.consul.",
        "1 5 8080 7f00000d.addr.dc1.consul.",
    ]
    assert missing["not_found"] is True and missing["records"] == []


def test_go_retries_truncated_answer_over_tcp(ns: Netns, dnsd: DnsdProcess,
                                              go_resolve: Path) -> None:
    result = ns.run([str(go_resolve), "-server", "127.0.0.1:53",
                     "SRV:big.service.consul", "A:big.service.consul"])
    assert result.returncode == 0, result.stderr
    srv, a = json_lines(result.stdout)
    # 50 SRV records and their addresses exceed Go's 1232-byte EDNS size.
    assert len(srv["records"]) == 50
    assert srv["dials"] == ["udp", "tcp"]
    assert set(a["records"]) == BIG_ADDRS


# -- Java JNDI -------------------------------------------------------------------

def test_java_jndi_srv(ns: Netns, dnsd: DnsdProcess) -> None:
    java = _need("java", "default-jre-headless")
    result = ns.run([java, str(CLIENTS / "JndiSrv.java"), "dns://127.0.0.1:53", "SRV",
                     "_web._tcp.service.dc1.consul", "big.service.consul",
                     "nope.service.consul"], timeout=40)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sorted(line for line in lines if line.startswith("_web.")) == [
        "_web._tcp.service.dc1.consul 1 1 8080 7f00000b.addr.dc1.consul.",
        "_web._tcp.service.dc1.consul 1 1 8080 7f00000c.addr.dc1.consul.",
        "_web._tcp.service.dc1.consul 1 5 8080 7f00000d.addr.dc1.consul.",
    ]
    assert len([line for line in lines if line.startswith("big.")]) == 50
    assert "nope.service.consul NXDOMAIN" in lines


# -- dig and dnspython ---------------------------------------------------------------

def _dig(ns: Netns, *args: str) -> subprocess.CompletedProcess[str]:
    dig = _need("dig", "dnsutils")
    return ns.run([dig, "+time=2", "+tries=2", *args])


def test_dig_through_resolv_conf(ns: Netns, dnsd: DnsdProcess) -> None:
    web = _dig(ns, "+short", "web.service.dc1.consul")  # no @server: resolv.conf's
    assert web.returncode == 0 and set(web.stdout.split()) == WEB

    truncated = _dig(ns, "+ignore", "+noedns", "+noall", "+comments", "+answer",
                     "big.service.consul")
    flags = re.search(r"flags: ([a-z ]+);", truncated.stdout)
    assert flags and "tc" in flags.group(1).split(), truncated.stdout
    udp_answers = re.findall(r"\sIN\s+A\s+(\S+)", truncated.stdout)
    assert 0 < len(udp_answers) < 50  # whole records only, as many as fit 512 bytes

    tcp = _dig(ns, "+tcp", "+short", "big.service.consul")
    assert set(tcp.stdout.split()) == BIG_ADDRS
    srv = _dig(ns, "+short", "big.service.consul", "SRV")  # dig retries the TC over TCP
    assert len(srv.stdout.splitlines()) == 50


def test_dnspython_stub_resolver(ns: Netns, dnsd: DnsdProcess) -> None:
    result = ns.run([sys.executable, str(CLIENTS / "dnspython_stub.py"),
                     "A:web.service.dc1.consul", "SRV:big.service.consul", "A:nope.service.consul",
                     "AAAA:web.service.consul"], env=None)
    web, big, missing, nodata = json_lines(result.stdout)
    assert set(web["records"]) == WEB
    assert len(big["records"]) == 50
    assert missing["error"] == "NXDOMAIN"
    assert nodata["error"] == "NoAnswer"
