"""`make dist`: one archive to extract at / of any x86_64 image (DESIGN §9).

    /init                                  → /package/overlayd/current/bin/launch
    /command/NAME                          → /package/overlayd/current/command/NAME
    /usr/bin/overlayctl, /usr/bin/with-contenv → /command/…
    /package/overlayd/current              → overlayd-VERSION
    /package/overlayd/overlayd-VERSION/
        bin/launch          the static launcher (launcher.c): /init and every console script
        bin/python3.11      CPython built from Debian's own source for size (cpython.py),
                            on the archive's loader and libraries
        lib/                ld-linux, libc and every library anything here needs
        lib/python3.11/     the stdlib cut to what is imported, the wheels, overlayd: .pyc only;
                            lib-dynload/ also holds our _overlayd_spawn (cmodule.py)
        command/            skarnet's s6 and execline tools, and links to bin/launch
        share/licenses/     the copyright files of every Debian package and wheel used
        MANIFEST            the inputs (name, version, sha256) and every file's sha256
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

from . import archive, cmodule, cpython, elf, inputs, launcher, pyruntime

REPO = Path(__file__).resolve().parent.parent
GLIBC_PACKAGE = "libc6"


def version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def source_date() -> int:
    """The one mtime of every member: SOURCE_DATE_EPOCH, else the last commit's time."""
    value = os.environ.get("SOURCE_DATE_EPOCH") or _git("log", "-1", "--format=%ct")
    return int(value) if value.isdigit() else 0


def _extract(debs: list[inputs.Input], debroot: Path) -> dict[str, set[str]]:
    """Unpack every .deb; returns package name → the paths it holds (relative)."""
    owned = {}
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb.path), str(debroot)], check=True)
        listing = subprocess.run(["dpkg-deb", "-c", str(deb.path)], check=True,
                                 capture_output=True, text=True).stdout
        owned[deb.name] = {line.split()[5].lstrip("./") for line in listing.splitlines()}
    return owned


def _skarnet_tools(debroot: Path, command: Path, owned: dict[str, set[str]]) -> list[Path]:
    """s6's and execline's programs (execlineb: the real one, not Debian's wrapper script)."""
    command.mkdir(parents=True)
    theirs = owned["s6"] | owned["execline"]
    sources = [p for p in sorted((debroot / "usr/bin").iterdir())
               if f"usr/bin/{p.name}" in theirs and p.name != "execlineb"]
    sources += sorted((debroot / "usr/lib/execline/bin").iterdir())
    tools = []
    for source in sources:
        target = command / source.name
        shutil.copyfile(source, target)
        target.chmod(0o755)
        elf.rewrite_skarnet_paths(target)
        tools.append(target)
    return tools


def _libraries(debroot: Path, elf_files: list[Path], lib: Path) -> list[Path]:
    """Copy the loader and every library `elf_files` need, transitively, into `lib`."""
    search = [debroot / "lib/x86_64-linux-gnu", debroot / "usr/lib/x86_64-linux-gnu"]
    lib.mkdir(parents=True, exist_ok=True)
    copied: list[Path] = []
    queue = [*elf_files, search[0] / elf.LOADER]
    seen = {elf.LOADER}
    shutil.copyfile(search[0] / elf.LOADER, lib / elf.LOADER)
    (lib / elf.LOADER).chmod(0o755)
    while queue:
        for soname in elf.needed(queue.pop()):
            if soname in seen:
                continue
            seen.add(soname)
            source = next((d / soname for d in search if (d / soname).exists()), None)
            if source is None:
                raise SystemExit(f"tarball: no {soname} in the Debian packages (debian.txt)")
            shutil.copyfile(source, lib / soname)  # follows the soname link: one real file
            (lib / soname).chmod(0o755)
            copied.append(lib / soname)
            queue.append(source)
    return copied


def _licences(debroot: Path, debs: list[inputs.Input], site: Path, dest: Path) -> None:
    for deb in debs:
        target = dest / "debian" / deb.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(debroot / "usr/share/doc" / deb.name / "copyright", target / "copyright")
    for info in sorted(site.glob("*.dist-info")):
        texts = [p for p in sorted(info.rglob("*"))
                 if p.is_file() and p.name.upper().startswith(("LICEN", "COPYING"))]
        if not texts:
            continue
        target = dest / "pypi" / info.name.split("-")[0]
        target.mkdir(parents=True, exist_ok=True)
        for text in texts:
            shutil.copyfile(text, target / text.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(rt: Path, ver: str, used: list[inputs.Input], compiler: str) -> str:
    commit = _git("rev-parse", "HEAD")
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain") else ""
    lines = [f"overlayd {ver}", f"source {commit or 'unknown'}{dirty}", f"launcher {compiler}",
             "", "# inputs: kind name version sha256"]
    lines += [f"{i.kind} {i.name} {i.version} {i.sha256()}" for i in used]
    lines += ["", "# files: sha256 path (relative to this directory)"]
    for path in sorted(p for p in rt.rglob("*") if p.is_file() and not p.is_symlink()):
        if path.name != "MANIFEST":
            lines.append(f"{_sha256(path)} {path.relative_to(rt)}")
    return "\n".join(lines) + "\n"


def _runtime_files(rt: Path, runtime: str) -> list[tuple[str, int]]:
    """What the launcher checks before every start: the interpreter and everything in lib/."""
    files = [(f"{runtime}/bin/python3.11", (rt / "bin/python3.11").stat().st_size)]
    for path in sorted((rt / "lib").rglob("*")):
        image_path = f"{runtime}/{path.relative_to(rt)}"
        files.append((image_path, -1 if path.is_dir() else path.stat().st_size))
    return files


def build(out_dir: Path, cache: Path, work: Path) -> Path:
    ver = version()
    runtime = f"/package/overlayd/overlayd-{ver}"
    debs = inputs.debian_packages(cache / "debian")
    wheels = inputs.python_wheels(cache / "pypi")
    if work.exists():
        shutil.rmtree(work)
    debroot, site, root = work / "debroot", work / "site", work / "root"
    debroot.mkdir(parents=True)
    owned = _extract(debs, debroot)
    pyruntime.unpack_wheels([w.path for w in wheels], site)
    rt = root / runtime.lstrip("/")

    (rt / "bin").mkdir(parents=True)
    python = rt / "bin/python3.11"
    python_version = next(d.version for d in debs if d.name == "python3.11-minimal")
    sources = cpython.fetch(cache / "debian-source", python_version)
    shutil.copyfile(cpython.build(sources, work / "cpython", source_date()), python)
    python.chmod(0o755)
    stdlib = "lib/python3.11"
    extensions = pyruntime.install(debroot, site, rt / stdlib, f"{runtime}/{stdlib}")
    extensions.append(cmodule.build(debroot, debs, rt / stdlib / "lib-dynload"))
    for extension in extensions:
        elf.strip(extension)
    tools = _skarnet_tools(debroot, rt / "command", owned)
    libs = _libraries(debroot, [python, *extensions, *tools], rt / "lib")
    glibc = {Path(p).name for p in owned[GLIBC_PACKAGE]}
    for path in [python, *extensions, *tools, *(p for p in libs if p.name not in glibc)]:
        elf.relocate(path, f"{runtime}/lib")
    _licences(debroot, debs, site, rt / "share/licenses")

    header = launcher.table(runtime, f"{runtime}/bin/python3.11", _runtime_files(rt, runtime))
    compiler = launcher.build(header, work / "launcher", rt / "bin/launch")
    for name in launcher.console_scripts():  # a console script of ours wins over a tool
        (rt / "command" / name).unlink(missing_ok=True)
        (rt / "command" / name).symlink_to("../bin/launch")
    (rt / "MANIFEST").write_text(_manifest(rt, ver, [*debs, *sources, *wheels], compiler))

    (root / "package/overlayd/current").symlink_to(f"overlayd-{ver}")
    (root / "command").mkdir()
    for tool in sorted((rt / "command").iterdir()):
        (root / "command" / tool.name).symlink_to(f"/package/overlayd/current/command/{tool.name}")
    (root / "init").symlink_to("/package/overlayd/current/bin/launch")
    (root / "usr/bin").mkdir(parents=True)
    for name in ("overlayctl", "with-contenv"):
        (root / "usr/bin" / name).symlink_to(f"/command/{name}")

    output = out_dir / f"overlayd-{ver}-x86_64.tar.gz"
    names = archive.write(root, output, source_date())
    print(f"tarball: {output} ({output.stat().st_size:,} bytes, {len(names)} entries)")
    return output
