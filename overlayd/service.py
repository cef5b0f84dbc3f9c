"""One supervised service: its state machine.

States (the same words in the table, the JSON and the RPC):

    down       not running, and not wanted up (or not yet started)
    starting   `run` is running and has a notification-fd, readiness not yet signalled
    up         `run` is running (no notification-fd: it counts as ready at once, as in s6)
    ready      `run` is running and wrote a newline on its notification-fd
    stopping   the down signal was sent; waiting for `run` to exit
    finishing  `run` exited; `finish` is running
    backoff    `run` died less than 1 s after it started; waiting out the rest of that second
    failed     the directory is broken, or `finish` exited 125 (permanent failure)

Transitions happen in response to exactly three kinds of event: a request (start, stop, restart,
once, signal), a process exit routed here by the reaper, and a timer (throttle, timeout-kill,
timeout-finish). Readiness arrives on the notification pipe.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from . import log, spawn
from .check_process import CheckHost
from .loop import Loop, Timer
from .reaper import ExitStatus, Reaper
from .scan import ServiceDef
from .service_checks import ServiceChecks

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from typing import Any

DOWN = "down"
STARTING = "starting"
UP = "up"
READY = "ready"
STOPPING = "stopping"
FINISHING = "finishing"
BACKOFF = "backoff"
FAILED = "failed"
STATES = (DOWN, STARTING, UP, READY, STOPPING, FINISHING, BACKOFF, FAILED)
RUNNING = frozenset((STARTING, UP, READY, STOPPING))
SETTLED = frozenset((DOWN, FAILED))

THROTTLE_SECONDS = 1.0
NO_HEALTH = {"health": None, "health_checked": None, "health_output": None}
PERMANENT_FAILURE = 125


class Runtime:
    """What a service needs from the rest of overlayd."""

    def __init__(
        self,
        loop: Loop,
        reaper: Reaper,
        child_env: Callable[[], dict[str, str]],
        on_change: Callable[[Service], None],
    ) -> None:
        self.loop = loop
        self.reaper = reaper
        self.child_env = child_env
        self.on_change = on_change
        self.shutting_down = False
        self.on_health_shutdown: Callable[[Service, str], None] | None = None
        self._check_host: CheckHost | None = None

    @property
    def check_host(self) -> CheckHost:
        if self._check_host is None:
            self._check_host = CheckHost(self.loop, self.reaper, self.child_env)
        return self._check_host


def _killpg(pgid: int | None, signum: int) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


class Service:
    """The supervisor of one service directory."""

    def __init__(
        self,
        definition: ServiceDef,
        runtime: Runtime,
        stdin_fd: int | None = None,
        stdout_fd: int | None = None,
    ) -> None:
        self.definition = definition
        self.name = definition.name
        self.rt = runtime
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.state = FAILED if definition.problem else DOWN
        self.reason: str | None = definition.problem
        self.want = "down"
        self.pid: int | None = None
        self.pgid: int | None = None
        self.since = time.time()
        self.restarts = 0
        self.last_exit: tuple[int | None, int | None, float] | None = None
        self.ready = False
        self.logger: Service | None = None
        self.is_logger = False
        self._launches = 0
        self._started_at = 0.0
        self.started: float | None = None  # epoch seconds the running `run` was started
        self._timer: Timer | None = None
        self._notify_fd: int | None = None
        self._finish_pid: int | None = None
        self._give_up: str | None = None
        self.checks: ServiceChecks | None = None
        if definition.checks is not None:
            self.checks = ServiceChecks(
                runtime.check_host, definition.checks, self.name, definition.directory,
                self._on_check_event, lambda: runtime.on_change(self),
            )

    # --- requests --------------------------------------------------------------------------
    @property
    def broken(self) -> bool:
        return self.definition.problem is not None

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    def start(self) -> None:
        """Want it up; start it now unless it is already on its way."""
        if self.broken:
            return
        self.want = "up"
        if self.checks is not None:
            self.checks.started_by_hand()
        if self.state in SETTLED:
            self._launch()

    def once(self) -> None:
        """Run it, but do not restart it after it exits."""
        if self.broken:
            return
        self.want = "down"
        if self.state in SETTLED:
            self._launch()
        elif self.state == BACKOFF:
            self._cancel_timer()
            self._set_state(DOWN)

    def stop(self) -> None:
        """Want it down: down signal + SIGCONT to its process group, then wait for its exit."""
        self.want = "down"
        if self.state == BACKOFF:
            self._cancel_timer()
            self._set_state(DOWN)
        elif self.state in (STARTING, UP, READY):
            self._send_down()

    def restart(self) -> None:
        """Down signal now; the normal exit path starts it again (throttle included)."""
        if self.broken:
            return
        self.want = "up"
        if self.state in (STARTING, UP, READY):
            self._send_down()
        elif self.state in SETTLED:
            if self.checks is not None:
                self.checks.started_by_hand()
            self._launch()

    def send_signal(self, signum: int) -> bool:
        """Signal the `run` process; False when it is not running."""
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self) -> None:
        """SIGKILL whatever is left of `run`'s process group (shutdown, after the grace time)."""
        if self.pid is not None:
            _killpg(self.pgid, signal.SIGKILL)

    # --- record ----------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """The status record: stable keys, see the README."""
        last = None
        if self.last_exit is not None:
            code, signum, at = self.last_exit
            last = {"code": code, "signal": signum, "at": at}
        return {
            "name": self.name,
            "state": self.state,
            "want": self.want,
            "pid": self.pid,
            "pgid": self.pgid if self.pid is not None else None,
            "since": self.since,
            "started": self.started if self.pid is not None else None,
            "restarts": self.restarts,
            "last_exit": last,
            "ready": self.ready,
            "normally_up": self.definition.normally_up,
            "notification_fd": self.definition.notification_fd,
            "reason": self.reason,
            **(self.checks.record() if self.checks is not None else NO_HEALTH),
        }

    # --- internals -------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        self.since = time.time()
        if self.checks is not None:
            self.checks.state_changed(state)
        log.debug(f"service {self.name}: {state}")
        self.rt.on_change(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _launch(self) -> None:
        self._cancel_timer()
        definition = self.definition
        argv, warning = spawn.script_argv(definition.run)
        if warning:
            log.warn(warning)
        read_end = write_end = None
        extra: dict[int, int] = {}
        if definition.notification_fd is not None:
            read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            extra[definition.notification_fd] = write_end
        try:
            pid = self._spawn(argv, extra)
        except OSError as exc:
            log.error(f"service {self.name}: cannot fork: {exc.strerror}; retrying in 1 s")
            if read_end is not None:
                os.close(read_end)
            self._set_state(BACKOFF)
            self._timer = self.rt.loop.call_later(THROTTLE_SECONDS, self._backoff_over)
            return
        finally:
            if write_end is not None:
                os.close(write_end)
        self.rt.reaper.watch(pid, self._on_exit)
        if self._launches:
            self.restarts += 1
        self._launches += 1
        self.pid = self.pgid = pid
        self.reason = None
        self._started_at = self.rt.loop.time()
        self.started = time.time()
        self._give_up = None
        if self.checks is not None:
            self.checks.spawned(read_end is not None)
        if read_end is not None:
            self._notify_fd = read_end
            self.ready = False
            self.rt.loop.add_reader(read_end, self._on_notification)
            self._set_state(STARTING)
        else:
            self.ready = True
            self._set_state(UP)

    def _spawn(self, argv: list[str], extra_fds: dict[int, int] | None = None) -> int:
        """`run` or `finish`: own session, cwd the service directory, stdin the logger pipe's
        read end for a logger and /dev/null otherwise, stdout the log pipe when there is one."""
        return spawn.spawn(
            argv,
            self.rt.child_env(),
            cwd=self.definition.directory,
            new_session=True,
            stdin=spawn.devnull() if self.stdin_fd is None else self.stdin_fd,
            stdout=self.stdout_fd,
            extra_fds=extra_fds,
        )

    def _on_notification(self) -> None:
        fd = self._notify_fd
        if fd is None:
            return
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if b"\n" in data:
            self._became_ready()
        elif not data:
            self._close_notification()  # closed without a newline: up, never ready

    def _became_ready(self) -> None:
        self._close_notification()
        self.ready = True
        if self.state == STARTING:
            self._set_state(READY)

    def _on_check_event(self, event: str, why: str) -> None:
        """What the service's checks found (service_checks.ServiceChecks.emit)."""
        if event == "ready":
            if self.state == STARTING:
                self._became_ready()
        elif event == "timeout_up":
            if self.state == STARTING:
                log.warn(f"service {self.name}: {why}; stopping it")
                self._give_up = why
                self.want = "down"
                self._send_down()
        elif event == "unhealthy" and self.state in (UP, READY):
            action = self.checks.action if self.checks is not None else "restart"
            if action == "shutdown" and self.rt.on_health_shutdown is not None:
                self.rt.on_health_shutdown(self, why)
            elif action == "restart":
                log.warn(f"service {self.name}: restarting it: {why}")
                self.restart()

    def _close_notification(self) -> None:
        if self._notify_fd is not None:
            self.rt.loop.remove_reader(self._notify_fd)
            os.close(self._notify_fd)
            self._notify_fd = None

    def _send_down(self) -> None:
        self._set_state(STOPPING)
        _killpg(self.pgid, self.definition.down_signal)
        _killpg(self.pgid, signal.SIGCONT)
        if self.definition.timeout_kill_ms > 0:
            self._cancel_timer()
            self._timer = self.rt.loop.call_later(
                self.definition.timeout_kill_ms / 1000, self._timeout_kill
            )

    def _timeout_kill(self) -> None:
        self._timer = None
        if self.pid is not None:
            log.warn(f"service {self.name}: still running after timeout-kill; sending SIGKILL")
            _killpg(self.pgid, signal.SIGKILL)

    def _on_exit(self, status: ExitStatus) -> None:
        self._cancel_timer()
        self._close_notification()
        pgid = self.pgid
        self.pid = None
        self.ready = False
        self.last_exit = (status.code, status.signal, time.time())
        if self.checks is not None:
            lived = self.rt.loop.time() - self._started_at
            counts = self.want == "up" and not self.rt.shutting_down
            self._give_up = self._give_up or self.checks.died(
                status.code, status.signal, lived, counts
            )
        log.debug(f"service {self.name}: run ended, {status.describe()}")
        finish = self.definition.finish
        if finish is None:
            self._set_state(DOWN)  # subscribers see every death, even an instant restart
            self._after_finish(None)
            return
        args = [
            str(256 if status.signal is not None else status.code),
            str(status.signal or 0),
            self.name,
            str(pgid),
        ]
        argv, warning = spawn.script_argv(finish, args)
        if warning:
            log.warn(warning)
        try:
            pid = self._spawn(argv)
        except OSError as exc:
            log.error(f"service {self.name}: cannot run finish: {exc.strerror}")
            self._after_finish(None)
            return
        self._finish_pid = pid
        self.rt.reaper.watch(pid, self._on_finish_exit)
        self._set_state(FINISHING)
        if self.definition.timeout_finish_ms > 0:
            self._timer = self.rt.loop.call_later(
                self.definition.timeout_finish_ms / 1000, self._timeout_finish
            )

    def _timeout_finish(self) -> None:
        self._timer = None
        if self._finish_pid is not None:
            log.warn(f"service {self.name}: finish ran past timeout-finish; sending SIGKILL")
            _killpg(self._finish_pid, signal.SIGKILL)

    def _on_finish_exit(self, status: ExitStatus) -> None:
        self._cancel_timer()
        self._finish_pid = None
        self._after_finish(status.code)

    def _after_finish(self, finish_code: int | None) -> None:
        if finish_code == PERMANENT_FAILURE:
            self.want = "down"
            self.reason = "finish exited 125 (permanent failure): not restarted"
            log.warn(f"service {self.name}: {self.reason}")
            self._set_state(FAILED)
            return
        if self._give_up is not None:
            self.want = "down"
            self.reason = self._give_up
            log.warn(f"service {self.name}: {self.reason}")
            self._set_state(FAILED)
            return
        if self.want != "up" or self.rt.shutting_down:
            self._set_state(DOWN)
            return
        elapsed = self.rt.loop.time() - self._started_at
        if elapsed < THROTTLE_SECONDS:
            self._set_state(BACKOFF)
            self._timer = self.rt.loop.call_later(
                THROTTLE_SECONDS - elapsed, self._backoff_over
            )
        else:
            self._launch()

    def _backoff_over(self) -> None:
        self._timer = None
        if self.want == "up" and not self.rt.shutting_down:
            self._launch()
        else:
            self._set_state(DOWN)
