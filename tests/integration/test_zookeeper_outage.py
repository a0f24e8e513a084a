"""ZooKeeper dies while dnsd is in the middle of listing a large service: dnsd
must keep answering (its static names, at least) and still stop on SIGTERM.

A real dnsd process and a real ZooKeeper server of the test's own (it is
killed), holding one service with 5,000 instances. The kill happens once
ZooKeeper has received a few hundred of dnsd's reads (its ``cons`` four-letter
word counts them per connection) and long before all of them."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import pytest
from kazoo.client import KazooClient

from tests.dnsd_process import DnsdProcess
from tests.integration.conftest_zookeeper import Registrator
from tests.zookeeper_server import ZooKeeperServer, four_letter

CHILDREN = 5000
BASE = "/services"


@pytest.fixture
def big_zookeeper() -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer()
    try:
        server.start()
        client = KazooClient(hosts=server.hosts, timeout=10.0)
        client.start(timeout=15)
        try:
            client.ensure_path(f"{BASE}/big")
            for start in range(0, CHILDREN, 500):
                transaction = client.transaction()
                for n in range(start, min(start + 500, CHILDREN)):
                    ip = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
                    transaction.create(f"{BASE}/big/{ip}:80",
                                       Registrator.body("big", ip, 80))
                assert all(r is True or isinstance(r, str) for r in transaction.commit())
        finally:
            client.stop()
            client.close()
        yield server
    finally:
        server.close()


def _received(port: int, skip: set[str]) -> int:
    """The most requests any one connection (but the ``skip`` ones) has sent."""
    most = 0
    for line in four_letter(port, "cons", timeout=0.5).splitlines():
        match = re.search(r"/([\d.]+:\d+)\[\d+\]\(.*recved=(\d+)", line)
        if match and match.group(1) not in skip:
            most = max(most, int(match.group(2)))
    return most


def test_killed_mid_listing_answers_continue_and_sigterm_stops(
        big_zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    services = tmp_path / "services.toml"
    services.write_text('[[services]]\nname = "web"\naddress = "10.9.9.9"\n')
    server = big_zookeeper
    # Connections open before dnsd's (our own four-letter probes are short-lived).
    before = {m.group(1) for m in re.finditer(r"/([\d.]+:\d+)\[",
                                              four_letter(server.port, "cons"))}
    with DnsdProcess(["--static", str(services), "--zookeeper", f"{server.hosts}{BASE}"],
                     wait=False) as proc:
        deadline = time.monotonic() + 60
        while _received(server.port, before) < 300:
            assert time.monotonic() < deadline, f"dnsd never read from ZooKeeper:\n{proc.log}"
            assert proc.proc.poll() is None, proc.log
            time.sleep(0.002)
        server.stop(kill=True)
        killed = time.monotonic()
        assert not re.search(r"ZooKeeper \S+: up", proc.log), "the listing had finished"
        proc.wait_listening(30)

        # The static name keeps resolving, query after query.
        answered, gaps, last = 0, [], time.monotonic()
        while time.monotonic() - killed < 4.0 or answered < 20:
            try:
                reply = proc.query("web.service.consul", "A", timeout=3.0)
            except dns.exception.Timeout:
                pytest.fail(f"no answer for 3 s, {time.monotonic() - killed:.1f} s after "
                            f"ZooKeeper died ({answered} answers before):\n{proc.log}")
            assert [rd.address for rr in reply.answer for rd in rr] == ["10.9.9.9"]
            answered += 1
            now = time.monotonic()
            gaps.append(now - last)
            last = now
            time.sleep(0.02)
        print(f"\nZooKeeper killed mid-listing: {answered} answers in "
              f"{last - killed:.1f} s, longest gap {max(gaps) * 1000:.0f} ms")

        stopped = time.monotonic()
        proc.signal(signal.SIGTERM)
        try:
            status = proc.proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGTERM did not stop dnsd within 20 s:\n{proc.log}")
        print(f"SIGTERM to exit: {time.monotonic() - stopped:.2f} s")
        assert status == 0
