"""One run of a check program (a readiness `data/check`, a liveness `health/check`).

The check runs in its own session (so its whole process group can be killed), cwd the service
directory, stdin /dev/null, stdout and stderr into one pipe that overlayd reads on its loop
without ever blocking. Only the last non-blank output line is kept, and only its first
`LAST_LINE_MAX` bytes: a check that prints a megabyte costs PID 1 one 64 KB read buffer at a
time and 2 KB kept, nothing more. At `timeout` the group gets SIGKILL and the run counts as
failed; when the check itself exits, whatever it left behind in its group is killed too, so
checks can never pile up. A check that never stops printing is read for `OUTPUT_MAX` bytes,
then its pipe is closed: its next write gets SIGPIPE, so PID 1 never spins on it.

Everything outside this module is reached through the services' `Runtime` (service.py): its
clock, timers, fds, `spawn_check`, `watch`, `signal_group` and `sweep_group`. Unit tests hand
in a fake with a manual clock and fake processes.
"""

from __future__ import annotations

import _signal
import os

from . import spawn

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable

    from .loop import Timer
    from .reaper import ExitStatus
    from .service import Runtime

LAST_LINE_MAX = 1024  # bytes of the last output line kept (DESIGN §13)
READ_CHUNK = 65536  # one read per readable event
OUTPUT_MAX = 4 << 20  # bytes read from one run; then the pipe is closed (the check gets SIGPIPE)
DRAIN_READS = 16  # after the check exits: at most 1 MB more is read, then the pipe is closed


class LastLine:
    """The last non-blank line of a byte stream, at most LAST_LINE_MAX bytes of its start.

    Holds at most two lines of LAST_LINE_MAX bytes whatever it is fed.
    """

    __slots__ = ("_current", "_last")

    def __init__(self) -> None:
        self._current = b""
        self._last = b""

    def feed(self, data: bytes) -> None:
        pieces = data.split(b"\n")
        for piece in pieces[:-1]:
            self._add(piece)
            self._end_line()
        self._add(pieces[-1])

    def _add(self, piece: bytes) -> None:
        room = LAST_LINE_MAX - len(self._current)
        if room > 0 and piece:
            self._current += piece[:room]

    def _end_line(self) -> None:
        if self._current.strip():
            self._last = self._current
        self._current = b""

    def close(self) -> None:
        """The stream ended: a last line without its newline counts."""
        self._end_line()

    @property
    def text(self) -> str:
        return self._last.decode("utf-8", "replace").strip()


def spawn_check(argv: list[str], env: dict[str, str], cwd: str) -> tuple[int, int]:
    """Start a check in a new session with its output on a pipe; (pid, the pipe's read end).

    Through spawn.spawn (fork), not os.posix_spawn: posix_spawn would save PID 1 about 0.5 ms
    a check, but glibc leaves its two internal signals (32, 33) ignored in the child, and a
    check must start with the signals `run` gets.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = spawn.spawn(
            argv, env, cwd=cwd, new_session=True,
            stdin=spawn.devnull(), stdout=write_end, stderr=write_end,
        )
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    os.set_blocking(read_end, False)
    return pid, read_end


def sweep_group(pgid: int) -> None:
    """SIGKILL what a finished check left in its group; never a lone pid (it may be reused)."""
    try:
        os.killpg(pgid, _signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class CheckResult:
    """How one run went: passed (exit 0 in time), a short description, the last output line."""

    __slots__ = ("output", "passed", "what")

    def __init__(self, passed: bool, what: str, output: str) -> None:
        self.passed = passed
        self.what = what
        self.output = output


class CheckRun:
    """Runs `argv` once; calls `done(CheckResult)` exactly once, unless cancelled first."""

    __slots__ = (
        "_done", "_fd", "_host", "_output", "_read_bytes", "_timeout", "_timer", "cancelled",
        "pid", "timed_out",
    )

    def __init__(
        self,
        host: Runtime,
        argv: list[str],
        cwd: str,
        timeout: float | None,
        done: Callable[[CheckResult], None],
    ) -> None:
        self._host = host
        self._done = done
        self._output = LastLine()
        self._timer: Timer | None = None
        self._fd: int | None = None
        self._timeout = timeout
        self._read_bytes = 0
        self.pid: int | None = None
        self.cancelled = False
        self.timed_out = False
        try:
            self.pid, self._fd = host.spawn_check(argv, cwd)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv or env
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            failure = CheckResult(False, f"cannot start {argv[0]}: {detail}", "")
            self._timer = host.call_later(0, lambda: self._finish(failure))
            return
        host.watch(self.pid, self._exited)
        host.add_reader(self._fd, self._readable)
        if timeout:
            self._timer = host.call_later(timeout, self._timed_out)

    def cancel(self) -> None:
        """Kill the check (its group) and forget it: `done` is not called."""
        if self.cancelled:
            return
        self.cancelled = True
        self._stop_timer()
        self._close()
        if self.pid is not None:
            self._host.signal_group(self.pid, _signal.SIGKILL)  # the reaper still collects it

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read(self) -> bool:
        """One read; False at EOF or when nothing is left to read now."""
        if self._fd is None:
            return False
        try:
            data = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self._close()
            return False
        self._output.feed(data)
        self._read_bytes += len(data)
        if self._read_bytes >= OUTPUT_MAX:
            self._close()
            return False
        return True

    def _readable(self) -> None:
        self._read()

    def _close(self) -> None:
        if self._fd is not None:
            self._host.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def _timed_out(self) -> None:
        self._timer = None
        self.timed_out = True
        if self.pid is not None:
            self._host.signal_group(self.pid, _signal.SIGKILL)  # its exit comes through the reaper

    def _exited(self, status: ExitStatus) -> None:
        if self.cancelled:
            return
        self._stop_timer()
        for _ in range(DRAIN_READS):
            if not self._read():
                break
        self._close()
        if self.pid is not None:
            self._host.sweep_group(self.pid)  # anything it left running in its group
        what = f"timed out after {self._timeout:g} s" if self.timed_out else status.describe()
        self._finish(CheckResult(status.code == 0 and not self.timed_out, what, ""))

    def _finish(self, result: CheckResult) -> None:
        self._timer = None
        if self.cancelled:
            return
        self.cancelled = True  # done exactly once
        self._output.close()
        result.output = self._output.text
        self._done(result)


class CheckLoop:
    """One check at a time for one service: either the timer to the next run, or the run."""

    __slots__ = ("_host", "_run", "_timer", "cwd", "name")

    def __init__(self, host: Runtime, name: str, cwd: str) -> None:
        self._host = host
        self.name = name
        self.cwd = cwd
        self._timer: Timer | None = None
        self._run: CheckRun | None = None

    @property
    def active(self) -> bool:
        return self._timer is not None or self._run is not None

    def _after(self, seconds: float, callback: Callable[[], None]) -> None:
        self._timer = self._host.call_later(seconds, callback)

    def _check(self, argv: list[str], timeout: float | None) -> None:
        """Start a run now (the timer has fired); `_ended` gets its result."""
        self._timer = None
        self._run = CheckRun(self._host, argv, self.cwd, timeout, self._done)

    def _done(self, result: CheckResult) -> None:
        self._run = None
        self._ended(result)

    def _ended(self, result: CheckResult) -> None:
        raise NotImplementedError

    def _halt(self) -> None:
        """No timer, no check process."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._run is not None:
            self._run.cancel()
            self._run = None
