"""A real standalone ZooKeeper server for tests, from Debian's ``zookeeperd``.

``ZooKeeperServer()`` writes a temporary ``zoo.cfg`` (free loopback port, temp
``dataDir``) and runs ``org.apache.zookeeper.server.ZooKeeperServerMain`` with
``/usr/share/java/zookeeper.jar``, whose manifest ``Class-Path`` already names
its dependencies in ``/usr/share/java`` (netty, jute, slf4j-api, jackson,
jetty, commons-*, metrics-core, snappy...); ``slf4j-simple`` is added so the
server's own log lands in ``<tmp>/zookeeper.log``. Readiness is checked with
the ``srvr`` four-letter word, whitelisted in the config (ZooKeeper 3.8
disables them by default). ``stop()`` and ``start()`` keep the port and the
data directory, so sessions and ephemeral nodes survive a restart the way
they do in production.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.upstreams import free_port

JAVA_DIR = Path("/usr/share/java")
ZOOKEEPER_JAR = JAVA_DIR / "zookeeper.jar"
LOG_BINDING = JAVA_DIR / "slf4j-simple.jar"
APT_PACKAGES = "zookeeperd"  # pulls zookeeper, libzookeeper-java and default-jre


def _die_with_parent() -> None:
    """In the child before exec: a killed test run must not leave a JVM behind
    (Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``; a no-op where unavailable)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def four_letter(port: int, word: str = "srvr", timeout: float = 1.0) -> str:
    """Send a four-letter command; '' when the server does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    """One standalone ZooKeeper on 127.0.0.1; ``hosts`` is its connect string."""

    def __init__(self, port: int | None = None, tick_ms: int = 500) -> None:
        if not ZOOKEEPER_JAR.exists() or shutil.which("java") is None:
            raise RuntimeError(f"ZooKeeper needs {ZOOKEEPER_JAR} and java: "
                               f"apt-get install {APT_PACKAGES}")
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dnsd-zk-"))
        (self.dir / "data").mkdir()
        self.config = self.dir / "zoo.cfg"
        # A short tick lets tests ask for short sessions (the minimum session
        # timeout is 2 ticks); the admin server would take port 8080.
        self.config.write_text(
            f"tickTime={tick_ms}\n"
            f"dataDir={self.dir / 'data'}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "maxClientCnxns=0\n"
            "maxSessionTimeout=60000\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=srvr,ruok,stat,cons\n"
            "autopurge.purgeInterval=0\n")
        self.log_path = self.dir / "zookeeper.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        classpath = [str(ZOOKEEPER_JAR)]
        if LOG_BINDING.exists():
            classpath.append(str(LOG_BINDING))
        return ["java", "-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Xshare:auto", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-cp", ":".join(classpath),
                "org.apache.zookeeper.server.ZooKeeperServerMain", str(self.config)]

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart) on the same port and data, and wait until it serves."""
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if "Mode: standalone" in four_letter(self.port, timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"ZooKeeper did not start in {timeout} s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``); data stays."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # Wait until the port is really free, so a restart can bind it.
        deadline = time.monotonic() + timeout
        while four_letter(self.port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ZooKeeperServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":  # run one by hand: python -m tests.zookeeper_server
    with ZooKeeperServer() as server:
        print(f"ZooKeeper on {server.hosts} (dir {server.dir}); Ctrl-C stops it", flush=True)
        try:
            while server.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
