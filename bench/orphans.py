"""The CMD of the reaping figure: stream double-forked orphans, then wait for PID 1 to reap them.

Usage: python -I -S orphans.py COUNT RESULT_FILE [LIMIT_S]. A /bin/sh loop streams the
double forks: each round `( : & )` forks a subshell that forks a background child and exits
at once, so the child is re-parented to PID 1 (as a zombie, or soon one); the shell forks
faster than CPython, so the figure is about the init, not the streamer. After the last
round it polls /proc (the namespace's own, from
--mount-proc) until no process but PID 1 and itself is left, or LIMIT_S runs out, and
writes {"seconds", "fork_seconds", "left", "zombies", "pid1_cpu_ms"} as JSON to RESULT_FILE;
pid1_cpu_ms is the CPU time (user + system, from /proc/1/stat) PID 1 spent between the first
fork and the moment nothing was left: the cost of reaping, without the init's own boot.
Standard library only, no imports from the bench package: it runs as `python -I -S`.
"""

import json
import os
import subprocess
import sys
import time

LOOP = 'i=0; while [ "$i" -lt "$1" ]; do ( : & ); i=$((i + 1)); done'


def others() -> list[int]:
    """Every pid in this namespace but PID 1 and this process."""
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) not in (1, me)]


def pid1_cpu_ms() -> float:
    """utime + stime of PID 1 so far, in milliseconds."""
    with open("/proc/1/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def zombies(pids: list[int]) -> int:
    """How many of pids are zombies (state Z)."""
    count = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                count += f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            pass
    return count


def main() -> None:
    """Fork, wait, report."""
    count, result = int(sys.argv[1]), sys.argv[2]
    limit = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    cpu0 = pid1_cpu_ms()
    t0 = time.monotonic()
    subprocess.run(["/bin/sh", "-c", LOOP, "sh", str(count)], check=True)
    forked = time.monotonic()
    while (left := others()) and time.monotonic() - forked < limit:
        time.sleep(0.001)
    done = time.monotonic()
    cpu = pid1_cpu_ms() - cpu0
    with open(result, "w") as f:
        json.dump(
            {
                "seconds": done - t0,
                "fork_seconds": forked - t0,
                "left": len(left),
                "zombies": zombies(left),
                "pid1_cpu_ms": cpu,
            },
            f,
        )


if __name__ == "__main__":
    main()
