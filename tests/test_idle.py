"""No polling: an idle overlayd sleeps until something happens. With twenty services up and
nothing going on, PID 1 must not wake up at all — no timer ticks, no periodic scans — so it costs
no CPU and no context switches in a container that sits idle for months.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import needs_root
from tests.harness import Booted, Tree, proc_status, wait_until

pytestmark = needs_root

SERVICES = 20
WINDOW = 3.0  # seconds: the measurement window itself, not a wait for an event
SLACK = 1  # one stray switch or tick is noise (e.g. the kernel's accounting at the edge)


def wakeups(pid: int) -> tuple[int, int, int]:
    """(voluntary switches, involuntary switches, utime+stime ticks) of `pid`."""
    status = proc_status(pid)
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # stat fields 14 and 15
    return (
        int(status["voluntary_ctxt_switches"]),
        int(status["nonvoluntary_ctxt_switches"]),
        utime + stime,
    )


def boot_idle(boot, tree: Tree) -> Booted:
    for i in range(SERVICES):
        tree.service(f"svc{i:02d}", f"echo svc{i:02d}-up; exec sleep 1000")
    booted = boot()
    booted.wait_for("no CMD: running until told to stop")
    for i in range(SERVICES):
        booted.wait_for(f"^svc{i:02d}-up$")
    # Each `run` has exec'd its sleep: nothing is left that could still send overlayd a SIGCHLD.
    wait_until(
        lambda: [cmdline(p) for p in booted.descendants()] == [b"sleep\x001000\x00"] * SERVICES,
        what=f"{SERVICES} services settled in `sleep 1000`",
    )
    # And PID 1 has finished the turn that handled the last of it (on a loaded machine it can
    # still be running, and be preempted, when the window opens): asleep, counters still.
    wait_until(lambda: quiescent(booted.init_pid), what="PID 1 asleep after the boot")
    return booted


def quiescent(pid: int, span: float = 0.3) -> bool:
    """Is `pid` sleeping with no switch and no CPU tick over `span` seconds?"""
    before = wakeups(pid)
    time.sleep(span)
    return wakeups(pid) == before and proc_status(pid)["State"].startswith("S")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_idle_overlayd_with_twenty_services_never_wakes_up(boot, tree: Tree) -> None:
    booted = boot_idle(boot, tree)
    pid = booted.init_pid
    before = wakeups(pid)
    time.sleep(WINDOW)  # the measurement window
    after = wakeups(pid)
    voluntary, involuntary, ticks = (a - b for a, b in zip(after, before, strict=True))
    assert voluntary <= SLACK, f"overlayd woke up {voluntary} times in {WINDOW:g} s while idle"
    assert involuntary <= SLACK, f"{involuntary} involuntary switches while idle"
    assert ticks <= SLACK, f"overlayd used {ticks} CPU ticks in {WINDOW:g} s while idle"
    # And it is still alive and responsive afterwards: SIGTERM stops the container cleanly.
    assert booted.proc.poll() is None
    booted.kill()
    assert booted.wait() == 0, booted.output
