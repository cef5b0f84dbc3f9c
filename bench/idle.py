"""Figure 4, idle cost: CPU ticks and wake-ups of the supervision tree with 50 idle services.

Recipe: boot 50 services that `exec sleep 1d`, wait until all have reported and two more
seconds, then read utime+stime (/proc/PID/stat) and voluntary + involuntary context
switches (/proc/PID/task/*/status) of every supervision process, wait 10 s, read again.
The figures are the increase over the window, summed over the tree.
"""

from __future__ import annotations

import time

from bench.common import (
    CLK_TCK,
    QUICK,
    Row,
    Samples,
    cpu_ticks,
    main_for,
    reps,
    running,
    wakeups,
)

SUPERVISORS = ["overlayd", "s6", "supervisord"]
SERVICES = 50
WINDOW = 3.0 if QUICK else 10.0


def once(column: str) -> dict[str, float]:
    """CPU ticks and wake-ups of the supervision tree over the window."""
    with running(column, SERVICES) as (ns, _, _):
        time.sleep(2.0)
        tree = ns.supervision_tree()
        ticks, wakes = [cpu_ticks(p) for p in tree], [wakeups(p) for p in tree]
        time.sleep(WINDOW)
        return {
            "ticks": sum(cpu_ticks(p) - t for p, t in zip(tree, ticks, strict=True)),
            "wakeups": sum(wakeups(p) - w for p, w in zip(tree, wakes, strict=True)),
        }


def run() -> list[Row]:
    """One window per supervisor (the window itself is the repetition)."""
    s = Samples()
    for _ in range(reps(1, 1)):
        for column in SUPERVISORS:
            s.measure(column, lambda c=column: once(c))
    w = f"{WINDOW:g} s"
    rows = [
        s.row(
            f"Idle CPU, {SERVICES} services, {w}",
            "ticks",
            SUPERVISORS,
            "ticks",
            "s6",
            "overlayd 0",
        ),
        s.row(
            f"Idle wake-ups, {SERVICES} services, {w}",
            "wakeups",
            SUPERVISORS,
            "",
            "s6",
            "overlayd 0",
        ),
    ]
    rows[0].notes.insert(0, f"1 tick = {1000 / CLK_TCK:g} ms of CPU (utime + stime)")
    return rows


if __name__ == "__main__":
    main_for(run)
