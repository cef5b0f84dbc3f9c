"""Figure: an s6-overlay v3 tree booted by its dependency graph, next to the same work written
the v2 way (sequential cont-init.d scripts, then services.d).

The tree: 14 oneshots in layers — one, four in parallel, one, four, one, two, one — then 5
longruns that all need the last oneshot; each longrun's run script writes `svc N` to a fifo.
The clock starts before unshare is spawned; "first longrun up" is the first such line, "all
up" the fifth. Every oneshot's `up` names a shell script, as every cont-init.d entry is one.
Two variants: scripts that exit at once (the graph's own cost) and scripts that each sleep
50 ms (where running independent ones together pays).

Like with like: the two layouts differ in the files the bench writes just before each boot
(the DAG's ~90 new files and directories against the sequential layout's ~20), and on the
disk's ext4 that alone slowed overlayd's own first writes, the container environment in
OVERLAY_RUN_DIR: 18 against 5 ms unsynced on a busy disk, still 4.8 against 3.6 ms after a
sync (medians of 10, the same 40 variables); on a tmpfs 0.64 against 0.63 ms. So the tree is
synced before the clock starts (an image's tree is not freshly written when it boots), and
the run dir of both layouts is on a tmpfs (/dev/shm) where there is one, as /run is when
s6-overlay has to mount it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.common import (
    OVERLAYD,
    Fifo,
    Namespace,
    Row,
    Samples,
    main_for,
    reps,
    run_script,
    scratch,
    write_exec,
)

LAYERS = [1, 4, 1, 4, 1, 2, 1]  # 14 oneshots
LONGRUNS = 5
SLEEP_MS = 50
# The instant boots last ~60 ms and differ by a few ms, of the order of a 15-round median's
# noise on a shared machine: they get more rounds (they are cheap); the sleeping ones, ~0.5
# and ~0.8 s, differ by 40 %.
INSTANT_ROUNDS = 31
SLEEP_ROUNDS = 15
RUN_TMPFS = "/dev/shm" if os.path.isdir("/dev/shm") else None  # None: the scratch dir's fs


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _body(sleep_ms: int) -> str:
    """Each oneshot's (and cont-init script's) work: a shell script either way."""
    return f"sleep {sleep_ms / 1000}" if sleep_ms else "exit 0"


def dag_tree(base: Path, fifo: Path, sleep_ms: int) -> None:
    """The v3 layout: etc/s6-overlay/s6-rc.d and the user bundle."""
    rc = base / "etc" / "s6-overlay" / "s6-rc.d"
    user = base / "etc" / "s6-overlay" / "user-bundles.d" / "user" / "contents.d"
    previous = ["base"]
    for layer, width in enumerate(LAYERS):
        current = []
        for i in range(width):
            name = f"init-{layer}-{i}"
            _touch(rc / name / "type", "oneshot\n")
            script = write_exec(rc / name / "run", f"#!/bin/sh\n{_body(sleep_ms)}\n")
            _touch(rc / name / "up", f"{script}\n")  # the linuxserver.io way
            for dep in previous:
                _touch(rc / name / "dependencies.d" / dep)
            _touch(user / name)
            current.append(name)
        previous = current
    for n in range(LONGRUNS):
        name = f"svc-{n}"
        _touch(rc / name / "type", "longrun\n")
        write_exec(rc / name / "run", run_script(fifo, "svc"))
        _touch(rc / name / "dependencies.d" / previous[0])
        _touch(user / name)


def sequential_tree(base: Path, fifo: Path, sleep_ms: int) -> None:
    """The same work as v2 images write it: 14 cont-init.d scripts, 5 services.d."""
    for n in range(sum(LAYERS)):
        script = base / "etc" / "cont-init.d" / f"{n:02d}-init"
        write_exec(script, f"#!/bin/sh\n{_body(sleep_ms)}\n")
    for n in range(LONGRUNS):
        write_exec(base / "etc" / "services.d" / f"svc-{n}" / "run", run_script(fifo, "svc"))


def once(layout: str, sleep_ms: int) -> dict[str, float]:
    """One boot: ms to the first and to the last longrun's line."""
    with scratch() as base, tempfile.TemporaryDirectory(prefix="bench-run-", dir=RUN_TMPFS) as tmp:
        fifo = Fifo(base / "events")
        (dag_tree if layout == "dag" else sequential_tree)(base, fifo.path, sleep_ms)
        run = Path(tmp) / "run"
        env = {"OVERLAY_ROOT": str(base), "OVERLAY_RUN_DIR": str(run),
               "OVERLAY_SOCKET": str(run / "control.sock"), "S6_VERBOSITY": "1"}
        ns = Namespace([str(OVERLAYD)], env, log=base / "init.log")
        os.sync()  # the tree just written is not flushed on the clock (see above)
        try:
            t0 = ns.start()
            lines = fifo.take(LONGRUNS, 60)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; overlayd said: {ns.log_tail()}") from None
        finally:
            ns.close(grace=5)
            fifo.close()
        return {"first": lines[0][0] - t0, "all": lines[-1][0] - t0}


def run() -> list[Row]:
    """Interleaved rounds of the four boots, the two layouts in turn going first (a boot
    follows the teardown of the one before: neither layout always gets the same neighbour);
    medians per (variant, layout), and in how many rounds the DAG boot was the faster."""
    samples = {key: Samples() for key in ("dag-0", "seq-0", f"dag-{SLEEP_MS}", f"seq-{SLEEP_MS}")}
    rounds = {0: reps(INSTANT_ROUNDS, 3), SLEEP_MS: reps(SLEEP_ROUNDS, 3)}
    for round_no in range(max(rounds.values())):
        for sleep_ms in (ms for ms, count in rounds.items() if round_no < count):
            for layout in ("dag", "seq") if round_no % 2 == 0 else ("seq", "dag"):
                samples[f"{layout}-{sleep_ms}"].measure(
                    "overlayd", lambda lay=layout, ms=sleep_ms: once(lay, ms)
                )
    rows = []
    for sleep_ms in (0, SLEEP_MS):
        what = "instant oneshots" if not sleep_ms else f"oneshots sleeping {sleep_ms} ms"
        for metric, label in (("first", "first longrun up"), ("all", "all 5 longruns up")):
            dag = samples[f"dag-{sleep_ms}"].row(
                f"v3 DAG, 14 oneshots + 5 longruns ({what}): {label}", metric, ["overlayd"],
                "ms", None, "≤ sequential")
            seq = samples[f"seq-{sleep_ms}"].row(
                f"same work as 14 sequential cont-init.d + services.d: {label}", metric,
                ["overlayd"], "ms", None, "")
            mine, theirs = dag.values.get("overlayd"), seq.values.get("overlayd")
            if mine is not None and theirs:
                dag.notes.append(f"DAG / sequential = {mine / theirs:.2f}")
                # Both lists are in round order; a layout that failed stops short (zip stops).
                pairs = list(zip(samples[f"dag-{sleep_ms}"].values(metric, "overlayd"),
                                 samples[f"seq-{sleep_ms}"].values(metric, "overlayd"),
                                 strict=False))
                wins = sum(d < s for d, s in pairs)
                dag.notes.append(f"the DAG boot was the faster in {wins} of {len(pairs)} rounds")
            rows += [dag, seq]
    return rows


if __name__ == "__main__":
    main_for(run)
