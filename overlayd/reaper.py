"""The one owner of waitpid(-1): reaps every child on SIGCHLD and routes each exit to its owner.

A pid is registered with `watch` right after fork returns in the parent, before control goes
back to the loop, so the reaper can never see a child before its owner is known. Pids nobody
watches (orphans re-parented to PID 1, `docker exec` leftovers) are reaped quietly and counted.

Orphan storms: each SIGCHLD is a wake of the loop (an interrupted epoll_wait, a Python-level
handler, a pipe read), which costs more than the reaping itself. When a pass that reaped an
orphan comes closer than FLOOD_GAP to the previous SIGCHLD, SIGCHLD is held blocked for
BATCH_WINDOW, so the exits of that window are reaped in one pass when it is released (the
pending signal wakes the loop at once); in a storm an exit is seen at most BATCH_WINDOW late.
Exits of overlayd's own children never start a hold: somebody waits on each of them (a
oneshot's dependents, a restart), and children started together end together — a layer of
parallel oneshots would otherwise pay a whole window each time. An isolated exit is reaped
on its own signal, with no delay.
"""

from __future__ import annotations

import _signal
import os

from . import log
from .loop import Future

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable

    from .loop import Loop

WNOHANG = os.WNOHANG
#: Two SIGCHLD wakes closer than this (seconds) are an exit storm.
FLOOD_GAP = 0.002
#: How long (seconds) SIGCHLD is held blocked in a storm, to reap that window's exits at once.
BATCH_WINDOW = 0.005
_SIGCHLD = (_signal.SIGCHLD,)


class ExitStatus:
    """How a process ended: an exit code, or the signal that killed it."""

    __slots__ = ("code", "signal")

    def __init__(self, code: int | None, signal: int | None) -> None:
        self.code = code
        self.signal = signal

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status))
        return cls(os.WEXITSTATUS(status), None)

    def shell_code(self) -> int:
        """The code a shell would report: the exit code, or 128+N for signal N."""
        return self.code if self.signal is None else 128 + self.signal

    def describe(self) -> str:
        if self.signal is not None:
            from protocol.signals import signal_name

            return f"killed by {signal_name(self.signal)}"
        return f"exit code {self.code}"


class Reaper:
    """Reaps children; owners get an ExitStatus, everyone else is counted."""

    def __init__(self, loop: Loop | None = None) -> None:
        self._owners: dict[int, Callable[[ExitStatus], None]] = {}
        self._empty_waiters: list[Future] = []
        self.unknown_reaped = 0
        self._loop = loop
        self._last_signal = -1.0
        self._held = False

    def on_sigchld(self, _signum: int = 0) -> None:
        """The SIGCHLD handler: reap, and in an orphan storm hold SIGCHLD for one batch
        window."""
        orphans = self.unknown_reaped
        self.reap()
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        if (now - self._last_signal < FLOOD_GAP and not self._held
                and self.unknown_reaped != orphans):
            self._held = True
            _signal.pthread_sigmask(_signal.SIG_BLOCK, _SIGCHLD)  # no enum conversion
            loop.call_later(BATCH_WINDOW, self._release)
        self._last_signal = now

    def _release(self) -> None:
        """End of a batch window: a SIGCHLD that came meanwhile is delivered now."""
        self._held = False
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, _SIGCHLD)

    def watch(self, pid: int, on_exit: Callable[[ExitStatus], None]) -> None:
        self._owners[pid] = on_exit

    def exit_future(self, pid: int) -> Future:
        """A Future resolved with the ExitStatus of `pid`."""
        future = Future()
        self.watch(pid, future.set_result)
        return future

    def watched(self) -> int:
        return len(self._owners)

    def no_children(self) -> Future:
        """Resolved as soon as waitpid says there is no child left at all."""
        future = Future()
        self._empty_waiters.append(future)
        self.reap()
        return future

    def reap(self, _signum: int = 0) -> None:
        """Reap until nothing more is waiting; the SIGCHLD handler (once per batch of them).

        The loop is kept lean: in an orphan storm it runs once per SIGCHLD."""
        owners = self._owners
        waitpid = os.waitpid
        while True:
            try:
                pid, status = waitpid(-1, WNOHANG)
            except ChildProcessError:
                self._notify_empty()
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            owner = owners.pop(pid, None)
            if owner is None:
                self.unknown_reaped += 1  # quietly: `hello` reports the count
                continue
            try:
                owner(ExitStatus.from_wait_status(status))
            except Exception:
                log.exception(f"handling the exit of pid {pid} failed")

    def _notify_empty(self) -> None:
        waiters, self._empty_waiters = self._empty_waiters, []
        for future in waiters:
            future.set_result(None)
