"""Making Debian's binaries run on the archive's own loader and libraries, wherever it lands.

Each executable gets an absolute PT_INTERP (the archive's ld-linux) and every ELF file an
absolute DT_RPATH (the archive's lib/) — RPATH, not RUNPATH, because the loader searches RPATH
before LD_LIBRARY_PATH, so an image's LD_LIBRARY_PATH cannot pull its own libc into our
programs; absolute, not `$ORIGIN`, which would need /proc. skarnet's binaries name each other
by the absolute paths Debian built them with (/usr/bin/s6-svlisten1, /usr/lib/execline/bin/…);
those strings are rewritten, in place and at the same length, to point into /command.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
LOADER = "ld-linux-x86-64.so.2"

# Debian's paths → /command, padded with slashes to the same length ("/command//////x" is
# "/command/x"), so lengths computed at build time by the tools themselves stay right.
_EXECLINE_BIN = b"/usr/lib/execline/bin/"
_SKARNET_PATHS = [
    (_EXECLINE_BIN, b"/command/".ljust(len(_EXECLINE_BIN), b"/")),
    # /usr/bin/s6-…, /usr/bin/s6lockd, /usr/bin/execlineb; never /usr/bin:/bin (a PATH value)
    (re.compile(rb"/usr/bin/(?=s6|execlineb)"), b"/command/"),
]


def is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == ELF_MAGIC


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def needed(path: Path) -> list[str]:
    """The DT_NEEDED sonames of an ELF file."""
    dynamic = _run("readelf", "-d", str(path))
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)


def has_interpreter(path: Path) -> bool:
    return "Requesting program interpreter" in _run("readelf", "-l", str(path))


def strip(path: Path) -> None:
    subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)


def relocate(path: Path, lib_dir: str) -> None:
    """Point `path` at the archive's loader (executables) and libraries (all)."""
    argv = ["patchelf", "--force-rpath", "--set-rpath", lib_dir]
    if has_interpreter(path):
        argv += ["--set-interpreter", f"{lib_dir}/{LOADER}"]
    subprocess.run([*argv, str(path)], check=True)


def rewrite_skarnet_paths(path: Path) -> int:
    """Rewrite Debian's absolute tool paths inside one binary; returns how many changed."""
    data = path.read_bytes()
    count = 0
    for old, new in _SKARNET_PATHS:
        if isinstance(old, bytes):
            count += data.count(old)
            data = data.replace(old, new)
        else:
            data, n = old.subn(new, data)
            count += n
    if count:
        path.write_bytes(data)
    return count
