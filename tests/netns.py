"""A throw-away network namespace for tests that drive real resolvers.

glibc, musl and the other stub resolvers read ``/etc/resolv.conf`` and can only
talk to port 53, so they cannot be pointed at a dnsd on 127.0.0.1:0. Inside a
fresh namespace nothing else owns 127.0.0.1:53, and ``ip netns exec`` bind-mounts
every file of ``/etc/netns/NAME/`` over ``/etc/`` for the command it runs: the
namespace's own ``resolv.conf`` (and ``nsswitch.conf``, so the host's ``hosts:``
line cannot send the lookup to mDNS or systemd-resolved).

``Netns`` creates the namespace with its loopback up, runs commands in it, and
always removes the namespace, its ``/etc/netns`` directory and every process it
started, even when the test fails half way. Names are unique per test run.
Imports only the standard library and ``tests.dnsd_process``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.dnsd_process import DnsdProcess

ETC_NETNS = Path("/etc/netns")


@functools.cache
def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (None when they can): for a loud skip.
    Probes once with a real ``ip netns add``: root in an unprivileged container
    still cannot create one."""
    if shutil.which("ip") is None:
        return "network namespaces need `ip` (Debian package iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run the client tests as root"
    probe = Netns()
    try:
        probe.create()
    except subprocess.CalledProcessError as exc:
        return f"cannot create a network namespace: {exc.stderr.strip() or exc}"
    except OSError as exc:
        return f"cannot set up a network namespace: {exc}"
    finally:
        probe.close()
    return None


def _nsswitch_text() -> str:
    """The host's nsswitch.conf with ``hosts: files dns`` (the classic glibc order)."""
    try:
        lines = Path("/etc/nsswitch.conf").read_text().splitlines()
    except OSError:
        lines = []
    kept = [line for line in lines if not line.lstrip().startswith("hosts:")]
    return "\n".join([*kept, "hosts: files dns"]) + "\n"


_OURS = re.compile(r"^dnsdt-(\d+)-[0-9a-f]+$")


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists (ours or not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> None:
    """Remove namespaces left by a test run that was killed (SIGKILL skips
    ``close``): only names of this helper's pattern whose owner pid is gone,
    with the processes still running inside them."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             timeout=10)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _OURS.match(name)
        if not match or process_alive(int(match.group(1))):
            continue
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                              timeout=10)
        for pid in pids.stdout.split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


class Netns:
    """One network namespace; use as a context manager (``with Netns() as ns``)."""

    def __init__(self) -> None:
        prefix = "dnsdt"
        # pid plus random hex: parallel and repeated test runs never collide,
        # and sweep_stale() can tell a namespace whose test run was killed.
        self.name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        self.etc = ETC_NETNS / self.name
        self._procs: list[subprocess.Popen[bytes] | subprocess.Popen[str]] = []
        self._dnsds: list[DnsdProcess] = []
        self._created = False

    # lifecycle -------------------------------------------------------------

    def create(self, resolv_conf: str = "nameserver 127.0.0.1\n") -> Netns:
        sweep_stale()
        try:
            subprocess.run(["ip", "netns", "add", self.name], check=True,
                           capture_output=True, text=True, timeout=10)
            self._created = True
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True,
                           capture_output=True, text=True, timeout=10)
            self.etc.mkdir(parents=True, exist_ok=True)
            (self.etc / "nsswitch.conf").write_text(_nsswitch_text())
            # An empty hosts file: a name can only come from DNS in here.
            (self.etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
            self.write_resolv_conf(resolv_conf)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop what was started here, delete the namespace and its /etc files."""
        for dnsd in reversed(self._dnsds):
            with contextlib.suppress(Exception):
                dnsd.stop(timeout=5)
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(5)
        self._dnsds.clear()
        self._procs.clear()
        if self._created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
            self._created = False
        shutil.rmtree(self.etc, ignore_errors=True)

    def __enter__(self) -> Netns:
        return self.create() if not self._created else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # files -------------------------------------------------------------------

    def write_resolv_conf(self, text: str) -> None:
        """Replace the namespace's resolv.conf; commands started after see it."""
        (self.etc / "resolv.conf").write_text(text)

    @contextlib.contextmanager
    def resolv_conf(self, text: str) -> Iterator[None]:
        """Use ``text`` as resolv.conf for the block, then restore the previous one."""
        path = self.etc / "resolv.conf"
        before = path.read_text()
        self.write_resolv_conf(text)
        try:
            yield
        finally:
            self.write_resolv_conf(before)

    # commands ----------------------------------------------------------------

    def argv(self, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, command: Sequence[str], timeout: float = 20.0,
            env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run to completion inside the namespace; output captured as text."""
        return subprocess.run(self.argv(command), capture_output=True, text=True,
                              timeout=timeout, env=env, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def popen(self, command: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a background process inside the namespace; stopped by close()."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            self.argv(command), stdin=subprocess.DEVNULL, **kwargs)
        self._procs.append(proc)
        return proc

    def dnsd(self, args: Sequence[str], env: dict[str, str] | None = None) -> DnsdProcess:
        """A dnsd running inside the namespace (give it ``--listen 127.0.0.1:53``)."""
        proc = DnsdProcess(args, env=env, wait=False, prefix=["ip", "netns", "exec", self.name])
        self._dnsds.append(proc)
        proc.wait_listening()
        return proc
