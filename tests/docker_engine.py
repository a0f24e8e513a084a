"""A private Docker engine for tests: its own dockerd, images, networks and containers.

:class:`Engine` starts Debian's ``dockerd`` with a data root, exec root, socket
and pidfile of its own under one temporary folder, the vfs storage driver, no
iptables rules, no NAT and no default bridge, so it touches nothing of another
engine on the machine. Tests drive it through Debian's ``/usr/bin/docker``
client (a newer static client earlier on PATH may lack BuildKit). Everything it
starts, it stops: :meth:`Engine.close` removes containers and networks, ends
dockerd, ends what dockerd left behind (containerd shims, with live-restore),
unmounts and deletes the folder; an engine left by a test run that was killed is
swept the same way by the next one.

Networks are user-defined bridges in 10.213.0.0/16, one /24 each, with bridge
names ``dnsdt<N>``: :func:`reserve_subnet` picks a /24 no interface or route on
the machine uses and reserves it against parallel test runs.

Containers (:class:`Container`) can be run with labels, environment, exposed
and published ports, fixed addresses and a HEALTHCHECK; stopped, started,
paused, inspected, and entered (:meth:`Container.netns_argv` runs a host
program in the container's network namespace, where 127.0.0.11 is Docker's
embedded resolver). :meth:`Engine.restart` restarts dockerd with or without
live-restore.

Images come without a registry: :meth:`Engine.import_busybox` makes a 2 MB image
of Debian's static busybox (``busybox-static``), :meth:`Engine.import_tar` any
root filesystem tarball. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netns import process_alive

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
BUSYBOX = "/bin/busybox"
SUBNETS = ipaddress.ip_network("10.213.0.0/16")
RESERVATIONS = Path(tempfile.gettempdir()) / "dnsdt-subnets"
_ENGINE_DIR = re.compile(r"^dnsdt-engine-(\d+)-[0-9a-f]+$")


# --- can it run here ---------------------------------------------------------------

def _is_static_elf(path: str) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:   # 64-bit only: what Debian ships
                return False
            phoff, = struct.unpack_from("<Q", head, 32)
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


@functools.cache
def unavailable_reason() -> str | None:
    """Why a private engine cannot run here (None when it can): for a loud skip."""
    if os.geteuid() != 0:
        return "a private Docker engine needs root; run the Docker tests as root"
    needed = {DOCKERD: "docker.io", DOCKER: "docker.io", "containerd": "containerd",
              "runc": "runc", "iptables": "iptables", "nsenter": "util-linux",
              "ip": "iproute2"}
    for program, package in needed.items():
        if shutil.which(program) is None:
            return f"{program} missing: apt-get install {package}"
    if not _is_static_elf(BUSYBOX):
        return f"{BUSYBOX} is not a static binary: apt-get install busybox-static"
    return None


# --- processes and mounts left behind -------------------------------------------------

def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (an engine's own folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _end(pids: Sequence[int], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still there after ``timeout``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cgroup_pids(parent: str) -> list[int]:
    """Processes in the containers' cgroups under an engine's ``--cgroup-parent``:
    what still runs of its containers when neither dockerd nor a shim is left."""
    pids: set[int] = set()
    for procs in Path("/sys/fs/cgroup").glob(f"*/{parent}/**/cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def _remove_cgroups(parent: str) -> None:
    for top in Path("/sys/fs/cgroup").glob(f"*/{parent}"):
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()),
                             key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _unmount_under(root: Path) -> None:
    """Unmount everything mounted at or below ``root``, deepest first."""
    prefix = str(root)
    for _ in range(3):
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


def _delete_link(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)


def _remove_tree(root: Path) -> None:
    _unmount_under(root)
    # vfs layers hold read-only and immutable-free but deep trees: rm -rf copes
    # with what shutil stumbles on (sockets, odd modes).
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True,
                   timeout=300)


def sweep_stale() -> None:
    """Clean up engines of test runs that were killed (their owner pid is gone):
    their processes, containers, bridges, mounts, folders and cgroups."""
    names = {p.name for p in Path("/tmp").glob("dnsdt-engine-*")}
    names |= {p.name for p in Path("/sys/fs/cgroup").glob("*/dnsdt-engine-*")}
    for name in sorted(names):
        match = _ENGINE_DIR.match(name)
        if not match or process_alive(int(match.group(1))):
            continue
        folder = Path("/tmp") / name
        _end(_pids_mentioning(str(folder)), timeout=5)
        _end(_cgroup_pids(name), timeout=0)   # a container's pid 1 ignores SIGTERM
        _remove_cgroups(name)
        with contextlib.suppress(OSError):
            for bridge in (folder / "bridges").read_text().split():
                _delete_link(bridge)
        if folder.exists():
            _remove_tree(folder)
    if RESERVATIONS.is_dir():
        for mark in RESERVATIONS.iterdir():
            with contextlib.suppress(OSError, ValueError):
                if not process_alive(int(mark.read_text().strip())):
                    mark.unlink()


# --- subnets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Subnet:
    """One reserved /24 of 10.213.0.0/16 and the bridge name that goes with it."""

    index: int
    network: ipaddress.IPv4Network
    bridge: str

    @property
    def gateway(self) -> str:
        return self.address(1)

    def address(self, host: int) -> str:
        return str(self.network.network_address + host)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            (RESERVATIONS / str(self.index)).unlink()


def _machine_networks() -> tuple[list[ipaddress.IPv4Network], set[str]]:
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"],
                            capture_output=True, text=True, timeout=10).stdout
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                           text=True, timeout=10).stdout
    used = []
    for word in (routes + "\n" + addrs).split():
        with contextlib.suppress(ValueError):
            if "/" in word or word.count(".") == 3:
                used.append(ipaddress.ip_network(word, strict=False))
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           timeout=10).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
             if line.count(":") >= 2}
    return [n for n in used if isinstance(n, ipaddress.IPv4Network)], names


def reserve_subnet() -> Subnet:
    """A /24 of 10.213.0.0/16 that no route, address or link on the machine uses,
    reserved (a file naming our pid) so a parallel test run picks another."""
    RESERVATIONS.mkdir(exist_ok=True)
    used, links = _machine_networks()
    start = os.getpid() % 254
    for step in range(254):
        index = 1 + (start + step) % 254
        network = ipaddress.ip_network(f"10.213.{index}.0/24")
        bridge = f"dnsdt{index}"
        if bridge in links or any(network.overlaps(u) and u.prefixlen > 0 for u in used):
            continue
        mark = RESERVATIONS / str(index)
        for _ in range(2):
            try:
                fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                with contextlib.suppress(OSError, ValueError):
                    if not process_alive(int(mark.read_text().strip())):
                        mark.unlink()
                        continue
                break
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            assert isinstance(network, ipaddress.IPv4Network)
            return Subnet(index, network, bridge)
    raise RuntimeError("no free /24 left in 10.213.0.0/16")


# --- containers --------------------------------------------------------------------------

@dataclass(frozen=True)
class Healthcheck:
    """A container HEALTHCHECK in exec form; times in seconds."""

    command: Sequence[str]
    interval: float = 1.0
    timeout: float = 3.0
    retries: int = 1
    start_period: float = 0.0

    def flags(self) -> list[str]:
        return ["--health-cmd", _shell_join(self.command),
                f"--health-interval={self.interval}s", f"--health-timeout={self.timeout}s",
                f"--health-retries={self.retries}",
                f"--health-start-period={self.start_period}s"]


def _shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


@dataclass
class Container:
    engine: Engine
    id: str
    name: str

    def inspect(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = json.loads(self.engine.docker("inspect", self.id).stdout)
        return out[0]

    @property
    def pid(self) -> int:
        pid = int(self.inspect()["State"]["Pid"])
        assert pid > 0, f"container {self.name} is not running"
        return pid

    def address(self, network: str | None = None) -> str:
        networks = self.inspect()["NetworkSettings"]["Networks"]
        chosen = networks[network] if network else next(iter(networks.values()))
        return str(chosen["IPAddress"])

    @property
    def status(self) -> str:
        return str(self.inspect()["State"]["Status"])

    def health(self) -> str | None:
        health = self.inspect()["State"].get("Health")
        return None if health is None else str(health["Status"])

    def wait_health(self, status: str = "healthy", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while (now := self.health()) != status:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} is {now}, not {status}:\n"
                                   f"{json.dumps(self.inspect()['State'], indent=1)}\n"
                                   f"{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        result = self.engine.docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str, user: str | None = None, check: bool = False,
             timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        flags = ["--user", user] if user else []
        return self.engine.docker("exec", *flags, self.id, *command, check=check,
                                  timeout=timeout)

    def netns_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run from the host inside the container's network namespace."""
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net", *argv]

    def run_in_netns(self, argv: Sequence[str], timeout: float = 30.0
                     ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.netns_argv(argv), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def stop(self, timeout: int = 0) -> None:
        self.engine.docker("stop", "-t", str(timeout), self.id)

    def start(self) -> None:
        self.engine.docker("start", self.id)

    def restart(self, timeout: int = 0) -> None:
        self.engine.docker("restart", "-t", str(timeout), self.id)

    def kill(self, sig: str = "KILL") -> None:
        self.engine.docker("kill", "-s", sig, self.id)

    def pause(self) -> None:
        self.engine.docker("pause", self.id)

    def unpause(self) -> None:
        self.engine.docker("unpause", self.id)

    def remove(self) -> None:
        self.engine.docker("rm", "-f", "-v", self.id, check=False)


@dataclass(frozen=True)
class Network:
    name: str
    subnet: Subnet

    @property
    def gateway(self) -> str:
        return self.subnet.gateway

    def address(self, host: int) -> str:
        return self.subnet.address(host)


def _new_root() -> Path:
    """The engine's folder, named for sweep_stale() (owner pid) and short: the
    containerd socket path under it must fit a sockaddr_un (108 bytes)."""
    for _ in range(10):
        path = Path("/tmp") / f"dnsdt-engine-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    raise RuntimeError("cannot make an engine folder")


# --- the engine ----------------------------------------------------------------------------

@dataclass
class Engine:
    """One private dockerd; ``daemon_config`` is its daemon.json (``dns`` and so on)."""

    daemon_config: Mapping[str, Any] = field(default_factory=dict)
    root: Path = field(init=False)
    networks: dict[str, Network] = field(init=False, default_factory=dict)
    proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    started_in: float = field(init=False, default=0.0)   # seconds to the API answering

    def __post_init__(self) -> None:
        self.daemon_config = dict(self.daemon_config)
        self.root = _new_root()

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for Docker clients (docker, docker-compose) of this engine."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=self.host, DOCKER_CONFIG=str(self.root / "client"),
                   DOCKER_BUILDKIT="1", COMPOSE_DOCKER_CLI_BUILD="1")
        return env

    # lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> float:
        """Start dockerd and wait for its API; return the seconds that took."""
        sweep_stale()
        for sub in ("data", "exec", "client"):
            (self.root / sub).mkdir(exist_ok=True)
        (self.root / "daemon.json").write_text(json.dumps(self.daemon_config, indent=1))
        log = (self.root / "dockerd.log").open("ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [DOCKERD, "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "-H", self.host,
             "--pidfile", str(self.root / "dockerd.pid"),
             "--config-file", str(self.root / "daemon.json"),
             # No storage driver that needs kernel modules, no rules in the host's
             # iptables, no NAT, no docker0: only the networks tests create.
             "--storage-driver=vfs", "--iptables=false", "--ip-masq=false",
             "--ip6tables=false", "--bridge=none",
             f"--cgroup-parent=/{self.root.name}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if self.socket.exists() and self.docker("version", check=False,
                                                    timeout=10).returncode == 0:
                break
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"dockerd did not answer:\n{self.log_tail()}")
            time.sleep(0.02)
        self.started_in = time.monotonic() - started
        return self.started_in

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.root / "dockerd.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop_daemon(self, timeout: float = 30.0) -> None:
        """End dockerd (and its containerd). With live-restore, containers keep running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def set_live_restore(self, enabled: bool, timeout: float = 20.0) -> None:
        """Turn live-restore on or off in the running dockerd (daemon.json, then
        SIGHUP: dockerd reloads it without a restart)."""
        self.daemon_config["live-restore"] = enabled
        (self.root / "daemon.json").write_text(json.dumps(self.daemon_config, indent=1))
        assert self.proc is not None and self.proc.poll() is None, "dockerd is not running"
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        want = "true" if enabled else "false"
        while self.docker("info", "--format", "{{.LiveRestoreEnabled}}").stdout.strip() != want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"dockerd did not reload live-restore:\n{self.log_tail()}")
            time.sleep(0.05)

    def restart(self, live_restore: bool | None = None) -> float:
        """Stop and start dockerd on the same folders (images, networks and, with
        live-restore, running containers stay). ``live_restore`` True/False sets
        it before the stop, so it decides whether containers survive."""
        if live_restore is not None:
            self.set_live_restore(live_restore)
        self.stop_daemon()
        return self.start()

    def close(self) -> None:
        """Remove every container and network, end dockerd and all it left, delete
        the folder and release the subnets."""
        try:
            containers = self.root / "data" / "containers"
            if ((self.proc is None or self.proc.poll() is not None)
                    and containers.is_dir() and any(containers.iterdir())):
                # Containers may outlive dockerd (live-restore): bring it back so
                # it removes them the ordinary way.
                with contextlib.suppress(Exception):
                    self.start(timeout=20)
            if self.proc is not None and self.proc.poll() is None:
                ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
                if ids:
                    self.docker("rm", "-f", "-v", *ids, check=False, timeout=120)
                # Every network made on this engine, also by Compose.
                custom = self.docker("network", "ls", "--filter", "type=custom", "-q",
                                     check=False, timeout=30).stdout.split()
                if custom:
                    self.docker("network", "rm", *custom, check=False, timeout=60)
            self.stop_daemon()
        finally:
            # Shims survive dockerd with live-restore; a killed dockerd leaves
            # containerd. Both name this engine's folder on their command line.
            _end(_pids_mentioning(str(self.root)))
            _end(_cgroup_pids(self.root.name), timeout=0)
            for network in self.networks.values():
                _delete_link(network.subnet.bridge)
                network.subnet.release()
            self.networks.clear()
            _remove_cgroups(self.root.name)
            _remove_tree(self.root)

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the client --------------------------------------------------------------------------

    def docker(self, *args: str, check: bool = True, timeout: float = 120.0,
               input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run Debian's docker client against this engine; raises with its output."""
        result = subprocess.run([DOCKER, *args], capture_output=True, timeout=timeout,
                                env=self.env, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL,
                                text=not isinstance(input, bytes))
        if isinstance(result.stdout, bytes):
            result = subprocess.CompletedProcess(result.args, result.returncode,
                                                 result.stdout.decode(errors="replace"),
                                                 result.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited with {result.returncode}:\n"
                               f"{result.stdout}{result.stderr}")
        return result

    # images ------------------------------------------------------------------------------

    def import_tar(self, tarball: Path, tag: str, changes: Sequence[str] = ()) -> str:
        """``docker import`` a root filesystem tarball; returns the image id."""
        flags = [arg for change in changes for arg in ("--change", change)]
        return self.docker("import", *flags, str(tarball), tag, timeout=600).stdout.strip()

    def import_busybox(self, tag: str = "dnsdt-busybox:latest") -> str:
        """A 2 MB image of Debian's static busybox: ``/bin/busybox``, a link per
        applet, ``/www`` for ``httpd -h /www``, CMD ``/bin/sh``, EXPOSE 80/tcp."""
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                                 check=True, timeout=10).stdout.split()
        tarball = self.root / "busybox.tar"
        with tarfile.open(tarball, "w") as tar:
            for name, mode in (("bin", 0o755), ("etc", 0o755), ("www", 0o755),
                               ("tmp", 0o1777), ("root", 0o700)):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, mode
                tar.addfile(info)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in applets:
                if applet == "busybox":
                    continue
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
            passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
            info = tarfile.TarInfo("etc/passwd")
            info.size = len(passwd)
            tar.addfile(info, io.BytesIO(passwd))
        try:
            return self.import_tar(tarball, tag, ['CMD ["/bin/sh"]', "EXPOSE 80/tcp"])
        finally:
            tarball.unlink()

    def build(self, context: Path, tag: str, dockerfile: Path | None = None,
              build_args: Mapping[str, str] | None = None, network: str = "none",
              timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
        """A BuildKit build. Build steps get no network by default: this engine has
        no default bridge (``--network host`` would reach the machine's)."""
        args = ["build", "--progress=plain", "--network", network, "-t", tag]
        if dockerfile is not None:
            args += ["-f", str(dockerfile)]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        return self.docker(*args, str(context), timeout=timeout)

    # networks and containers ------------------------------------------------------------------

    def create_network(self, name: str, subnet: Subnet | None = None) -> Network:
        """A user-defined bridge on ``subnet`` (reserved now when not given)."""
        subnet = subnet or reserve_subnet()
        with (self.root / "bridges").open("a") as f:   # for sweep_stale()
            f.write(subnet.bridge + "\n")
        try:
            self.docker("network", "create", "--driver", "bridge",
                        "--subnet", str(subnet.network), "--gateway", subnet.gateway,
                        "-o", f"com.docker.network.bridge.name={subnet.bridge}", name)
        except BaseException:
            subnet.release()
            raise
        network = self.networks[name] = Network(name, subnet)
        return network

    def remove_network(self, name: str) -> None:
        network = self.networks.pop(name)
        self.docker("network", "rm", name, check=False)
        network.subnet.release()

    def run(self, image: str, *command: str, name: str | None = None,
            network: str | None = None, ip: str | None = None,
            labels: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
            expose: Sequence[str] = (), publish: Sequence[str] = (),
            dns: Sequence[str] | None = None, healthcheck: Healthcheck | None = None,
            user: str | None = None, read_only: bool = False,
            cap_drop: Sequence[str] = (), cap_add: Sequence[str] = (),
            extra: Sequence[str] = (), entrypoint: str | None = None,
            remove: bool = False) -> Container:
        """``docker run -d``; returns the running container."""
        name = name or f"dnsdt-{secrets.token_hex(4)}"
        args = ["run", "-d", "--name", name]
        if network:
            args += ["--network", network]
        if ip:
            args += ["--ip", ip]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        for key, value in (env or {}).items():
            args += ["--env", f"{key}={value}"]
        args += [f"--expose={port}" for port in expose]
        args += [f"--publish={port}" for port in publish]
        args += [f"--dns={server}" for server in dns or ()]
        if healthcheck is not None:
            args += healthcheck.flags()
        if user:
            args += ["--user", user]
        if read_only:
            args.append("--read-only")
        args += [f"--cap-drop={cap}" for cap in cap_drop]
        args += [f"--cap-add={cap}" for cap in cap_add]
        if entrypoint is not None:
            args += ["--entrypoint", entrypoint]
        if remove:
            args.append("--rm")
        args += [*extra, image, *command]
        ident = self.docker(*args).stdout.strip()
        return Container(self, ident, name)

    def run_once(self, image: str, *command: str, network: str | None = None,
                 timeout: float = 60.0, extra: Sequence[str] = ()
                 ) -> subprocess.CompletedProcess[str]:
        """``docker run --rm`` in the foreground: the command's output and status."""
        args = ["run", "--rm", *(["--network", network] if network else []), *extra,
                image, *command]
        return self.docker(*args, check=False, timeout=timeout)

    def containers(self) -> list[str]:
        """Names of every container, running or not."""
        out = self.docker("ps", "-a", "--format", "{{.Names}}").stdout
        return out.split()


@contextlib.contextmanager
def engine(daemon_config: Mapping[str, Any] | None = None) -> Iterator[Engine]:
    """A started :class:`Engine`, closed on exit."""
    eng = Engine(daemon_config or {})
    try:
        eng.start()
        yield eng
    finally:
        eng.close()
