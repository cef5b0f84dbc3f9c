"""Health checks cost wake-ups only when a check is due: 20 health-checked services idle.

Counted as in test_idle.py (context switches and CPU ticks of PID 1 over a window). Each check
run is a timer, a fork, a SIGCHLD and the end of its output pipe, which the loop serves in a
few passes; between checks PID 1 sleeps. The checks count themselves in a file.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import needs_root
from tests.harness import Booted, Tree, wait_until
from tests.test_idle import SLACK, wakeups

pytestmark = needs_root

SERVICES = 20
WINDOW = 3.0  # seconds: the measurement window itself, not a wait for an event
WAKEUPS_PER_CHECK = 3  # timer, SIGCHLD, pipe EOF: at most one loop pass each


def boot_checked(boot, tree: Tree, interval_ms: int) -> tuple[Booted, Path]:
    for i in range(SERVICES):
        name = f"svc{i:02d}"
        tree.service(name, f"echo {name}-up; exec sleep 1000",
                     files={"health/interval": f"{interval_ms}\n"})
        tree.write(f"etc/services.d/{name}/health/check", "#!/bin/sh\necho x >> ../checks\n")
    booted = boot()
    for i in range(SERVICES):
        booted.wait_for(f"^svc{i:02d}-up$")
    return booted, tree.etc / "services.d" / "checks"


def count(path: Path) -> int:
    try:
        return len(path.read_bytes().split())
    except FileNotFoundError:
        return 0


def test_health_checks_not_due_yet_cost_no_wake_up(boot, tree: Tree) -> None:
    booted, checks = boot_checked(boot, tree, 60000)
    with booted.client() as client:
        assert all(r["health"] is None for r in client.status())  # armed, none run yet
    pid = booted.init_pid
    before = wakeups(pid)
    time.sleep(WINDOW)  # the measurement window
    voluntary, _involuntary, ticks = (a - b for a, b in zip(wakeups(pid), before, strict=True))
    assert count(checks) == 0
    assert voluntary <= SLACK, f"overlayd woke up {voluntary} times with no check due"
    assert ticks <= SLACK, f"{ticks} CPU ticks with no check due"


def test_twenty_health_checked_services_wake_pid1_only_for_their_checks(boot, tree: Tree) -> None:
    booted, checks = boot_checked(boot, tree, 1000)
    wait_until(lambda: count(checks) >= SERVICES, what="every service checked once")
    pid = booted.init_pid
    runs_before, before = count(checks), wakeups(pid)
    time.sleep(WINDOW)  # the measurement window
    runs, after = count(checks) - runs_before, wakeups(pid)
    voluntary = after[0] - before[0]
    # At most one check a second per service (the interval counts from the end of the last
    # one), plus one run each cut by the window's edges; a loaded machine makes fewer.
    assert SERVICES <= runs <= SERVICES * (WINDOW + 1), runs
    assert voluntary <= runs * WAKEUPS_PER_CHECK + SLACK, (
        f"{voluntary} wake-ups for {runs} check runs"
    )
