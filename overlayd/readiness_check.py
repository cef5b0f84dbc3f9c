"""Readiness by polling `data/check`, as s6-notifyoncheck does, from overlayd's own timers.

A service directory with `notification-fd` and an executable `data/check` is made ready when the
check first exits 0. The polling follows s6-notifyoncheck (s6 2.11, checked against Debian's
`s6` package): the first check after `-s` ms (default 10), then one every `-w` ms (default
1000) counted from the end of the previous one, each killed after `-t` ms (default 0: never),
giving up after `-n` failed tries (default 7, 0 = never) or `-T` ms in all (default 0: never),
leaving the service up but not ready. `-c "checkprog"` runs that execline command line instead
of `./data/check`. Options come from a `notifyoncheck-options` file in the service directory,
holding the same words one would give s6-notifyoncheck (`-n 0 -w 500`).

A `run` script that calls `s6-notifyoncheck` itself keeps that job: overlayd does not poll a
second time (the tool writes the newline on the notification fd, which overlayd reads as
always). No process sleeps on overlayd's behalf: between tries there is one timer.
"""

from __future__ import annotations

import os

from . import log, spawn
from .check_process import CheckLoop, CheckResult

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable

    from .check_specs import PollOptions
    from .service import Runtime

MIN_WAIT_MS = 10  # -w 0 with -n 0 would fork checks back to back for ever


class ReadinessPoller(CheckLoop):
    """Polls one service's check from its spawn until it passes, times out or runs out of tries.

    `on_ready()` is called once, on the first pass. `stop()` (the service died, or became ready
    another way) ends the polling and kills a running check.
    """

    __slots__ = ("_on_ready", "_started", "gave_up", "last", "options", "tries")

    def __init__(
        self,
        host: Runtime,
        options: PollOptions,
        name: str,
        cwd: str,
        on_ready: Callable[[], None],
    ) -> None:
        super().__init__(host, name, cwd)
        self.options = options
        self._on_ready = on_ready
        self._started = 0.0
        self.tries = 0
        self.gave_up: str | None = None  # why polling stopped without readiness
        self.last: CheckResult | None = None

    def start(self) -> None:
        """The service was just spawned."""
        self._halt()
        self.tries = 0
        self.gave_up = None
        self.last = None
        self._started = self._host.now()
        self._after(self.options.initial_sleep_ms / 1000, self._try)

    def stop(self) -> None:
        self._halt()

    def _argv(self) -> list[str]:
        if self.options.checkprog is not None:
            return ["execlineb", "-Pc", self.options.checkprog]
        argv, _warning = spawn.script_argv(os.path.join(self.cwd, "data", "check"))
        return argv

    def _left(self) -> float | None:
        """Seconds left of the global timeout, None without one."""
        total = self.options.global_timeout_ms
        if not total:
            return None
        return total / 1000 - (self._host.now() - self._started)

    def _try(self) -> None:
        self._timer = None
        left = self._left()
        if left is not None and left <= 0:
            self._give_up(f"not ready after {self.options.global_timeout_ms} ms (-T)")
            return
        local = self.options.local_timeout_ms / 1000 or None
        if left is not None:
            local = left if local is None else min(local, left)
        self.tries += 1
        self._check(self._argv(), local)

    def _ended(self, result: CheckResult) -> None:
        self.last = result
        if result.passed:
            self._on_ready()
            return
        tries = self.options.tries
        if tries and self.tries >= tries:
            self._give_up(f"readiness check failed {self.tries} time(s): {result.what}")
            return
        left = self._left()
        wait = max(self.options.wait_ms, MIN_WAIT_MS) / 1000
        if left is not None and left <= 0:
            self._give_up(f"not ready after {self.options.global_timeout_ms} ms (-T)")
            return
        self._after(wait if left is None else min(wait, left), self._try)

    def _give_up(self, why: str) -> None:
        output = self.last.output if self.last is not None else ""
        self.gave_up = why + (f": {output}" if output else "")
        log.warn(f"service {self.name}: {self.gave_up}; it stays up, never ready")
