"""dnsd as a host installs it: a wheel built from this checkout, installed into
a virtualenv of its own, gives a working ``dnsd`` command."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_built_wheel_installs_a_working_command(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "--wheel-dir", str(dist), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("dnsd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "dnsd = dnsd.cli:main" in archive.read(entry_points).decode()
    assert {"dnsd/cli.py", "dnsd/sources/consul/source.py",
            "dnsd/sources/docker/naming.py"} <= names
    assert not any(name.startswith("tests/") for name in names)

    target = tmp_path / "host"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    # The wheel alone (--no-deps); its dependencies are borrowed from the test's
    # own environment through a .pth file, so nothing is downloaded here.
    site = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                    "--quiet", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    where = subprocess.run([str(python), "-c", "import dnsd; print(dnsd.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(target)), where  # the installed copy, not the checkout
    dnsd = target / "bin" / "dnsd"
    version = subprocess.run([str(dnsd), "--version"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("dnsd ")
    check = subprocess.run([str(dnsd), "check", "--static",
                            str(ROOT / "resolv-examples" / "services.toml")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert check.returncode == 0, check.stderr
