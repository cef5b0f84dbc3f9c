"""Figure 6, reaping: 10,000 double-forked orphans; time until none is left, zombies at the end.

Recipe: the CMD is bench/orphans.py (standard library only): a /bin/sh loop streams
`( : & )` double forks, each leaving an orphan for PID 1; the CMD then polls its
namespace's /proc until nothing but PID 1 and itself is left. It reports the time from
its first fork to that moment, PID 1's CPU time (utime + stime, /proc/1/stat) over the same
span, and how many zombies (state Z) were still there at the end (0 unless the 30 s limit
ran out).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import (
    QUICK,
    Namespace,
    Row,
    Samples,
    init_argv,
    main_for,
    reps,
    scratch,
    supervisor_argv,
)

INITS = ["overlayd", "tini", "dumb-init"]
ORPHANS = 2000 if QUICK else 10_000
STREAMER = Path(__file__).with_name("orphans.py")


def once(column: str) -> dict[str, float]:
    """One run of the streamer under `column`: seconds until reaped, zombies left."""
    with scratch() as base:
        result = base / "result.json"
        cmd = [sys.executable, "-I", "-S", str(STREAMER), str(ORPHANS), str(result), "30"]
        if column == "overlayd":
            argv, env = supervisor_argv(column, base, {}, cmd=cmd)
        else:
            argv, env = init_argv(column, cmd), {}
        ns = Namespace(argv, env, base / "init.log")
        ns.start()
        if ns.wait(120) is None:
            ns.close()
            raise TimeoutError(f"still running after 120 s; init said: {ns.log_tail()}")
        if not result.exists():
            raise RuntimeError(f"the CMD wrote no result; init said: {ns.log_tail()}")
        got = json.loads(result.read_text())
        return {
            "seconds": got["seconds"],
            "zombies": got["zombies"],
            "left": got["left"],
            "pid1_cpu_ms": got["pid1_cpu_ms"],
        }


def run() -> list[Row]:
    """Interleave the inits in each round."""
    s = Samples()
    for _ in range(reps(3, 1)):
        for column in INITS:
            s.measure(column, lambda c=column: once(c))
    n = f"{ORPHANS:,}"
    return [
        s.row(
            f"Reap {n} double-forked orphans",
            "seconds",
            INITS,
            "s",
            "tini",
            "tini 2.7 s; overlayd ≤ 1.1x tini",
        ),
        s.row(
            f"PID-1 CPU reaping {n} orphans",
            "pid1_cpu_ms",
            INITS,
            "ms",
            "tini",
            "overlayd ≤ 1.3x tini",
        ),
        s.row(f"Zombies left after reaping {n}", "zombies", INITS, "", None, "0"),
    ]


if __name__ == "__main__":
    main_for(run)
