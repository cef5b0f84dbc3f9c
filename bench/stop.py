"""Figure 2, stop: SIGTERM to PID 1 until the namespace is empty.

Recipe: boot 50 services whose run scripts report on a fifo and then `exec sleep 1d`
(sleep dies promptly on SIGTERM); once all 50 have reported, send SIGTERM to PID 1 from
outside, as `docker stop` does, and time until unshare exits (the kernel lets PID 1 be
reaped only once every process in its namespace is gone). Then again with one service
that ignores SIGTERM, under a 1 s grace: S6_SERVICES_GRACETIME=1000 for overlayd,
`timeout-kill` 1000 for s6-supervise, `stopwaitsecs=1` for supervisord.
"""

from __future__ import annotations

import os
import signal
import time

from bench.common import Row, Samples, main_for, now_ms, reps, running

SUPERVISORS = ["overlayd", "s6", "supervisord"]
SERVICES = 50
GRACE_MS = 1000


def once(column: str, stubborn: bool) -> dict[str, float]:
    """Boot 50 services, wait for all of them, SIGTERM PID 1: ms until the namespace is empty."""
    grace = GRACE_MS if stubborn else None
    with running(column, SERVICES, grace_ms=grace, stubborn=int(stubborn)) as (ns, _, _):
        time.sleep(0.3)  # let the supervisors settle after the last start
        pid1 = ns.init_pid  # looked up before the clock starts
        t0 = now_ms()
        os.kill(pid1, signal.SIGTERM)
        t1 = ns.wait(30)
        if t1 is None:
            raise TimeoutError(f"still running 30 s after SIGTERM; init said: {ns.log_tail()}")
        return {"stop": t1 - t0}


def run() -> list[Row]:
    """Measure both stops, interleaving the supervisors in each round."""
    prompt, stubborn = Samples(), Samples()
    for _ in range(reps(7, 2)):
        for column in SUPERVISORS:
            prompt.measure(column, lambda c=column: once(c, False))
    for _ in range(reps(5, 1)):
        for column in SUPERVISORS:
            stubborn.measure(column, lambda c=column: once(c, True))
    return [
        prompt.row(
            f"Stop, {SERVICES} services (SIGTERM → namespace empty)",
            "stop",
            SUPERVISORS,
            "ms",
            "s6",
            "s6 64 ms; supervisord 566 ms; overlayd ≤ s6",
        ),
        stubborn.row(
            f"Stop, {SERVICES} services, one ignores SIGTERM (1 s grace)",
            "stop",
            SUPERVISORS,
            "ms",
            "s6",
            "≈ grace + the prompt stop",
        ),
    ]


if __name__ == "__main__":
    main_for(run)
