"""Figure 7, control: the status command's wall time, and status RPC throughput and latency.

Recipe: boot overlayd, supervisord and s6-svscan side by side, 50 idle services each.
In every round run, and time from fork to exit, `overlayctl status`, `supervisorctl status`,
a /bin/sh loop of `s6-svstat` over the 50 service directories, and `python -I -c pass` (the
floor any Python CLI pays). Then hammer the status RPC for a few seconds from 1 and from 32
threads, one connection each: overlayctl.client.Client.status() against supervisord's
XML-RPC supervisor.getAllProcessInfo over its unix socket (the Client with msgpack's C
decoder, as a long-lived program would use it: overlayctl's pure-Python one is faster to import
but ~10x slower per 50-service reply, and would measure the client). The client side is one Python
process (the GIL holds it to about one core, leaving the other to the server).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Callable

from bench.common import (
    BIN,
    OVERLAYCTL,
    QUICK,
    Namespace,
    Row,
    Samples,
    boot_side_by_side,
    main_for,
    now_ms,
    percentile,
    reps,
)

SUPERVISORS = ["overlayd", "s6", "supervisord"]
RPC = ["overlayd", "supervisord"]  # s6 has no RPC: its tools read the supervise/ files
SERVICES = 50
CONCURRENCY = [1, 32]
SECONDS = 1.0 if QUICK else 3.0
Call = tuple[Callable[[], object], Callable[[], object]]  # (call, close)


def status_command(column: str, ns: Namespace) -> list[str]:
    """The command a user types to see every service's state."""
    if column == "overlayd":
        return [str(OVERLAYCTL), "--socket", str(ns.home / "run" / "control.sock"), "status"]
    if column == "supervisord":
        return ["supervisorctl", "-c", str(ns.home / "supervisord.conf"), "status"]
    loop = 'for d in "$1"/*; do s6-svstat "$d"; done'
    return ["/bin/sh", "-c", loop, "sh", str(ns.home / "scandir")]


def wall_ms(argv: list[str]) -> float:
    """Run a command to its end; ms from just before the fork to its exit."""
    t0 = now_ms()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t1 = now_ms()
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{os.path.basename(argv[0])} exited {done.returncode}: {tail}")
    return t1 - t0


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket, which is where supervisord's XML-RPC listens."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


class _UnixTransport(xmlrpc.client.Transport):
    """An XML-RPC transport that keeps one unix-socket HTTP connection alive."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.unix_path = path

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        if self._connection[1] is None:
            self._connection = (host, _UnixHTTPConnection(self.unix_path))
        return self._connection[1]


def rpc_client(column: str, ns: Namespace) -> Call:
    """A fresh connection's status call and its close."""
    if column == "overlayd":
        from overlayctl.client import Client  # imported here: overlayd may not exist yet
        from protocol.framing import Decoder

        # msgpack's C decoder, as a long-lived program would use: the figure is the server's
        # (overlayctl itself decodes in pure Python, which is faster to import, not to run).
        client = Client(str(ns.home / "run" / "control.sock"), decoder=Decoder)
        return client.status, client.close
    transport = _UnixTransport(str(ns.home / "supervisor.sock"))
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=transport)
    return proxy.supervisor.getAllProcessInfo, transport.close


def hammer(column: str, ns: Namespace, clients: int) -> dict[str, float | list[float]]:
    """`clients` threads calling status for SECONDS: calls/s and every latency in ms."""
    calls = [rpc_client(column, ns) for _ in range(clients)]
    for call, _ in calls:
        call()  # connect (and handshake) before the clock starts
    latencies: list[list[float]] = [[] for _ in calls]
    errors: list[BaseException] = []
    go, stop = threading.Barrier(clients + 1), threading.Event()

    def worker(call: Callable[[], object], out: list[float]) -> None:
        go.wait()
        try:
            while not stop.is_set():
                t0 = now_ms()
                call()
                out.append(now_ms() - t0)
        except Exception as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(c, out), daemon=True)
        for (c, _), out in zip(calls, latencies, strict=True)
    ]
    for t in threads:
        t.start()
    go.wait()
    t0 = now_ms()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(30)
    elapsed = (now_ms() - t0) / 1000
    for _, close in calls:
        with contextlib.suppress(Exception):
            close()
    if errors:
        raise errors[0]
    every = [ms for out in latencies for ms in out]
    return {
        f"rate{clients}": len(every) / elapsed,
        f"p50_{clients}": percentile(every, 50) or 0.0,
        f"p99_{clients}": percentile(every, 99) or 0.0,
    }


def run() -> list[Row]:
    """Boot the three trees side by side, then interleave the commands in each round."""
    s = Samples()
    with contextlib.ExitStack() as stack:
        trees = boot_side_by_side(stack, s, SUPERVISORS, SERVICES)
        floor = [str(BIN / "python"), "-I", "-c", "pass"]
        for _ in range(reps(21, 5)):
            for column, ns in trees.items():
                s.measure(column, lambda c=column, n=ns: {"cli": wall_ms(status_command(c, n))})
            s.add("floor", "overlayd", wall_ms(floor))
        for clients in CONCURRENCY:
            for column in RPC:
                if column in trees:
                    s.measure(column, lambda c=column, k=clients: hammer(c, trees[c], k))
    rows = [
        s.row(
            f"`status` command wall time, {SERVICES} services",
            "cli",
            SUPERVISORS,
            "ms",
            "supervisord",
            "supervisorctl 273 ms; overlayctl ≤ 45 ms and ≥ 6x faster (ratio ≤ 0.17)",
        ),
        s.row("Python start floor, `python -I -c pass`", "floor", ["overlayd"], "ms"),
    ]
    rows[0].notes.insert(
        0,
        "overlayd: `overlayctl status`; supervisord: `supervisorctl status`; "
        f"s6: `s6-svstat` over each of the {SERVICES} service directories from a /bin/sh loop",
    )
    for k in CONCURRENCY:
        who = f"{k} client{'s' if k > 1 else ''}"
        rows += [
            s.row(f"status RPC throughput, {who}", f"rate{k}", RPC, "/s", "supervisord"),
            s.row(f"status RPC latency p50, {who}", f"p50_{k}", RPC, "ms", "supervisord"),
            s.row(f"status RPC latency p99, {who}", f"p99_{k}", RPC, "ms", "supervisord"),
        ]
    rows[2].notes.insert(
        0,
        "RPC: overlayctl.client.Client(path).status() vs supervisord XML-RPC "
        "supervisor.getAllProcessInfo, one connection per client thread",
    )
    return rows


if __name__ == "__main__":
    main_for(run)
