"""What the archive is made of, fetched once into a cache: Debian packages and PyPI wheels.

Only the package registries are used (`apt-get download`, `pip download`). A file already in
the cache is used as it is, so a rebuild from the same cache gives the same archive; every
input's name, version and sha256 goes into the archive's manifest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEBIAN_LIST = HERE / "debian.txt"
REQUIREMENTS = HERE / "requirements.txt"
PLATFORM = ("--platform", "manylinux2014_x86_64", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311")


@dataclass(frozen=True)
class Input:
    kind: str  # "debian", "debian-source" or "pypi"
    name: str
    version: str
    path: Path

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _names(listing: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in listing.read_text().splitlines())
    return [line for line in lines if line]


def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True, text=True
    ).stdout.strip()


def debian_packages(cache: Path) -> list[Input]:
    """Every package of debian.txt as a .deb in `cache`, downloaded when not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    names = _names(DEBIAN_LIST)
    missing = [name for name in names if not list(cache.glob(f"{name}_*.deb"))]
    if missing:
        _apt_download(missing, cache)
    found = []
    for name in names:
        debs = sorted(cache.glob(f"{name}_*.deb"))
        if len(debs) != 1:
            raise SystemExit(f"tarball: expected one {name}_*.deb in {cache}, found {len(debs)}")
        found.append(Input("debian", name, _deb_field(debs[0], "Version"), debs[0]))
    return found


def _apt_download(names: list[str], cache: Path) -> None:
    """`apt-get download` into a directory apt's sandbox user can write, then into `cache`."""
    with tempfile.TemporaryDirectory(prefix="overlayd-debs-") as tmp:
        os.chmod(tmp, 0o777)
        download = ["apt-get", "download", "-q", *names]
        if subprocess.run(download, cwd=tmp).returncode != 0:  # no package lists yet?
            subprocess.run(["apt-get", "update", "-q"], check=True)
            subprocess.run(download, cwd=tmp, check=True)
        for deb in Path(tmp).glob("*.deb"):
            shutil.move(str(deb), cache / deb.name)


def python_wheels(cache: Path) -> list[Input]:
    """Every pinned wheel of requirements.txt, checked against its hash."""
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--require-hashes", "--no-deps", "--only-binary=:all:", *PLATFORM,
         "-r", str(REQUIREMENTS), "-d", str(cache)],
        check=True,
    )
    found = []
    for line in _names(REQUIREMENTS):
        pin = line.split()[0]
        name, version = pin.split("==")
        stem = name.replace("-", "_")
        wheels = sorted(cache.glob(f"{stem}-{version}-*.whl"))
        if len(wheels) != 1:
            raise SystemExit(f"tarball: expected one wheel for {pin} in {cache}")
        found.append(Input("pypi", name, version, wheels[0]))
    return found
