"""Clients that abuse overlayd's control socket, and PID 1's memory as /proc shows it.

Shared by the abuse tests (short runs, in `make test`) and `bench/soak.py` (long runs that
report RSS over time). Each abuser is what a careless or hostile client really does; none of
them reads overlayd's internals: the figures come from /proc/PID/status of PID 1.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgpack

from overlayctl.client import Client, ClientError
from protocol import pack_request


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of `pid`, in kB, from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def connect(path: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def poll_status(path: str, clients: int, seconds: float) -> int:
    """`clients` threads each doing connect → status → close as fast as they can; calls made."""
    end = time.monotonic() + seconds
    counts = [0] * clients

    def run(index: int) -> None:
        while time.monotonic() < end:
            try:
                with Client(path, timeout=10) as client:
                    client.status()
                counts[index] += 1
            except ClientError:
                time.sleep(0.01)  # refused while full: a real poller retries later

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return sum(counts)


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.randrange(-(1 << 40), 1 << 40)
    if kind == 1:
        return rng.randbytes(rng.randrange(40)).decode("latin-1")
    if kind == 2:
        return rng.randbytes(rng.randrange(40))
    if kind == 3:
        return rng.random()
    if kind == 4:
        return rng.choice([None, True, False])
    if kind in (5, 6):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {str(i): _random_value(rng, depth + 1) for i in range(rng.randrange(4))}


def fuzz_frames(path: str, frames: int, seed: int = 8) -> int:
    """Send `frames` random msgpack-RPC-shaped messages (some broken), 100 per connection.

    Most are well-formed msgpack with random methods and params (each answered with an error);
    one in ten connections ends with raw random bytes. Returns the frames sent.
    """
    rng = random.Random(seed)
    methods = ["hello", "status", "wait", "nope", "", "check", "subscribe"]
    sent = 0
    while sent < frames:
        batch = []
        for _ in range(min(100, frames - sent)):
            message = [0, rng.randrange(1 << 32), rng.choice(methods), _random_value(rng)]
            if rng.random() < 0.2:
                message = _random_value(rng)
            batch.append(msgpack.packb(message, use_bin_type=True))
        if rng.random() < 0.1:
            batch.append(rng.randbytes(rng.randrange(1, 200)))
        sent += len(batch)
        try:
            with connect(path) as sock:
                sock.sendall(b"".join(batch))
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(1 << 16):
                    pass
        except OSError:
            pass  # closed on us mid-way: expected for broken streams
    return sent


def abandoned_waits(path: str, connections: int, per_connection: int = 64) -> int:
    """Connections that pipeline `per_connection` waits on `never` and hang up unread."""
    sent = 0
    for _ in range(connections):
        try:
            with connect(path) as sock:
                sock.sendall(
                    b"".join(
                        pack_request(i, "wait", ["up", ["never"], 3600])
                        for i in range(per_connection)
                    )
                )
                sent += per_connection
        except OSError:
            pass
    return sent


def hold_connections(path: str, count: int, request: bytes | None = None) -> list[socket.socket]:
    """`count` open connections (each sent `request`, if given), never read; close them later."""
    held = []
    for _ in range(count):
        try:
            sock = connect(path)
            if request:
                sock.sendall(request)
            held.append(sock)
        except OSError:
            break
    return held


def stalled_subscribers(path: str, count: int) -> list[socket.socket]:
    """`count` connections that subscribe and then never read a byte."""
    return hold_connections(path, count, pack_request(1, "subscribe", []))


def churn(path: str, names: list[str], rounds: int) -> None:
    """Restart `names` `rounds` times: a stream of state notifications for every subscriber."""
    with Client(path, timeout=30) as client:
        for _ in range(rounds):
            client.restart(names)
            client.wait("up", names, 30)


def timed(work: Callable[[], object]) -> tuple[object, float]:
    """(work's result, seconds it took)."""
    start = time.monotonic()
    result = work()
    return result, time.monotonic() - start


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        try:
            sock.close()
        except OSError:
            pass


def unprivileged_script(path: str, body: str) -> list[str]:
    """argv running `body` as uid/gid 65534 with `sock_path` = `path` (for read-only abuse)."""
    program = f"import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
    program += f"sock_path = {path!r}\n" + body
    return [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        os.environ.get("PYTHON", "python3"),
        "-c",
        program,
    ]
