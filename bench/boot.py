"""Figure 1, boot: from the exec of the init to the CMD (or the first service) running.

Recipe: the CMD is `sh -c 'echo cmd >FIFO'` and every service's run script starts with
`echo svc $$ >FIFO`; the clock starts just before unshare is spawned and stops when the
benchmark reads the line. A bare `unshare sh -c 'echo cmd >FIFO'` runs in the same rounds,
and its median is subtracted: what is left is the init's own overhead.
"""

from __future__ import annotations

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


def once(column: str, services: int) -> dict[str, float]:
    """One boot: ms to the CMD's line ('cmd') and to the first service's line ('svc')."""
    with scratch() as base:
        fifo = Fifo(base / "events")
        cmd = ["/bin/sh", "-c", f"echo cmd >{fifo.path}"]
        runs = {f"svc{i:02d}": run_script(fifo.path, "svc") for i in range(services)}
        has_cmd = column != "s6" and column != "supervisord"
        if services or column == "overlayd":
            argv, env = supervisor_argv(
                column,
                base,
                runs,
                cont_init=CONT_INIT if services else None,
                cmd=cmd if has_cmd else (),
            )
        else:
            argv, env = init_argv(column, cmd), {}
        ns = Namespace(argv, env, base / "init.log")
        got: dict[str, float] = {}
        try:
            t0 = ns.start()
            want = {"cmd"} if has_cmd else set()
            if services:
                want.add("svc")
            while want - got.keys():
                t, line = fifo.next(30)
                tag = line.split()[0]
                got.setdefault(tag, t - t0)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; init said: {ns.log_tail()}") from None
        finally:
            ns.close(natural=10 if has_cmd else 0, grace=2)  # shutdown is figure 2's
            fifo.close()
        return got


def run() -> list[Row]:
    """Measure both boots, interleaving every init in each round."""
    plain, full = Samples(), Samples()
    for _ in range(reps(21, 5)):
        for column in ["bare", *INITS]:
            plain.measure(column, lambda c=column: once(c, 0))
    for _ in range(reps(11, 3)):
        for column in SUPERVISORS:
            full.measure(column, lambda c=column: once(c, SERVICES))
    bare = plain.median("cmd", "bare") or 0.0

    def overhead(ms: float) -> float:
        return ms - bare

    note = f"overhead over a bare `unshare sh -c 'echo >fifo'`, whose median was {bare:.2f} ms"
    rows = [
        plain.row(
            "Boot to CMD, 0 services (overhead)",
            "cmd",
            INITS,
            "ms",
            "tini",
            "tini 0.9 ms; overlayd ≤ 25 ms",
            overhead,
        ),
        full.row(
            f"Boot to CMD, {SERVICES} services + 3 cont-init (overhead)",
            "cmd",
            ["overlayd"],
            "ms",
            None,
            "overlayd ≤ 25 ms",
            overhead,
        ),
        full.row(
            f"First service running, {SERVICES} services + 3 cont-init (overhead)",
            "svc",
            SUPERVISORS,
            "ms",
            "s6",
            "s6 6.6 ms; supervisord 1.2 s; overlayd ≤ 30 ms",
            overhead,
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
