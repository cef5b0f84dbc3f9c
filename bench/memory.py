"""Figure 3, memory: RSS and PSS of the supervision tree at 1, 10, 50 and 200 services.

Recipe: boot N services that `exec sleep 1d`, wait until every one has reported, let the
tree settle for a second, then sum Rss, Pss and private (USS) from /proc/PID/smaps_rollup
over the supervision tree only: PID 1 and its descendants that are not service processes
(s6: s6-svscan and every s6-supervise; supervisord: its own process; overlayd: its process).
The increment per service is the least-squares slope of the medians over the four sizes.
"""

from __future__ import annotations

import statistics
import time

from bench.common import QUICK, Row, Samples, main_for, memory_kb, reps, running

SUPERVISORS = ["overlayd", "s6", "supervisord"]
SIZES = [1, 10, 50, 200]


def once(column: str, services: int) -> dict[str, float]:
    """kB of RSS, PSS and USS of the supervision tree over `services` idle services."""
    with running(column, services) as (ns, _, _):
        time.sleep(0.5 if QUICK else 1.0)
        tree = ns.supervision_tree()
        total = {"rss": 0, "pss": 0, "uss": 0}
        for pid in tree:
            for key, kb in memory_kb(pid).items():
                total[key] += kb
        sized = {f"{key}{services}": kb for key, kb in total.items()}
        return {**sized, f"procs{services}": len(tree)}


def per_service(s: Samples, key: str, column: str) -> None:
    """Record the slope (kB per service) of a memory figure's medians over the sizes."""
    points = [(n, s.median(f"{key}{n}", column)) for n in SIZES]
    if all(kb is not None for _, kb in points):
        xs, ys = [float(n) for n, _ in points], [float(kb or 0) for _, kb in points]
        s.add(f"{key}-slope", column, statistics.linear_regression(xs, ys).slope)


def run() -> list[Row]:
    """Measure every size, interleaving the supervisors in each round."""
    s = Samples()
    for _ in range(reps(3, 1)):
        for n in SIZES:
            for column in SUPERVISORS:
                s.measure(column, lambda c=column, n=n: once(c, n))
    for column in SUPERVISORS:
        per_service(s, "pss", column)
        per_service(s, "uss", column)

    def mb(kb: float) -> float:
        return kb / 1024

    rows = [
        s.row(
            f"PSS of the supervision tree, {n} service{'s' if n > 1 else ''}",
            f"pss{n}",
            SUPERVISORS,
            "MB",
            "s6",
            "s6 7.3 MB; overlayd below s6" if n == 50 else "",
            mb,
        )
        for n in SIZES
    ]
    rows += [
        s.row("RSS of the supervision tree, 50 services", "rss50", SUPERVISORS, "MB", "s6", "", mb),
        s.row(
            "PSS per added service (slope, 1 to 200)",
            "pss-slope",
            SUPERVISORS,
            "KB",
            "s6",
            "overlayd ≤ 15 KB",
        ),
        s.row(
            "Private memory (USS) per added service (slope, 1 to 200)",
            "uss-slope",
            SUPERVISORS,
            "KB",
            "s6",
        ),
    ]
    procs = {c: s.median("procs50", c) for c in SUPERVISORS}
    rows[2].notes.insert(
        0,
        "supervision processes at 50 services: "
        + ", ".join(f"{c} {v:.0f}" for c, v in procs.items() if v is not None)
        + "; PSS splits each shared page among every process mapping it, host-wide, so a "
        "tree's PSS moves a little with whatever else runs (USS does not)",
    )
    return rows


if __name__ == "__main__":
    main_for(run)
