"""dnsd's headline promise on a real Docker engine: containers find services by
name through Docker's ``dns`` setting alone.

A private dockerd (``tests/docker_engine.py``) whose daemon.json names dnsd, on
the test network's gateway address port 53, as its only ``dns`` server; dnsd
forwards other names to dnsmasq on loopback (``tests/docker_lab.py``). Containers
are Debian's static busybox; replies are read from inside a container's network
namespace, asking Docker's embedded resolver (127.0.0.11) exactly as the
container's resolver does. Needs root and Debian's docker.io, iptables and
busybox-static; skipped with the reason otherwise.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.dnsd_process import DnsdProcess
from tests.docker_engine import Container
from tests.docker_lab import BUSYBOX, NETWORK, OUTSIDE_ADDRESS, OUTSIDE_NAME, DockerLab, ask


def nslookup_addresses(output: str) -> set[str]:
    """The addresses in busybox nslookup's answer (not the server's own line)."""
    answer = output.split("\n\n", 1)[-1]
    return set(re.findall(r"^Address:\s+([0-9a-fA-F.:]+)$", answer, re.MULTILINE))


@pytest.fixture(scope="module")
def webs(docker_lab: DockerLab) -> Iterator[list[Container]]:
    """Three busybox httpd containers at the addresses dnsd serves as ``web``,
    each page naming its container."""
    started = []
    try:
        for i in (1, 2, 3):
            started.append(docker_lab.engine.run(
                BUSYBOX, "sh", "-c", f"echo web{i} > /www/index.html && exec httpd -f -p 80 "
                "-h /www", name=f"dnsdt-web{i}", network=NETWORK,
                ip=docker_lab.web_address(i), expose=["80/tcp"]))
        yield started
    finally:
        for container in started:
            container.remove()


@pytest.fixture(scope="module")
def client(docker_lab: DockerLab) -> Iterator[Container]:
    """A container that only sleeps: its network namespace is where replies are read."""
    container = docker_lab.engine.run(BUSYBOX, "sleep", "3600", name="dnsdt-client",
                                      network=NETWORK)
    yield container
    container.remove()


def test_daemon_json_dns_gives_every_container_service_names(docker_lab: DockerLab) -> None:
    """No per-container flag: the engine's daemon.json ``dns`` is all it takes,
    on the first network and on one created later."""
    assert docker_lab.engine.daemon_config["dns"] == [docker_lab.network.gateway]
    resolv = docker_lab.busybox("cat", "/etc/resolv.conf")
    assert "nameserver 127.0.0.11" in resolv.stdout          # Docker's embedded resolver
    result = docker_lab.busybox("nslookup", "web.service.consul")
    assert nslookup_addresses(result.stdout) == docker_lab.web_addresses, result.stdout

    other = docker_lab.engine.create_network("dnsdt-other")
    try:
        result = docker_lab.engine.run_once(BUSYBOX, "nslookup", "web.service.consul",
                                            network=other.name)
        assert nslookup_addresses(result.stdout) == docker_lab.web_addresses, result.stdout
    finally:
        docker_lab.engine.remove_network(other.name)


def test_a_srv_nxdomain_nodata_through_docker_resolver(docker_lab: DockerLab,
                                                       client: Container) -> None:
    web = docker_lab.web_addresses
    reply = ask(client, "web.service.consul", "A")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert {rd.address for rrset in reply.answer for rd in rrset} == web

    reply = ask(client, "web.service.consul", "SRV")
    srv = [rd for rrset in reply.answer for rd in rrset]
    assert len(srv) == 3 and {rd.port for rd in srv} == {80}
    assert all(str(rd.target).endswith(".addr.dc1.consul.") for rd in srv)
    assert {rd.address for rrset in reply.additional
            if rrset.rdtype == dns.rdatatype.A for rd in rrset} == web

    reply = ask(client, "nope.service.consul", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]

    # A known name without the asked type: NOERROR, no answer, the SOA (never
    # NXDOMAIN, which would make musl drop the A answer it asked for beside it).
    reply = ask(client, "web.service.consul", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]


def test_truncated_answer_through_docker_resolver(docker_lab: DockerLab,
                                                  client: Container) -> None:
    """50 instances do not fit 512 bytes: Docker's resolver passes the TC bit
    on, and the client's retry over TCP (through Docker's resolver too) gets all."""
    udp = ask(client, "big.service.consul", "A", edns=False)
    assert udp.flags & dns.flags.TC
    assert 0 < sum(len(rrset) for rrset in udp.answer) < 50
    tcp = ask(client, "big.service.consul", "A", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert sum(len(rrset) for rrset in tcp.answer) == 50


def test_http_round_robin_across_three_containers(docker_lab: DockerLab,
                                                  webs: list[Container]) -> None:
    """busybox wget, a new process each time, as a shell loop in a container:
    dnsd's rotation spreads the requests over the three web containers."""
    # busybox 1.35's own `wget -T` crashes; its `timeout` bounds each request.
    loop = ("for i in 1 2 3 4 5 6 7 8 9; do "
            "timeout 5 wget -q -O - http://web.service.consul/ || echo failed; done")
    result = docker_lab.busybox("sh", "-c", loop, timeout=90)
    served = collections.Counter(result.stdout.split())
    assert set(served) == {"web1", "web2", "web3"}, result.stdout + result.stderr
    assert sum(served.values()) == 9 and min(served.values()) >= 2, served


def test_container_names_still_resolve(docker_lab: DockerLab, webs: list[Container]) -> None:
    """Docker's resolver still answers container names itself."""
    result = docker_lab.busybox("nslookup", "dnsdt-web2")
    assert nslookup_addresses(result.stdout) == {docker_lab.web_address(2)}, result.stdout
    page = docker_lab.busybox("timeout", "5", "wget", "-q", "-O", "-", "http://dnsdt-web2/")
    assert page.stdout.split() == ["web2"], page.stdout + page.stderr


def test_names_outside_the_zone_go_to_dnsd_upstream(docker_lab: DockerLab) -> None:
    """Only dnsmasq (dnsd's upstream on loopback) knows this name: the answer
    went container -> Docker's resolver -> dnsd -> dnsmasq, never to the
    machine's own nameserver."""
    result = docker_lab.busybox("nslookup", OUTSIDE_NAME)
    assert nslookup_addresses(result.stdout) == {OUTSIDE_ADDRESS}, result.stdout


def dnsd_in_container(container: Container, args: list[str]) -> DnsdProcess:
    """dnsd running in ``container``'s network namespace and seeing its
    resolv.conf as /etc/resolv.conf, as the image runs it: listening on
    0.0.0.0:53, upstreams from resolv.conf (``nameserver 127.0.0.11``)."""
    info = container.inspect()
    prefix = container.netns_argv(
        ["unshare", "--mount", "--propagation", "private",
         "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
         info["ResolvConfPath"]])
    # DNSD_UPSTREAM empty: the default upstreams, from that resolv.conf.
    return DnsdProcess(["--listen", "0.0.0.0:53", *args], env={"DNSD_UPSTREAM": ""},
                       prefix=prefix)


def query(server: str, name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), server, timeout=5)


def addresses(reply: dns.message.Message) -> set[str]:
    return {rd.address for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.A for rd in rrset}


def test_dnsd_inside_a_container_forwards_to_docker_resolver(
        docker_lab: DockerLab, webs: list[Container], tmp_path) -> None:
    """Inside a container on a user-defined network, 127.0.0.11 is dnsd's
    upstream (not "its own address", though it listens on 0.0.0.0): container
    names and outside names resolve through it."""
    services = tmp_path / "inner.toml"
    services.write_text('[[services]]\nname = "inner"\naddress = "10.213.0.99"\nport = 1\n')
    box = docker_lab.engine.run(BUSYBOX, "sleep", "3600", name="dnsdt-inner",
                                network=NETWORK, ip=docker_lab.network.address(30))
    try:
        with dnsd_in_container(box, ["--static", str(services)]) as inner:
            inner.wait_for_log(r"forwarding to 127\.0\.0\.11:53")
            server = docker_lab.network.address(30)
            assert addresses(query(server, "inner.service.consul")) == {"10.213.0.99"}
            assert addresses(query(server, "dnsdt-web1")) == {docker_lab.web_address(1)}
            assert addresses(query(server, OUTSIDE_NAME)) == {OUTSIDE_ADDRESS}
    finally:
        box.remove()


def test_forwarding_loop_is_answered_servfail_once(docker_lab: DockerLab, tmp_path) -> None:
    """A container whose Docker ``dns`` is its own address, with dnsd inside:
    dnsd -> 127.0.0.11 -> the container's ``dns`` -> dnsd again. dnsd must see the
    loop, answer SERVFAIL and say so in its log, not wait out its upstream."""
    address = docker_lab.network.address(40)
    box = docker_lab.engine.run(BUSYBOX, "sleep", "3600", name="dnsdt-loop",
                                network=NETWORK, ip=address, dns=[address])
    try:
        with dnsd_in_container(box, []) as inner:
            reply = query(address, OUTSIDE_NAME)
            assert reply.rcode() == dns.rcode.SERVFAIL
            inner.wait_for_log(r"(?i)loop")
            assert len(re.findall(r"(?i)loop", inner.log)) == 1
    finally:
        box.remove()

