"""dnsd against dnsmasq, side by side, in one run: ``python -m tests.perf.bench``.

Both servers answer the same generated records (``--services`` x ``--instances``,
see :mod:`tests.perf.workload`); ``dnsperf`` drives each in turn, alternating
which goes first every round, for every case:

- ``a``: A questions for the service names (one A record per instance);
- ``srv``: SRV questions (one SRV per instance, addresses in the additional section);
- ``nxdomain``: unknown names in the zone;
- ``edns-cookie``: the A questions with EDNS0 and a client COOKIE option (RFC 7873);
- ``case0x20``: the A questions in random letter case (resolvers using 0x20);
- ``forward``: names outside the zone, answered from the cache: dnsd with
  ``--upstream`` and a dnsmasq with its cache on, both in front of the same
  upstream dnsmasq (skipped when ``python -m dnsd --upstream`` does not forward).

Each measurement is a throughput run (no rate limit: qps, CPU per 100k answers
from /proc/PID/stat) then a latency run at a fixed rate (``-v``: percentiles of
every reply's latency). dnsperf needs a core of its own to drive dnsmasq at
full speed; on a 2-core machine the server and dnsperf share the machine, so
the "% of a core" figures show which side was the limit. Imports: the
standard library and ``tests.perf``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.perf import dnsperf
from tests.perf.servers import Dnsd, Dnsmasq, answers_query, cpu_times
from tests.perf.workload import ForwardZone, Registry, query_file

CASES = ("a", "srv", "nxdomain", "edns-cookie", "case0x20", "forward")
COOKIE_OPTION = "10:0123456789abcdef"  # EDNS option 10, an 8-byte client cookie
SERVERS = ("dnsd", "dnsmasq")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    description: str
    queries: Path
    expect: str  # the rcode every reply should carry
    pair: str  # "registry", "registry-srv" or "forward": which two servers answer it
    edns_options: tuple[str, ...] = ()


@dataclass(slots=True)
class Sample:
    """One server, one case, one round."""

    server: str
    case: str
    round: int
    qps: float
    completed: int
    lost: int
    seconds: float
    server_cpu: float
    server_user_cpu: float
    client_cpu: float
    response_size: int
    rcodes: dict[str, int]
    p50: float = float("nan")
    p90: float = float("nan")
    p99: float = float("nan")
    p999: float = float("nan")
    latency_qps: float = 0.0

    @property
    def cpu_per_100k(self) -> float:
        return self.server_cpu / self.completed * 100_000 if self.completed else float("nan")

    @property
    def user_cpu_per_100k(self) -> float:
        """The user-space part: the server's own code, without the kernel's socket work."""
        return self.server_user_cpu / self.completed * 100_000 if self.completed else float("nan")


@dataclass(slots=True)
class Endpoints:
    """The running servers, by pair and server name: (pid, port)."""

    ports: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="dnsd --workers (default 1)")
    parser.add_argument("--pure-python", action="store_true",
                        help="run dnsd without its compiled UDP loop (DNSD_PURE_PYTHON=1), "
                             "to see what the loop buys")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of each throughput run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds per case (default 3)")
    parser.add_argument("--case", action="append", choices=CASES,
                        help="run only this case (repeatable; default all)")
    parser.add_argument("--clients", type=int, default=8,
                        help="dnsperf -c: source ports (spread over dnsd workers)")
    parser.add_argument("--outstanding", type=int, default=100,
                        help="dnsperf -q: queries in flight (default 100)")
    parser.add_argument("--latency-qps", type=int, default=5000,
                        help="rate of the latency run (default 5000; 0 skips it)")
    parser.add_argument("--latency-seconds", type=float, default=2.0)
    parser.add_argument("--forward-names", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    args = parser.parse_args(argv)
    args.case = args.case or list(CASES)
    return args


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def write_inputs(workdir: Path, reg: Registry, fwd: ForwardZone) -> dict[str, Case]:
    names = [reg.name(i) for i in range(reg.services)]
    files = {
        "services.toml": reg.dnsd_toml(),
        "hosts": reg.dnsmasq_hosts(),
        "srv.conf": reg.dnsmasq_conf(),
        "upstream.hosts": fwd.hosts(),
        "q-a": query_file(names, "A"),
        "q-srv": query_file(names, "SRV"),
        "q-nx": query_file([reg.missing_name(i) for i in range(reg.services)], "A"),
        "q-case": query_file(names, "A", mixed_case=True),
        "q-fwd": query_file([fwd.name(i) for i in range(fwd.names)], "A"),
    }
    for name, text in files.items():
        (workdir / name).write_text(text)
    per = f"{reg.instances} per name"
    cases = [
        Case("a", f"A, {reg.services} service names, {per}", workdir / "q-a", "NOERROR",
             "registry"),
        Case("srv", f"SRV, {reg.services} service names, {per} + additional A",
             workdir / "q-srv", "NOERROR", "registry-srv"),
        Case("nxdomain", f"A, {reg.services} unknown names in the zone", workdir / "q-nx",
             "NXDOMAIN", "registry"),
        Case("edns-cookie", "A, EDNS0 + client COOKIE option", workdir / "q-a", "NOERROR",
             "registry", (COOKIE_OPTION,)),
        Case("case0x20", "A, random letter case", workdir / "q-case", "NOERROR", "registry"),
        Case("forward", f"A, {fwd.names} names outside the zone, from cache",
             workdir / "q-fwd", "NOERROR", "forward"),
    ]
    return {case.name: case for case in cases}


def start_servers(args: argparse.Namespace, workdir: Path, reg: Registry, fwd: ForwardZone,
                  stack: list[Dnsd | Dnsmasq]) -> Endpoints:
    ends = Endpoints()
    workers = ["--workers", str(args.workers)] if args.workers > 1 else []
    env = {"DNSD_PURE_PYTHON": "1" if args.pure_python else "0"}
    probe = reg.name(0)
    cache = max(10000, reg.services * reg.instances * 2)
    # Two dnsmasq: dnsmasq scans its srv-host lines one by one for every question
    # (A and NXDOMAIN too), so the A cases get one with the hosts file alone,
    # its fastest shape, and only the SRV case pays for the SRV lines.
    plain = Dnsmasq(workdir, "dnsmasq-hosts", [f"--addn-hosts={workdir / 'hosts'}",
                                                f"--local=/{reg.domain}/"], cache_size=cache)
    stack.append(plain)
    plain.wait_ready(probe)
    with_srv = Dnsmasq(workdir, "dnsmasq-srv", [f"--addn-hosts={workdir / 'hosts'}",
                                                f"--conf-file={workdir / 'srv.conf'}"],
                       cache_size=cache)
    stack.append(with_srv)
    with_srv.wait_ready(probe)
    dnsd = Dnsd("dnsd", ["--static", str(workdir / "services.toml"), *workers], env)
    stack.append(dnsd)
    if not answers_query(dnsd.port, probe, timeout=5.0):
        raise RuntimeError(f"dnsd does not answer {probe}:\n{dnsd.proc.log}")
    ends.ports[("registry", "dnsmasq")] = (plain.pid, plain.port)
    ends.ports[("registry-srv", "dnsmasq")] = (with_srv.pid, with_srv.port)
    ends.ports[("registry", "dnsd")] = ends.ports[("registry-srv", "dnsd")] = (dnsd.pid,
                                                                               dnsd.port)

    if "forward" in args.case:
        upstream = Dnsmasq(workdir, "upstream", [
            f"--addn-hosts={workdir / 'upstream.hosts'}", f"--local=/{fwd.zone}/",
            "--local-ttl=3600"])  # hosts answers carry TTL 0 unless told: nothing to cache
        stack.append(upstream)
        upstream.wait_ready(fwd.name(0))
        front = Dnsmasq(workdir, "dnsmasq-front", [f"--server=127.0.0.1#{upstream.port}"],
                        cache_size=max(10000, fwd.names * 2))
        stack.append(front)
        front.wait_ready(fwd.name(0))
        forwarder = Dnsd("dnsd-forward", ["--upstream", f"127.0.0.1:{upstream.port}",
                                          *workers], env)
        stack.append(forwarder)
        deadline = time.monotonic() + 5
        while not answers_query(forwarder.port, fwd.name(0)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if answers_query(forwarder.port, fwd.name(0)):
            ends.ports[("forward", "dnsmasq")] = (front.pid, front.port)
            ends.ports[("forward", "dnsd")] = (forwarder.pid, forwarder.port)
        else:
            ends.notes.append("forward: skipped: forwarding not available "
                              "(python -m dnsd --upstream did not answer a forwarded name)")
    return ends


def measure(args: argparse.Namespace, case: Case, server: str, round_no: int,
            pid: int, port: int) -> Sample:
    argv = dnsperf.command(port, case.queries, seconds=args.seconds, clients=args.clients,
                           outstanding=args.outstanding, edns_options=case.edns_options)
    user_before, sys_before = cpu_times(pid)
    result = dnsperf.run(argv)
    user_after, sys_after = cpu_times(pid)
    server_cpu = (user_after - user_before) + (sys_after - sys_before)
    sample = Sample(server=server, case=case.name, round=round_no, qps=result.qps,
                    completed=result.completed, lost=result.lost, seconds=result.run_time,
                    server_cpu=server_cpu, server_user_cpu=user_after - user_before,
                    client_cpu=result.client_cpu,
                    response_size=result.response_size, rcodes=result.rcodes)
    if args.latency_qps:
        argv = dnsperf.command(port, case.queries, seconds=args.latency_seconds,
                               clients=args.clients, max_qps=args.latency_qps,
                               edns_options=case.edns_options, verbose=True)
        timed = dnsperf.run(argv)
        sample.p50, sample.p90 = timed.percentile(0.50), timed.percentile(0.90)
        sample.p99, sample.p999 = timed.percentile(0.99), timed.percentile(0.999)
        sample.latency_qps = timed.qps
    return sample


def warm_up(args: argparse.Namespace, case: Case, port: int) -> None:
    """One pass through the query file: fills answer and forward caches."""
    argv = dnsperf.command(port, case.queries, seconds=0, clients=args.clients, runs=1,
                           outstanding=args.outstanding, edns_options=case.edns_options)
    dnsperf.run(argv)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def report(args: argparse.Namespace, cases: dict[str, Case], samples: list[Sample],
           ends: Endpoints) -> str:
    out: list[str] = []
    if args.pure_python:
        loop = "Python UDP loop"
    elif importlib.util.find_spec("dnsd._fastudp") is None:
        loop = "Python UDP loop: the compiled one is not built"
    else:
        loop = "compiled UDP loop"
    out.append(f"dnsd vs dnsmasq: {args.services} services x {args.instances} instances, "
               f"dnsd --workers {args.workers} ({loop}), "
               f"{args.rounds} rounds x {args.seconds:g} s, "
               f"dnsperf -c {args.clients} -q {args.outstanding}; latency at "
               f"{args.latency_qps} qps for {args.latency_seconds:g} s")
    header = f"{'':34}{'dnsd':>12}{'dnsmasq':>12}{'dnsd/dnsmasq':>14}"
    summary: list[str] = []
    for name in args.case:
        case = cases[name]
        by = {s: [x for x in samples if x.case == name and x.server == s] for s in SERVERS}
        out.append("")
        if not by["dnsd"] or not by["dnsmasq"]:
            out.append(f"case {name}: {case.description}: "
                       + next((n.split(": ", 1)[1] for n in ends.notes
                               if n.startswith(name + ":")), "skipped"))
            summary.append(f"{name:12} skipped")
            continue
        out.append(f"case {name}: {case.description}")
        out.append(header)

        def row(label: str, values: dict[str, float], fmt: str, ratio: bool = True) -> None:
            d, m = values["dnsd"], values["dnsmasq"]
            r = f"{d / m:14.2f}" if ratio and m else f"{'':14}"
            out.append(f"{label:34}{format(d, fmt):>12}{format(m, fmt):>12}{r}")

        qps = {s: _median([x.qps for x in by[s]]) for s in SERVERS}
        row("qps, median", qps, ",.0f")
        for s in SERVERS:
            out.append(f"{'  each round, ' + s:34}" + " ".join(f"{x.qps:,.0f}" for x in by[s]))
        ratios = [d.qps / m.qps for d, m in zip(by["dnsd"], by["dnsmasq"], strict=True)
                  if m.qps]
        out.append(f"{'  each round, dnsd/dnsmasq':34}" + " ".join(f"{r:.2f}" for r in ratios))
        cpu = {s: _median([x.cpu_per_100k for x in by[s]]) for s in SERVERS}
        row("server CPU s per 100k answers", cpu, ".3f")
        user = {s: _median([x.user_cpu_per_100k for x in by[s]]) for s in SERVERS}
        row("  of which user (not kernel)", user, ".3f")
        use = {s: _median([x.server_cpu / x.seconds * 100 for x in by[s] if x.seconds])
               for s in SERVERS}
        row("server CPU, % of one core", use, ".0f", ratio=False)
        client = {s: _median([x.client_cpu / x.seconds * 100 for x in by[s] if x.seconds])
                  for s in SERVERS}
        row("dnsperf CPU, % of one core", client, ".0f", ratio=False)
        if args.latency_qps:
            for label, attr in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"),
                                ("p99.9", "p999")):
                lat = {s: _median([getattr(x, attr) * 1000 for x in by[s]]) for s in SERVERS}
                row(f"latency {label} ms @{args.latency_qps} qps", lat, ".3f")
        size = {s: float(by[s][-1].response_size) for s in SERVERS}
        row("response bytes (average)", size, ".0f", ratio=False)
        for s in SERVERS:
            codes: dict[str, int] = {}
            for x in by[s]:
                for code, count in x.rcodes.items():
                    codes[code] = codes.get(code, 0) + count
            total = sum(codes.values()) or 1
            wrong = total - codes.get(case.expect, 0)
            lost = sum(x.lost for x in by[s])
            if wrong / total > 0.001 or lost / max(1, lost + total) > 0.001:
                out.append(f"  WARNING {s}: rcodes {codes}, lost {lost} "
                           f"(expected all {case.expect})")
        summary.append(f"{name:12} qps {qps['dnsd']:>9,.0f} vs {qps['dnsmasq']:>9,.0f} "
                       f"= {qps['dnsd'] / qps['dnsmasq']:.2f}x   CPU/100k "
                       f"{cpu['dnsd']:.3f} vs {cpu['dnsmasq']:.3f} s "
                       f"= {cpu['dnsd'] / cpu['dnsmasq']:.2f}x")
    out.append("")
    out.append("summary (dnsd vs dnsmasq, medians):")
    out.extend("  " + line for line in summary)
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reg = Registry(args.services, args.instances)
    fwd = ForwardZone(args.forward_names)
    stack: list[Dnsd | Dnsmasq] = []
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="dnsd-bench-") as tmp:
        workdir = Path(tmp)
        cases = write_inputs(workdir, reg, fwd)
        try:
            ends = start_servers(args, workdir, reg, fwd, stack)
            for note in ends.notes:
                progress(note)
            runnable = [cases[n] for n in args.case if (cases[n].pair, "dnsd") in ends.ports]
            for case in runnable:
                for server in SERVERS:
                    warm_up(args, case, ends.ports[(case.pair, server)][1])
            for round_no in range(1, args.rounds + 1):
                # Alternate who goes first so drift in the machine's load hits both.
                order = SERVERS if round_no % 2 else SERVERS[::-1]
                for case in runnable:
                    for server in order:
                        pid, port = ends.ports[(case.pair, server)]
                        sample = measure(args, case, server, round_no, pid, port)
                        samples.append(sample)
                        progress(f"round {round_no} {case.name:11} {server:8} "
                                 f"{sample.qps:>9,.0f} qps  "
                                 f"{sample.cpu_per_100k:.3f} CPU s/100k  "
                                 f"p99 {_ms(sample.p99)} ms")
        finally:
            for proc in reversed(stack):
                proc.stop()
    text = report(args, cases, samples, ends)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v)
                                                  for k, v in vars(args).items()},
                                         "samples": [asdict(s) for s in samples],
                                         "notes": ends.notes, "report": text}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
