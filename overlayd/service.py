"""One supervised service: its state machine, as one table.

``TABLE[state][event]`` is ``(actions, next state)``, in the spirit of s6-supervise's
``actions[state][event]``: a reader can enumerate every transition, and the unit tests walk
every cell with a fake runtime (no processes, no clock). The words live in protocol/states.py.

Events come from three places: a request (start, once, stop, restart, release, kill), the
world (the reaper routes `run`'s and `finish`'s exits here, a newline or EOF arrives on the
notification pipe, the service's one timer fires), and follow-ups an action returns (the
decision to relaunch, or to wait out the throttle, after `run` went down). The timer means what
the state says: the throttle in ``backoff``, timeout-kill in ``stopping``, timeout-finish in
``finishing``.

Two targets are decided after the actions ran, so that the table needs no guards:
``LAUNCHED`` is ``starting`` with a notification-fd, ``up`` without one, ``backoff`` when the
fork failed; ``SAME`` keeps the state.
"""

from __future__ import annotations

import _signal
import os
import time

from protocol.states import (
    BACKOFF,
    DOWN,
    FAILED,
    FINISHING,
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
    READY,
    RUNNING,
    SETTLED,
    STARTING,
    STATES,
    STOPPING,
    UP,
    WANT_DOWN,
    WANT_UP,
    exit_record,
    is_ready,
)

from . import log, spawn
from .reaper import ExitStatus

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .loop import Loop, Timer
    from .reaper import Reaper
    from .scan import ServiceDef
    from .service_checks import ServiceChecks

__all__ = [
    "BACKOFF", "DOWN", "FAILED", "FINISHING", "READY", "RUNNING", "SETTLED", "STARTING",
    "STATES", "STOPPING", "UP", "Runtime", "Service",
]

THROTTLE_SECONDS = 1.0
PERMANENT_FAILURE = 125
#: At most one "exited unexpectedly" line per service per this many seconds (crash loops).
CRASH_LOG_INTERVAL = 10.0

# --- events ----------------------------------------------------------------------------------
START = "start"  # request: want it up, start it when settled
ONCE = "once"  # request: run it, do not restart it
STOP = "stop"  # request: want it down; (re)send the down signal to a running one
RESTART = "restart"  # request: want it up; down signal now, the exit path starts it again
RELEASE = "release"  # request: want it down, let it end by itself (a logger after its EOF)
KILL = "kill"  # request: SIGKILL what runs (shutdown, after the grace time)
NOTIFIED = "notified"  # a newline on the notification-fd
NOTIFY_EOF = "notify-eof"  # the notification-fd closed without a newline: up, never ready
EXIT = "exit"  # `run` exited; there is no finish script
EXIT_FINISH = "exit-finish"  # `run` exited; there is a finish script
FINISHED = "finished"  # `finish` exited (any code but 125), or could not be forked
PERMANENT = "permanent"  # `finish` exited 125
TIMER = "timer"  # the service's one timer fired
RELAUNCH = "relaunch"  # follow-up: down and wanted up, the throttle has elapsed
THROTTLE = "throttle"  # follow-up: down and wanted up, `run` lived less than 1 s
# Checks and the give-up policy (DESIGN §13, service_checks.py):
CHECKED = "checked"  # the polled `data/check` passed: ready, as a newline would make it
UNHEALTHY = "unhealthy"  # health/check failed `retries` times in a row; action restart
UNHEALTHY_FATAL = "unhealthy-fatal"  # the same with action shutdown: the container goes down
TIMEOUT_UP = "timeout-up"  # not ready within `timeout-up`: the start failed
GIVE_UP = "give-up"  # follow-up: down, and the give-up policy says no more starts
EVENTS = (
    START, ONCE, STOP, RESTART, RELEASE, KILL, NOTIFIED, NOTIFY_EOF, EXIT, EXIT_FINISH,
    FINISHED, PERMANENT, TIMER, RELAUNCH, THROTTLE, CHECKED, UNHEALTHY, UNHEALTHY_FATAL,
    TIMEOUT_UP, GIVE_UP,
)

# --- targets decided after the actions -------------------------------------------------------
LAUNCHED = "(launched)"
SAME = "(same)"

_ = ((), SAME)  # an event with no meaning in this state: ignored


def _row(**cells: tuple[tuple[str, ...], str]) -> dict[str, tuple[tuple[str, ...], str]]:
    """One state's row: every event, ignored unless named (`exit_finish=` names exit-finish)."""
    named = {event.replace("_", "-"): cell for event, cell in cells.items()}
    unknown = set(named) - set(EVENTS)
    if unknown:
        raise ValueError(f"no such event: {', '.join(sorted(unknown))}")
    return {event: named.get(event, _) for event in EVENTS}


_ALIVE = _row(
    start=(("want_up",), SAME),
    once=(("want_down",), SAME),
    stop=(("want_down", "send_down"), STOPPING),
    restart=(("want_up", "send_down"), STOPPING),
    release=(("want_down",), SAME),
    kill=(("kill_group",), SAME),
    exit=(("note_exit", "after_down"), DOWN),
    exit_finish=(("note_exit", "spawn_finish"), FINISHING),
)
_SETTLED = _row(
    start=(("want_up", "reset_give_up", "spawn_run"), LAUNCHED),
    once=(("want_down", "spawn_run"), LAUNCHED),
    stop=(("want_down",), SAME),
    restart=(("want_up", "reset_give_up", "spawn_run"), LAUNCHED),
    release=(("want_down",), SAME),
)
# Up or ready: liveness verdicts. A restart keeps want up, so the exit path starts it again.
_CHECKED_ALIVE = {
    **_ALIVE,
    UNHEALTHY: (("send_down",), STOPPING),
    UNHEALTHY_FATAL: (("shut_container_down",), SAME),
}

TABLE: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    DOWN: {
        **_SETTLED,
        RELAUNCH: (("spawn_run",), LAUNCHED),
        THROTTLE: (("arm_throttle",), BACKOFF),
        GIVE_UP: (("mark_given_up",), FAILED),
    },
    STARTING: {
        **_ALIVE,
        NOTIFIED: (("close_notification",), READY),
        NOTIFY_EOF: (("close_notification",), SAME),
        CHECKED: (("close_notification",), READY),
        TIMEOUT_UP: (("want_down", "fail_start", "send_down"), STOPPING),
    },
    UP: _CHECKED_ALIVE,
    READY: _CHECKED_ALIVE,
    STOPPING: _row(
        start=(("want_up",), SAME),
        once=(("want_down",), SAME),
        # A second stop re-sends: the first may have reached nothing, or been ignored.
        stop=(("want_down", "send_down"), SAME),
        restart=(("want_up", "send_down"), SAME),
        release=(("want_down",), SAME),
        kill=(("kill_group",), SAME),
        notified=(("close_notification",), SAME),
        notify_eof=(("close_notification",), SAME),
        checked=(("close_notification",), SAME),
        exit=(("record_exit", "after_down"), DOWN),
        exit_finish=(("record_exit", "spawn_finish"), FINISHING),
        timer=(("timeout_kill",), SAME),
    ),
    FINISHING: _row(
        start=(("want_up",), SAME),
        once=(("want_down",), SAME),
        stop=(("want_down",), SAME),
        restart=(("want_up",), SAME),
        release=(("want_down",), SAME),
        kill=(("kill_finish",), SAME),
        finished=(("end_finish", "after_down"), DOWN),
        permanent=(("end_finish", "mark_permanent"), FAILED),
        timer=(("timeout_finish",), SAME),
    ),
    BACKOFF: _row(
        start=(("want_up",), SAME),
        once=(("want_down", "cancel_timer"), DOWN),
        stop=(("want_down", "cancel_timer"), DOWN),
        restart=(("want_up",), SAME),
        release=(("want_down", "cancel_timer"), DOWN),
        timer=(("spawn_run",), LAUNCHED),  # the throttle is over
    ),
    FAILED: _SETTLED,
}


class Runtime:
    """What a service needs from the rest of overlayd: spawn, signals, the clock, the loop.

    Everything a transition touches outside the Service goes through here, so the unit tests
    replace it with a fake and walk the table without processes or time.
    """

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
        self.shutting_down = False  # requests to run are refused from now on
        #: health/action `shutdown`: called with the service's name and why (set by stages.py)
        self.on_health_shutdown: Callable[[str, str], None] | None = None

    def spawn(
        self, argv: list[str], cwd: str, stdin: int | None, stdout: int | None,
        extra_fds: dict[int, int] | None, stderr: int | None = None,
    ) -> int:
        """`run` or `finish`: own session, cwd the service directory, stdin /dev/null unless
        given (a logger's pipe), stdout the log pipe when there is one, stderr the line
        prefixer's pipe with OVERLAY_LOG_PREFIX=1. Raises OSError."""
        return spawn.spawn(
            argv, self.child_env(), cwd=cwd, new_session=True,
            stdin=spawn.devnull() if stdin is None else stdin, stdout=stdout, stderr=stderr,
            extra_fds=extra_fds,
        )

    def spawn_check(self, argv: list[str], cwd: str) -> tuple[int, int]:
        """A readiness or health check: (pid, its output pipe's read end). Raises OSError."""
        from .check_process import spawn_check  # loaded with the first checked service

        return spawn_check(argv, self.child_env(), cwd)

    @staticmethod
    def sweep_group(pgid: int) -> None:
        """SIGKILL what a finished check left in its group (never a lone, reusable pid)."""
        from .check_process import sweep_group

        sweep_group(pgid)

    def watch(self, pid: int, on_exit: Callable[[ExitStatus], None]) -> None:
        self.reaper.watch(pid, on_exit)

    @staticmethod
    def signal_group(pgid: int, signum: int) -> None:
        """Signal the group led by `pgid`; before the child's setsid() ran (the group does not
        exist yet: ESRCH) signal the child itself, so a stop sent at once is never lost. All
        signals are blocked in the child until its exec, so it dies then, by this _signal."""
        try:
            os.killpg(pgid, signum)
            return
        except ProcessLookupError:
            pass
        except PermissionError:
            return
        try:
            os.kill(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass  # gone already: its exit is on its way to the reaper

    def now(self) -> float:
        return self.loop.time()

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.loop.call_later(delay, callback)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.loop.add_reader(fd, callback)

    def remove_reader(self, fd: int) -> None:
        self.loop.remove_reader(fd)


class Service:
    """The supervisor of one service directory: the table's interpreter and its facts."""

    def __init__(
        self,
        definition: ServiceDef,
        runtime: Runtime,
        stdin_fd: int | None = None,
        stdout_fd: int | None = None,
    ) -> None:
        self.definition = definition
        self.name: str = definition.name
        self.directory = definition.directory  # run's cwd; s6paths points it at the live dir
        self.rt = runtime
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.stderr_fd: int | None = None  # the line prefixer's pipe (OVERLAY_LOG_PREFIX=1)
        self.state = FAILED if definition.problem else DOWN
        self.reason: str | None = definition.problem
        self.want = WANT_DOWN
        self.pid: int | None = None
        self.pgid: int | None = None
        self.since = runtime.wall()
        self.restarts = 0
        self.last_exit: tuple[int | None, int | None, float] | None = None
        self.logger: Service | None = None
        self.is_logger = False
        self.started: float | None = None  # epoch seconds the running `run` was started
        self._next_definition: ServiceDef | None = None  # read by rescan, used at next start
        self._launches = 0
        self._started_at = 0.0
        self._timer: Timer | None = None
        self._notify_fd: int | None = None
        self._finish_pid: int | None = None
        self._status: ExitStatus | None = None  # the exit being handled
        self._queue: list[str] = []
        self._busy = False
        self._crash_logged_at: float | None = None
        self._crashes_unlogged = 0
        self._give_up: str | None = None  # why the next `down` becomes `failed`
        self._check_news = ""  # what the checks said with their last event
        self.checks: ServiceChecks | None = None
        self._make_checks()

    # --- requests (the stable interface) ---------------------------------------------------
    @property
    def broken(self) -> bool:
        """Its definition cannot run (state `failed`, `reason` says why)."""
        return self.definition.problem is not None

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    @property
    def ready(self) -> bool:
        """Derived from the state: `ready`, or `up` without a notification-fd."""
        return is_ready(self.state, self.definition.notification_fd is not None)

    def _may_run(self) -> bool:
        return not self.broken and not self.rt.shutting_down

    def start(self) -> None:
        """Want it up; start it now unless it is already on its way."""
        if self._may_run():
            self.fire(START)

    def once(self) -> None:
        """Run it, but do not restart it after it exits."""
        if self._may_run():
            self.fire(ONCE)

    def stop(self) -> None:
        """Want it down: down signal + SIGCONT to its process group (again, if stopping)."""
        self.fire(STOP)

    def restart(self) -> None:
        """Down signal now; the normal exit path starts it again (throttle included)."""
        if self._may_run():
            self.fire(RESTART)

    def release(self) -> None:
        """Want it down without signalling it: it ends by itself (a logger at EOF)."""
        self.fire(RELEASE)

    def kill_group(self) -> None:
        """SIGKILL what is left of `run`'s process group, or `finish` (after the grace time)."""
        self.fire(KILL)

    def send_signal(self, signum: int) -> bool:
        """Signal the `run` process; False when it is not running."""
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def redefine(self, definition: ServiceDef) -> None:
        """A rescan read the directory again: the new files take effect at the next start."""
        if definition == self.definition:
            self._next_definition = None
        elif self.state in SETTLED:
            self.definition = definition
            self._next_definition = None
        else:
            self._next_definition = definition

    # --- the interpreter -------------------------------------------------------------------
    def fire(self, event: str) -> None:
        """Run TABLE[state][event]; follow-ups that actions return run after it, in order."""
        self._queue.append(event)
        if self._busy:
            return  # an action fired it: it runs after the current transition
        self._busy = True
        try:
            while self._queue:
                self._step(self._queue.pop(0))
        except BaseException:
            self._queue.clear()  # a bug in an action: the caller logs it, no stale follow-up
            raise
        finally:
            self._busy = False

    def _step(self, event: str) -> None:
        actions, target = TABLE[self.state][event]
        for action in actions:
            follow_up = getattr(self, "_" + action)()
            if follow_up is not None:
                self._queue.append(follow_up)
        if target == SAME:
            return
        if target == LAUNCHED:
            target = self._launched()
        self._set_state(target)

    def _launched(self) -> str:
        """Where LAUNCHED leads: backoff when the fork failed, starting with a notification-fd."""
        if self.pid is None:
            return BACKOFF
        return STARTING if self._notify_fd is not None else UP

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        self.since = self.rt.wall()
        if self.checks is not None:
            self.checks.state_changed(state)
        log.debug(f"service {self.name}: {state}")
        self.rt.on_change(self)

    # --- actions ---------------------------------------------------------------------------
    def _want_up(self) -> None:
        self.want = WANT_UP

    def _want_down(self) -> None:
        self.want = WANT_DOWN

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self.rt.call_later(seconds, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.fire(TIMER)

    def _spawn_run(self) -> None:
        """Start `run` (a pending redefinition takes effect now); on a failed fork, arm the
        throttle so that the target resolves to backoff."""
        self._cancel_timer()
        if self._next_definition is not None:
            self.definition, self._next_definition = self._next_definition, None
        self._make_checks()  # a rescan may have changed them (kept when they are the same)
        definition = self.definition
        argv, warning = spawn.script_argv(definition.run)
        if warning:
            log.warn(warning)
        read_end = write_end = None
        extra: dict[int, int] | None = None
        if definition.notification_fd is not None:
            read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            extra = {definition.notification_fd: write_end}
        try:
            pid = self.rt.spawn(
                argv, self.directory, self.stdin_fd, self.stdout_fd, extra, self.stderr_fd
            )
        except OSError as exc:
            log.error(f"service {self.name}: cannot fork: {exc.strerror}; retrying in 1 s")
            if read_end is not None:
                os.close(read_end)
            self._arm(THROTTLE_SECONDS)
            return
        finally:
            if write_end is not None:
                os.close(write_end)
        self.rt.watch(pid, self._on_run_exit)
        if self._launches:
            self.restarts += 1
        self._launches += 1
        self.pid = self.pgid = pid
        self.reason = None
        self._started_at = self.rt.now()
        self.started = self.rt.wall()
        if read_end is not None:
            self._notify_fd = read_end
            self.rt.add_reader(read_end, self._on_notification)
        if self.checks is not None:
            self.checks.spawned(read_end is not None, self.directory)

    def _send_down(self) -> None:
        if self.pgid is None or self.pid is None:
            return
        self.rt.signal_group(self.pgid, self.definition.down_signal)
        self.rt.signal_group(self.pgid, _signal.SIGCONT)
        if self.definition.timeout_kill_ms > 0:
            self._arm(self.definition.timeout_kill_ms / 1000)

    def _kill_group(self) -> None:
        if self.pid is not None and self.pgid is not None:
            self.rt.signal_group(self.pgid, _signal.SIGKILL)

    def _timeout_kill(self) -> None:
        log.warn(f"service {self.name}: still running after timeout-kill; sending SIGKILL")
        self._kill_group()

    def _close_notification(self) -> None:
        if self._notify_fd is not None:
            self.rt.remove_reader(self._notify_fd)
            os.close(self._notify_fd)
            self._notify_fd = None

    def _record_exit(self) -> None:
        self._cancel_timer()
        self._close_notification()
        self.pid = None
        self.started = None
        status = self._status or ExitStatus(None, None)
        self.last_exit = (status.code, status.signal, self.rt.wall())
        log.debug(f"service {self.name}: run ended, {status.describe()}")
        if self.checks is not None:
            self.checks.died(status.code, status.signal)

    def _note_exit(self) -> None:
        """An exit nobody asked for: recorded, and logged (rate-limited) when wanted up."""
        self._record_exit()
        if self.want != WANT_UP:
            return
        now = self.rt.now()
        if self.checks is not None:
            self._give_up = self.checks.start_ended(now - self._started_at)
        if self._crash_logged_at is not None and now - self._crash_logged_at < CRASH_LOG_INTERVAL:
            self._crashes_unlogged += 1
            return
        more = self._crashes_unlogged
        self._crash_logged_at, self._crashes_unlogged = now, 0
        status = self._status or ExitStatus(None, None)
        tail = f" ({more} more since the last line)" if more else ""
        log.info(f"service {self.name}: exited unexpectedly, {status.describe()}{tail}")

    def _spawn_finish(self) -> str | None:
        """Run `finish EXITCODE SIGNAL NAME PGID`; FINISHED at once when it cannot be forked."""
        status = self._status or ExitStatus(None, None)
        finish = self.definition.finish
        if finish is None:
            return FINISHED
        args = [
            str(256 if status.signal is not None else status.code),
            str(status.signal or 0),
            self.name,
            str(self.pgid),
        ]
        argv, warning = spawn.script_argv(finish, args)
        if warning:
            log.warn(warning)
        try:
            pid = self.rt.spawn(
                argv, self.directory, self.stdin_fd, self.stdout_fd, None,
                self.stderr_fd,
            )
        except OSError as exc:
            log.error(f"service {self.name}: cannot run finish: {exc.strerror}")
            return FINISHED
        self._finish_pid = pid
        self.rt.watch(pid, self._on_finish_exit)
        if self.definition.timeout_finish_ms > 0:
            self._arm(self.definition.timeout_finish_ms / 1000)
        return None

    def _kill_finish(self) -> None:
        if self._finish_pid is not None:
            self.rt.signal_group(self._finish_pid, _signal.SIGKILL)

    def _timeout_finish(self) -> None:
        log.warn(f"service {self.name}: finish ran past timeout-finish; sending SIGKILL")
        self._kill_finish()

    def _end_finish(self) -> None:
        self._cancel_timer()
        self._finish_pid = None

    def _mark_permanent(self) -> None:
        self.want = WANT_DOWN
        self.reason = "finish exited 125 (permanent failure): not restarted"
        log.warn(f"service {self.name}: {self.reason}")

    def _after_down(self) -> str | None:
        """Decide what follows `down`: give up, relaunch, wait out the throttle, or nothing."""
        if self._give_up is not None:
            return GIVE_UP
        if self.want != WANT_UP:
            return None
        return RELAUNCH if self.rt.now() - self._started_at >= THROTTLE_SECONDS else THROTTLE

    def _mark_given_up(self) -> None:
        self.want = WANT_DOWN
        self.reason, self._give_up = self._give_up or "gave up", None
        log.warn(f"service {self.name}: {self.reason}")

    def _reset_give_up(self) -> None:
        """A start by hand: a `failed` service gets all its chances again."""
        self._give_up = None
        if self.checks is not None:
            self.checks.started_by_hand()

    def _fail_start(self) -> None:
        self._give_up = self._check_news
        log.warn(f"service {self.name}: {self._check_news}; stopping it")

    def _shut_container_down(self) -> None:
        if self.rt.on_health_shutdown is not None:
            self.rt.on_health_shutdown(self.name, self._check_news)

    def _arm_throttle(self) -> None:
        self._arm(max(0.0, THROTTLE_SECONDS - (self.rt.now() - self._started_at)))

    # --- the world -------------------------------------------------------------------------
    def _on_run_exit(self, status: ExitStatus) -> None:
        self._status = status
        self.fire(EXIT if self.definition.finish is None else EXIT_FINISH)

    def _on_finish_exit(self, status: ExitStatus) -> None:
        self.fire(PERMANENT if status.code == PERMANENT_FAILURE else FINISHED)

    def _on_check(self, event: str, why: str) -> None:
        """What the service's checks found (ServiceChecks' `emit`), as a table event."""
        self._check_news = why
        if event == "ready":
            self.fire(CHECKED)
        elif event == "timeout_up":
            self.fire(TIMEOUT_UP)
        elif event == "unhealthy":
            action = self.checks.action if self.checks is not None else "restart"
            self.fire(UNHEALTHY_FATAL if action == "shutdown" else UNHEALTHY)

    def _make_checks(self) -> None:
        """(Re)build the checks from the definition; kept when the definition's are unchanged."""
        spec = self.definition.checks
        if self.checks is not None:
            if self.checks.spec == spec:
                return
            self.checks.close()
        self.checks = None
        if spec is not None:
            from .service_checks import ServiceChecks  # off the boot path without checks

            self.checks = ServiceChecks(
                self.rt, spec, self.name, self.directory,
                self._on_check, lambda: self.rt.on_change(self),
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
            self.fire(NOTIFIED)
        elif not data:
            self.fire(NOTIFY_EOF)

    # --- record ----------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """The status record: stable keys (protocol/states.py), see the README."""
        last = None if self.last_exit is None else exit_record(*self.last_exit)
        running = self.pid is not None
        definition = self._next_definition or self.definition
        return {
            K_NAME: self.name,
            K_STATE: self.state,
            K_WANT: self.want,
            K_PID: self.pid,
            K_PGID: self.pgid if running else None,
            K_SINCE: self.since,
            K_STARTED: self.started if running else None,
            K_RESTARTS: self.restarts,
            K_LAST_EXIT: last,
            K_READY: self.ready,
            K_NORMALLY_UP: definition.normally_up,
            K_NOTIFICATION_FD: self.definition.notification_fd,
            K_REASON: self.reason,
            K_TYPE: "longrun",
            **(self.checks.record() if self.checks is not None else NO_HEALTH),
        }
