"""Boot overlayd for real: as PID 1 in a fresh PID namespace, or as a subreaper.

`Tree` writes an OVERLAY_ROOT (services.d, cont-init.d, ...) in a temporary directory;
`Booted` starts overlayd over it and gives the test what a user sees: its output lines, its
exit code, its processes, its socket. Waiting is always for an event (a line of output, an
exit, a condition over /proc) with a deadline, never a bare sleep.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEADLINE = 20.0
# Inside the new mount namespace: a private tmpfs on /run (propagation is private, so the
# host never sees it), then exec overlayd. sh neither blocks nor ignores any signal, so
# overlayd still gets the mask and dispositions the test gave it.
_MOUNT_RUN = "mount -t tmpfs -o mode=0755 overlay-test-run /run"
PRIVATE_RUN = ["sh", "-c", _MOUNT_RUN + ' && exec "$@"', "sh"]
PRIVATE_RUN_READ_ONLY = ["sh", "-c", _MOUNT_RUN + ' && mount -o remount,ro /run && exec "$@"', "sh"]


def can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def wait_until(
    predicate: Callable[[], object], timeout: float = DEADLINE, what: str = ""
) -> object:
    """Re-check `predicate` until it is truthy; for conditions that have no event to wait on
    (states read from /proc). Raises AssertionError naming `what` at the deadline."""
    end = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def write_to_reader(fifo: Path, data: bytes, timeout: float = DEADLINE) -> None:
    """Write `data` into `fifo` once a process has it open for reading (a script blocked on
    `read x < fifo` is the event a test releases)."""

    def open_writer() -> int | None:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return None
            raise

    fd: int = wait_until(open_writer, timeout, f"a reader on {fifo}")  # type: ignore[assignment]
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class Tree:
    """An OVERLAY_ROOT and OVERLAY_RUN_DIR under one temporary directory."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.run_dir = base / "run"
        self.etc = self.root / "etc"
        for name in ("fix-attrs.d", "cont-init.d", "services.d", "cont-finish.d"):
            (self.etc / name).mkdir(parents=True, exist_ok=True)

    @property
    def socket(self) -> Path:
        return self.run_dir / "control.sock"

    def write(self, relative: str, text: str, mode: int = 0o755) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def script(self, directory: str, name: str, body: str, mode: int = 0o755) -> Path:
        """A shell script in etc/DIRECTORY/NAME."""
        return self.write(f"etc/{directory}/{name}", "#!/bin/sh\n" + body + "\n", mode)

    def service(
        self,
        name: str,
        run: str,
        *,
        finish: str | None = None,
        down: bool = False,
        files: dict[str, str] | None = None,
        run_mode: int = 0o755,
    ) -> Path:
        """A service directory: `run` (and `finish`) are shell bodies."""
        directory = self.etc / "services.d" / name
        directory.mkdir(parents=True, exist_ok=True)
        self.write(f"etc/services.d/{name}/run", "#!/bin/sh\n" + run + "\n", run_mode)
        if finish is not None:
            self.write(f"etc/services.d/{name}/finish", "#!/bin/sh\n" + finish + "\n")
        if down:
            (directory / "down").touch()
        for filename, content in (files or {}).items():
            target = directory / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            if filename.endswith("run") or filename.endswith("finish"):
                target.chmod(0o755)
        return directory


class Booted:
    """A running overlayd. Use as a context manager: leaving it kills what is left."""

    def __init__(
        self,
        tree: Tree,
        cmd: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        pid1: bool = True,
        preexec: Callable[[], None] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        s6_paths: bool | str = False,
    ) -> None:
        self.tree = tree
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        environment = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "OVERLAY_ROOT": str(tree.root),
            "OVERLAY_RUN_DIR": str(tree.run_dir),
            "S6_SERVICES_GRACETIME": "3000",
            # A test's PID 1 must never touch the host's /run: s6 paths only on a private tmpfs.
            "OVERLAY_S6_PATHS": "1" if s6_paths else "0",
        }
        environment.update(env or {})
        self.socket = Path(environment.get("OVERLAY_SOCKET") or tree.socket)
        prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if pid1 else []
        if s6_paths:
            assert pid1, "the s6 paths need PID 1's private mount namespace for their tmpfs"
            prefix += PRIVATE_RUN_READ_ONLY if s6_paths == "read-only" else PRIVATE_RUN
        self._start([*prefix, PYTHON, "-m", "overlayd", *cmd], environment, pid1, stdin,
                    str(tree.base), preexec)

    def _start(self, argv: list[str], environment: dict[str, str], pid1: bool,
               stdin: int | None, cwd: str, preexec: Callable[[], None] | None = None) -> None:
        """Start `argv` (overlayd, or what execs it) with its output read line by line."""
        self.argv = argv
        self.pid1 = pid1
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            env=environment,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            preexec_fn=preexec,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # --- output ----------------------------------------------------------------------------
    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = DEADLINE, count: int = 1) -> re.Match[str]:
        """Wait until `count` output lines match the regex `pattern`; return the last match."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [m for m in map(regex.search, self.lines) if m]
                if len(matches) >= count:
                    return matches[count - 1]
                left = end - time.monotonic()
                if left <= 0 or self._closed:
                    raise AssertionError(
                        f"no line matching {pattern!r} (x{count}); output so far:\n"
                        + "\n".join(self.lines)
                    )
                self._cond.wait(left)

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.lines if regex.search(line))

    # --- processes -------------------------------------------------------------------------
    @property
    def init_pid(self) -> int:
        """Host pid of overlayd (PID 1 inside the namespace)."""
        if not self.pid1:
            return self.proc.pid
        found = wait_until(lambda: _children(self.proc.pid), 5, "overlayd to be forked")
        return found[0]  # type: ignore[index]

    def descendants(self) -> list[int]:
        """Host pids of every process below overlayd."""
        return _descendants(self.init_pid)

    def states(self) -> dict[int, str]:
        """pid → process state letter (R, S, Z, ...) for every process below overlayd."""
        result = {}
        for pid in self.descendants():
            state = _stat_field(pid, 0)
            if state:
                result[pid] = state
        return result

    def zombies(self) -> list[int]:
        return [pid for pid, state in self.states().items() if state == "Z"]

    def kill(self, signum: int = signal.SIGTERM) -> None:
        """Signal overlayd, as `docker stop` / `docker kill -s` does."""
        os.kill(self.init_pid, signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        """The container's exit code."""
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    # --- control ---------------------------------------------------------------------------
    def client(self, timeout: float = 10.0):
        from overlayctl.client import Client

        wait_until(self.socket.exists, 10, "the control socket")
        return Client(str(self.socket), timeout=timeout)

    def ctl(self, *args: str, timeout: float = DEADLINE, user: str | None = None):
        """Run the overlayctl CLI against this overlayd; returns CompletedProcess."""
        prefix: list[str] = []
        if user is not None:
            prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        return subprocess.run(
            [*prefix, PYTHON, "-m", "overlayctl", "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OVERLAY_SOCKET": str(self.socket)},
        )

    def in_ns(
        self, *argv: str, timeout: float = DEADLINE, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in overlayd's mount namespace (where its /run tmpfs is), as a user would
        with `docker exec`; returns the CompletedProcess (text)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-m", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OVERLAY_SOCKET": str(self.socket), **(env or {})},
        )

    # --- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                targets = _children(self.proc.pid) if self.pid1 else [self.proc.pid]
                for pid in targets:
                    os.kill(pid, signal.SIGKILL)
                if not self.pid1:
                    for pid in _descendants(self.proc.pid):
                        os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._reader.join(5)

    def __enter__(self) -> Booted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _descendants(root: int) -> list[int]:
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                found.append(kid)
                pending.append(kid)
    return found


def _stat_field(pid: int, index: int) -> str | None:
    """Field `index` after the command name in /proc/PID/stat (0 = state)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()[index].decode()


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a mapping."""
    result = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        result[key] = value.strip()
    return result
