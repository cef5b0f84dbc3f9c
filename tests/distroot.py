"""Image roots for the archive's tests: the busybox root of tarball/rootfs.py and Debian
minbase roots, each with `dist/overlayd-*.tar.gz` extracted at / by the root's own `tar`,
booted as PID 1 of a new PID and mount namespace in a chroot.

The Debian roots come from `mmdebstrap` over the machine's apt sources and are cached as
tarballs under build/dist-cache/roots/ (gitignored): only the first run pays for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tarball.rootfs import (  # noqa: F401  (re-exported for the tests)
    ENTER,
    ENV_PATH,
    Unavailable,
    boot_argv,
    busybox_root,
    install_archive,
)
from tests.harness import REPO, Booted

ROOTS_CACHE = REPO / "build" / "dist-cache" / "roots"


def archive() -> Path | None:
    """The archive under test: $OVERLAYD_DIST (set by `make test-dist`)."""
    path = os.environ.get("OVERLAYD_DIST")
    return Path(path) if path else None


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise Unavailable("no VERSION_CODENAME in /etc/os-release")


DEBIAN_ROOTS = {"minbase-nginx": ("nginx-light",), "minbase-pypy": ("pypy3",)}
_failed: dict[str, str] = {}


def _cached_root(name: str) -> Path:
    """The tarball of Debian root `name` (minbase + its packages), built once by mmdebstrap."""
    cached = ROOTS_CACHE / f"{name}.tar"
    if name in _failed:
        raise Unavailable(_failed[name])
    if cached.exists():
        return cached
    if not shutil.which("mmdebstrap"):
        raise Unavailable("no mmdebstrap (apt-get install mmdebstrap)")
    ROOTS_CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial.tar")
    done = subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase",
         f"--include={','.join(DEBIAN_ROOTS[name])}", _codename(), str(partial)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        _failed[name] = f"mmdebstrap failed: {done.stderr.strip()[-500:]}"
        raise Unavailable(_failed[name])
    partial.rename(cached)
    return cached


def prefetch_debian_roots() -> None:
    """Build every missing Debian root at once (each mmdebstrap run waits on the network and
    dpkg more than on the CPU); failures are kept for the test that needs the root."""

    def build(name: str) -> None:
        try:
            _cached_root(name)
        except Unavailable:
            pass

    with ThreadPoolExecutor(len(DEBIAN_ROOTS)) as pool:
        list(pool.map(build, DEBIAN_ROOTS))


def debian_root(base: Path, name: str) -> Path:
    """A fresh copy of Debian root `name` (see DEBIAN_ROOTS) under `base`."""
    cached = _cached_root(name)
    root = base / name
    root.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(cached), "-C", str(root)], check=True)
    return root


def in_root(root: Path, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command in the root from outside the container (as `docker exec` does)."""
    return subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                          timeout=timeout, env=env or {"PATH": ENV_PATH})


class ChrootBoot(Booted):
    """`/init CMD…` of `root` as PID 1; the same reading and waiting as harness.Booted."""

    def __init__(self, root: Path, cmd: Sequence[str] = (), *, env: dict[str, str] | None = None,
                 image_env: dict[str, str] | None = None,
                 stdin: int | None = subprocess.DEVNULL, preexec=None) -> None:
        """`env`: the container's environment. `image_env`: more of it, set only inside the
        root (by the root's own `env`, which then execs /init): for values such as LD_PRELOAD
        that would upset the host's unshare, sh and chroot on the way in."""
        self.root = root
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self.socket = root / "run/overlay/control.sock"
        inner = [f"{name}={value}" for name, value in (image_env or {}).items()]
        init = ["env", *inner, "/init"] if inner else ["/init"]
        argv = ["unshare", "--pid", "--fork", "--mount", *boot_argv(root, *init, *cmd)]
        self._start(argv, env if env is not None else {"PATH": ENV_PATH}, True, stdin,
                    str(root), preexec)
