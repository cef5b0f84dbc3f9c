"""Figure: the cost of checks (DESIGN §13): CPU per check run, memory of checked services.

Recipes, 20 services that `exec sleep 1d`, each check a `#!/bin/sh` script appending a line to
a counter file (so the runs are counted, not assumed):

- Liveness: every service has `health/check` (exit 0) every 200 ms. CPU time of PID 1
  over the window, divided by the check runs in it. Peers have no liveness checks.
- Readiness polling: every service has `notification-fd` and a `data/check` that always fails,
  polled every 200 ms for ever (`-n 0 -w 200`): by overlayd's own timers, and under s6 by
  `s6-notifyoncheck` in the run script. CPU of the supervision tree (overlayd: PID 1;
  s6: s6-svscan, every s6-supervise and every s6-notifyoncheck) per try. The checks' own CPU
  is not counted on either side.
- Memory: PSS and USS of overlayd's PID 1 with 20 health-checked services (after their checks
  have run), minus the same with 20 unchecked services: what the checks keep resident (the
  check code loads with the first checked service); and the slope from 5 to 20 checked
  services: what each one adds.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import (
    QUICK,
    Fifo,
    Namespace,
    Row,
    Samples,
    comm,
    main_for,
    memory_kb,
    reps,
    run_script,
    scratch,
    supervisor_argv,
    write_exec,
)

SERVICES = 20
FEW = 5  # the other end of the per-service slope
WINDOW = 3.0 if QUICK else 6.0
INTERVAL_MS = 200
POLLING = ["overlayd", "s6"]


def count(path: Path) -> int:
    try:
        return len(path.read_bytes().split())
    except FileNotFoundError:
        return 0


def check_script(counter: Path, code: int) -> str:
    return f"#!/bin/sh\necho x >> {counter}\nexit {code}\n"


def boot(
    column: str, base: Path, kind: str, services: int = SERVICES
) -> tuple[Namespace, Fifo, Path]:
    """Boot `column` over `services` services dressed for `kind` (liveness, polling, plain)."""
    fifo = Fifo(base / "events")
    counter = base / "checks"
    names = [f"svc{i:02d}" for i in range(services)]
    if kind == "polling" and column == "s6":
        runs = {n: f"#!/bin/sh\necho up $$ >{fifo.path}\n"
                f"exec s6-notifyoncheck -n 0 -w {INTERVAL_MS} sleep 1d\n" for n in names}
    else:
        runs = {n: run_script(fifo.path) for n in names}
    argv, env = supervisor_argv(column, base, runs, ready_fd=3 if kind == "polling" else None)
    dirs = base / ("scandir" if column == "s6" else "etc/services.d")
    for name in names:
        if kind == "liveness":
            write_exec(dirs / name / "health" / "check", check_script(counter, 0))
            (dirs / name / "health" / "interval").write_text(f"{INTERVAL_MS}\n")
        elif kind == "polling":
            write_exec(dirs / name / "data" / "check", check_script(counter, 1))
            if column == "overlayd":
                (dirs / name / "notifyoncheck-options").write_text(f"-n 0 -w {INTERVAL_MS}\n")
    ns = Namespace(argv, env, base / "init.log")
    ns.start()
    try:
        fifo.take(services, 60)
    except TimeoutError as exc:
        ns.close(grace=5)
        fifo.close()
        raise TimeoutError(f"{exc}; init said: {ns.log_tail()}") from None
    return ns, fifo, counter


def cpu_ns(pid: int) -> int:
    """CPU time of `pid`'s main thread in ns (/proc/PID/schedstat): ticks are 10 ms, too coarse
    for one check; 0 once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def supervisors(ns: Namespace) -> list[int]:
    """The processes whose CPU is the supervisor's: not services, not checks."""
    return [p for p in ns.supervision_tree() if comm(p) not in ("check", "")]


def cpu_per_run(column: str, kind: str) -> dict[str, float]:
    """ms of supervisor CPU per check run over the window."""
    with scratch() as base:
        ns, fifo, counter = boot(column, base, kind)
        try:
            time.sleep(1.0)  # every service's checks are under way
            procs = supervisors(ns)
            spent = {p: cpu_ns(p) for p in procs}
            runs = count(counter)
            time.sleep(WINDOW)
            runs = count(counter) - runs
            # Only processes alive throughout (a check caught between fork and exec is not).
            used = sum(max(0, cpu_ns(p) - t) for p, t in spent.items() if comm(p))
        finally:
            ns.close(grace=5)
            fifo.close()
    if runs <= 0:
        raise RuntimeError(f"no check ran in {WINDOW:g} s: {ns.log_tail()}")
    return {f"{kind}-cpu": used / 1e6 / runs, f"{kind}-runs": runs}


def pid1_memory(kind: str, services: int = SERVICES) -> dict[str, float]:
    """kB of PSS and USS of overlayd's PID 1 with `services` services of `kind`."""
    with scratch() as base:
        ns, fifo, counter = boot("overlayd", base, kind, services)
        try:
            if kind == "liveness":
                deadline = time.monotonic() + 30
                while count(counter) < 3 * services and time.monotonic() < deadline:
                    time.sleep(0.05)  # polling a file the checks write: the bench's side
            else:
                time.sleep(1.0)
            kb = memory_kb(ns.init_pid)
        finally:
            ns.close(grace=5)
            fifo.close()
    return {f"pss-{kind}{services}": kb["pss"], f"uss-{kind}{services}": kb["uss"]}


def run() -> list[Row]:
    live, poll, mem = Samples(), Samples(), Samples()
    for _ in range(reps(3, 1)):
        live.measure("overlayd", lambda: cpu_per_run("overlayd", "liveness"))
        for column in POLLING:
            poll.measure(column, lambda c=column: cpu_per_run(c, "polling"))
        mem.measure("overlayd", lambda: {
            **pid1_memory("plain"), **pid1_memory("liveness"), **pid1_memory("liveness", FEW),
        })
    for key in ("pss", "uss"):
        plain = mem.values(f"{key}-plain{SERVICES}", "overlayd")
        checked = mem.values(f"{key}-liveness{SERVICES}", "overlayd")
        few = mem.values(f"{key}-liveness{FEW}", "overlayd")
        for a, b, c in zip(plain, checked, few, strict=False):
            mem.add(f"{key}-added", "overlayd", b - a)
            mem.add(f"{key}-each", "overlayd", (b - c) / (SERVICES - FEW))
    rows = [
        live.row(
            f"PID-1 CPU per liveness check run ({SERVICES} services, every {INTERVAL_MS} ms)",
            "liveness-cpu", ["overlayd"], "ms", None, "checks are short-lived children",
        ),
        poll.row(
            f"Supervisor CPU per readiness poll of data/check ({SERVICES} services)",
            "polling-cpu", POLLING, "ms", "s6", "overlayd timers vs s6-notifyoncheck",
        ),
        mem.row(
            f"PSS added to PID 1 by health checks on {SERVICES} services",
            "pss-added", ["overlayd"], "KB", None, "a few KB per service",
        ),
        mem.row(
            f"Private memory (USS) added to PID 1 by health checks on {SERVICES} services",
            "uss-added", ["overlayd"], "KB", None,
        ),
        mem.row(
            f"PSS per further health-checked service (slope, {FEW} to {SERVICES})",
            "pss-each", ["overlayd"], "KB", None, "a few KB",
        ),
    ]
    runs = {c: poll.median("polling-runs", c) for c in POLLING}
    rows[1].notes.insert(0, f"tries in the {WINDOW:g} s window: " + ", ".join(
        f"{c} {v:.0f}" for c, v in runs.items() if v is not None))
    lruns = live.median("liveness-runs", "overlayd")
    if lruns is not None:
        rows[0].notes.insert(0, f"{lruns:.0f} check runs in the {WINDOW:g} s window")
    return rows


if __name__ == "__main__":
    main_for(run)
