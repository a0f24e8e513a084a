"""Timings of events the tests only check happen: how long they take here.

The test suite asserts behaviour (a dead upstream is tried once, then skipped;
a services-file edit is answered; a restart answers from the saved table), never
a duration, because a busy machine can miss any fixed bound. This prints the
durations, for the README and for comparing changes:

    python -m tests.perf.timings [--rounds N]

- failover: a dead first upstream (never answers) and a live dnsmasq behind
  it: the first query (one try waited out, about 1 s), later queries (the dead
  one skipped), and SERVFAIL when both upstreams are dead (two tries);
- reload: a services file edited while dnsd runs, until the new name answers;
- start: ``python -m dnsd`` until the first answer from a services file.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dns.rcode

from tests.dnsd_process import DnsdProcess, wait_until
from tests.upstreams import Dnsmasq, ScriptedUpstream


def _timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def failover(rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"first query, dead upstream first": [],
                                       "later query, dead one skipped": [],
                                       "SERVFAIL, every upstream dead": []}
    with Dnsmasq(["--host-record=web.example.test,10.1.2.3", "--address=/example.test/"],
                 local_ttl=0) as live:
        for n in range(rounds):
            with ScriptedUpstream([], mode="timeout") as dead, \
                    DnsdProcess(["--upstream", dead.spec, "--upstream", live.spec]) as proc:
                figures["first query, dead upstream first"].append(
                    _timed(lambda: proc.query("web.example.test.", timeout=10)))
                figures["later query, dead one skipped"].append(
                    _timed(lambda n=n: proc.query(f"n{n}.example.test.", timeout=10)))
            with ScriptedUpstream([], mode="timeout") as one, \
                    ScriptedUpstream([], mode="timeout") as two, \
                    DnsdProcess(["--upstream", one.spec, "--upstream", two.spec]) as proc:
                figures["SERVFAIL, every upstream dead"].append(_timed(
                    lambda: proc.query("www.example.org.", timeout=10).rcode()
                    == dns.rcode.SERVFAIL))
    return figures


def reload_and_start(rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"services-file edit answered": [],
                                       "start to first answer": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "services.toml"
        for n in range(rounds):
            path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.1"\n')
            started = time.monotonic()
            with DnsdProcess(["--static", str(path)], wait=False) as proc:
                proc.wait_listening()
                wait_until(lambda proc=proc: proc.query("web.service.consul").answer)
                figures["start to first answer"].append(time.monotonic() - started)
                path.write_text('[[services]]\nname = "web"\naddress = "10.0.0.1"\n'
                                f'[[services]]\nname = "new{n}"\naddress = "10.0.0.2"\n')
                figures["services-file edit answered"].append(wait_until(
                    lambda n=n, proc=proc: proc.query(f"new{n}.service.consul").answer))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for figures in (failover(args.rounds), reload_and_start(args.rounds)):
        for what, values in figures.items():
            print(f"{what:36s} median {statistics.median(values) * 1000:8.1f} ms   "
                  f"max {max(values) * 1000:8.1f} ms   ({len(values)} runs)")


if __name__ == "__main__":
    main()
