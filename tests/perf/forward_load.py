"""Forwarding under a flood of random names: ``python -m tests.perf.forward_load``.

Every name is new (``<random>.rnd.test``), so every query misses the cache and
goes to the upstream, a dnsmasq answering the whole ``rnd.test`` zone itself
(``--address``). While ``dnsperf`` drives that load without a rate limit, a
second ``dnsperf`` asks in-zone A questions at a fixed rate and records every
reply's latency: the figure that shows whether forwarding starves the zone.

Prints the forwarded qps (completed, lost, rcodes), dnsd's CPU, and the in-zone
latency percentiles, once with no forwarding load and once under it.
Imports: the standard library and ``tests.perf``.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tests.perf import dnsperf
from tests.perf.servers import Dnsd, Dnsmasq, answers_query, cpu_seconds
from tests.perf.workload import Registry, query_file

ZONE = "rnd.test"


def random_names(count: int, seed: int) -> str:
    """dnsperf input of ``count`` distinct names under :data:`ZONE`."""
    rng = random.Random(seed)
    letters = string.ascii_lowercase + string.digits
    seen: set[str] = set()
    while len(seen) < count:
        seen.add("".join(rng.choices(letters, k=12)))
    return "".join(f"{label}.{ZONE} A\n" for label in seen)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def latency_line(label: str, result: dnsperf.PerfResult) -> str:
    return (f"{label:34} p50 {_ms(result.percentile(0.5))} ms, p99 "
            f"{_ms(result.percentile(0.99))} ms, p99.9 {_ms(result.percentile(0.999))} ms "
            f"({result.completed:,} replies, {result.lost} lost)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.forward_load",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of the forwarding load (default 10)")
    parser.add_argument("--names", type=int, default=400_000,
                        help="distinct random names in the query file (default 400k)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--outstanding", type=int, default=200,
                        help="dnsperf -q for the forwarding load (default 200)")
    parser.add_argument("--flood-qps", type=int, default=0,
                        help="rate of the forwarding load (default 0: as fast as it goes)")
    parser.add_argument("--zone-qps", type=int, default=1000,
                        help="rate of the in-zone latency run (default 1000)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)

    reg = Registry(50, 3)
    rate = f"-Q {args.flood_qps}" if args.flood_qps else "no rate limit"
    out = [f"random out-of-zone names against a dnsmasq upstream: {args.seconds:g} s of "
           f"dnsperf -c {args.clients} -q {args.outstanding} ({rate}); in-zone A at "
           f"{args.zone_qps} qps"]
    with tempfile.TemporaryDirectory(prefix="dnsd-fwdload-") as tmp:
        work = Path(tmp)
        (work / "services.toml").write_text(reg.dnsd_toml())
        zone_queries = work / "q-zone"
        zone_queries.write_text(query_file([reg.name(i) for i in range(reg.services)], "A"))
        stack: list[Dnsd | Dnsmasq] = []
        try:
            upstream = Dnsmasq(work, "upstream", [f"--address=/{ZONE}/12.0.0.1",
                                                  "--local-ttl=60"])
            stack.append(upstream)
            upstream.wait_ready(f"ready.{ZONE}")
            dnsd = Dnsd("dnsd", ["--static", str(work / "services.toml"),
                                 "--upstream", f"127.0.0.1:{upstream.port}"])
            stack.append(dnsd)
            deadline = time.monotonic() + 10
            while not answers_query(dnsd.port, f"first.{ZONE}"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dnsd does not forward:\n{dnsd.proc.log}")
                time.sleep(0.1)
            quiet = dnsperf.run(dnsperf.command(dnsd.port, zone_queries, seconds=3,
                                                clients=1, max_qps=args.zone_qps,
                                                verbose=True))
            out.append(latency_line("in-zone, no forwarding load", quiet))
            for round_no in range(1, args.rounds + 1):
                names = work / f"q-random-{round_no}"
                names.write_text(random_names(args.names, round_no))
                load: list[dnsperf.PerfResult] = []
                flood_argv = dnsperf.command(dnsd.port, names, seconds=args.seconds,
                                             clients=args.clients, max_qps=args.flood_qps,
                                             outstanding=args.outstanding)
                flood = threading.Thread(
                    target=lambda argv=flood_argv, into=load: into.append(dnsperf.run(argv)))
                before = cpu_seconds(dnsd.pid)
                flood.start()
                time.sleep(min(2.0, args.seconds / 4))  # let the flood reach its pace
                zone = dnsperf.run(dnsperf.command(
                    dnsd.port, zone_queries, seconds=max(1.0, args.seconds / 2), clients=1,
                    max_qps=args.zone_qps, verbose=True))
                flood.join()
                used = cpu_seconds(dnsd.pid) - before
                fwd = load[0]
                out.append(f"round {round_no}: forwarded {fwd.qps:,.0f} qps "
                           f"({fwd.completed:,} completed, {fwd.lost:,} lost, rcodes "
                           f"{fwd.rcodes}); dnsd CPU {used / max(fwd.run_time, 1e-9) * 100:.0f}"
                           f"% of a core")
                out.append(latency_line("  in-zone during the flood", zone))
        finally:
            for proc in reversed(stack):
                proc.stop()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
