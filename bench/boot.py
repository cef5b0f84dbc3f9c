"""Figure 1, boot: from the exec of the init to the CMD (or the first service) running.

Recipe: the CMD is `sh -c 'echo cmd >FIFO'` and every service's run script starts with
`echo svc $$ >FIFO`; the clock starts just before unshare is spawned and stops when the
benchmark reads the line. A bare `unshare sh -c 'echo cmd >FIFO'` runs in the same rounds,
and its median is subtracted: what is left is the init's own overhead.
"""

from __future__ import annotations

import random
from pathlib import Path

from bench.common import (
    Fifo,
    Namespace,
    Row,
    Samples,
    init_argv,
    main_for,
    reps,
    run_script,
    scratch,
    supervisor_argv,
)

INITS = ["overlayd", "tini", "dumb-init", "catatonit"]
SUPERVISORS = ["overlayd", "s6", "supervisord"]
SERVICES = 20
CONT_INIT = {f"{i:02d}-setup": "#!/bin/sh\nexit 0\n" for i in range(3)}


def boot_argv(
    column: str, base: Path, fifo: Path, services: int
) -> tuple[list[str], dict[str, str]]:
    """How `column` boots: a CMD for the inits and overlayd, services for the supervisors."""
    cmd = ["/bin/sh", "-c", f"echo cmd >{fifo}"]
    if column in ("bare", "tini", "dumb-init", "catatonit"):
        return init_argv(column, cmd), {}
    runs = {f"svc{i:02d}": run_script(fifo, "svc") for i in range(services)}
    return supervisor_argv(
        column,
        base,
        runs,
        cont_init=CONT_INIT if services else None,
        cmd=cmd if column == "overlayd" else (),
    )


def once(column: str, services: int) -> dict[str, float]:
    """One boot: ms to the CMD's line ('cmd') and to the first service's line ('svc')."""
    has_cmd = column not in ("s6", "supervisord")
    want = ({"cmd"} if has_cmd else set()) | ({"svc"} if services else set())
    with scratch() as base:
        fifo = Fifo(base / "events")
        ns = Namespace(*boot_argv(column, base, fifo.path, services), log=base / "init.log")
        got: dict[str, float] = {}
        try:
            t0 = ns.start()
            while want - got.keys():
                t, line = fifo.next(30)
                got.setdefault(line.split()[0], t - t0)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; init said: {ns.log_tail()}") from None
        finally:
            ns.close(natural=10 if has_cmd else 0, grace=2)  # shutdown is figure 2's
            fifo.close()
        return got


def run() -> list[Row]:
    """Measure both boots in rounds: a bare run, then every init in a shuffled order.

    Each init's overhead is taken against the bare run of its own round, so a burst of
    load on the machine shifts both sides of the subtraction alike.
    """
    plain, loaded, bare = Samples(), Samples(), Samples()
    shuffle = random.Random(4).shuffle

    def overhead(column: str, services: int) -> dict[str, float]:
        if not bare.values("cmd", "bare"):
            raise RuntimeError(f"no bare baseline: {bare.errors.get('bare')}")
        base = bare.values("cmd", "bare")[-1]
        return {tag: ms - base for tag, ms in once(column, services).items()}

    for rounds, sample, columns, services in (
        (reps(31, 5), plain, INITS, 0),
        (reps(11, 3), loaded, SUPERVISORS, SERVICES),
    ):
        for _ in range(rounds):
            bare.measure("bare", lambda: once("bare", 0))
            order = list(columns)
            shuffle(order)
            for column in order:
                sample.measure(column, lambda c=column, n=services: overhead(c, n))
    base = bare.median("cmd", "bare") or 0.0
    note = (
        "overhead: minus the bare `unshare sh -c 'echo >fifo'` run of the same round "
        f"(bare median {base:.2f} ms)"
    )
    rows = [
        plain.row(
            "Boot to CMD, 0 services (overhead)",
            "cmd",
            INITS,
            "ms",
            "tini",
            "tini 0.9 ms; overlayd ≤ 25 ms",
        ),
        loaded.row(
            f"Boot to CMD, {SERVICES} services + 3 cont-init (overhead)",
            "cmd",
            ["overlayd"],
            "ms",
            None,
            "",
        ),
        loaded.row(
            f"First service running, {SERVICES} services + 3 cont-init (overhead)",
            "svc",
            SUPERVISORS,
            "ms",
            "s6",
            "s6 6.6 ms; supervisord 1.2 s; overlayd ≤ 30 ms",
        ),
    ]
    rows[0].notes.insert(0, note)
    rows[2].notes.insert(
        0,
        "s6-svscan and supervisord get the 3 cont-init scripts from a "
        "/bin/sh wrapper before their exec (as s6-overlay v2's stage 2)",
    )
    return rows


if __name__ == "__main__":
    main_for(run)
