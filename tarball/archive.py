"""Writing the tree into a reproducible .tar.gz: sorted entries, one mtime, root:root, modes
normalised, no gzip timestamp. Directories the image already has (`usr/`, `usr/bin/`) get no
entry of their own, so extracting never changes their mode or owner.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

SYSTEM_DIRS = frozenset({"usr", "usr/bin"})


def _entries(root: Path) -> list[str]:
    names = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + filenames:
            names.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(names)


def _info(root: Path, name: str, mtime: int) -> tarfile.TarInfo:
    path = root / name
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def write(root: Path, output: Path, mtime: int) -> list[str]:
    """Archive `root` into `output`; returns the member names in order."""
    names = [n for n in _entries(root) if n not in SYSTEM_DIRS]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in names:
            info = _info(root, name, mtime)
            if info.isreg():
                with (root / name).open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0
    ) as gz:
        gz.write(buffer.getvalue())
    return names
