"""The private Docker engine the Docker tests stand on (``tests/docker_engine.py``):
containers with labels, environment, exposed ports and a HEALTHCHECK; pause;
dockerd restarted with and without live-restore; and nothing of it left after
close(). Needs root and Debian's docker.io, iptables and busybox-static."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.docker_engine import Engine, Healthcheck, reserve_subnet, unavailable_reason

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"DOCKER NOT RUN: {REASON}")


def test_engine_lifecycle_leaves_nothing_behind() -> None:
    subnet = reserve_subnet()
    engine = Engine({"dns": [subnet.gateway]})
    root = engine.root
    try:
        assert engine.start() > 0
        network = engine.create_network("dnsdt-life", subnet)
        engine.import_busybox()
        box = engine.run("dnsdt-busybox", "sleep", "3600", name="dnsdt-life-box",
                         network=network.name, ip=network.address(20),
                         labels={"SERVICE_NAME": "life"}, env={"SERVICE_TAGS": "a,b"},
                         expose=["8080/tcp"], healthcheck=Healthcheck(["true"]))
        config = box.inspect()["Config"]
        assert config["Labels"]["SERVICE_NAME"] == "life"
        assert "SERVICE_TAGS=a,b" in config["Env"]
        assert "8080/tcp" in config["ExposedPorts"]
        assert box.address() == network.address(20)
        box.wait_health("healthy", timeout=30)
        box.pause()
        assert box.status == "paused"
        box.unpause()

        pid = box.pid
        engine.restart(live_restore=True)          # the container keeps running
        assert box.status == "running" and box.pid == pid
        engine.restart(live_restore=False)         # it does not
        assert box.status == "exited"
        box.start()
        assert box.status == "running"
        pid = box.pid
        engine.set_live_restore(True)
        engine.stop_daemon()                       # the container outlives dockerd...
        assert Path(f"/proc/{pid}").exists()
    finally:
        engine.close()                             # ...and close() still ends it
        subnet.release()
    assert not Path(f"/proc/{pid}").exists()
    assert not root.exists()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(root) not in ps
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(root) not in mounts
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert f" {subnet.bridge}:" not in links and f" {subnet.bridge}@" not in links
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{root.name}"))
