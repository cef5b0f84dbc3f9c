"""`make demo`: boot overlayd as PID 1 over this example tree and show it working.

1. boots overlayd in a fresh PID namespace (`unshare --pid --fork --mount-proc`) with no CMD, so
   it supervises the services until told to stop, and streams its log;
2. waits for the services with `overlayctl wait`, then fetches the page the HTTP service serves;
3. prints `overlayctl status` and the process tree as the container sees it (overlayd is PID 1);
4. sends SIGTERM to PID 1, as `docker stop` does, and prints how the container ended.

Without root or unshare it runs overlayd as a child subreaper instead, and says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stream(pipe, prefix: str) -> None:
    for raw in pipe:
        print(prefix + raw.decode("utf-8", "replace").rstrip("\n"), flush=True)


def ctl(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "overlayctl", "--socket", sock, *args], capture_output=True, text=True
    )


def ns_pid(host_pid: int) -> str:
    """The pid a process has inside the container's namespace (last NSpid field)."""
    try:
        for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return line.split()[-1]
    except OSError:
        pass
    return "?"


def print_tree(pid: int, depth: int = 0) -> None:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return
    print(f"  {ns_pid(pid):>5}  {'  ' * depth}{cmdline[:90]}")
    for kid in kids:
        print_tree(int(kid), depth + 1)


def init_host_pid(proc: subprocess.Popen[bytes], as_pid1: bool) -> int:
    if not as_pid1:
        return proc.pid
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    raise SystemExit("overlayd did not start")


def fetch(url: str, deadline: float) -> str:
    """GET url; the server may need a moment after its process starts to listen."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return f"HTTP {reply.status}: " + reply.read().decode().splitlines()[0]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    as_pid1 = os.geteuid() == 0 and shutil.which("unshare") is not None
    run_dir = tempfile.mkdtemp(prefix="overlayd-demo-")
    os.chmod(run_dir, 0o755)
    sock = os.path.join(run_dir, "control.sock")
    port = free_port()
    env = {
        **os.environ,
        "OVERLAY_ROOT": str(HERE),
        "OVERLAY_RUN_DIR": run_dir,
        "DEMO_PORT": str(port),
        "S6_SERVICES_GRACETIME": "2000",
        "OVERLAY_S6_PATHS": "0",  # the demo's PID 1 must not make /run/s6 on the host
    }
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if as_pid1 else []
    banner("booting overlayd" + (" as PID 1 in a new PID namespace" if as_pid1 else ""))
    if not as_pid1:
        print("(not root, or no unshare: running overlayd as a child subreaper instead of PID 1)")
    print("$ " + " ".join([*prefix, "overlayd"]) + f"   # OVERLAY_ROOT={HERE}")
    proc = subprocess.Popen(
        [*prefix, PYTHON, "-m", "overlayd"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    reader = threading.Thread(target=stream, args=(proc.stdout, "  | "), daemon=True)
    reader.start()
    init = init_host_pid(proc, as_pid1)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the socket appears in stage 1, a few ms after exec
        waited = ctl(sock, "wait", "--up", "--timeout", "10", "http", "worker", "flaky")
        if waited.returncode != 0:
            print(waited.stderr.strip())
            return 1
        banner(f"GET http://127.0.0.1:{port}/")
        print("  " + fetch(f"http://127.0.0.1:{port}/", time.monotonic() + 10))
        time.sleep(2.0)  # let the flaky service crash once, so its finish script shows
        banner("overlayctl status")
        print(ctl(sock, "status").stdout.rstrip())
        banner("processes in the container (pid as seen inside it)")
        print_tree(init)
        banner("docker stop: SIGTERM to PID 1")
        began = time.monotonic()
        os.kill(init, signal.SIGTERM)
        code = proc.wait(30)
        reader.join(5)
        banner(f"container exited with code {code} after {time.monotonic() - began:.2f} s")
        return 0
    finally:
        if proc.poll() is None:
            os.kill(init, signal.SIGKILL)
            proc.wait(10)
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
