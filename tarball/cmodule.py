"""`_overlayd_spawn`, the archive's one C extension module (spawnmodule.c says what it does).

Compiled at `make dist` against the headers of the CPython version the archive ships
(libpython3.11-dev, the same Debian version as python3.11-minimal, whose source cpython.py
builds the interpreter from), into the runtime's lib-dynload. It needs only the C library.
A module of its own rather than built into the interpreter: the interpreter's build stays
Debian's recipe (cpython.py), and a pip install uses the same code through `_ctypes`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import inputs

HERE = Path(__file__).resolve().parent
NAME = "_overlayd_spawn.cpython-311-x86_64-linux-gnu.so"


def _same_version(debs: list[inputs.Input]) -> None:
    versions = {d.name: d.version for d in debs}
    if versions["libpython3.11-dev"] != versions["python3.11-minimal"]:
        raise SystemExit(f"tarball: libpython3.11-dev {versions['libpython3.11-dev']} and "
                         f"python3.11-minimal {versions['python3.11-minimal']} differ")


def build(debroot: Path, debs: list[inputs.Input], dynload: Path) -> Path:
    """Compile the module into `dynload`; returns its path (stripped with the other
    extensions by build.py)."""
    _same_version(debs)
    output = dynload / NAME
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-DNDEBUG", "-Wall", "-Wextra", "-Werror",
         # Debian's pyconfig.h includes <x86_64-linux-gnu/python3.11/pyconfig.h>: from debroot
         "-I", str(debroot / "usr/include/python3.11"), "-I", str(debroot / "usr/include"),
         # no build path in the binary: the same inputs give the same bytes anywhere
         f"-ffile-prefix-map={HERE}=.", f"-ffile-prefix-map={debroot}=",
         "-o", str(output), str(HERE / "spawnmodule.c")],
        check=True,
    )
    output.chmod(0o755)
    return output
