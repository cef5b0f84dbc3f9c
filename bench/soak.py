"""`make soak` / `python -m bench.soak [SECONDS]`: PID 1's memory under every client abuse.

Boots overlayd as PID 1 (as the tests do) over a tree with a few services, then, one after
the other: ordinary `status` polling by 20 clients for SECONDS (RSS printed every 10 s),
10^5 fuzz frames, 10^4 abandoned waits, stalled subscribers with a stream of state changes, a
burst of connections holding pipelined waits (timing a health check meanwhile) and a
read-only client holding every slot it may. For each it prints VmRSS before and after and
the peak (VmHWM) from /proc/PID/status of PID 1. SOAK_PYTHONPATH=DIR runs another checkout's
overlayd (to measure "before"). Measurement only: nothing here asserts.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from overlayctl.client import Client, ClientError, RemoteError
from tests import abusers
from tests.harness import Booted, Tree, wait_until

SERVICES = [f"s{i}" for i in range(10)]
Row = tuple[str, str, str, str, str]


def boot(base: Path, extra: Callable[[Tree], None] | None = None) -> Booted:
    base.chmod(0o755)
    tree = Tree(base)
    for name in SERVICES:
        tree.service(name, "exec sleep 100000")
    tree.service("never", "exec sleep 100000", down=True)
    if extra is not None:
        extra(tree)
    env = {"OVERLAY_RPC_IDLE_TIMEOUT": "5"}
    if os.environ.get("SOAK_PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["SOAK_PYTHONPATH"]
    booted = Booted(tree, env=env)
    wait_until(booted.socket.exists, 20, "the control socket")

    def services_up() -> bool:
        try:
            with Client(str(booted.socket), timeout=20) as client:
                return client.wait("up", SERVICES, 20)
        except RemoteError as exc:
            if exc.code != "no_such_service":
                raise
            return False  # not defined yet: cont-init.d is still running

    wait_until(services_up, 120, "the services up")
    return booted


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def measure(
    name: str,
    work: Callable[[str, int], object],
    detail: Callable[[object], str],
    extra: Callable[[Tree], None] | None = None,
) -> Row:
    """Boot a fresh overlayd, run `work(socket_path, pid)` on it, and report PID 1's memory."""
    with tempfile.TemporaryDirectory(prefix="overlayd-soak-") as tmp:
        booted = boot(Path(tmp), extra)
        try:
            pid = booted.init_pid
            before = abusers.memory_kb(pid)["VmRSS"]
            result, took = abusers.timed(lambda: work(str(booted.socket), pid))
            time.sleep(1)  # let the last closes land
            after = abusers.memory_kb(pid)
            alive = booted.proc.poll() is None
        finally:
            booted.close()
    row = (
        name,
        mb(before),
        mb(after["VmRSS"]),
        mb(after["VmHWM"]),
        f"{detail(result)}; {took:.0f} s{'' if alive else '; PID 1 DIED'}",
    )
    print(f"[soak] {' | '.join(row)}", file=sys.stderr, flush=True)
    return row


def polling(seconds: float) -> Callable[[str, int], object]:
    def work(path: str, pid: int) -> int:
        done: list[int] = []
        thread = threading.Thread(
            target=lambda: done.append(abusers.poll_status(path, 20, seconds)), daemon=True
        )
        thread.start()
        start = time.monotonic()
        while thread.is_alive():
            thread.join(10)
            rss = abusers.memory_kb(pid)["VmRSS"]
            print(
                f"[soak] polling t={time.monotonic() - start:4.0f} s  RSS {mb(rss)} MB",
                file=sys.stderr,
                flush=True,
            )
        return done[0]

    return work


def subscribers(path: str, pid: int) -> int:
    held = abusers.stalled_subscribers(path, 120)
    abusers.churn(path, SERVICES, 60)
    abusers.close_all(held)
    return len(held)


def burst(path: str, pid: int) -> float:
    """3000 connections x 64 pipelined waits (10 clients at once, each connection abandoned);
    the slowest health check meanwhile (retrying while root's slots are full)."""
    worst = [0.0]
    stop = threading.Event()

    def health() -> None:
        while not stop.is_set():
            start = time.monotonic()
            while True:
                try:
                    with Client(path, timeout=120) as client:
                        client.check()
                    break
                except ClientError:
                    time.sleep(0.01)  # refused while full: a real health check retries
            worst[0] = max(worst[0], time.monotonic() - start)
            time.sleep(0.1)

    checker = threading.Thread(target=health, daemon=True)
    checker.start()
    senders = [
        threading.Thread(target=abusers.abandoned_waits, args=(path, 300, 64), daemon=True)
        for _ in range(10)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
    stop.set()
    checker.join(130)
    return worst[0]


def worst_status_latency(path: str, seconds: float) -> float:
    """The slowest of back-to-back `status` calls over `seconds`, in seconds."""
    worst = 0.0
    end = time.monotonic() + seconds
    with Client(path, timeout=60) as client:
        while time.monotonic() < end:
            _, took = abusers.timed(client.status)
            worst = max(worst, took)
    return worst


def big_store_crash_loop(tree: Tree) -> None:
    """20,000 variables in container_environment and a service that crashes every second."""
    store = tree.run_dir / "container_environment"
    tree.script(
        "cont-init.d",
        "10-many",
        f"i=0; while [ $i -lt 20000 ]; do echo v > {store}/V$i; i=$((i+1)); done",
    )
    tree.service("crash", "exit 1")


def crowd(tree: Tree) -> None:
    """A service with 5,000 processes."""
    tree.service("crowd", "for i in $(seq 5000); do sleep 100000 & done; exec sleep 100000")


def details_while_polling(path: str, pid: int) -> float:
    stop = threading.Event()

    def details() -> None:
        with Client(path, timeout=120) as client:
            while not stop.is_set():
                client.status(details=True)

    wait_until(lambda: _nprocs(path) >= 5000, 120, "5,000 processes")
    thread = threading.Thread(target=details, daemon=True)
    thread.start()
    worst = worst_status_latency(path, 20)
    stop.set()
    thread.join(120)
    return worst


def _nprocs(path: str) -> int:
    with Client(path, timeout=120) as client:
        [record] = client.status(["crowd"], details=True)
    return record["nprocs"] or 0


def run(seconds: float, only: list[str]) -> list[Row]:
    """Every abuse, or those whose name contains one of `only`."""
    abuses = [
        (f"status polling, 20 clients, {seconds:.0f} s", polling(seconds), lambda n: f"{n} calls"),
        (
            "10^5 fuzz frames",
            lambda path, _pid: abusers.fuzz_frames(path, 100_000),
            lambda n: f"{n} frames",
        ),
        (
            "abandoned waits",
            lambda path, _pid: abusers.abandoned_waits(path, 6000),
            lambda n: f"{n} waits",
        ),
        (
            "120 stalled subscribers, 60 restarts of 10 services",
            subscribers,
            lambda n: f"{n} subscribers",
        ),
        (
            "burst: 3000 connections x 64 waits",
            burst,
            lambda t: f"slowest health check {t * 1000:.0f} ms",
        ),
        (
            "20,000-variable environment store, a crash loop",
            lambda path, _pid: worst_status_latency(path, 20),
            lambda t: f"slowest status {t * 1000:.0f} ms",
            big_store_crash_loop,
        ),
        (
            "status --details over 5,000 processes, in a loop",
            details_while_polling,
            lambda t: f"slowest plain status meanwhile {t * 1000:.0f} ms",
            crowd,
        ),
    ]
    return [measure(*abuse) for abuse in abuses if not only or any(w in abuse[0] for w in only)]


def main(argv: list[str]) -> int:
    """`[SECONDS [NAME-PART...]]`: the polling soak's length, and which abuses to run."""
    seconds = float(argv[0]) if argv else 600.0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the booted overlayd
    rows = run(seconds, argv[1:])
    print("| abuse | RSS before (MB) | RSS after (MB) | peak VmHWM (MB) | detail |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
