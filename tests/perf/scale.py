"""dnsd at scale: ``python -m tests.perf.scale`` (default 100k instances, 10k services).

Prints:
- the time to build the registry values (a ``View`` of validated ``Instance``s),
  to publish it into a ``Table`` (merge into a snapshot and swap it in), and to
  republish after one instance changed (what every registry update costs);
- the time ``dnsd.sources.static`` takes to load the services file (TOML and JSON);
- a real ``python -m dnsd --static FILE``: start-to-answering time against a
  one-service file, and its RSS once loaded and after the query run;
- qps through dnsperf with a random-name query mix, beside a dnsmasq serving
  the same A records from an addn-hosts file (its RSS too).

Imports: ``dnsd.model``, ``dnsd.table``, ``dnsd.sources.static``, ``tests.perf``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from dnsd.model import Instance, View
from dnsd.sources.static import StaticSettings, StaticSource
from dnsd.table import Table
from tests.perf import dnsperf
from tests.perf.servers import Dnsd, Dnsmasq, cpu_seconds, rss_bytes, wait_answering
from tests.perf.workload import Registry, random_mix

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    gc.collect()
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def build_view(reg: Registry) -> View:
    return View(instances=tuple(
        Instance(service=r.service, node=r.node, datacenter=reg.datacenter, id=r.id,
                 address=r.address, node_address=r.node_address, port=r.port)
        for r in reg.records()))


def table_figures(reg: Registry) -> list[str]:
    view, build = timed(lambda: build_view(reg))
    table = Table("dc1")
    snapshot, first = timed(lambda: table.publish("static", view))
    # One instance moves: the next view differs by one value, as after a registry event.
    changed = list(view.instances)
    changed[0] = dataclasses.replace(changed[0], port=changed[0].port + 1)
    next_view = View(instances=tuple(changed))
    _, again = timed(lambda: table.publish("static", next_view))
    return [
        f"build View of {len(view.instances):,} Instances       {build:8.3f} s",
        f"Table.publish, first snapshot          {first:8.3f} s"
        f"  ({len(snapshot.services):,} services, {len(snapshot.nodes):,} nodes)",
        f"Table.publish after one change         {again:8.3f} s   (target < 0.5 s)",
    ]


def load_figures(toml_path: Path, json_path: Path) -> list[str]:
    lines = []
    for label, path in (("TOML", toml_path), ("JSON", json_path)):
        source = StaticSource(str(path), StaticSettings("bench", "dc1"))
        view, seconds = timed(source.load)
        lines.append(f"static source load, {label:4} ({path.stat().st_size / 1e6:5.1f} MB)"
                     f"   {seconds:6.3f} s   ({len(view.instances):,} instances)")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=10, help="per service (default 10)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--queries", type=int, default=100_000,
                        help="lines in the random query mix (default 100k)")
    args = parser.parse_args(argv)
    reg = Registry(args.services, args.instances)
    out = [f"scale: {args.services:,} services x {args.instances} instances = "
           f"{args.services * args.instances:,} instances"]
    out += table_figures(reg)

    with tempfile.TemporaryDirectory(prefix="dnsd-scale-") as tmp:
        work = Path(tmp)
        big_toml, big_json = work / "big.toml", work / "big.json"
        big_toml.write_text(reg.dnsd_toml())
        big_json.write_text(reg.dnsd_json())
        small = work / "small.toml"
        small.write_text(Registry(1, 1).dnsd_toml())
        (work / "hosts").write_text(reg.dnsmasq_hosts())
        names = [reg.name(i) for i in range(reg.services)]
        mix = work / "q-mix"
        mix.write_text(random_mix(names, "A", args.queries))
        out += load_figures(big_toml, big_json)

        stack: list[Dnsd | Dnsmasq] = []
        try:
            baseline = Dnsd("dnsd-small", ["--static", str(small)])
            stack.append(baseline)
            base_up = baseline.listening_after + wait_answering(baseline.port, reg.name(0))
            base_rss = rss_bytes(baseline.pid)
            baseline.stop()
            stack.remove(baseline)

            started = time.monotonic()
            dnsd = Dnsd("dnsd", ["--static", str(big_toml)])
            stack.append(dnsd)
            big_up = time.monotonic() - started
            big_up += wait_answering(dnsd.port, reg.name(reg.services - 1))
            loaded_rss = rss_bytes(dnsd.pid)
            out.append(f"dnsd start to answering: {big_up:.2f} s with the big TOML file, "
                       f"{base_up:.2f} s with one service (load = {big_up - base_up:.2f} s)")

            dnsmasq = Dnsmasq(work, "dnsmasq-hosts", [f"--addn-hosts={work / 'hosts'}",
                                                       f"--local=/{reg.domain}/"],
                              cache_size=10000)
            stack.append(dnsmasq)
            dnsmasq.wait_ready(reg.name(0))

            qps: dict[str, list[float]] = {"dnsd": [], "dnsmasq": []}
            cpu: dict[str, list[float]] = {"dnsd": [], "dnsmasq": []}
            for server in (dnsd, dnsmasq):  # warm-up: one pass fills dnsd's answer cache
                dnsperf.run(dnsperf.command(server.port, mix, seconds=0, runs=1,
                                            clients=args.clients))
            for round_no in range(args.rounds):
                order = (dnsd, dnsmasq) if round_no % 2 == 0 else (dnsmasq, dnsd)
                for server in order:
                    label = "dnsd" if server is dnsd else "dnsmasq"
                    before = cpu_seconds(server.pid)
                    result = dnsperf.run(dnsperf.command(server.port, mix, seconds=args.seconds,
                                                         clients=args.clients))
                    used = cpu_seconds(server.pid) - before
                    qps[label].append(result.qps)
                    cpu[label].append(used / max(1, result.completed) * 100_000)
                    if result.rcodes.get("NOERROR", 0) < 0.999 * result.completed:
                        out.append(f"WARNING {label}: rcodes {result.rcodes}")
            served_rss = rss_bytes(dnsd.pid)
            out.append(f"dnsd RSS: {base_rss / 2**20:.0f} MB with one service, "
                       f"{loaded_rss / 2**20:.0f} MB loaded, {served_rss / 2**20:.0f} MB after "
                       f"the query runs (target < 200 MB); dnsmasq RSS "
                       f"{rss_bytes(dnsmasq.pid) / 2**20:.0f} MB")
            for label in ("dnsd", "dnsmasq"):
                out.append(f"random mix of {args.queries:,} A queries over {args.services:,} "
                           f"names, {label:8}: qps "
                           + " ".join(f"{q:,.0f}" for q in qps[label])
                           + "; CPU s/100k " + " ".join(f"{c:.3f}" for c in cpu[label]))
        finally:
            for proc in reversed(stack):
                proc.stop()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
