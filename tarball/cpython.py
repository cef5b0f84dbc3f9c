"""The archive's interpreter: CPython built at `make dist` from Debian's own `python3.11` source
package, the very version whose standard library the archive ships (python3.11-minimal's), for
size: `-Os`, except the evaluation loop, unmarshalling and the core object types (HOT), at `-O2`.

Why not Debian's executable: it is built with PGO and LTO for speed, and its code is large.
Measured in a busybox root (PID 1's RSS at 50 services / the interpreter alone / a pure-Python
loop of purepack and dicts, best of 5), the same source built four ways:

    Debian's executable (PGO + LTO)     10.1-10.3 MB   7.5 MB   22.7 ms
    -O2 everywhere, no PGO               9.2 MB        7.3 MB   27.9 ms
    -Os, HOT at -O2 (this)               8.7 MB        6.9 MB   27.2 ms
    -Os everywhere                       8.5-8.9 MB    6.9 MB   35.9 ms

#9 asks PID 1 ≤ 9 MB and a start as fast as it can be: the start measured the same within this
machine's noise (0 to +0.8 ms for `/init /bin/true`; the interpreter's text is 1.8 MB instead
of 2.8 MB, fewer pages to fault in), and Python code runs ~20% slower. PID 1 is idle nearly all
its life; that is the trade taken. To go back to Debian's executable, build.py copies
debroot/usr/bin/python3.11 instead of calling build() (and cmodule.py's headers still match).

Built the way Debian builds its static interpreter (debian/rules): the same patches
(`dpkg-source -x`), the same modules built in (debian/PVER-minimal.README.Debian.in's list,
taken from Modules/Setup into Setup.local), non-PIE, the system's expat and zlib; and
`--without-doc-strings` (the builtins' docstrings: nothing in the archive reads them).
Reproducible: SOURCE_DATE_EPOCH sets __DATE__ and __TIME__, the build directory is mapped out,
the result is stripped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import elf
from .inputs import Input

SOURCE = "python3.11"
CONFIGURE = ["--prefix=/usr", "--without-ensurepip", "--with-system-expat",
             "--with-computed-gotos", "--without-doc-strings"]
COLD_FLAGS = "-Os -fno-pie"
HOT_FLAGS = "-O2 -fno-pie"
#: Compiled for speed: the evaluation loop, calls, the object types every line of Python touches
#: (dicts, strings, ints, lists, tuples, attribute lookup, allocation, frames, the GC), and what
#: every import runs (unmarshalling, code objects, builtins): without the last three,
#: `/init /bin/true` measured ~0.7 ms slower than with Debian's executable, with them the same.
HOT = (
    "Python/ceval.o", "Python/specialize.o", "Python/frame.o", "Python/getargs.o",
    "Objects/abstract.o", "Objects/call.o", "Objects/object.o", "Objects/typeobject.o",
    "Objects/obmalloc.o", "Objects/dictobject.o", "Objects/unicodeobject.o",
    "Objects/longobject.o", "Objects/floatobject.o", "Objects/listobject.o",
    "Objects/tupleobject.o", "Objects/setobject.o", "Objects/bytesobject.o",
    "Objects/funcobject.o", "Objects/methodobject.o", "Objects/descrobject.o",
    "Objects/frameobject.o", "Objects/genobject.o", "Objects/moduleobject.o",
    "Modules/gcmodule.o", "Python/marshal.o", "Objects/codeobject.o", "Python/bltinmodule.o",
)


def _deb_src_sources(etc_apt: Path) -> str:
    """The machine's apt sources as deb-src ones (deb822), for `apt-get source` only."""
    stanzas = []
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            types = re.search(r"^Types:(.*)$", stanza, re.M)
            if types and "deb" in types.group(1).split():
                stanzas.append(re.sub(r"^Types:.*$", "Types: deb-src", stanza.strip(), flags=re.M))
    one_line = etc_apt / "sources.list"
    for path in [one_line, *sorted((etc_apt / "sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                match = re.match(r"deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", line.strip())
                if match:
                    stanzas.append(f"Types: deb-src\nURIs: {match.group(2)}\n"
                                   f"Suites: {match.group(3)}\nComponents: {match.group(4)}")
    if not stanzas:
        raise SystemExit(f"tarball: no Debian package source in {etc_apt} to take {SOURCE} from")
    return "\n\n".join(stanzas) + "\n"


def fetch(cache: Path, version: str) -> list[Input]:
    """`python3.11=version`'s source package (.dsc, .orig.tar.*, .debian.tar.*) in `cache`,
    downloaded once with apt's own configuration left untouched (a private deb-src list)."""
    cache.mkdir(parents=True, exist_ok=True)
    dsc = cache / f"{SOURCE}_{version}.dsc"
    if not dsc.exists():
        with tempfile.TemporaryDirectory(prefix="overlayd-src-") as tmp:
            conf = Path(tmp)
            (conf / "parts").mkdir()
            (conf / "parts/src.sources").write_text(_deb_src_sources(Path("/etc/apt")))
            (conf / "sources.list").write_text("")
            (conf / "lists/partial").mkdir(parents=True)
            (conf / "get").mkdir()
            for path, mode in ((conf, 0o755), (conf / "lists", 0o755),
                               (conf / "lists/partial", 0o777), (conf / "get", 0o777)):
                os.chmod(path, mode)  # apt's sandbox user (_apt) downloads into these
            apt = ["apt-get", "-q", "-o", f"Dir::Etc::SourceList={conf}/sources.list",
                   "-o", f"Dir::Etc::SourceParts={conf}/parts",
                   "-o", f"Dir::State::Lists={conf}/lists"]
            subprocess.run([*apt, "update"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run([*apt, "source", "--download-only", f"{SOURCE}={version}"],
                           cwd=conf / "get", check=True, stdout=subprocess.DEVNULL)
            for path in (conf / "get").iterdir():
                shutil.move(str(path), cache / path.name)
    files = [dsc, *_files_of(dsc)]
    return [Input("debian-source", path.name, version, path) for path in files]


def _files_of(dsc: Path) -> list[Path]:
    """The tarballs a .dsc names (its Files: section), next to it."""
    text = dsc.read_text()
    section = text.split("\nFiles:\n", 1)[1].split("\n\n", 1)[0]
    names = [line.split()[2] for line in section.splitlines()
             if line.startswith(" ") and len(line.split()) == 3]
    paths = [dsc.parent / name for name in names]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"tarball: {dsc.name} names {', '.join(missing)}, not in {dsc.parent}")
    return paths


def build(sources: list[Input], work: Path, source_date: int) -> Path:
    """Unpack `sources` (fetch's), configure and build; returns the stripped `python`."""
    dsc = next(source.path for source in sources if source.path.suffix == ".dsc")
    src = work / "src"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    # Checks every tarball against the .dsc's checksums (apt checked the .dsc against the
    # signed index it came from; no keyring here for the .dsc's own signature).
    _run(["dpkg-source", "-x", str(dsc), str(src)], work, dict(os.environ), "dpkg-source -x")
    build_dir = src / "build-overlayd"
    build_dir.mkdir()
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(source_date), "LC_ALL": "C"}
    for name in ("CFLAGS", "LDFLAGS", "CPPFLAGS"):  # make appends $(CFLAGS) from its environment
        env.pop(name, None)
    flags = {"CFLAGS": f"{COLD_FLAGS} -ffile-prefix-map={src}=.", "LDFLAGS": "-no-pie"}
    _run(["../configure", *CONFIGURE], build_dir, {**env, **flags}, "configure")
    _built_in_modules(src, build_dir, env)
    jobs = f"-j{os.cpu_count() or 1}"
    _run(["make", jobs, "python"], build_dir, env, "make")
    # Then the hot objects again, for speed, and the interpreter linked again with them (built
    # last and marked newer than everything: make must not redo them with the cold flags).
    for name in HOT:
        (build_dir / name).unlink()
    hot_flags = f"CONFIGURE_CFLAGS={HOT_FLAGS} -ffile-prefix-map={src}=."
    _run(["make", jobs, hot_flags, *HOT], build_dir, env, "make (the hot objects)")
    for name in HOT:
        os.utime(build_dir / name)
    _run(["make", "python"], build_dir, env, "make (linking again)")
    python = build_dir / "python"
    elf.strip(python)  # (for this executable the same bytes as a plain strip)
    return python


def _built_in_modules(src: Path, build_dir: Path, env: dict[str, str]) -> None:
    """Debian's list of modules linked into its interpreter, made built in as its rules do:
    every `#NAME…` line of Modules/Setup that starts with a listed name (a prefix match, as
    their egrep: `_stat` also brings `_statistics`), uncommented into Setup.local."""
    readme = (src / "debian/PVER-minimal.README.Debian.in").read_text()
    names = [f.split()[0] for f in readme.splitlines()
             if len(f.split()) > 1 and f.split()[1] == "extension"]
    listed = re.compile("^#(" + "|".join(map(re.escape, names)) + ")")
    lines = [line[1:].replace("-Wl,-Bdynamic", "").replace("-Wl,-Bstatic", "")
             for line in (src / "Modules/Setup").read_text().splitlines() if listed.match(line)]
    with open(build_dir / "Modules/Setup.local", "a") as setup:
        setup.write("\n".join(lines) + "\n")
    _run(["../Modules/makesetup", "-c", "../Modules/config.c.in", "-s", "Modules",
          "Modules/Setup.local", "Modules/Setup.bootstrap", "Modules/Setup.stdlib",
          "../Modules/Setup"], build_dir, env, "makesetup")
    shutil.move(str(build_dir / "config.c"), build_dir / "Modules/config.c")
    _run(["make", "Makefile", "Modules/config.c"], build_dir, env, "make Makefile")
    makefile = build_dir / "Makefile"  # Debian drops this rule too (it lacks -fPIC)
    kept = [line for line in makefile.read_text().splitlines(keepends=True)
            if not re.match(r"^Modules/_math\.o: .*PY_STDMODULE_CFLAGS", line)]
    makefile.write_text("".join(kept))


def _run(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"tarball: building {SOURCE}: {what} failed:\n{tail}")
