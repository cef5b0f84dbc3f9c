"""Figure 5, restart latency: SIGKILL a service that has been up over a second; time to rerun.

Recipe: one service whose run script writes `up <pid>` to a fifo on every start, then
`exec sleep 1d`. Wait until it has been up 1.1 s (past s6's one-second restart throttle),
SIGKILL it from outside, and time from the kill to the benchmark reading the next `up`
line. Repeat in the same namespace.
"""

from __future__ import annotations

import os
import signal
import time

from bench.common import Row, Samples, main_for, now_ms, reps, running

SUPERVISORS = ["overlayd", "s6", "supervisord"]
READY = ["overlayd", "s6"]  # supervisord has no readiness protocol


def once(column: str, kills: int, ready: bool) -> dict[str, float | list[float]]:
    """Boot one service and kill it `kills` times: ms from each kill to the rerun's line."""
    latencies = []
    with running(column, 1, ready_fd=3 if ready else None) as (ns, fifo, lines):
        up_at, line = lines[0]
        for _ in range(kills):
            time.sleep(max(0.0, 1.1 - (now_ms() - up_at) / 1000))
            pid = ns.find(int(line.split()[1]))
            if pid is None:
                raise RuntimeError(f"service process {line.split()[1]} not found")
            t0 = now_ms()
            os.kill(pid, signal.SIGKILL)
            up_at, line = fifo.next(10)
            latencies.append(up_at - t0)
    return {"ready" if ready else "plain": latencies}


def run() -> list[Row]:
    """Kill and time, one namespace per supervisor."""
    plain, ready = Samples(), Samples()
    for column in SUPERVISORS:
        plain.measure(column, lambda c=column: once(c, reps(10, 3), False))
    for column in READY:
        ready.measure(column, lambda c=column: once(c, reps(10, 3), True))
    rows = [
        plain.row(
            "Restart after SIGKILL (service up > 1 s)",
            "plain",
            SUPERVISORS,
            "ms",
            "s6",
            "s6 1 s (no readiness); overlayd ≤ 6 ms",
        ),
        ready.row(
            "Restart after SIGKILL, service with notification-fd (ready > 1 s)",
            "ready",
            READY,
            "ms",
            "s6",
            "s6 3.6 ms; overlayd ≤ 6 ms",
        ),
    ]
    rows[0].notes.insert(
        0,
        "s6 ≥ 2.11.2 waits 1 s after finish before respawning a service that never reported "
        "readiness, however long it was up; with readiness it restarts at once after 1 s ready",
    )
    return rows


if __name__ == "__main__":
    main_for(run)
