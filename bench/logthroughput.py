"""Figure: log throughput. MB/s through one service into a rotating logdir, and the cost of
per-service prefixes on the container's output.

Recipe 1 (logdir): one service waits on a fifo, then writes SIZE bytes of 100-byte lines
(`yes | head -c`) and an END line. overlayd and s6-svscan run it with a `log/run` of
`s6-log -b -- n1000 s1000000 LOGDIR` (rotation every ~1 MB; nothing deleted, so the bytes can be
counted); supervisord writes it to its own rotating `stdout_logfile` (maxbytes 1 MB). Time from
the go signal until every byte is on disk.

Recipe 2 (prefixes): the same service without a logger under overlayd, its output going to the
container's stdout, a pipe the benchmark reads to /dev/null; with OVERLAY_LOG_PREFIX=1 every
line passes through PID 1 (read, prefixed, written), without it the service writes to the pipe
directly. Time from go to the END line, and PID 1's CPU time (utime + stime) per MB.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from bench.common import (
    CLK_TCK,
    OVERLAYD,
    SERVICE_COMMS,
    UNSHARE,
    Namespace,
    Row,
    Samples,
    children_map,
    comm,
    cpu_ticks,
    descendants,
    main_for,
    memory_kb,
    reps,
    scratch,
    write_exec,
)

SIZE = (16 if os.environ.get("BENCH_QUICK", "") not in ("", "0") else 64) * 1024 * 1024
LINE = "x" * 99
COLUMNS = ["overlayd", "s6", "supervisord"]
TIMEOUT = 300.0


def producer(fifo: Path) -> str:
    """The service: wait for go, write SIZE bytes of lines and END, then idle."""
    return f"#!/bin/sh\nread go < {fifo}\nyes {LINE} | head -c {SIZE}\necho END\nexec sleep 1d\n"


def logger(logdir: Path) -> str:
    return f"#!/bin/sh\nexec s6-log -b -- n1000 s1000000 {logdir}\n"


def on_disk(paths: list[Path]) -> int:
    total = 0
    for directory in {p.parent for p in paths}:
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if any(entry.name.startswith(p.name) for p in paths):
                        total += entry.stat().st_size
        except FileNotFoundError:
            pass
    return total


def layout(column: str, base: Path, fifo: Path) -> tuple[list[str], dict[str, str], list[Path]]:
    """argv, env, and the files whose sizes add up to what was logged."""
    logdir = base / "logdir"
    if column == "overlayd":
        svc = base / "etc" / "services.d" / "svc"
        write_exec(svc / "run", producer(fifo))
        write_exec(svc / "log" / "run", logger(logdir))
        env = {"OVERLAY_ROOT": str(base), "OVERLAY_RUN_DIR": str(base / "run")}
        return [str(OVERLAYD)], env, [logdir / "current", logdir / "@"]
    if column == "s6":
        svc = base / "scandir" / "svc"
        write_exec(svc / "run", producer(fifo))
        write_exec(svc / "log" / "run", logger(logdir))
        return ["s6-svscan", str(base / "scandir")], {}, [logdir / "current", logdir / "@"]
    run = write_exec(base / "programs" / "svc", producer(fifo))
    conf = base / "supervisord.conf"
    conf.write_text(
        "\n".join(
            [
                "[supervisord]",
                "nodaemon=true",
                "user=root",
                f"logfile={base / 'supervisord.log'}",
                f"pidfile={base / 'supervisord.pid'}",
                f"childlogdir={base}",
                "loglevel=warn",
                "[program:svc]",
                f"command={run}",
                f"stdout_logfile={base / 'svc.log'}",
                "stdout_logfile_maxbytes=1MB",
                "stdout_logfile_backups=1000",
                "stderr_logfile=NONE",
                "",
            ]
        )
    )
    return ["supervisord", "-c", str(conf)], {}, [base / "svc.log"]


def into_logdir(column: str) -> dict[str, float | list[float]]:
    """One run: MB/s from go until all SIZE bytes (and END) are on disk."""
    with scratch() as base:
        fifo = base / "go"
        os.mkfifo(fifo)
        argv, env, files = layout(column, base, fifo)
        with Namespace(argv, env, base / "init.log") as ns:
            _ = ns.init_pid
            writer = _open_when_read(fifo)
            t0 = time.perf_counter()
            os.write(writer, b"go\n")
            os.close(writer)
            want = SIZE + len("END\n")
            deadline = time.monotonic() + TIMEOUT
            while on_disk(files) < want:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{on_disk(files)} of {want} bytes: {ns.log_tail()}")
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
    return {"mbps": SIZE / 1e6 / elapsed}


def _open_when_read(fifo: Path) -> int:
    deadline = time.monotonic() + 60
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def through_pid1(prefix: bool) -> dict[str, float | list[float]]:
    """One run: the service's lines to the container's stdout, prefixed or inherited."""
    with scratch() as base:
        fifo = base / "go"
        os.mkfifo(fifo)
        write_exec(base / "etc" / "services.d" / "svc" / "run", producer(fifo))
        env = {
            **os.environ,
            "OVERLAY_ROOT": str(base),
            "OVERLAY_RUN_DIR": str(base / "run"),
            "OVERLAY_LOG_PREFIX": "1" if prefix else "0",
        }
        proc = subprocess.Popen(
            [*UNSHARE, str(OVERLAYD)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        init = reader = None
        try:
            init = _init_of(proc.pid)
            seen = threading.Event()
            reader = threading.Thread(
                target=_drain_until_end, args=(proc.stdout, seen), daemon=True
            )
            reader.start()
            writer = _open_when_read(fifo)
            ticks0 = cpu_ticks(init)
            t0 = time.perf_counter()
            os.write(writer, b"go\n")
            os.close(writer)
            if not seen.wait(TIMEOUT):
                raise TimeoutError("no END line on the container's output")
            elapsed = time.perf_counter() - t0
            cpu = (cpu_ticks(init) - ticks0) / CLK_TCK
        finally:
            if init is not None:
                os.kill(init, 9)  # PID 1 of the namespace: the kernel kills the rest
            proc.kill()
            proc.wait(10)
            if reader is not None:
                reader.join(10)
    mb = SIZE / 1e6
    return {"mbps": mb / elapsed, "cpu_ms_per_mb": 1000 * cpu / mb}


def _init_of(unshare_pid: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kids = children_map().get(unshare_pid)
        if kids:
            return kids[0]
        time.sleep(0.001)
    raise RuntimeError("overlayd did not start")


def _drain_until_end(stream, seen: threading.Event) -> None:
    tail = b""
    while True:
        data = stream.read1(1 << 16)
        if not data:
            return
        if b"END\n" in tail + data:
            seen.set()
        tail = data[-16:]


LOGGED = 20


def tree_pss(column: str, loggers: bool) -> float:
    """PSS (kB) of the supervision tree with LOGGED idle services, each with an s6-log or not."""
    with scratch() as base:
        sleeper = "#!/bin/sh\nexec sleep 1d\n"
        root = base / "etc" / "services.d" if column == "overlayd" else base / "scandir"
        for i in range(LOGGED):
            write_exec(root / f"svc{i:02d}" / "run", sleeper)
            if loggers:
                write_exec(root / f"svc{i:02d}" / "log" / "run", logger(base / f"logs{i:02d}"))
        if column == "overlayd":
            argv = [str(OVERLAYD)]
            env = {"OVERLAY_ROOT": str(base), "OVERLAY_RUN_DIR": str(base / "run")}
        else:
            argv, env = ["s6-svscan", str(root)], {}
        with Namespace(argv, env, base / "init.log") as ns:
            init = ns.init_pid
            want = LOGGED * (2 if loggers else 1)
            deadline = time.monotonic() + 60
            while True:
                running = [p for p in descendants(init) if comm(p) in ("sleep", "s6-log")]
                if len(running) >= want:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(running)} of {want} processes: {ns.log_tail()}")
                time.sleep(0.02)
            time.sleep(0.3)  # let start-up pages settle before measuring
            tree = [p for p in descendants(init) if comm(p) not in SERVICE_COMMS]
            return float(sum(memory_kb(p)["pss"] for p in tree))


def pss_per_logger(column: str) -> dict[str, float | list[float]]:
    """kB of PSS each logged service adds: (with loggers - without) / LOGGED."""
    return {"kb": (tree_pss(column, True) - tree_pss(column, False)) / LOGGED}


def run() -> list[Row]:
    """Interleaved runs of every column, then the prefix runs."""
    logdir = Samples()
    for _ in range(reps(5, 2)):
        for column in COLUMNS:
            logdir.measure(column, lambda c=column: into_logdir(c))
    prefixed, inherited = Samples(), Samples()
    for _ in range(reps(5, 2)):
        inherited.measure("overlayd", lambda: through_pid1(False))
        prefixed.measure("overlayd", lambda: through_pid1(True))
    memory = Samples()
    for _ in range(reps(3, 1)):
        for column in ("overlayd", "s6"):
            memory.measure(column, lambda c=column: pss_per_logger(c))
    mb = f"{SIZE // (1024 * 1024)} MiB of 100-byte lines"
    rows = [
        logdir.row(
            f"Log throughput into a rotating s6-log logdir ({mb})",
            "mbps",
            COLUMNS,
            "MB/s",
            "s6",
            "within 10% of s6; ≥ 2x supervisord",
        ),
    ]
    sup = logdir.median("mbps", "supervisord")
    mine = logdir.median("mbps", "overlayd")
    if sup and mine:
        rows[0].notes.append(f"overlayd / supervisord = {mine / sup:.2f}x")
    rows[0].notes.append("supervisord writes its own stdout_logfile (rotated at 1 MB), no s6-log")
    rows.append(
        memory.row(
            f"PSS per additional logged service (s6-log + supervision), at {LOGGED}",
            "kb",
            ["overlayd", "s6"],
            "kB",
            "s6",
        )
    )
    for label, samples in (("inherited (default)", inherited), ("OVERLAY_LOG_PREFIX=1", prefixed)):
        rows.append(
            samples.row(
                f"Service output to the container, {label}: throughput",
                "mbps",
                ["overlayd"],
                "MB/s",
            )
        )
        rows.append(
            samples.row(
                f"Service output to the container, {label}: PID 1 CPU",
                "cpu_ms_per_mb",
                ["overlayd"],
                "ms/MB",
            )
        )
    plain, tagged = inherited.median("mbps", "overlayd"), prefixed.median("mbps", "overlayd")
    if plain and tagged:
        rows[-1].notes.append(f"prefixed / inherited throughput = {tagged / plain:.2f}x")
    return rows


if __name__ == "__main__":
    main_for(run)
