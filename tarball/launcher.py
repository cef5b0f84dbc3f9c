"""Building launcher.c: its table (commands, runtime files to check) and a static binary.

The commands are the package's console scripts ([project.scripts] in pyproject.toml), so a
command added there is in /command of the next archive; `init` is overlayd's.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPROJECT = HERE.parent / "pyproject.toml"
INIT_PROGRAM = "overlayd"


def console_scripts() -> dict[str, tuple[str, str]]:
    """name → (module, function), from pyproject.toml."""
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    out = {}
    for name, target in scripts.items():
        module, function = target.split(":")
        out[name] = (module, function)
    return out


def _c_string(text: str) -> str:
    if any(c in text for c in '"\\\n') or not text.isprintable():
        raise SystemExit(f"tarball: unexpected character in {text!r}")
    return f'"{text}"'


def table(runtime: str, python: str, files: list[tuple[str, int]]) -> str:
    """launcher_table.h: `files` are (absolute path in the image, size or -1 for a dir)."""
    scripts = console_scripts()
    lines = [
        "/* Written by tarball/launcher.py at build time. */",
        f"#define RUNTIME {_c_string(runtime)}",
        f"static const char PYTHON[] = {_c_string(python)};",
        "static const struct entry ENTRIES[] = {",
    ]
    entries = [("init", *scripts[INIT_PROGRAM])] + [(n, *t) for n, t in sorted(scripts.items())]
    for name, module, function in entries:
        is_init = int(name in ("init", INIT_PROGRAM))
        lines.append(f"    {{{_c_string(name)}, {_c_string(module)}, {_c_string(function)}, "
                     f"{is_init}}},")
    lines += ["};", "static const struct runtime_file FILES[] = {"]
    lines += [f"    {{{_c_string(path)}, {size}}}," for path, size in files]
    lines.append("};")
    return "\n".join(lines) + "\n"


def compiler() -> list[str]:
    """A static build: musl when installed (a ~30 KB binary), else glibc's static libc."""
    if shutil.which("musl-gcc"):
        return ["musl-gcc"]
    return ["gcc"]


def build(header: str, work: Path, output: Path) -> str:
    """Compile the launcher into `output`; returns the compiler's version line."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "launcher_table.h").write_text(header)
    cc = compiler()
    subprocess.run(
        [*cc, "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror",
         f"-ffile-prefix-map={HERE}=.", f"-ffile-prefix-map={work}=.",
         "-I", str(work), "-o", str(output), str(HERE / "launcher.c")],
        check=True,
    )
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, check=True)
    return f"{cc[0]}: {version.stdout.splitlines()[0]}"
