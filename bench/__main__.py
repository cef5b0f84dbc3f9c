"""`python -m bench [FIGURE...]`: run every figure (or those named), print one table, save it.

Installs the missing peers first (apt-get, as root), then runs each figure in turn and
writes the table with the date, CPU model and package versions to bench/results/latest.md
(only when every figure ran).
A figure that crashes becomes a row saying so; the others still run. BENCH_QUICK=1 runs
few repetitions (a smoke run of about two minutes); BENCH_OVERLAYD=PATH measures another
overlayd build. Without a working overlayd its cells read "n/a", with the reason in a note.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from bench.common import RESULTS, Row, ensure_peers, header, overlayd_problem, table

FIGURES = [
    "boot", "stop", "memory", "idle", "restart", "reap", "control", "s6tools", "dist",
    "logthroughput", "dag", "health", "cli",
]


def main(argv: list[str]) -> int:
    """Run the named figures (all by default); return the exit code."""
    names = argv or FIGURES
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        print(f"unknown figure(s): {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
        return 2
    ensure_peers()
    if problem := overlayd_problem():
        print(f"[bench] overlayd will show n/a: {problem}", file=sys.stderr)
    rows: list[Row] = []
    started = time.monotonic()
    for name in names:
        os.sync()  # each figure starts with nothing left to write back from the one before
        t0 = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            rows += importlib.import_module(f"bench.{name}").run()
        except Exception as exc:  # one broken figure must not lose the others
            rows.append(Row(f"{name}: failed ({type(exc).__name__}: {exc})", "", {}))
        print(f"[bench] {name} done in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    took = f"\n_Suite ran in {time.monotonic() - started:.0f} s._\n"
    report = header() + "\n" + table(rows) + took
    print(report, end="")
    if names == FIGURES:  # a partial run must not replace the suite's record
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "latest.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
