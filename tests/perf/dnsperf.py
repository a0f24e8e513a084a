"""Run ``dnsperf`` (Debian's ``dnsperf``) and read its figures.

Two kinds of run: a throughput run (no rate limit, summary only) and a latency
run (a fixed rate, ``-v`` so every reply's latency is printed and percentiles
can be taken). Imports: the standard library only.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_SENT = re.compile(r"Queries sent:\s+(\d+)")
_COMPLETED = re.compile(r"Queries completed:\s+(\d+)")
_LOST = re.compile(r"Queries lost:\s+(\d+)")
_QPS = re.compile(r"Queries per second:\s+([\d.]+)")
_RUNTIME = re.compile(r"Run time \(s\):\s+([\d.]+)")
_AVG = re.compile(r"Average Latency \(s\):\s+([\d.]+)")
_STDDEV = re.compile(r"Latency StdDev \(s\):\s+([\d.]+)")
_SIZES = re.compile(r"Average packet size:\s+request (\d+), response (\d+)")
_RCODES = re.compile(r"Response codes:\s+(.*)")
_RCODE_ITEM = re.compile(r"([A-Z]+) (\d+)")
_VERBOSE = re.compile(r"^> (\S+) \S+ \S+ ([\d.]+)$", re.MULTILINE)


@dataclass(slots=True)
class PerfResult:
    """What one dnsperf run reports."""

    sent: int = 0
    completed: int = 0
    lost: int = 0
    qps: float = 0.0
    run_time: float = 0.0
    avg_latency: float = 0.0
    stddev_latency: float = 0.0
    request_size: int = 0
    response_size: int = 0
    rcodes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, from -v only
    client_cpu: float = 0.0  # dnsperf's own user + system seconds

    def percentile(self, fraction: float) -> float:
        """The latency below which ``fraction`` of the replies came (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[rank]


def parse_output(text: str) -> PerfResult:
    """Read dnsperf's statistics block (and ``-v`` lines when present)."""

    def number(pattern: re.Pattern[str], default: str = "0") -> str:
        match = pattern.search(text)
        return match.group(1) if match else default

    result = PerfResult(
        sent=int(number(_SENT)), completed=int(number(_COMPLETED)), lost=int(number(_LOST)),
        qps=float(number(_QPS)), run_time=float(number(_RUNTIME)),
        avg_latency=float(number(_AVG)), stddev_latency=float(number(_STDDEV)))
    sizes = _SIZES.search(text)
    if sizes:
        result.request_size, result.response_size = int(sizes.group(1)), int(sizes.group(2))
    codes = _RCODES.search(text)
    if codes:
        result.rcodes = {name: int(count) for name, count in _RCODE_ITEM.findall(codes.group(1))}
    result.latencies = [float(m.group(2)) for m in _VERBOSE.finditer(text)
                        if m.group(1) != "T"]
    return result


def command(port: int, query_file: Path, *, seconds: float, clients: int = 8,
            max_qps: int = 0, edns_options: Sequence[str] = (), edns: bool = False,
            verbose: bool = False, runs: int = 0, outstanding: int = 100) -> list[str]:
    """The dnsperf command line. ``edns_options`` are ``code:hexvalue`` (they imply EDNS0)."""
    argv = [shutil.which("dnsperf") or "dnsperf", "-s", "127.0.0.1", "-p", str(port),
            "-d", str(query_file), "-c", str(clients), "-q", str(outstanding), "-t", "2"]
    argv += ["-n", str(runs)] if runs else ["-l", f"{seconds:g}"]
    if max_qps:
        argv += ["-Q", str(max_qps)]
    if edns:
        argv.append("-e")
    for option in edns_options:
        argv += ["-E", option]
    if verbose:
        argv.append("-v")
    return argv


def run(argv: Sequence[str], timeout: float = 600.0) -> PerfResult:
    """Run dnsperf to completion and parse its report; its CPU time is recorded too."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise RuntimeError("dnsperf not found: apt-get install dnsperf") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or "Statistics:" not in done.stdout:
        raise RuntimeError(f"dnsperf failed ({done.returncode}): {done.stderr.strip()}\n"
                           f"{done.stdout[-2000:]}")
    result = parse_output(done.stdout)
    result.client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result
