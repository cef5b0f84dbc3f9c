"""The one owner of waitpid(-1): reaps every child on SIGCHLD and routes each exit to its owner.

A pid is registered with `watch` right after fork returns in the parent, before control goes
back to the loop, so the reaper can never see a child before its owner is known. Pids nobody
watches (orphans re-parented to PID 1, `docker exec` leftovers) are reaped quietly and counted.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import log
from .loop import Future


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

    def __init__(self) -> None:
        self._owners: dict[int, Callable[[ExitStatus], None]] = {}
        self._empty_waiters: list[Future] = []
        self.unknown_reaped = 0

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

    def reap(self) -> None:
        """Reap until nothing more is waiting; call on every SIGCHLD."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._notify_empty()
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            owner = self._owners.pop(pid, None)
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
