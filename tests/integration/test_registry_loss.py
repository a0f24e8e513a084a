"""Registry and upstream loss, end to end: answers never stop.

dnsd watches Consul (the API double) and ZooKeeper (a real server) at once and is
queried continuously while both registries are killed; then it is restarted
with both down and answers from its saved table; then every upstream dies."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.consul_double import ConsulDouble
from tests.dnsd_process import DnsdProcess, wait_until
from tests.integration import conftest_zookeeper as fixtures
from tests.integration.conftest_zookeeper import Registrator
from tests.upstreams import Dnsmasq, ScriptedUpstream
from tests.zookeeper_server import ZooKeeperServer

zookeeper = fixtures.zookeeper
registrator = fixtures.registrator

NAMES = {"web.service.consul": {"10.0.0.1"}, "zkweb.service.consul": {"10.7.0.1"}}


class Load(threading.Thread):
    """Ask for the registry names over UDP as fast as one client can; count failures."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(daemon=True)
        self.host, self.port = host, port
        self.stop = threading.Event()
        self.ok = 0
        self.failed: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            for name, want in NAMES.items():
                query = dns.message.make_query(name, "A")
                try:
                    reply = dns.query.udp(query, self.host, port=self.port, timeout=1)
                    got = {rd.address for rrset in reply.answer for rd in rrset}
                    if got == want:
                        self.ok += 1
                    else:
                        self.failed.append(f"{name}: {dns.rcode.to_text(reply.rcode())} {got}")
                except dns.exception.DNSException as exc:
                    self.failed.append(f"{name}: {exc!r}")


def test_registries_die_mid_load_and_dnsd_restarts_with_both_down(
        zookeeper: ZooKeeperServer, registrator: Registrator, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with ConsulDouble() as consul:
        consul.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80)
        registrator.register("zkweb", "10.7.0.1", 8080)
        args = ["--consul", consul.url, "--zookeeper", f"{zookeeper.hosts}{registrator.base}",
                "--state-dir", str(state)]
        with DnsdProcess(args) as proc:
            for name, want in NAMES.items():
                wait_until(lambda name=name, want=want: proc.addresses(name) == want)
            wait_until(lambda: (state / "table.json").exists())
            load = Load(proc.host, proc.port)
            load.start()
            time.sleep(0.5)
            consul.stop()
            zookeeper.stop(kill=True)
            time.sleep(2.0)  # both sources notice and go stale while queries go on
            load.stop.set()
            load.join(5)
            print(f"registry loss under load: {load.ok} answers, {len(load.failed)} failures")
            assert load.ok > 100
            assert load.failed == []
            proc.wait_for_log("serving the last table")

        # dnsd restarts while both registries are down: the saved table answers
        started = time.monotonic()
        with DnsdProcess(args, wait=False) as proc:
            first = None
            while first is None:
                assert time.monotonic() - started < 60, proc.log
                try:
                    proc.wait_listening(0.05)
                    if proc.addresses("zkweb.service.consul") == {"10.7.0.1"}:
                        first = time.monotonic() - started
                except (TimeoutError, dns.exception.DNSException):
                    pass
            assert proc.addresses("web.service.consul") == {"10.0.0.1"}
            # the interpreter's own start is part of this; the table is there at bind
            interpreter = _interpreter_start()
            print(f"answered from the saved table {first:.2f} s after start "
                  f"(python -c 'import dnsd.app': {interpreter:.2f} s)")
    zookeeper.start()


def _interpreter_start() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import dnsd.app"], check=True)
    return time.monotonic() - started


def test_upstreams_die_cached_names_still_answered_others_servfail_fast() -> None:
    with Dnsmasq(["--host-record=cached.example.test,10.1.2.3"], local_ttl=1) as upstream, \
            ScriptedUpstream() as second:
        proc = DnsdProcess(["--upstream", upstream.spec, "--upstream", second.spec])
        with proc:
            assert proc.query("cached.example.test", "A").rcode() == dns.rcode.NOERROR
            upstream.close()
            second.mode = "timeout"
            time.sleep(1.2)  # the cached answer expires (TTL 1): stale from now on
            reply = proc.query("cached.example.test", "A", timeout=5)
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer  # serve-stale
            reply = proc.query("other1.example.test", "A", timeout=5)  # never a hung client
            assert reply.rcode() == dns.rcode.SERVFAIL
            # once the upstreams are known dead, a new name fails without
            # waiting on the one that times out
            reply = proc.query("other3.example.test", "A", timeout=5)
            assert reply.rcode() == dns.rcode.SERVFAIL
            assert second.count(qname="other3.example.test") == 0
