"""One s6-rc oneshot: its `up` and `down` command lines, run as processes, and its state.

States (a subset of the service words): `down`, `starting` (up is running), `up` (up exited
0), `stopping` (down is running), `failed` (up failed, timed out, or could not be run). The
object answers the same questions as a Service where the control side asks them (name, state,
want, pid, pgid, record()), so `status`, `wait` and `check` show oneshots beside longruns.
"""

from __future__ import annotations

import _signal
import os
import time

from protocol.states import (
    DOWN,
    FAILED,
    K_LAST_EXIT,
    K_NAME,
    K_NORMALLY_UP,
    K_NOTIFICATION_FD,
    K_PGID,
    K_PID,
    K_READY,
    K_REASON,
    K_RESTARTS,
    K_SINCE,
    K_STARTED,
    K_STATE,
    K_TYPE,
    K_WANT,
    NO_HEALTH,
    STARTING,
    STOPPING,
    UP,
    WANT_DOWN,
    WANT_UP,
    exit_record,
)

from . import log, spawn
from .execline_lex import NeedsExecline, command_for
from .loop import TIMED_OUT

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .loop import Loop
    from .rc_source import RcDef
    from .reaper import ExitStatus, Reaper

class _Definition:
    """What `check` and the status record read of a definition."""

    __slots__ = ("directory", "normally_up", "notification_fd", "problem")

    def __init__(self, directory: str, normally_up: bool) -> None:
        self.directory = directory
        self.normally_up = normally_up
        self.notification_fd = None
        self.problem = None


class Oneshot:
    """Runs one oneshot's scripts; `on_change(self)` after every state change."""

    kind = "oneshot"
    is_logger = False
    logger = None
    broken = False
    checks = None  # no readiness or health checks (service_checks.py): longruns only

    def __init__(self, rc: RcDef, normally_up: bool, loop: Loop, reaper: Reaper,
                 child_env: Callable[[], dict[str, str]],
                 on_change: Callable[[Oneshot], None]) -> None:
        self.rc = rc
        self.name = rc.name
        self.definition = _Definition(rc.source, normally_up)
        self.loop = loop
        self.reaper = reaper
        self.child_env = child_env
        self.on_change = on_change
        self.state = DOWN
        self.want = WANT_DOWN
        self.pid: int | None = None
        self.since = time.time()
        self.last_exit: tuple[int | None, int | None, float] | None = None
        self.reason: str | None = None
        self.restarts = 0

    @property
    def pgid(self) -> int | None:
        return self.pid  # each script runs in its own process group

    @property
    def ready(self) -> bool:
        return self.state == UP

    def _set(self, state: str, reason: str | None = None) -> None:
        self.reason = reason
        if state != self.state:
            self.state = state
            self.since = time.time()
        self.on_change(self)

    async def up(self) -> str | None:
        """Run `up`; None on success, else why it failed (one line)."""
        self.want = WANT_UP
        self._set(STARTING)
        why = await self._run(self.rc.up, self.rc.timeout_up_ms)
        self._set(FAILED if why else UP, why)
        return why

    async def down(self, bound_ms: int = 0) -> str | None:
        """Run `down` (if any), bounded by timeout-down or else `bound_ms`; the oneshot is
        down afterwards either way. None on success, else why it failed."""
        self.want = WANT_DOWN
        if self.state not in (UP, FAILED):
            return None
        why = None
        if self.rc.down is not None and self.state == UP:
            self._set(STOPPING)
            why = await self._run(self.rc.down, self.rc.timeout_down_ms or bound_ms)
        self._set(DOWN, why)
        return why

    async def _run(self, script: tuple, timeout_ms: int) -> str | None:
        path, words, has_block = script
        env = self.child_env()
        env["RC_NAME"] = self.name
        try:
            argv = command_for(path, list(words), has_block, env.get("PATH", os.defpath))
        except NeedsExecline as exc:
            log.error(str(exc))
            return str(exc)
        if not argv:
            return None  # only comments: a no-op that succeeds
        if argv[0].startswith("/") and os.path.isfile(argv[0]):
            # A script named by path, shipped 0644: run through its #! line, as cont-init.d's.
            argv, warning = spawn.script_argv(argv[0], argv[1:])
            if warning:
                log.warn(warning)
        try:
            self.pid = spawn.spawn(argv, env, cwd=self.rc.source, new_group=True,
                                   stdin=spawn.devnull())
        except OSError as exc:
            return f"{path}: cannot start: {exc.strerror}"
        self.on_change(self)
        exited = self.reaper.exit_future(self.pid)
        status: ExitStatus | object = await self.loop.with_timeout(
            exited, timeout_ms / 1000 if timeout_ms else None
        )
        timed_out = status is TIMED_OUT
        if timed_out:
            try:
                os.killpg(self.pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            status = await exited
        self.pid = None
        self.last_exit = (status.code, status.signal, time.time())  # type: ignore[union-attr]
        if timed_out:
            return f"{os.path.basename(path)} timed out after {timeout_ms} ms"
        if status.code == 0:  # type: ignore[union-attr]
            return None
        return f"{os.path.basename(path)}: {status.describe()}"  # type: ignore[union-attr]

    def record(self) -> dict[str, Any]:
        """The status record: the same keys as a longrun's, and `type`."""
        last = None if self.last_exit is None else exit_record(*self.last_exit)
        return {
            K_NAME: self.name,
            K_TYPE: self.kind,
            K_STATE: self.state,
            K_WANT: self.want,
            K_PID: self.pid,
            K_PGID: self.pid,
            K_SINCE: self.since,
            K_STARTED: None,
            K_RESTARTS: 0,
            K_LAST_EXIT: last,
            K_READY: self.state == UP,
            K_NORMALLY_UP: self.definition.normally_up,
            K_NOTIFICATION_FD: None,
            K_REASON: self.reason,
            **NO_HEALTH,
        }

    def stop(self) -> None:
        """Want it down without running `down` (the shutdown's last sweep; RcRunner.down runs
        the script in its turn). A script still running is left to the kill that follows."""
        self.want = WANT_DOWN
        if self.pid is None and self.state == UP:
            self._set(DOWN, self.reason)

    def send_signal(self, signum: int) -> bool:
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self) -> None:
        self.send_signal(_signal.SIGKILL)
