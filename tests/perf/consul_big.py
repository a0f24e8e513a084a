"""Answers while dnsd reads a huge Consul catalog: ``python -m tests.perf.consul_big``.

A scripted Consul (tests/scripted_consul.py) serves ``--nodes`` nodes (about
330 bytes each, as Consul lists them) and two checks per node, each padded to
``--check-bytes`` (check output is most of a real health listing), plus one
service. A real ``python -m dnsd --consul URL --static FILE`` syncs it while a
client asks for a static name as fast as it can. Prints the longest gap
between two answers until the Consul source is up (or stale: a reply past the
bound on reply sizes is refused), and dnsd's peak RSS (VmHWM).

Imports: ``tests.scripted_consul``, ``tests.dnsd_process``, ``tests.perf.reload``.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from tests.dnsd_process import DnsdProcess
from tests.perf.reload import Prober
from tests.scripted_consul import ScriptedConsul, entry


def nodes_body(count: int) -> bytes:
    return json.dumps([
        {"ID": f"{n:08x}-0000-0000-0000-000000000000", "Node": f"node-{n:06d}",
         "Address": f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", "Datacenter": "dc1",
         "TaggedAddresses": {"lan": "10.0.0.1", "lan_ipv4": "10.0.0.1", "wan": "10.0.0.1",
                             "wan_ipv4": "10.0.0.1"},
         "Meta": {"consul-network-segment": ""}, "CreateIndex": 5, "ModifyIndex": 5}
        for n in range(count)]).encode()


def checks_body(nodes: int, size: int) -> bytes:
    def check(n: int, check_id: str) -> dict[str, object]:
        body: dict[str, object] = {
            "Node": f"node-{n:06d}", "CheckID": check_id, "Name": check_id,
            "Status": "passing", "Notes": "", "Output": "", "ServiceID": "",
            "ServiceName": "", "ServiceTags": [], "Type": "", "CreateIndex": 5,
            "ModifyIndex": 5}
        body["Output"] = "x" * max(0, size - len(json.dumps(body)))
        return body

    return json.dumps([check(n, c) for n in range(nodes)
                       for c in ("serfHealth", "disk")]).encode()


def peak_rss(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return f"{int(match.group(1)) / 1024:,.0f} MB" if match else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--check-bytes", type=int, default=375)
    args = parser.parse_args()
    consul = ScriptedConsul()
    consul.set("/v1/catalog/nodes", nodes_body(args.nodes))
    consul.set("/v1/health/state/any", checks_body(args.nodes, args.check_bytes))
    consul.set("/v1/health/service/web", json.dumps([entry("web", "10.0.0.1")]).encode())
    sizes = {path: len(consul.replies[path].body) / 1e6
             for path in ("/v1/catalog/nodes", "/v1/health/state/any")}
    print(", ".join(f"{path} {mb:.0f} MB" for path, mb in sizes.items()))
    with tempfile.TemporaryDirectory() as tmp:
        static = Path(tmp) / "services.toml"
        static.write_text('[[services]]\nname = "static"\naddress = "10.9.9.9"\n')
        with DnsdProcess(["--static", str(static), "--consul", consul.url,
                          "--log-level", "info"]) as proc:
            prober = Prober(proc.host, proc.port, "static.service.consul")
            start = time.monotonic()
            prober.start()
            deadline = start + 600
            outcome = "neither up nor stale in 600 s"
            while time.monotonic() < deadline:
                if re.search(r"table version \d+: 2 services", proc.log):
                    outcome = "Consul source up"
                    break
                if "serving the last table" in proc.log:
                    outcome = "Consul source stale: " + proc.log.split(
                        "serving the last table")[0].rsplit("):", 1)[-1].strip(" ;")
                    break
                time.sleep(0.05)
            took = time.monotonic() - start
            prober.stopping.set()
            prober.join(35)
            print(f"{outcome} after {took:.1f} s; longest gap between static answers "
                  f"{prober.gap_since(start):.2f} s; peak RSS {peak_rss(proc.proc.pid)}")
    consul.close()


if __name__ == "__main__":
    main()
