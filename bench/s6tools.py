"""Figure: Debian's own s6 tools against overlayd's supervise/ interface vs a real s6-supervise.

Recipe: boot overlayd (s6 paths on, over a private tmpfs /run in its mount namespace) and
s6-svscan side by side, one service each that ignores SIGHUP. In every round, time from fork to
exit `s6-svstat DIR` and `s6-svc -h DIR` against each, interleaved. They are the same binaries;
only what answers differs (the status file's and control FIFO's owner). overlayd's live dir is
reached as /proc/PID1/root/run/s6/services/NAME, the physical path in its mount namespace.
"""

from __future__ import annotations

import contextlib
import shutil

from bench.common import (
    OVERLAYD,
    Namespace,
    Row,
    Samples,
    main_for,
    reps,
    s6_scandir,
    scratch,
)
from bench.control import wall_ms

COLUMNS = ["overlayd", "s6"]
SERVICE = "trap '' HUP; exec sleep 1d"
PRIVATE_RUN = 'mount -t tmpfs -o mode=0755 overlay-bench-run /run && exec "$@"'


def _wait_for_status(path: str) -> None:
    """Until the status file says the service runs (s6-svstat exits 0 and says `up`)."""
    import subprocess
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = subprocess.run(["s6-svstat", path], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.startswith("up"):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{path} never came up")


def _boot(column: str, base, stack: contextlib.ExitStack) -> str:
    """Start `column` over one service; return the service directory the tools are given."""
    if column == "s6":
        scandir = s6_scandir(base / "s6", {"svc": "#!/bin/sh\n" + SERVICE + "\n"})
        ns = stack.enter_context(Namespace(["s6-svscan", str(scandir)], None, base / "s6.log"))
        path = str(scandir / "svc")
    else:
        root = base / "overlay"
        (root / "etc" / "services.d" / "svc").mkdir(parents=True)
        run = root / "etc" / "services.d" / "svc" / "run"
        run.write_text("#!/bin/sh\n" + SERVICE + "\n")
        run.chmod(0o755)
        env = {
            "OVERLAY_ROOT": str(root),
            "OVERLAY_RUN_DIR": str(root / "run"),
            "OVERLAY_S6_PATHS": "1",
        }
        argv = ["sh", "-c", PRIVATE_RUN, "sh", str(OVERLAYD)]
        ns = stack.enter_context(Namespace(argv, env, base / "overlayd.log"))
        path = f"/proc/{ns.init_pid}/root/run/s6/services/svc"
    _wait_for_status(path)
    return path


def run() -> list[Row]:
    s = Samples()
    if shutil.which("s6-svc") is None:
        s.errors.update({c: "Debian's s6 is not installed" for c in COLUMNS})
    paths: dict[str, str] = {}
    with scratch() as base, contextlib.ExitStack() as stack:
        for column in COLUMNS:
            s.measure(column, lambda c=column: paths.update({c: _boot(c, base, stack)}) or {})
        for _ in range(reps(41, 7)):
            for column, path in paths.items():
                s.measure(column, lambda p=path: {"svstat": wall_ms(["s6-svstat", p])})
                s.measure(column, lambda p=path: {"svc": wall_ms(["s6-svc", "-h", p])})
    rows = [
        s.row("`s6-svstat DIR` wall time", "svstat", COLUMNS, "ms", "s6", "within 1.5x s6"),
        s.row("`s6-svc -h DIR` wall time", "svc", COLUMNS, "ms", "s6", "within 1.5x s6"),
    ]
    rows[0].notes.insert(
        0,
        "the same Debian binaries against overlayd's supervise/ (live dir in its private /run) "
        "and against a real s6-supervise under s6-svscan",
    )
    return rows


if __name__ == "__main__":
    main_for(run)
