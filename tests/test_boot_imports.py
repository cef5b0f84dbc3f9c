"""PID 1's boot path stays off the expensive standard modules.

Every container start pays for what PID 1 imports, and in an image nothing is shared with
another Python (bench/dist.py measures it). `enum` (through `signal`, `socket`, `re`),
`collections` (through `namedtuple`, `collections.abc`), `typing` and `ctypes` cost 1-7 ms
each; PID 1 uses the C modules under them instead (`_signal`, `_socket`, `_collections`,
`_ctypes` through clib.py). A boot that loads one of them again fails here, naming who
brought it in: keep it lazy (imported where it is used, off the boot's path) or measure it
(`python -X importtime`) and say why it must be on the path.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.harness import PYTHON, can_unshare

#: Expensive modules a boot (a health-checked service, a CMD, s6 paths on) must not load.
FORBIDDEN = frozenset(
    {"enum", "signal", "socket", "selectors", "collections", "typing", "ctypes", "functools",
     "re", "subprocess", "threading", "struct", "msgpack", "protocol.framing", "overlayd.rpc"}
)  # fmt: skip

# PID 1 of a fresh PID namespace, with its own /run: overlayd's s6 paths (on as PID 1) must
# not touch the host's.
BOOT = 'mount -t tmpfs tmpfs /run && exec "$@"'
# As the console script and the archive's launcher start it (`-m` would add runpy's imports).
ENTRY = "from overlayd.__main__ import main; main()"


def _boot_importtime(root: Path, with_service: bool = True) -> list[tuple[int, str]]:
    """(depth, module) of every import of a boot: one health-checked service (or none), CMD
    `true`."""
    service = root / "etc/services.d/svc"
    if with_service:
        (service / "health").mkdir(parents=True)
        for path, text in (("run", "exec sleep 100"), ("health/check", "exit 0")):
            (service / path).write_text(f"#!/bin/sh\n{text}\n")
            (service / path).chmod(0o755)
    else:
        service.parent.mkdir(parents=True)  # services.d there, and empty
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "OVERLAY_ROOT": str(root),
           "S6_CMD_WAIT_FOR_SERVICES": "1"}
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "sh", "-c", BOOT, "boot",
         PYTHON, "-I", "-X", "importtime", "-c", ENTRY, "true"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imports = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            name = line.rsplit("|", 1)[1]
            imports.append(((len(name) - len(name.lstrip())) // 2, name.strip()))
    return imports


def _importer(imports: list[tuple[int, str]], index: int) -> str:
    """The module whose import loaded imports[index] (importtime lists children first)."""
    depth = imports[index][0]
    for parent_depth, name in imports[index + 1 :]:
        if parent_depth < depth:
            return name
    return "the boot itself"


@pytest.mark.skipif(not can_unshare(), reason="needs unshare (root)")
def test_a_boot_loads_no_expensive_standard_module(tmp_path: Path) -> None:
    imports = _boot_importtime(tmp_path)
    assert any(name == "overlayd.stages" for _, name in imports)  # the probe saw a boot
    assert any(name == "overlayd.supervisor" for _, name in imports)  # a service: supervised
    loaded = [(i, name) for i, (_, name) in enumerate(imports) if name in FORBIDDEN]
    assert not loaded, [f"{name} (imported by {_importer(imports, i)})" for i, name in loaded]


#: What supervising costs (~3 ms of imports): an image with nothing to supervise never loads it.
SUPERVISION = frozenset(
    {"overlayd.supervisor", "overlayd.service", "overlayd.scan", "overlayd.rc_boot",
     "overlayd.rc_run", "overlayd.rc_source", "overlayd.depgraph", "overlayd.check_specs"}
)  # fmt: skip


@pytest.mark.skipif(not can_unshare(), reason="needs unshare (root)")
def test_an_image_with_nothing_to_supervise_never_loads_the_supervision_modules(
    tmp_path: Path,
) -> None:
    imports = _boot_importtime(tmp_path, with_service=False)
    assert any(name == "overlayd.stages" for _, name in imports)
    loaded = [(i, name) for i, (_, name) in enumerate(imports) if name in SUPERVISION]
    assert not loaded, [f"{name} (imported by {_importer(imports, i)})" for i, name in loaded]
