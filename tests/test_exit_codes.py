"""The container's exit code, as `docker run` reports it: table-driven, overlayd as PID 1."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import needs_root
from tests.harness import Tree

pytestmark = needs_root

CASES = [
    # (id, CMD, expected exit code, line that must appear in the output)
    ("cmd-exit-0", ["true"], 0, None),
    ("cmd-exit-3", ["sh", "-c", "exit 3"], 3, r"CMD ended: exit code 3"),
    ("cmd-exit-255", ["sh", "-c", "exit 255"], 255, None),
    ("cmd-sigterm", ["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM, r"killed by SIGTERM"),
    ("cmd-sigkill", ["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL, r"killed by SIGKILL"),
    ("cmd-sigsegv", ["sh", "-c", "kill -SEGV $$"], 128 + signal.SIGSEGV, None),
    ("cmd-not-found", ["no-such-program-here"], 127, r"cannot run 'no-such-program-here'"),
    ("cmd-path-not-found", ["/nonexistent/prog"], 127, r"No such file or directory"),
    ("cmd-not-executable", ["/etc/hostname"], 126, r"cannot run '/etc/hostname'"),
    (
        "exitcode-file-overrides-cmd",
        ["sh", "-c", 'echo 42 > "$OVERLAY_RUN_DIR/exitcode"; exit 3'],
        42,
        None,
    ),
    ("exitcode-file-mod-256", ["sh", "-c", 'echo 300 > "$OVERLAY_RUN_DIR/exitcode"'], 44, None),
    (
        "exitcode-file-garbage-ignored",
        ["sh", "-c", 'echo soon > "$OVERLAY_RUN_DIR/exitcode"; exit 9'],
        9,
        r"not a number; ignored",
    ),
]


@pytest.mark.parametrize(
    ("cmd", "expected", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_cmd_exit_code_becomes_container_exit_code(
    boot, cmd: list[str], expected: int, line: str | None
) -> None:
    booted = boot(*cmd)
    assert booted.wait() == expected, booted.output
    if line:
        booted.wait_for(line)


def test_no_cmd_sigterm_exits_zero(boot, tree: Tree) -> None:
    tree.service("idle", "echo idle-up; exec sleep 1000")
    booted = boot()
    booted.wait_for("^idle-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output


def test_no_cmd_sigterm_uses_exitcode_written_by_finish_script(boot, tree: Tree) -> None:
    """The "Docker way": a finish script decides the container's code."""
    tree.service(
        "main",
        "echo main-up; exec sleep 1000",
        finish='echo 17 > "$OVERLAY_RUN_DIR/exitcode"',
    )
    booted = boot()
    booted.wait_for("^main-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 17, booted.output


def test_cmd_arg0_is_prepended(boot) -> None:
    booted = boot("exit 6", env={"S6_CMD_ARG0": "sh -c"})
    assert booted.wait() == 6, booted.output


def test_cmd_runs_in_overlayd_working_directory(boot, tree: Tree) -> None:
    booted = boot("sh", "-c", 'echo "cwd=$(pwd)"')
    assert booted.wait() == 0
    booted.wait_for(f"cwd={tree.base}$")


def test_sigterm_to_cmd_that_exits_cleanly_gives_its_code(boot) -> None:
    script = "trap 'echo got-term; exit 0' TERM; echo cmd-up; while :; do sleep 0.1; done"
    booted = boot("sh", "-c", script)
    booted.wait_for("^cmd-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    booted.wait_for("^got-term$")
