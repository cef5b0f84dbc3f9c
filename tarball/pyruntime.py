"""The archive's Python library: Debian's CPython 3.11 stdlib cut to what overlayd and overlayctl
import, every module precompiled to a sourceless .pyc, the wheels' packages beside it. The
build runs Debian's own executable (from the .deb, the same version as the interpreter
cpython.py builds from its source, so the same bytecode and built-in modules) to find, compile
and check them.

Everything lands in one directory, `lib/python3.11/` of the runtime, which is on the
interpreter's default path: with `-I -S` nothing else is searched, so an image's PYTHONPATH
or site-packages can never shadow a module of ours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

from . import elf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUR_PACKAGES = ("overlayd", "overlayctl", "protocol")
WHEEL_PACKAGES = ("msgpack", "psutil", "typer", "shellingham", "annotated_doc")
BOOT_MODULE = "_overlayd_boot"
# Compiled with docstrings (optimize 0): overlayctl's are its --help. Everything else is
# compiled with optimize 2 (no docstrings, no asserts): smaller, quicker to load, less memory
# in PID 1. Nothing of ours reads a docstring or relies on an assert.
KEEP_DOCSTRINGS = ("overlayctl",)
# Imported by the interpreter itself or by name at run time, where modulefinder cannot see:
# the codec every start needs (-X utf8) and the few others a program may name.
EXTRA_MODULES = ("os", "encodings", "encodings.aliases", "encodings.utf_8",
                 "encodings.utf_8_sig", "encodings.ascii", "encodings.latin_1")
# Reachable only through branches the archive never takes (Windows, macOS, tests, optional
# extras of the wheels); leaving them out keeps the stdlib small. test_dist imports every
# module of ours inside the archive and runs the commands, which would miss a wrong entry.
EXCLUDED_PREFIXES = ("test.", "unittest", "pydoc", "pydoc_data", "doctest", "tkinter",
                     "idlelib", "lib2to3", "ensurepip", "distutils", "asyncio", "_asyncio",
                     "concurrent", "multiprocessing", "_multiprocessing", "_posixshmem",
                     "xml", "xmlrpc", "http", "email", "urllib.request", "urllib.response",
                     "urllib.robotparser", "ssl", "_ssl", "_hashlib",
                     "ftplib", "sqlite3", "curses", "_curses", "readline", "pdb", "bdb", "cmd",
                     "code", "codeop", "pickletools", "tarfile", "lzma", "_lzma", "bz2", "_bz2",
                     "mailbox", "tracemalloc", "_pyio", "_pydecimal", "decimal", "_decimal",
                     "_uuid", "mmap", "webbrowser", "plistlib", "socketserver", "netrc",
                     "mimetypes", "_osx_support", "_aix_support", "_testcapi",
                     "_testinternalcapi", "typer.testing", "typer._click.testing",
                     "typer._click._winconsole", "typer.rich_utils", "shellingham.nt",
                     "psutil.tests", "psutil._psaix", "psutil._psbsd", "psutil._psosx",
                     "psutil._pssunos", "psutil._pswindows", "wcwidth", "colorama", "rich")


def staged_interpreter(debroot: Path) -> list[str]:
    """argv prefix that runs the extracted (not yet relocated) interpreter on its own loader."""
    libs = f"{debroot}/lib/x86_64-linux-gnu:{debroot}/usr/lib/x86_64-linux-gnu"
    return [f"{debroot}/lib64/{elf.LOADER}", "--library-path", libs,
            f"{debroot}/usr/bin/python3.11", "-S"]


def _run_staged(debroot: Path, script: str, args: list[str], stdin: str = "") -> str:
    env = {"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    done = subprocess.run(
        [*staged_interpreter(debroot), str(HERE / script), *args],
        input=stdin, env=env, capture_output=True, text=True,
    )
    if done.returncode:
        raise SystemExit(f"tarball: {script} failed:\n{done.stderr}")
    return done.stdout


def unpack_wheels(wheels: list[Path], site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)


def _excluded(name: str) -> bool:
    return any(name == p.rstrip(".") or name.startswith(p.rstrip(".") + ".")
               for p in EXCLUDED_PREFIXES)


def modules(debroot: Path, site: Path) -> list[dict[str, object]]:
    """Every module the archive ships: name, source file, package or not."""
    stdlib = debroot / "usr/lib/python3.11"
    roots = [*OUR_PACKAGES, *WHEEL_PACKAGES, BOOT_MODULE, *EXTRA_MODULES]
    # our packages and the boot module are found in `site` too: linked and copied there
    for package in OUR_PACKAGES:
        link = site / package
        if not link.exists():
            link.symlink_to(REPO / package)
    shutil.copyfile(HERE / "pyboot.py", site / f"{BOOT_MODULE}.py")
    out = _run_staged(debroot, "findmods.py", [str(stdlib), str(site), *roots])
    found = [json.loads(line) for line in out.splitlines()]
    return [m for m in found if not _excluded(str(m["name"]))]


def install(debroot: Path, site: Path, dest: Path, image_dest: str) -> list[Path]:
    """Compile or copy every module into `dest` (= `image_dest` in the image).

    Returns the extension modules copied (for elf.relocate)."""
    stdlib = debroot / "usr/lib/python3.11"
    dynload = stdlib / "lib-dynload"
    (dest / "lib-dynload").mkdir(parents=True, exist_ok=True)
    jobs, extensions = [], []
    for module in modules(debroot, site):
        source = Path(str(module["file"]))
        if source.parent == dynload:
            rel = Path("lib-dynload", source.name)
        else:
            rel = source.relative_to(site if _is_under(source, site) else stdlib)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".py":
            pyc = target.with_suffix(".pyc")
            optimize = 0 if rel.parts[0] in KEEP_DOCSTRINGS else 2
            jobs.append(json.dumps([str(source), str(pyc), f"{image_dest}/{rel}", optimize]))
        else:
            shutil.copyfile(source, target)
            target.chmod(0o755)
            extensions.append(target)
    _run_staged(debroot, "compile_pyc.py", [], "\n".join(jobs) + "\n")
    _run_staged(debroot, "selfcheck.py", [str(dest), *OUR_PACKAGES, *WHEEL_PACKAGES])
    return extensions


def _is_under(path: Path, base: Path) -> bool:
    try:
        path.relative_to(base)
    except ValueError:
        return False
    return True
