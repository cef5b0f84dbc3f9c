"""Reaping: overlayd as PID 1 is the one owner of waitpid(-1). Orphans re-parented to it are
reaped quietly, so no zombie piles up in the container, and nothing it supervises is disturbed:
the CMD and the services keep their pids and the CMD's exit code stays exact.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.harness import PYTHON, Booted, Tree, proc_status, wait_until

pytestmark = needs_root

# Double-forks N orphans whose grandchildren _exit at once, prints the marker, then idles.
ORPHAN_MAKER = """\
import os, sys, time
count, marker = int(sys.argv[1]), sys.argv[2]
print(f"{marker}-pid={os.getpid()}", flush=True)
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            os._exit(0)   # the grandchild: an orphan, dead at once
        os._exit(0)       # the middle child: its exit re-parents the grandchild
    os.waitpid(pid, 0)
print(marker, flush=True)
time.sleep(1000)
"""


def orphan_maker(tree: Tree) -> Path:
    path = tree.base / "orphan_maker.py"
    path.write_text(ORPHAN_MAKER)
    return path


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def host_pid(booted: Booted, line: str) -> int:
    """Host pid of the process below overlayd that printed `line` ending in `=NSPID`.

    Programs print $$ (their pid inside the namespace); /proc/PID/status maps it back."""
    nspid = booted.wait_for(line + r"=(\d+)$").group(1)

    def found() -> list[int]:
        pids = []
        for pid in booted.descendants():
            try:
                status = proc_status(pid)
            except OSError:
                continue
            if status.get("NSpid", "").split()[-1:] == [nspid]:
                pids.append(pid)
        return pids

    pids = wait_until(found, what=f"the process of {line}")
    assert len(pids) == 1, pids  # type: ignore[arg-type]
    return pids[0]  # type: ignore[index]


def alive_and_not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] != b"Z"


QUIET_BREAKERS = r"unknown|error|warning|Traceback"


def assert_no_zombies_soon(booted: Booted, timeout: float = 60) -> None:
    wait_until(lambda: not booted.zombies(), timeout, "every zombie in the container to be reaped")
    assert booted.zombies() == []


def test_two_thousand_orphans_of_the_cmd_leave_no_zombie(boot, tree: Tree) -> None:
    script = orphan_maker(tree)
    booted = boot(PYTHON, str(script), "2000", "orphans-made")
    cmd_pid = host_pid(booted, "^orphans-made-pid")
    booted.wait_for("^orphans-made$", timeout=120)
    assert_no_zombies_soon(booted)
    # Nothing else was disturbed: the CMD is the same process, still running.
    assert alive_and_not_zombie(cmd_pid)
    assert cmdline(cmd_pid).startswith(f"{PYTHON} {script}")
    assert booted.proc.poll() is None
    # Orphans are reaped quietly: no line about them.
    assert booted.count(QUIET_BREAKERS) == 0, booted.output
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 128 + signal.SIGTERM, booted.output


def test_two_thousand_orphans_of_a_service_leave_no_zombie(boot, tree: Tree) -> None:
    script = orphan_maker(tree)
    tree.service("breeder", f"exec {PYTHON} {script} 2000 breeder-done")
    tree.service("bystander", 'echo "bystander-pid=$$"; exec sleep 1000')
    booted = boot()
    bystander = host_pid(booted, "^bystander-pid")
    breeder = host_pid(booted, "^breeder-done-pid")
    booted.wait_for("^breeder-done$", timeout=120)
    assert_no_zombies_soon(booted)
    assert alive_and_not_zombie(breeder)
    assert alive_and_not_zombie(bystander)
    assert cmdline(bystander) == "sleep 1000 "
    # Neither service was restarted: each started exactly once.
    assert booted.count("^bystander-pid=") == 1
    assert booted.count("^breeder-done-pid=") == 1
    assert booted.count(QUIET_BREAKERS) == 0, booted.output
    with booted.client() as client:  # reaped quietly, but counted
        # A grandchild the scheduler has not run yet is neither reaped nor a zombie: wait for
        # the count rather than read it once.
        wait_until(lambda: client.hello()["orphans_reaped"] >= 2000, what="2000 orphans reaped")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output


def test_orphan_that_outlives_its_parent_is_reaped_when_it_exits(boot, tree: Tree) -> None:
    orphan = "echo orphan-up; sleep 0.5; echo orphan-exiting"
    cmd = f"( sh -c '{orphan}' & ); echo \"cmd-pid=$$\"; exec sleep 1000"
    booted = boot("sh", "-c", cmd)
    cmd_pid = host_pid(booted, "^cmd-pid")
    booted.wait_for("^orphan-up$")
    booted.wait_for("^orphan-exiting$")
    # Its zombie (re-parented to PID 1, its parent subshell long gone) is reaped.
    assert_no_zombies_soon(booted)
    wait_until(
        lambda: not [pid for pid in booted.descendants() if "orphan-up" in cmdline(pid)],
        what="the orphan to be gone",
    )
    assert alive_and_not_zombie(cmd_pid)
    assert cmdline(cmd_pid) == "sleep 1000 "
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 128 + signal.SIGTERM, booted.output


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        # The brief's case: two orphans, the CMD exits at once.
        ("(sleep 0.2 &) ; (sleep 0.2 &); exit 7", 7),
        # The orphans die at the very moment the CMD does.
        ("(sleep 0.2 &) ; (sleep 0.2 &); sleep 0.2; exit 7", 7),
        # Fifty orphans dying in the same instant as the CMD.
        ("for i in $(seq 50); do (sleep 0.3 &); done; sleep 0.3; exit 9", 9),
        # Orphans that die before the CMD.
        ("for i in $(seq 50); do (true &); done; exit 3", 3),
        # The CMD dies of a signal while its orphans die around it.
        ("(sleep 0.2 &) ; (sleep 0.2 &); sleep 0.2; kill -USR1 $$", 128 + signal.SIGUSR1),
    ],
    ids=["exits-first", "same-moment", "fifty-same-moment", "orphans-first", "cmd-signalled"],
)
def test_cmd_exit_code_is_exact_while_its_orphans_die(boot, cmd: str, expected: int) -> None:
    booted = boot("sh", "-c", cmd)
    assert booted.wait(timeout=60) == expected, booted.output
    booted.wait_for(f"exiting with code {expected}$")
