"""Fixtures and helpers for the ZooKeeper tests: a real server, a stand-in for
registrator that writes exactly what its zookeeper adapter writes, and a TCP
proxy that can cut one client off.

Test modules bind the fixtures by name (an import would trip ruff's F811)::

    from tests.integration import conftest_zookeeper as fixtures
    zookeeper = fixtures.zookeeper
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError, NotEmptyError

from tests.waiting import until
from tests.zookeeper_server import ZooKeeperServer


@pytest.fixture(scope="module")
def zookeeper() -> Iterator[ZooKeeperServer]:
    """One real ZooKeeper per test module (tests use their own base paths)."""
    server = ZooKeeperServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


class Registrator:
    """Writes what gliderlabs/registrator's zookeeper adapter writes, from its
    own kazoo session (so its ephemeral nodes live and die with that session).

    Register: create ``<base>/<name>`` (persistent, empty) if missing, then the
    ephemeral ``<base>/<name>/<ip>:<port>`` holding compact JSON with fields in
    Go's order; a nil Tags/Attrs is JSON ``null``. Deregister: delete the
    instance, then the service node once it has no children.
    """

    def __init__(self, hosts: str, base: str) -> None:
        self.base = base
        self.hosts = hosts
        self.client = KazooClient(hosts=hosts, timeout=10.0)
        self.client.start(timeout=15)
        self.client.ensure_path(base)

    @staticmethod
    def body(name: str, ip: str, port: int, private_port: int = 0,
             tags: list[str] | None = None, attrs: dict[str, str] | None = None,
             container: str = "c0ffee") -> bytes:
        return json.dumps({"Name": name, "IP": ip, "PublicPort": port,
                           "PrivatePort": private_port or port, "ContainerID": container,
                           "Tags": tags, "Attrs": attrs}, separators=(",", ":")).encode()

    def register(self, name: str, ip: str, port: int, tags: list[str] | None = None,
                 attrs: dict[str, str] | None = None) -> str:
        return self.create(name, f"{ip}:{port}",
                           self.body(name, ip, port, tags=tags, attrs=attrs))

    def create(self, name: str, child: str, data: bytes) -> str:
        """A raw instance node (for malformed data and odd names)."""
        service = f"{self.base}/{name}"
        if not self.client.exists(service):
            with contextlib.suppress(NodeExistsError):
                self.client.create(service, b"")
        path = f"{service}/{child}"
        self.client.create(path, data, ephemeral=True)
        return path

    def deregister(self, name: str, child: str) -> None:
        service = f"{self.base}/{name}"
        with contextlib.suppress(NoNodeError):
            self.client.delete(f"{service}/{child}")
        if not self.client.get_children(service):
            with contextlib.suppress(NoNodeError, NotEmptyError):
                self.client.delete(service)

    def close(self) -> None:
        self.client.stop()
        self.client.close()


@pytest.fixture
def registrator(zookeeper: ZooKeeperServer) -> Iterator[Registrator]:
    """A registrator stand-in on a fresh base path of the module's server."""
    reg = Registrator(zookeeper.hosts, f"/services-{uuid.uuid4().hex[:8]}")
    try:
        yield reg
    finally:
        reg.close()


async def wait_until(predicate: Callable[[], object], timeout: float = 30.0,
                     what: str = "condition") -> None:
    await until(predicate, timeout, what=what)


class TcpProxy:
    """A loopback TCP proxy in front of ZooKeeper that can cut its clients off.

    ``cut()`` closes every proxied connection and refuses new ones until
    ``restore()``: for the client behind it, ZooKeeper is gone, while other
    clients (the registrator stand-in) keep working.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._cut = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut or self._closed:
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _close_all(self) -> None:
        with self._lock:
            socks, self._open = self._open, []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
        self._close_all()

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.listener.close()
        self._close_all()


@pytest.fixture
def proxy(zookeeper: ZooKeeperServer) -> Iterator[TcpProxy]:
    p = TcpProxy(zookeeper.port)
    try:
        yield p
    finally:
        p.close()
