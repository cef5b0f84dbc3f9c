"""Figure 8, the command line: every overlayctl command's wall time, against the Python floor
and supervisorctl.

Recipe: boot overlayd and supervisord side by side, 20 idle services each. In every round
run, and time from fork to exit, each command a user or a probe types — `overlayctl X` and
its supervisorctl equivalent where there is one — and `python -I -c pass`, the floor every
Python CLI pays (DESIGN §6: every overlayctl command within 2x of it). Commands that change
something run on a different service each round and are undone untimed (a stop is followed
by a start, and so on), so each measurement sees the same kind of service: up for more than
a second (no restart throttle). `events --snapshot` is timed to its first line; `shutdown`
needs a fresh container each time, booted outside the clock, so it is that container's first
call and includes overlayd loading its RPC stack, which it does at the first connection.

supervisorctl's `start`/`restart` wait out `startsecs` (1 s by default) before saying
RUNNING: that is its readiness rule, shown as measured.
"""

from __future__ import annotations

import contextlib
import resource
import subprocess
import time

from bench.common import (
    BIN,
    OVERLAYCTL,
    Namespace,
    Row,
    Samples,
    boot_side_by_side,
    main_for,
    now_ms,
    reps,
    running,
)

SERVICES = 20
SUPERVISORS = ["overlayd", "supervisord"]

# (row label, overlayctl argv, supervisorctl argv or None); {svc} is this round's service.
COMMANDS: list[tuple[str, list[str], list[str] | None]] = [
    ("status", ["status"], ["status"]),
    ("check", ["check"], None),
    ("pid NAME", ["pid", "{svc}"], ["pid", "{svc}"]),
    ("signal CONT NAME", ["signal", "CONT", "{svc}"], ["signal", "CONT", "{svc}"]),
    ("wait NAME (already up)", ["wait", "{svc}"], None),
    ("stop NAME (until down)", ["stop", "{svc}"], ["stop", "{svc}"]),
    ("start NAME (until up)", ["start", "{svc}"], ["start", "{svc}"]),
    ("once NAME (until up)", ["once", "{svc}"], None),
    ("restart NAME (until the new process is up)", ["restart", "{svc}"], ["restart", "{svc}"]),
    ("rescan", ["rescan"], ["reread"]),
    ("version", ["version"], ["version"]),
    ("`--json status`", ["--json", "status"], None),
    ("`--help` (the Typer path)", ["--help"], ["help"]),
]
#: Which of a round's services a command acts on: stop then start share one (the start puts
#: it back), once and restart each get their own, so none meets a service under a second old.
SLOT = {"stop": 0, "start": 0, "once": 1, "restart": 2}
PER_ROUND = 4
#: Untimed steps around a timed one: (before, after).
AROUND = {"once": ("stop", "start")}


def timed(argv: list[str]) -> tuple[float, float]:
    """Run a command to its end: (ms from fork to exit, ms of CPU it used, user + system).

    CPU time is the steadier figure on a loaded machine: waiting for a core is not in it.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = now_ms()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = now_ms() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(argv[-2:])} exited {done.returncode}: {tail}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def measured(label: str, argv: list[str]) -> dict[str, float | list[float]]:
    wall, cpu = timed(argv)
    return {label: wall, f"{label} cpu": cpu}


def ctl_argv(column: str, ns: Namespace, args: list[str]) -> list[str]:
    if column == "overlayd":
        return [str(OVERLAYCTL), "--socket", str(ns.home / "run" / "control.sock"), *args]
    return ["supervisorctl", "-c", str(ns.home / "supervisord.conf"), *args]


def first_line_ms(argv: list[str]) -> dict[str, float | list[float]]:
    """ms from fork until the command's first line of output (then it is stopped), and the
    CPU it had used by then."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = now_ms()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        took = now_ms() - t0
        proc.kill()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not line:
        raise RuntimeError(f"{argv[0]} printed nothing")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return {"events": took, "events cpu": cpu}


def shutdown_ms(column: str) -> tuple[float, float]:
    """Boot a fresh small container (untimed), then time the shutdown command alone."""
    args = ["shutdown"]
    with running(column, 3) as (ns, _fifo, _lines):
        took = timed(ctl_argv(column, ns, args))
        ns.wait(15)
    return took


def run() -> list[Row]:
    s = Samples()
    rounds = reps(15, 4)
    floor = [str(BIN / "python"), "-I", "-c", "pass"]
    with contextlib.ExitStack() as stack:
        trees = boot_side_by_side(stack, s, SUPERVISORS, SERVICES)
        time.sleep(1.1)  # every service up for more than the restart throttle's second
        for i in range(rounds):
            for label, mine, theirs in COMMANDS:
                slot = SLOT.get(mine[0], PER_ROUND - 1)
                svc = f"svc{(i * PER_ROUND + slot) % SERVICES:03d}"
                for column, ns in trees.items():
                    args = mine if column == "overlayd" else theirs
                    if args is None:
                        continue
                    argv = ctl_argv(column, ns, [a.format(svc=svc) for a in args])
                    before, after = AROUND.get(mine[0], (None, None))
                    if before:
                        subprocess.run(ctl_argv(column, ns, [before, svc]), capture_output=True)
                    s.measure(column, lambda a=argv, k=label: measured(k, a))
                    if after:
                        subprocess.run(ctl_argv(column, ns, [after, svc]), capture_output=True)
                wall, cpu = timed(floor)
                s.add("floor", "overlayd", wall)
                s.add("floor cpu", "overlayd", cpu)
            for column, ns in trees.items():
                if column == "overlayd":
                    argv = ctl_argv(column, ns, ["events", "--snapshot"])
                    s.measure(column, lambda a=argv: first_line_ms(a))
        for _ in range(reps(5, 2)):
            for column in SUPERVISORS:
                s.measure(column, lambda c=column: dict(zip(
                    ("shutdown", "shutdown cpu"), shutdown_ms(c), strict=True)))  # fmt: skip
    floor_ms = s.median("floor", "overlayd")
    floor_cpu = s.median("floor cpu", "overlayd")
    labels = [label for label, _, _ in COMMANDS]
    labels[-1:-1] = ["events", "shutdown"]
    rows = []
    for label in labels:
        row = s.row(
            "`events --snapshot` to its first line" if label == "events"
            else "shutdown (a fresh container's first call)" if label == "shutdown"
            else f"`{label}`" if not label.startswith("`") else label,
            label, SUPERVISORS, "ms", "supervisord",
        )  # fmt: skip
        mine, cpu = row.values.get("overlayd"), s.median(f"{label} cpu", "overlayd")
        if mine is not None and floor_ms and cpu is not None and floor_cpu:
            row.target = f"{mine / floor_ms:.2f}x floor; CPU {cpu / floor_cpu:.2f}x (≤ 2x)"
        rows.append(row)
    rows.append(s.row("Python start floor, `python -I -c pass`", "floor", ["overlayd"], "ms"))
    rows.append(s.row("Python start floor, CPU time", "floor cpu", ["overlayd"], "ms"))
    rows[0].notes.insert(
        0,
        f"overlayd: `overlayctl CMD`; supervisord: `supervisorctl CMD` (its equivalent, where one"
        f" exists: `reread` for rescan); {SERVICES} idle services each; a changing command on a"
        " different service each round. The target column is overlayctl over the floor (median"
        " / median), in wall time and in CPU time (user + system, which waiting for a core on"
        " a loaded machine does not inflate); supervisorctl's start and restart include its"
        " startsecs (1 s)",
    )
    shutdown_row = next(row for row in rows if row.figure.startswith("shutdown"))
    shutdown_row.notes.append(
        "the request alone, against a container booted just before: the first call of its"
        " life, which waits while overlayd loads its RPC stack (protocol, msgpack, handlers;"
        " loaded at the first connection, not at boot)"
    )
    return rows


if __name__ == "__main__":
    main_for(run)
