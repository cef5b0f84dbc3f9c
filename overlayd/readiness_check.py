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
from collections import namedtuple
from collections.abc import Callable

from . import log, spawn
from .check_process import CheckLoop, CheckResult

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from .service import Runtime

OPTIONS_FILE = "notifyoncheck-options"
TOOL = b"s6-notifyoncheck"
MIN_WAIT_MS = 10  # -w 0 with -n 0 would fork checks back to back for ever

PollOptions = namedtuple(
    "PollOptions",
    ("initial_sleep_ms", "global_timeout_ms", "local_timeout_ms", "wait_ms", "tries", "checkprog"),
)
PollOptions.__doc__ = "s6-notifyoncheck's -s -T -t -w -n -c, in ms and counts."
DEFAULTS = PollOptions(10, 0, 0, 1000, 7, None)
_NUMERIC = {"-s": 0, "-T": 1, "-t": 2, "-w": 3, "-n": 4}


def parse_options(words: list[str]) -> PollOptions:
    """s6-notifyoncheck's options (`-d` and `-3 fd` accepted and ignored); ValueError if bad."""
    values = list(DEFAULTS)
    i = 0
    while i < len(words):
        word = words[i]
        flag, attached = word[:2], word[2:]
        if flag == "-d" and not attached:
            i += 1
            continue
        if flag not in (*_NUMERIC, "-c", "-3") or not word.startswith("-"):
            raise ValueError(f"{OPTIONS_FILE}: unknown option {word!r}")
        if attached:
            value = attached
        elif i + 1 < len(words):
            i += 1
            value = words[i]
        else:
            raise ValueError(f"{OPTIONS_FILE}: {flag} needs a value")
        i += 1
        if flag == "-c":
            values[5] = value
        elif flag in _NUMERIC:
            if not (value.isascii() and value.isdigit()):
                raise ValueError(f"{OPTIONS_FILE}: {flag} {value!r} is not a whole number")
            values[_NUMERIC[flag]] = int(value)
    return PollOptions(*values)


def _run_calls_the_tool(run: str) -> bool:
    """Does the run script call s6-notifyoncheck itself? (its first 64 KB, comments skipped)"""
    try:
        with open(run, "rb") as handle:
            text = handle.read(65536)
    except OSError:
        return False
    return any(TOOL in line.split(b"#", 1)[0] for line in text.splitlines())


def read_poll_options(directory: str, has_notification_fd: bool) -> PollOptions | None:
    """How overlayd polls this service for readiness, or None when it does not.

    None without a notification-fd, without `data/check` (unless `-c` names a check), or when
    `run` calls s6-notifyoncheck itself. Raises ValueError for a bad options file.
    """
    if not has_notification_fd:
        return None
    options = DEFAULTS
    try:
        with open(os.path.join(directory, OPTIONS_FILE), encoding="utf-8") as handle:
            options = parse_options(handle.read(4096).split())
    except FileNotFoundError:
        pass
    has_check = os.path.isfile(os.path.join(directory, "data", "check"))
    if not has_check and options.checkprog is None:
        return None
    if _run_calls_the_tool(os.path.join(directory, "run")):
        return None
    return options


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
