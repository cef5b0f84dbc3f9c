"""Roots to try the archive in, without Docker: a busybox root, the archive extracted into it
with the root's own `tar` (as a Dockerfile's `RUN tar -xzf … -C /`), and the argv that boots a
root's /init as PID 1 of new PID and mount namespaces in a chroot. Used by tests/test_dist.py
and bench/dist.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ARCHIVE_IN_ROOT = "/tmp/overlayd.tar.gz"
ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Run by `unshare --pid --fork --mount sh -c ENTER enter ROOT PROGRAM ARGS…`: PID 1 of the new
# namespaces is this `sh`, which bind-mounts the host's /dev (Docker gives a container a /dev)
# and a fresh /proc into the root and execs chroot, which execs PROGRAM: PROGRAM is PID 1.
# The mounts live in the new mount namespace only; the root's /run is its own directory.
ENTER = 'R=$1; shift; mount --rbind /dev "$R/dev" && mount -t proc proc "$R/proc" && ' \
        'exec chroot "$R" "$@"'


class Unavailable(Exception):
    """This machine cannot build the root (the reason is the message)."""


def _static_busybox() -> str:
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        raise Unavailable("no busybox (apt-get install busybox-static)")
    program_headers = subprocess.run(["readelf", "-l", busybox], capture_output=True, text=True)
    if "Requesting program interpreter" in program_headers.stdout:
        raise Unavailable(f"{busybox} is not static (apt-get install busybox-static)")
    return busybox


def busybox_root(base: Path) -> Path:
    """A root holding only busybox-static and its links: no libc, no Python."""
    root = base / "busybox"
    for name in ("bin", "etc", "tmp", "proc", "dev", "run", "root"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(_static_busybox(), root / "bin/busybox")
    # every applet linked in /bin, as in the busybox image
    subprocess.run(["chroot", str(root), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root


def install_archive(root: Path, tarball: Path) -> None:
    """Extract the archive at / of `root` with the root's own tar."""
    shutil.copyfile(tarball, root / ARCHIVE_IN_ROOT.lstrip("/"))
    subprocess.run(["chroot", str(root), "tar", "-xzf", ARCHIVE_IN_ROOT, "-C", "/"], check=True)
    (root / ARCHIVE_IN_ROOT.lstrip("/")).unlink()


def boot_argv(root: Path, program: str = "/init", *args: str) -> list[str]:
    """`program args…` of `root` as PID 1 (prefix it with unshare --pid --fork --mount)."""
    return ["sh", "-c", ENTER, "enter", str(root), program, *args]
