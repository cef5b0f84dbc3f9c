"""Figure 3, memory: RSS and PSS of the supervision tree at 1, 10, 50 and 200 services.

Recipe: boot N services that `exec sleep 1d`, wait until every one has reported, let the
tree settle for a second, then sum Rss and Pss from /proc/PID/smaps_rollup over the
supervision tree only: PID 1 and its descendants that are not service processes (s6:
s6-svscan and every s6-supervise; supervisord: its own process; overlayd: its process).
The increment per service is (PSS at 200 - PSS at 1) / 199.
"""

from __future__ import annotations

import time

from bench.common import QUICK, Row, Samples, main_for, memory_kb, reps, running

SUPERVISORS = ["overlayd", "s6", "supervisord"]
SIZES = [1, 10, 50, 200]


def once(column: str, services: int) -> dict[str, float]:
    """kB of RSS and PSS of the supervision tree over `services` idle services."""
    with running(column, services) as (ns, _, _):
        time.sleep(0.5 if QUICK else 1.0)
        tree = ns.supervision_tree()
        rss = pss = 0
        for pid in tree:
            r, p = memory_kb(pid)
            rss, pss = rss + r, pss + p
        return {f"rss{services}": rss, f"pss{services}": pss, f"procs{services}": len(tree)}


def run() -> list[Row]:
    """Measure every size, interleaving the supervisors in each round."""
    s = Samples()
    for _ in range(reps(3, 1)):
        for n in SIZES:
            for column in SUPERVISORS:
                s.measure(column, lambda c=column, n=n: once(c, n))
    for column in SUPERVISORS:
        first, last = s.median("pss1", column), s.median(f"pss{SIZES[-1]}", column)
        if first is not None and last is not None:
            s.add("per-service", column, (last - first) / (SIZES[-1] - 1))
    mb = 1 / 1024
    rows = [
        s.row(
            f"PSS of the supervision tree, {n} service{'s' if n > 1 else ''}",
            f"pss{n}",
            SUPERVISORS,
            "MB",
            "s6",
            "s6 7.3 MB; overlayd below s6" if n == 50 else "",
            lambda kb: kb * mb,
        )
        for n in SIZES
    ]
    rows.append(
        s.row(
            "RSS of the supervision tree, 50 services",
            "rss50",
            SUPERVISORS,
            "MB",
            "s6",
            "",
            lambda kb: kb * mb,
        )
    )
    rows.append(
        s.row(
            f"PSS per added service (1 → {SIZES[-1]})",
            "per-service",
            SUPERVISORS,
            "KB",
            "s6",
            "overlayd ≤ 15 KB",
        )
    )
    procs = {c: s.median("procs50", c) for c in SUPERVISORS}
    rows[2].notes.insert(
        0,
        "supervision processes at 50 services: "
        + ", ".join(f"{c} {v:.0f}" for c, v in procs.items() if v is not None)
        + "; PSS shares library pages with every process mapping them, host-wide",
    )
    return rows


if __name__ == "__main__":
    main_for(run)
