"""overlayd when it is not PID 1 (no PID namespace): it makes itself a child subreaper, reaps the
orphans of its own tree, gives the same exit codes, and at shutdown stops its own descendants —
never kill(-1), which would take down every process of the host that shares its uid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.harness import Booted, Tree, wait_until

pytestmark = needs_root


def stat_fields(pid: int) -> list[str] | None:
    """Fields after the command name in /proc/PID/stat: [state, ppid, pgrp, session, ...]."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].decode().split()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def running(pid: int, command: str) -> bool:
    """`pid` exists, is not a zombie, and runs `command` (guards against pid reuse)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z" and cmdline(pid) == command + " "


def find(booted: Booted, command: str) -> int:
    """Host pid of the one process below overlayd whose command line is exactly `command`."""

    def found() -> list[int]:
        return [p for p in booted.descendants() if cmdline(p) == command + " "]

    pids = wait_until(lambda: len(found()) == 1 and found(), what=f"one {command!r} process")
    return pids[0]  # type: ignore[index]


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen]:
    """A process of the test's own, in the same session as overlayd, outside its tree."""
    proc = subprocess.Popen(["sleep", "1002"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def reap_strays() -> Iterator[list[int]]:
    """Pids a failing test may leave behind outside any namespace: killed at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if stat_fields(pid) is not None and cmdline(pid).startswith("sleep 1000"):
            os.kill(pid, signal.SIGKILL)


def test_logs_that_it_runs_as_a_child_subreaper(boot) -> None:
    booted = boot("true", pid1=False)
    assert booted.wait() == 0, booted.output
    match = booted.wait_for(r"not PID 1 \(pid (\d+)\): running as a child subreaper")
    assert int(match.group(1)) == booted.proc.pid


def test_orphan_is_re_parented_to_overlayd_and_reaped(boot) -> None:
    """The orphan comes to overlayd (not to the host's init) and its zombie does not stay."""
    booted = boot("sh", "-c", "( exec sleep 999 & ); echo cmd-up; exec sleep 1000", pid1=False)
    booted.wait_for("^cmd-up$")
    orphan = find(booted, "sleep 999")
    wait_until(
        lambda: (stat_fields(orphan) or ["", ""])[1] == str(booted.proc.pid),
        what="the orphan's parent to be overlayd",
    )
    os.kill(orphan, signal.SIGKILL)
    wait_until(lambda: stat_fields(orphan) is None, what="the orphan's zombie to be reaped")
    assert booted.zombies() == []
    assert booted.proc.poll() is None
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 128 + signal.SIGTERM, booted.output


def test_many_double_forked_orphans_leave_no_zombie_under_overlayd(boot, tree: Tree) -> None:
    tree.service(
        "breeder",
        "for i in $(seq 300); do ( true & ); done; echo bred; exec sleep 1000",
    )
    booted = boot(pid1=False)
    booted.wait_for("^bred$", timeout=60)
    breeder = find(booted, "sleep 1000")
    wait_until(lambda: not booted.zombies(), 30, "no zombie below overlayd")
    assert running(breeder, "sleep 1000")
    assert booted.count("^bred$") == 1  # the service was not restarted
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (["true"], 0),
        (["sh", "-c", "exit 3"], 3),
        (["sh", "-c", "exit 255"], 255),
        (["sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
        (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
        (["no-such-program-here"], 127),
        (["/etc/hostname"], 126),
        (["sh", "-c", 'echo 300 > "$OVERLAY_RUN_DIR/exitcode"; exit 1'], 44),
        (["sh", "-c", "(sleep 0.2 &); (sleep 0.2 &); sleep 0.2; exit 7"], 7),
    ],
    ids=[
        "exit-0",
        "exit-3",
        "exit-255",
        "sigterm",
        "sigkill",
        "not-found",
        "not-executable",
        "exitcode-file",
        "orphans",
    ],
)
def test_exit_codes_are_the_same_as_pid1(boot, cmd: list[str], expected: int) -> None:
    booted = boot(*cmd, pid1=False)
    assert booted.wait() == expected, booted.output


def test_sigterm_stops_daemonized_grandchild_but_not_foreign_processes(
    boot, tree: Tree, bystander: subprocess.Popen, reap_strays: list[int]
) -> None:
    tree.service("daemonizer", "setsid sleep 1000 & echo daemonizer-up; exec sleep 1001")
    booted = boot(pid1=False)
    booted.wait_for("^daemonizer-up$")
    daemon = find(booted, "sleep 1000")
    reap_strays.append(daemon)
    # It escaped the service's process group: its own session, so the group kill misses it.
    wait_until(lambda: (stat_fields(daemon) or [""] * 4)[3] == str(daemon), what="its setsid")
    assert running(bystander.pid, "sleep 1002")

    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    booted.wait_for("sending SIGTERM to all remaining processes")
    assert not running(daemon, "sleep 1000"), "the daemonized grandchild outlived overlayd"
    assert stat_fields(daemon) is None or cmdline(daemon) != "sleep 1000 "
    # Our own process, same session as overlayd but outside its tree, was left alone.
    assert bystander.poll() is None
    assert running(bystander.pid, "sleep 1002")


def test_cmd_exit_stops_leftover_descendants_but_not_foreign_processes(
    boot, bystander: subprocess.Popen, reap_strays: list[int]
) -> None:
    # A duration no other process on this machine runs: found in all of /proc afterwards.
    token = f"1000.{os.getpid()}{time.monotonic_ns() % 10**6}"
    booted = boot("sh", "-c", f"setsid sleep {token} & echo cmd-up; exit 4", pid1=False)
    booted.wait_for("^cmd-up$")
    assert booted.wait() == 4, booted.output
    leftover = [
        int(p) for p in os.listdir("/proc") if p.isdigit() and running(int(p), f"sleep {token}")
    ]
    reap_strays.extend(leftover)
    assert leftover == [], "a descendant of overlayd outlived it"
    assert bystander.poll() is None
    assert running(bystander.pid, "sleep 1002")
