"""An https Consul: dnsd verifies it with --consul-ca (or CONSUL_CACERT).

A TLS proxy with a throwaway self-signed certificate (made with openssl) sits
in front of the Consul API double."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.consul_double import ConsulDouble
from tests.dnsd_process import DnsdProcess, wait_until


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (Debian package openssl)")
    cert, key = tmp_path / "consul.pem", tmp_path / "consul.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class TlsProxy:
    """Terminates TLS on a free port and relays each connection to ``target``."""

    def __init__(self, target: tuple[str, int], cert: Path, key: Path) -> None:
        self.target = target
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            tls = self.context.wrap_socket(raw, server_side=True)
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(upstream, tls), daemon=True).start()
            self._pipe(tls, upstream)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture
def https_consul(certificate: tuple[Path, Path]) -> Iterator[str]:
    with ConsulDouble() as double:
        double.register("web", "web-1", node="node1", node_address="10.0.0.1", port=80)
        host, port = double.url.split("//")[1].split(":")
        proxy = TlsProxy((host, int(port)), *certificate)
        try:
            yield f"https://127.0.0.1:{proxy.port}"
        finally:
            proxy.close()


def _until_answered(proc: DnsdProcess, timeout: float = 30.0) -> None:
    wait_until(lambda: proc.query("web.service.consul", "A").rcode() == dns.rcode.NOERROR,
               timeout, interval=0.05, what=f"an answer:\n{proc.log}")


def test_https_consul_verified_with_the_ca_flag(https_consul: str,
                                                certificate: tuple[Path, Path]) -> None:
    with DnsdProcess(["--consul", https_consul, "--consul-ca", str(certificate[0])]) as proc:
        _until_answered(proc)


def test_https_consul_ca_from_consul_cacert(https_consul: str,
                                            certificate: tuple[Path, Path]) -> None:
    with DnsdProcess(["--consul", https_consul],
                     env={"CONSUL_CACERT": str(certificate[0])}) as proc:
        _until_answered(proc)


def test_untrusted_certificate_is_stale_not_answered(https_consul: str) -> None:
    with DnsdProcess(["--consul", https_consul]) as proc:
        proc.wait_for_log(r"consul .*serving the last table")
        time.sleep(0.3)
        # Consul was never heard: the name may exist there, so SERVFAIL, not a
        # cacheable NXDOMAIN.
        assert proc.query("web.service.consul", "A").rcode() == dns.rcode.SERVFAIL
