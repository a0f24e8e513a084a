"""Build the project's image (``docker/Dockerfile``) on a private engine, offline.

No image registry is reachable where the tests run, so the build's ``BASE`` is
a local image:

- the running Debian release with python3 and python3-venv, made by
  ``debootstrap --variant=minbase`` from the mirror in the machine's apt
  sources, trimmed and ``docker import``-ed; the tarball is cached under
  :data:`CACHE` by release and package list (about a minute to make, once);
- plus dnsd's dependencies and build requirements as wheels in ``/wheels``,
  made on the host by ``pip wheel`` from ``pyproject.toml`` (the host's pip
  index and cache; cached the same way), and ``PIP_NO_INDEX=1``,
  ``PIP_FIND_LINKS=/wheels`` in its environment: pip inside the build, which
  has no network, installs from there and never looks for an index.

The Dockerfile is built exactly as users build it, with only ``BASE`` changed
(users get the pinned upstream base and pip's index). Imports the standard
library and ``tests.docker_engine``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.docker_engine import Engine

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("DNSD_TEST_CACHE", "/var/cache/dnsd-tests"))
BASE_PACKAGES = ("python3", "python3-venv")
# What a minimal base does not need to run Python: apt's downloads and lists,
# documentation, translations.
TRIM = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
        "usr/share/info", "usr/share/locale")


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One maker at a time per cached item (parallel test runs share the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debian_release() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError("not a Debian release with a codename (/etc/os-release)")
    return match.group(1)


def apt_mirror(release: str) -> str:
    """The machine's own Debian mirror for ``release``: the first ``deb`` source
    (deb822 ``.sources`` or one-line ``.list``) that serves that suite."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[0].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if ("deb" in fields.get("types", "").split()
                    and release in fields.get("suites", "").split()
                    and fields.get("enabled", "yes").lower() != "no"):
                return fields["uris"].split()[0]
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d")
                                                    .glob("*.list"))]
    for path in lists:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == release:
                    return words[1]
    raise RuntimeError(f"no apt source for {release} in /etc/apt")


def base_tarball(release: str | None = None) -> Path:
    """The cached root filesystem tarball of the local base image; made when missing."""
    release = release or debian_release()
    key = hashlib.sha256(" ".join(BASE_PACKAGES).encode()).hexdigest()[:12]
    tarball = CACHE / f"base-{release}-{key}.tar"
    with _locked(tarball.name):
        if tarball.exists():
            return tarball
        if shutil.which("debootstrap") is None:
            raise RuntimeError("debootstrap missing: apt-get install debootstrap")
        rootfs = CACHE / f"rootfs-{release}-{os.getpid()}"
        shutil.rmtree(rootfs, ignore_errors=True)
        try:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                 release, str(rootfs), apt_mirror(release)],
                capture_output=True, text=True, timeout=1200)
            if result.returncode != 0:
                raise RuntimeError(f"debootstrap failed:\n{result.stdout[-3000:]}"
                                   f"{result.stderr[-3000:]}")
            for path in TRIM:
                target = rootfs / path
                if target.is_dir():
                    for child in target.iterdir():
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf",
                            str(partial), "."], check=True, timeout=600)
            partial.rename(tarball)
        finally:
            # debootstrap mounts /proc and friends inside while it works.
            for mount in ("proc", "sys", "dev/pts", "dev"):
                subprocess.run(["umount", "-l", str(rootfs / mount)], capture_output=True)
            shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def wheel_requirements() -> list[str]:
    """dnsd's dependencies and build requirements, as pyproject.toml names them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return sorted({*project["project"]["dependencies"],
                   *project["build-system"]["requires"], "wheel"})


def wheelhouse() -> Path:
    """The cached folder of wheels for :func:`wheel_requirements`; made when missing."""
    requirements = wheel_requirements()
    constraints = ROOT / ".constraints.txt"  # the versions make test and the image use
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    key = hashlib.sha256(json.dumps([tag, requirements, constraints.read_text()])
                         .encode()).hexdigest()[:12]
    folder = CACHE / f"wheels-{tag}-{key}"
    with _locked(folder.name):
        if folder.is_dir():
            return folder
        partial = CACHE / f"{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet",
                                 "--disable-pip-version-check", "--wheel-dir", str(partial),
                                 "-c", str(constraints), *requirements],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"pip wheel failed:\n{result.stdout}{result.stderr}")
        partial.rename(folder)
    return folder


@dataclass
class Build:
    tag: str
    seconds: float           # the docker build alone
    base_seconds: float      # making (or finding cached) and importing the base
    size: int                # bytes, as `docker image inspect` counts them
    output: str


def base_image(engine: Engine) -> str:
    """The local base on ``engine`` (see the module docstring); returns its tag."""
    release = debian_release()
    rootfs = f"dnsdt-rootfs:{release}"
    # An imported tarball has no configuration: give it the PATH Debian's own
    # images set, which the Dockerfile extends.
    engine.import_tar(base_tarball(release), rootfs,
                      ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    base = f"dnsdt-base:{release}"
    dockerfile = (f"FROM {rootfs}\nCOPY . /wheels/\n"
                  "ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels\n")
    engine.docker("build", "--network", "none", "-t", base, "-f", "-", str(wheelhouse()),
                  input=dockerfile, timeout=300)
    return base


def build_image(engine: Engine, tag: str = "dnsd:local") -> Build:
    """``docker/Dockerfile`` built on ``engine`` from the repository root, as a
    user builds it, on the local base (see the module docstring)."""
    from dnsd import __version__

    started = time.monotonic()
    base = base_image(engine)
    base_seconds = time.monotonic() - started
    started = time.monotonic()
    result = engine.build(ROOT, tag, dockerfile=ROOT / "docker" / "Dockerfile",
                          build_args={"BASE": base, "BUILDER": base,
                                      "VERSION": __version__})
    seconds = time.monotonic() - started
    size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())
    return Build(tag, seconds, base_seconds, size, result.stdout + result.stderr)
