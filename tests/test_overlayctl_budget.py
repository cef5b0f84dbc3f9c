"""Every overlayctl command's import budget: what it may import beyond a bare interpreter.

Each command must start within 2x `python -I -c pass` (DESIGN §6); bench/cli.py measures the
wall time. Wall time cannot be asserted on a shared machine, but what makes it grow can:
an import. So each command line runs with `-X importtime`, and every module it loads beyond
what `python -I -c pass` loads must be in BUDGET (the cheap path: spec, dispatch, the client
and protocol's light modules, msgpack in pure Python included). A new import on any command's
path fails here, naming it: measure it (`python -X importtime -m overlayctl …`) and either
keep it off the path or add it with the cost it adds in the comment.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import PYTHON, REPO, Booted, Tree, can_unshare, wait_until

#: Modules any command may import beyond the bare interpreter (~3 ms together, idle machine).
BUDGET = frozenset(
    {
        "__future__",
        # overlayctl's cheap path
        "overlayctl", "overlayctl.__main__", "overlayctl.spec", "overlayctl.dispatch",
        "overlayctl.commands", "overlayctl.render", "overlayctl.client", "overlayctl.signals",
        "overlayctl.follow", "overlayctl.progress",  # start/stop/restart/once: the wait
        "overlayd",  # `version`: the package's version string only
        # the wire, msgpack in pure Python (protocol.purepack): not the msgpack package, whose
        # C extension, datetime and collections cost ~4 ms, nor the method table
        "protocol", "protocol.errors", "protocol.wire", "protocol.messages",
        "protocol.purepack", "protocol.signals", "protocol.states",
        "protocol.records", "_operator",  # the messages' named fields (itemgetter, in C)
        "_collections",  # the client's bounded notification queue: the C deque alone
        "_socket", "_struct",
        "overlayctl.jsonout", "_json",  # --json: the C string quoter, not the json package
    }
)  # fmt: skip
#: Never on a command's path: Typer and what it drags in, tabulate, psutil, typing, enum, and
#: the msgpack package with what it loads (datetime, collections).
HEAVY = (
    "typer", "click", "rich", "pydantic", "tabulate", "psutil", "typing", "enum", "inspect",
    "msgpack", "collections", "datetime",
)  # fmt: skip
RUN = "import sys; from overlayctl.__main__ import main; sys.exit(main(sys.argv[1:]))"
COMMAND_LINES = [
    ["status"], ["status", "web"], ["--json", "status"], ["status", "--details"], ["check"],
    ["pid", "web"], ["signal", "CONT", "web"], ["wait", "web"], ["wait", "--down", "idle"],
    ["start", "web"], ["stop", "idle"], ["restart", "web"], ["once", "idle"],
    ["stop", "--no-wait", "idle"], ["rescan"], ["version"], ["events"], ["events", "--snapshot"],
    ["shutdown"], ["shutdown", "--exit-code", "3"],
]  # fmt: skip


def imported(*args: str, socket: str, timeout: float = 60) -> tuple[set[str], int]:
    """The modules `overlayctl ARGS` imports, and its exit code."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", RUN, *args, "--socket", socket],
        capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
    )  # fmt: skip
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line}
    return names - {"package"}, done.returncode


@pytest.fixture(scope="module")
def floor() -> set[str]:
    done = subprocess.run([PYTHON, "-I", "-X", "importtime", "-c", "pass"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if "|" in line}


def over_budget(modules: set[str], floor: set[str]) -> list[str]:
    return sorted(modules - floor - BUDGET)


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=" ".join)
def test_every_command_stays_in_its_import_budget_when_overlayd_is_away(
    argv: list[str], floor: set[str], tmp_path: Path
) -> None:
    modules, code = imported(*argv, socket=str(tmp_path / "none.sock"))
    assert code == 3
    assert over_budget(modules, floor) == [], "imports beyond the budget"
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


def test_every_command_stays_in_its_import_budget_against_a_live_overlayd(
    tree: Tree, boot: Callable[..., Booted], floor: set[str]
) -> None:
    if not can_unshare():
        pytest.skip("needs root and unshare (PID namespace)")
    tree.service("web", "exec sleep 1000")
    tree.service("idle", "exec sleep 1000", down=True)
    booted = boot("sleep", "1000")
    wait_until(booted.socket.exists, 10, "the control socket")
    seen: dict[str, list[str]] = {}
    # `events` runs until ^C (its path is covered above); `shutdown` comes last, once.
    lines = [a for a in COMMAND_LINES if a[0] not in ("events", "shutdown")]
    for argv in [*lines, ["shutdown", "--exit-code", "3"]]:
        modules, code = imported(*argv, socket=str(booted.socket))
        assert code == 0, (argv, code)
        seen[" ".join(argv)] = over_budget(modules, floor)
        assert not {m for m in modules if m.split(".")[0] in HEAVY}, argv
    assert all(extra == [] for extra in seen.values()), seen
    assert booted.wait() == 3
