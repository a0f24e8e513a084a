"""Run a real dnsd process for integration tests, the way a user runs it.

``DnsdProcess(args)`` starts ``python -m dnsd`` with ``--listen 127.0.0.1:0``
(unless args name a listen address), waits for its "listening on" log lines and
exposes the bound ports. Its log is collected by a thread so a chatty server
never blocks on a full pipe.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import dns.message
import dns.query
import dns.rdatatype

from tests.waiting import wait_until

__all__ = ["DnsdProcess", "run_cli", "wait_until"]

_LISTENING = re.compile(r"listening on (\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)")


class DnsdProcess:
    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None,
                 wait: bool = True, timeout: float = 60.0,
                 prefix: Sequence[str] = ()) -> None:
        argv = list(args)
        if not any(a == "--listen" or a.startswith("--listen=") for a in argv):
            argv = ["--listen", "127.0.0.1:0", *argv]
        self.expected = max(1, sum(1 for a in argv if a == "--listen"
                                   or a.startswith("--listen=")))
        full_env = dict(os.environ)
        full_env.setdefault("DNSD_UPSTREAM", "127.0.0.1:9")  # tests never reach the world
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        # prefix: a command that runs dnsd for us, e.g. ``ip netns exec NS``.
        self.argv = [*prefix, sys.executable, "-m", "dnsd", *argv]
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=full_env, text=True)
        self.lines: list[str] = []
        self.listening: list[tuple[str, int]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if wait:
            try:
                self.wait_listening(timeout)
            except BaseException:
                self.stop()  # a process that never listened is not left behind
                raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                match = _LISTENING.search(line)
                if match:
                    self.listening.append((match.group(1).strip("[]"), int(match.group(2))))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_listening(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.listening) < self.expected:
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"dnsd exited with {self.proc.returncode}:\n{self.log}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"dnsd did not start listening:\n{self.log}")
                self._cond.wait(min(left, 0.1))

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> str:
        """Wait until a log line matches ``pattern`` (a regex); return that line."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no log line matched {pattern!r}:\n{self.log}")
                self._cond.wait(min(left, 0.1))

    @property
    def host(self) -> str:
        return self.listening[0][0]

    @property
    def port(self) -> int:
        return self.listening[0][1]

    def query(self, name: str, rdtype: str = "A", tcp: bool = False,
              timeout: float = 5.0, **make_kwargs: object) -> dns.message.Message:
        """Ask dnsd one question with dnspython over UDP (default) or TCP."""
        msg = dns.message.make_query(name, dns.rdatatype.from_text(rdtype), **make_kwargs)
        if tcp:
            return dns.query.tcp(msg, self.host, port=self.port, timeout=timeout)
        return dns.query.udp(msg, self.host, port=self.port, timeout=timeout,
                             ignore_trailing=True)

    def addresses(self, name: str, rdtype: str = "A", **kwargs: object) -> set[str]:
        """The addresses (A or AAAA) in dnsd's answer for ``name``."""
        reply = self.query(name, rdtype, **kwargs)  # type: ignore[arg-type]
        return {rd.address for rrset in reply.answer
                if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rd in rrset}

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        return self.proc.returncode

    def __enter__(self) -> DnsdProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cli(args: Sequence[str], env: dict[str, str] | None = None,
            timeout: float = 20.0, prefix: Sequence[str] = ()
            ) -> subprocess.CompletedProcess[str]:
    """Run ``dnsd`` to completion (for --help, --version and bad input);
    ``prefix`` runs it through another command (``setpriv ...``)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([*prefix, sys.executable, "-m", "dnsd", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, stdin=subprocess.DEVNULL,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
