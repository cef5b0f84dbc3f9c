"""The archive's interpreter: Debian's CPython 3.11, linked again from Debian's own objects with
one more built-in module.

libpython3.11-dev ships the objects python3.11-minimal's executable is made of (libpython3.11.a,
python.o, and config.c: the table of built-in modules). They are linked here as Debian links
them (same objects, same flags, same libraries), plus `_overlayd_spawn` (spawnmodule.c):
posix_spawn for PID 1 without loading _ctypes and libffi at every boot (~1 ms and ~0.25 MB).
Measured against Debian's own executable in the same root: the same start-up time and page
faults (`python -I -S -c pass`). Both packages must be the same Debian version.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import inputs

HERE = Path(__file__).resolve().parent
MODULE = "_overlayd_spawn"
CONFIG_DIR = "usr/lib/python3.11/config-3.11-x86_64-linux-gnu"
# What Debian's python3.11 is linked with (LINKFORSHARED, MODLIBS, LIBS and SYSLIBS of its
# Makefile): extension modules find the C API in the executable.
LINK_FLAGS = ["-no-pie", "-Xlinker", "-export-dynamic", "-Wl,-O1", "-Wl,-Bsymbolic-functions"]


def _same_version(debs: list[inputs.Input]) -> None:
    versions = {d.name: d.version for d in debs}
    if versions["libpython3.11-dev"] != versions["python3.11-minimal"]:
        raise SystemExit(f"tarball: libpython3.11-dev {versions['libpython3.11-dev']} and "
                         f"python3.11-minimal {versions['python3.11-minimal']} differ")


def config_c(debian_config: str) -> str:
    """Debian's table of built-in modules, with ours added."""
    extern = f"extern PyObject* PyInit_{MODULE}(void);\n"
    entry = f'    {{"{MODULE}", PyInit_{MODULE}}},\n'
    for marker, addition in (("/* -- ADDMODULE MARKER 1 -- */", extern),
                             ("/* -- ADDMODULE MARKER 2 -- */", entry)):
        if debian_config.count(marker) != 1:
            raise SystemExit(f"tarball: Debian's config.c has no single {marker}")
        debian_config = debian_config.replace(marker, addition + marker)
    return debian_config


def build(debroot: Path, debs: list[inputs.Input], work: Path, output: Path) -> None:
    """Link the interpreter into `output` (then relocated like every ELF file of the archive)."""
    _same_version(debs)
    config = debroot / CONFIG_DIR
    objects = work / "objects"
    objects.mkdir(parents=True)
    subprocess.run(["ar", "x", str(config / "libpython3.11.a")], cwd=objects, check=True)
    (objects / "config.o").unlink()  # Debian's table: ours replaces it
    (work / "config.c").write_text(config_c((config / "config.c").read_text()))
    # (Debian's pyconfig.h includes <x86_64-linux-gnu/python3.11/pyconfig.h>: from debroot too)
    includes = ["-I", str(debroot / "usr/include/python3.11"), "-I", str(debroot / "usr/include")]
    for source in (work / "config.c", HERE / "spawnmodule.c"):
        subprocess.run(
            ["gcc", "-O2", "-DNDEBUG", "-Wall", "-Wextra", "-Werror",  # as Debian's build
             # (no build path in the binary: the same inputs give the same bytes anywhere)
             f"-ffile-prefix-map={HERE}=.", f"-ffile-prefix-map={work}=.",
             f"-ffile-prefix-map={debroot}=", *includes,
             "-c", str(source), "-o", str(work / f"{source.stem}.o")],
            check=True,
        )
    libs = debroot / "lib/x86_64-linux-gnu"  # the runtime's own: DT_NEEDED gets their sonames
    subprocess.run(
        ["gcc", *LINK_FLAGS, "-s", "-o", str(output), str(config / "python.o"),
         str(work / "config.o"), str(work / "spawnmodule.o"),
         *sorted(str(o) for o in objects.glob("*.o")),
         str(libs / "libexpat.so.1"), str(libs / "libz.so.1"),
         "-lm", "-ldl"],
        check=True,
    )
