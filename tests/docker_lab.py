"""dnsd in front of a private Docker engine, the way a host runs it.

:func:`docker_lab` starts, in this order: a /24 reserved for the test network;
a private engine (``tests/docker_engine.py``) whose daemon.json names that
network's gateway as its only ``dns`` server, so Docker's embedded resolver
never falls back to the machine's own nameserver; the user-defined network
``dnsdt``; the busybox image; dnsmasq on loopback as dnsd's upstream; and dnsd on
the gateway address, port 53 (Docker's resolver on 20.10 forwards only to port
53 and never to a loopback address), serving :data:`SERVICES`.

Containers on ``dnsdt`` therefore find services through Docker's ``dns``
setting alone, and :func:`ask` asks Docker's resolver (127.0.0.11) from inside a
container's network namespace with dnspython, for replies tests can inspect
(flags, rcode, sections). Imports the standard library, dnspython,
``tests.dnsd_process``, ``tests.docker_engine`` and ``tests.upstreams``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message

from tests.dnsd_process import DnsdProcess
from tests.docker_engine import Container, Engine, Network, reserve_subnet
from tests.upstreams import Dnsmasq

BUSYBOX = "dnsdt-busybox:latest"
NETWORK = "dnsdt"
# Hosts on the test network: web containers, the big service's instances (data
# only: nothing is ever sent to them).
WEB_HOSTS = (11, 12, 13)
BIG_HOSTS = range(101, 151)
# What only dnsd's upstream knows: proof that a name went through dnsd to it.
OUTSIDE_NAME = "outside.test"
OUTSIDE_ADDRESS = "198.51.100.7"


def services_toml(network: Network) -> str:
    """``web`` at the three web containers' addresses (port 80), and ``big``:
    50 instances, more than a 512-byte UDP reply holds."""
    entries = [f'[[services]]\nname = "web"\nid = "web{i}"\n'
               f'address = "{network.address(host)}"\nport = 80\n'
               for i, host in enumerate(WEB_HOSTS, 1)]
    entries += [f'[[services]]\nname = "big"\naddress = "{network.address(host)}"\n'
                f'port = 80\n' for host in BIG_HOSTS]
    return "\n".join(entries)


@dataclass
class DockerLab:
    engine: Engine
    network: Network
    dnsd: DnsdProcess
    upstream: Dnsmasq
    services: Path

    def web_address(self, i: int) -> str:
        return self.network.address(WEB_HOSTS[i - 1])

    @property
    def web_addresses(self) -> set[str]:
        return {self.network.address(h) for h in WEB_HOSTS}

    def busybox(self, *command: str, timeout: float = 60.0,
                extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """A throw-away busybox container on the test network, as a user runs
        one: no DNS flag of its own."""
        return self.engine.run_once(BUSYBOX, *command, network=NETWORK, timeout=timeout,
                                    extra=extra)


_ASK = """
import sys
import dns.message, dns.query
server, name, rdtype, transport, edns = sys.argv[1:6]
query = dns.message.make_query(name, rdtype, use_edns=0 if edns == "1" else False)
if transport == "tcp":
    reply = dns.query.tcp(query, server, timeout=5)
else:
    reply = dns.query.udp(query, server, timeout=5, ignore_trailing=True)
sys.stdout.write(reply.to_text())
"""


def ask(container: Container, name: str, rdtype: str = "A", *, tcp: bool = False,
        edns: bool = True, server: str = "127.0.0.11") -> dns.message.Message:
    """One query from inside ``container``'s network namespace (by default to
    Docker's embedded resolver), as the container's own resolver would send it."""
    result = container.run_in_netns(
        [sys.executable, "-c", _ASK, server, name, rdtype, "tcp" if tcp else "udp",
         "1" if edns else "0"])
    assert result.returncode == 0, result.stdout + result.stderr
    return dns.message.from_text(result.stdout)


@contextlib.contextmanager
def docker_lab(workdir: Path) -> Iterator[DockerLab]:
    """The whole setup described in the module docstring; all of it stopped on exit."""
    subnet = reserve_subnet()
    engine = Engine({"dns": [subnet.gateway]})
    with contextlib.ExitStack() as stack:
        stack.callback(subnet.release)
        stack.callback(engine.close)
        engine.start()
        network = engine.create_network(NETWORK, subnet)
        engine.import_busybox(BUSYBOX)
        upstream = stack.enter_context(Dnsmasq([f"--host-record={OUTSIDE_NAME},"
                                                f"{OUTSIDE_ADDRESS}"]))
        services = workdir / "services.toml"
        services.write_text(services_toml(network))
        dnsd = stack.enter_context(DnsdProcess(
            ["--listen", f"{network.gateway}:53", "--static", str(services),
             "--upstream", upstream.spec, "--node-name", "dockerhost"]))
        yield DockerLab(engine, network, dnsd, upstream, services)
