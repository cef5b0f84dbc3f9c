"""The archive's interpreter: Debian's CPython 3.11, linked again from Debian's own objects with
one more built-in module and two fewer.

libpython3.11-dev ships the objects python3.11-minimal's executable is made of (libpython3.11.a,
python.o, and config.c: the table of built-in modules). They are linked here with Debian's
flags, and with these changes to the table:
- `_overlayd_spawn` (spawnmodule.c) added: posix_spawn for PID 1 without loading _ctypes and
  libffi at its first spawn (~1 ms and ~0.25 MB of PID 1);
- `pyexpat` and `_elementtree` left out: the archive has no `xml` package to use them, and
  without them the interpreter needs no libexpat;
- zlib linked in (zlib1g-dev's libz.a) rather than loaded: one library less to map at every
  start. The interpreter then needs only the C library and libm.
Measured in the same root against Debian's own executable: the same start-up time, 36 fewer
page faults (`python -I -S -c pass`), and PID 1 with 50 services ~0.4 MB smaller. All the
Debian packages used must be of the same version (_same_version).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import inputs

HERE = Path(__file__).resolve().parent
MODULE = "_overlayd_spawn"
LEFT_OUT = {"pyexpat": "pyexpat.o", "_elementtree": "_elementtree.o"}  # module → its object
CONFIG_DIR = "usr/lib/python3.11/config-3.11-x86_64-linux-gnu"
# What Debian's python3.11 is linked with (LINKFORSHARED, LIBS and SYSLIBS of its Makefile):
# extension modules find the C API in the executable.
LINK_FLAGS = ["-no-pie", "-Xlinker", "-export-dynamic", "-Wl,-O1", "-Wl,-Bsymbolic-functions"]


def _same_version(debs: list[inputs.Input]) -> None:
    versions = {d.name: d.version for d in debs}
    for dev, runtime in (("libpython3.11-dev", "python3.11-minimal"), ("zlib1g-dev", "zlib1g")):
        if versions[dev] != versions[runtime]:
            raise SystemExit(f"tarball: {dev} {versions[dev]} and {runtime} "
                             f"{versions[runtime]} differ")


def config_c(debian_config: str) -> str:
    """Debian's table of built-in modules, with ours added and LEFT_OUT removed."""
    kept = [line for line in debian_config.splitlines(keepends=True)
            if not any(f"PyInit_{name}(" in line or f"PyInit_{name}}}" in line
                       for name in LEFT_OUT)]
    debian_config = "".join(kept)
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
    for obj in LEFT_OUT.values():
        (objects / obj).unlink()
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
    subprocess.run(
        ["gcc", *LINK_FLAGS, "-s", "-o", str(output), str(config / "python.o"),
         str(work / "config.o"), str(work / "spawnmodule.o"),
         *sorted(str(o) for o in objects.glob("*.o")),
         str(debroot / "usr/lib/x86_64-linux-gnu/libz.a"), "-lm", "-ldl"],
        check=True,
    )
