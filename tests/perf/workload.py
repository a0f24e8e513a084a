"""The benchmark's records and queries: N services x M instances, generated.

One :class:`Registry` yields the same records in three shapes: a dnsd static
services file, a dnsmasq addn-hosts file and a dnsmasq conf file of
``srv-host`` lines, so both servers answer the same names with the same
records (A: M addresses; SRV: M targets ``<hex-ip>.addr.<dc>.<domain>`` with
their addresses in the additional section, as Consul and dnsd build them).
Query files are dnsperf's input format (``name TYPE`` per line).

Pure text generation, no processes. Imports: the standard library only.
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One generated instance, in the fields both servers need."""

    service: str
    id: str
    address: str
    port: int
    node: str
    node_address: str

    @property
    def target_label(self) -> str:
        """Consul's SRV target label for an instance with its own address."""
        return ipaddress.ip_address(self.address).packed.hex()


@dataclass(frozen=True, slots=True)
class Registry:
    """``services`` services of ``instances`` instances each, numbered from 0.

    Addresses are 10.x.y.z from a running instance number (so up to 16M
    instances), nodes are shared by every ``instances_per_node`` instances.
    """

    services: int
    instances: int
    domain: str = "consul"
    datacenter: str = "dc1"
    instances_per_node: int = 16

    def __post_init__(self) -> None:
        if self.services < 1 or self.instances < 1:
            raise ValueError("services and instances must be at least 1")
        if self.services * self.instances >= 1 << 24:
            raise ValueError("at most 16M instances fit the 10.0.0.0/8 numbering")

    def service_name(self, index: int) -> str:
        return f"svc{index:05d}"

    def name(self, index: int) -> str:
        """The DNS name both servers answer for service ``index``."""
        return f"{self.service_name(index)}.service.{self.domain}"

    def missing_name(self, index: int) -> str:
        """A name in the zone that neither server knows (NXDOMAIN)."""
        return f"nosuch{index:05d}.service.{self.domain}"

    def records(self) -> Iterator[InstanceRecord]:
        number = 0
        for s in range(self.services):
            service = self.service_name(s)
            for i in range(self.instances):
                number += 1
                node_number = number // self.instances_per_node
                yield InstanceRecord(
                    service=service,
                    id=f"{service}-{i}",
                    address=str(ipaddress.IPv4Address((10 << 24) + number)),
                    port=20000 + i,
                    node=f"node{node_number:06d}",
                    node_address=str(ipaddress.IPv4Address((11 << 24) + node_number)),
                )

    # --- dnsd -------------------------------------------------------------------

    def dnsd_toml(self) -> str:
        """The static services file (TOML) for ``dnsd --static``."""
        lines = [f"# generated: {self.services} services x {self.instances} instances\n"]
        for rec in self.records():
            lines.append(
                f'[[services]]\nname = "{rec.service}"\nid = "{rec.id}"\n'
                f'address = "{rec.address}"\nport = {rec.port}\nnode = "{rec.node}"\n'
                f'node_address = "{rec.node_address}"\ndatacenter = "{self.datacenter}"\n\n')
        return "".join(lines)

    def dnsd_json(self) -> str:
        """The same file as JSON (much faster to parse than TOML at 100k entries)."""
        return json.dumps({"services": [
            {"name": r.service, "id": r.id, "address": r.address, "port": r.port,
             "node": r.node, "node_address": r.node_address, "datacenter": self.datacenter}
            for r in self.records()]})

    # --- dnsmasq ----------------------------------------------------------------

    def dnsmasq_hosts(self) -> str:
        """An addn-hosts file: each service name once per instance address (dnsmasq
        answers every line of a name), and each SRV target's address."""
        lines = []
        for rec in self.records():
            target = f"{rec.target_label}.addr.{self.datacenter}.{self.domain}"
            lines.append(f"{rec.address} {rec.service}.service.{self.domain} {target}\n")
        return "".join(lines)

    def dnsmasq_conf(self) -> str:
        """A conf file: the zone is local (unknown names are NXDOMAIN, never
        forwarded) and one ``srv-host`` per instance, weight 1 as dnsd gives."""
        lines = [f"local=/{self.domain}/\n"]
        for rec in self.records():
            target = f"{rec.target_label}.addr.{self.datacenter}.{self.domain}"
            lines.append(f"srv-host={rec.service}.service.{self.domain},{target},"
                         f"{rec.port},1,1\n")
        return "".join(lines)


@dataclass(frozen=True, slots=True)
class ForwardZone:
    """Names outside dnsd's zone, served by an upstream dnsmasq: the forwarded case."""

    names: int
    zone: str = "fwd.test"

    def name(self, index: int) -> str:
        return f"host{index:05d}.{self.zone}"

    def hosts(self) -> str:
        return "".join(f"{ipaddress.IPv4Address((12 << 24) + i + 1)} {self.name(i)}\n"
                       for i in range(self.names))


def query_file(names: list[str], qtype: str, *, seed: int = 1, mixed_case: bool = False) -> str:
    """dnsperf input: every name once, shuffled (seeded) so consecutive queries
    differ; ``mixed_case`` randomises letter case as 0x20-using resolvers do."""
    rng = random.Random(seed)
    order = list(names)
    rng.shuffle(order)
    if mixed_case:
        order = ["".join(c.upper() if rng.random() < 0.5 else c for c in n) for n in order]
    return "".join(f"{n} {qtype}\n" for n in order)


def random_mix(names: list[str], qtype: str, count: int, *, seed: int = 1) -> str:
    """dnsperf input of ``count`` names drawn at random (with repeats) from ``names``."""
    rng = random.Random(seed)
    return "".join(f"{rng.choice(names)} {qtype}\n" for _ in range(count))
