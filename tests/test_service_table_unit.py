"""The service state machine without processes: every cell of TABLE[state][event] walked.

A fake Runtime stands in for spawn, signals, the clock and the loop. Each state is reached the
way the real service reaches it (by events from `down`), then one event is fired and what a
user would see is checked: the next state, what was spawned, which signals went out, whether a
timer was armed, and `want`. The PID-1 tests (test_lifecycle.py and others) are the
end-to-end proof; this file proves the table is total and means what it says.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from overlayd import service as svc
from overlayd.reaper import ExitStatus
from overlayd.scan import read_service
from protocol.states import (
    BACKOFF,
    DOWN,
    FAILED,
    FINISHING,
    READY,
    RECORD_KEYS,
    STARTING,
    STATES,
    STOPPING,
    UP,
)

TERM, CONT, KILL = signal.SIGTERM, signal.SIGCONT, signal.SIGKILL


class FakeTimer:
    def __init__(self, delay: float, callback: Any) -> None:
        self.delay = delay
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeRuntime:
    """Records what the service asked of the world; fails forks on request."""

    def __init__(self) -> None:
        self.clock = 1000.0
        self.next_pid = 100
        self.spawned: list[list[str]] = []
        self.signals: list[tuple[int, int]] = []
        self.timers: list[FakeTimer] = []
        self.changes: list[str] = []
        self.watched: dict[int, Any] = {}
        self.readers: dict[int, Any] = {}
        self.fail_spawn: set[str] = set()  # "run" / "finish": the fork fails with EAGAIN
        self.shutting_down = False
        self.health_shutdowns: list[str] = []  # health/action shutdown asked for by service

    def on_health_shutdown(self, name: str, why: str) -> None:
        self.health_shutdowns.append(name)

    def spawn(
        self, argv: list[str], cwd: str, stdin: Any, stdout: Any, extra: Any, stderr: Any = None
    ) -> int:
        which = os.path.basename(argv[0])
        if which in self.fail_spawn:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        self.next_pid += 1
        self.spawned.append(argv)
        return self.next_pid

    def watch(self, pid: int, on_exit: Any) -> None:
        self.watched[pid] = on_exit

    def signal_group(self, pgid: int, signum: int) -> None:
        self.signals.append((pgid, signum))

    def now(self) -> float:
        return self.clock

    def wall(self) -> float:
        return 1.7e9 + self.clock

    def call_later(self, delay: float, callback: Any) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer

    def add_reader(self, fd: int, callback: Any) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)

    def on_change(self, service: svc.Service) -> None:
        self.changes.append(service.state)

    # --- test helpers ------------------------------------------------------------------------
    def live_timers(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def fire_timer(self) -> None:
        (timer,) = self.live_timers()
        timer.cancelled = True
        timer.callback()

    def forget(self) -> None:
        self.spawned.clear()
        self.signals.clear()
        self.changes.clear()
        for timer in self.timers:
            timer.cancelled = True
        self.timers.clear()


def make_dir(base: Path, *, fd: bool = True, finish: bool = True, kill_ms: int = 0) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    (base / "run").write_text("#!/bin/sh\nexec sleep 1000\n")
    (base / "run").chmod(0o755)
    if finish:
        (base / "finish").write_text("#!/bin/sh\nexit 0\n")
        (base / "finish").chmod(0o755)
    if fd:
        (base / "notification-fd").write_text("3\n")
    if kill_ms:
        (base / "timeout-kill").write_text(f"{kill_ms}\n")
    return base


def new_service(tmp_path: Path, **kw: Any) -> tuple[svc.Service, FakeRuntime]:
    rt = FakeRuntime()
    directory = make_dir(tmp_path / "svc", **kw)
    service = svc.Service(read_service("svc", str(directory)), rt)  # type: ignore[arg-type]
    return service, rt


def run_exits(service: svc.Service, rt: FakeRuntime, status: ExitStatus) -> None:
    pid = service.pid
    assert pid is not None
    rt.watched.pop(pid)(status)


def finish_exits(service: svc.Service, rt: FakeRuntime, code: int) -> None:
    pid = service._finish_pid
    assert pid is not None
    rt.watched.pop(pid)(ExitStatus(code, None))


def reach(state: str, tmp_path: Path) -> tuple[svc.Service, FakeRuntime]:
    """A service in `state`, reached by events as in real life; the runtime's logs cleared."""
    service, rt = new_service(tmp_path, fd=state != UP)
    if state != DOWN:
        service.fire(svc.START)
    rt.clock += 0.25 if state == BACKOFF else 5  # BACKOFF: `run` dies within its first second
    if state == READY:
        service.fire(svc.NOTIFIED)
    elif state == STOPPING:
        service.fire(svc.STOP)
    elif state in (FINISHING, FAILED, BACKOFF):
        run_exits(service, rt, ExitStatus(1, None))
        if state != FINISHING:
            finish_exits(service, rt, 125 if state == FAILED else 0)
    assert service.state == state, (state, service.state)
    rt.forget()
    return service, rt


# What each cell must do, in what a user sees: (next state, spawned, signals, timer armed).
# "run"/"finish": what was spawned; TERM/CONT/KILL to the group; None: unchanged.
Expect = tuple[str, tuple[str, ...], tuple[int, ...], bool]
IGNORED: Expect = ("", (), (), False)  # "" = the same state
RUNNING_ROW: dict[str, Expect] = {
    svc.START: IGNORED,
    svc.ONCE: IGNORED,
    svc.STOP: (STOPPING, (), (TERM, CONT), False),
    svc.RESTART: (STOPPING, (), (TERM, CONT), False),
    svc.RELEASE: IGNORED,
    svc.KILL: ("", (), (KILL,), False),
    svc.EXIT: (STARTING, ("run",), (), False),  # lived > 1 s: down, then relaunched at once
    svc.EXIT_FINISH: (FINISHING, ("finish",), (), True),  # timeout-finish armed
}
SETTLED_ROW: dict[str, Expect] = {
    svc.START: (STARTING, ("run",), (), False),
    svc.ONCE: (STARTING, ("run",), (), False),
    svc.RESTART: (STARTING, ("run",), (), False),
}
EXPECTED: dict[str, dict[str, Expect]] = {
    DOWN: {**SETTLED_ROW, svc.RELAUNCH: (STARTING, ("run",), (), False),
           svc.THROTTLE: (BACKOFF, (), (), True),
           svc.GIVE_UP: (FAILED, (), (), False)},  # start retries spent, or timeout-up
    STARTING: {**RUNNING_ROW, svc.NOTIFIED: (READY, (), (), False),
               svc.NOTIFY_EOF: IGNORED,
               svc.CHECKED: (READY, (), (), False),  # the polled data/check passed
               svc.TIMEOUT_UP: (STOPPING, (), (TERM, CONT), False)},  # then down → failed
    UP: {**RUNNING_ROW, svc.EXIT: (UP, ("run",), (), False),
         svc.UNHEALTHY: (STOPPING, (), (TERM, CONT), False)},  # restarted by the exit path
    READY: {**RUNNING_ROW, svc.UNHEALTHY: (STOPPING, (), (TERM, CONT), False)},
    STOPPING: {
        svc.STOP: ("", (), (TERM, CONT), False),  # re-sent: the first may have been lost
        svc.RESTART: ("", (), (TERM, CONT), False),
        svc.KILL: ("", (), (KILL,), False),
        svc.EXIT: (DOWN, (), (), False),
        svc.EXIT_FINISH: (FINISHING, ("finish",), (), True),
        svc.TIMER: ("", (), (KILL,), False),  # timeout-kill
    },
    FINISHING: {
        svc.KILL: ("", (), (KILL,), False),
        svc.TIMER: ("", (), (KILL,), False),  # timeout-finish
        svc.FINISHED: (STARTING, ("run",), (), False),  # wanted up, lived > 1 s: relaunched
        svc.PERMANENT: (FAILED, (), (), False),
    },
    BACKOFF: {
        svc.ONCE: (DOWN, (), (), False),
        svc.STOP: (DOWN, (), (), False),
        svc.RELEASE: (DOWN, (), (), False),
        svc.TIMER: (STARTING, ("run",), (), False),  # the throttle is over
    },
    FAILED: dict(SETTLED_ROW),
}
WANT_AFTER = {svc.START: "up", svc.RESTART: "up", svc.ONCE: "down", svc.STOP: "down",
              svc.RELEASE: "down"}


def test_the_table_is_total_over_states_and_events() -> None:
    assert set(svc.TABLE) == set(STATES)
    for state, row in svc.TABLE.items():
        assert set(row) == set(svc.EVENTS), state
        for event, (actions, target) in row.items():
            assert target in (*STATES, svc.SAME, svc.LAUNCHED), (state, event)
            for action in actions:
                assert callable(getattr(svc.Service, "_" + action, None)), (state, event, action)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", svc.EVENTS)
def test_every_cell_does_what_a_user_expects(state: str, event: str, tmp_path: Path) -> None:
    service, rt = reach(state, tmp_path)
    want_before = service.want
    expect = EXPECTED[state].get(event, IGNORED)
    before = service.state
    service.fire(event)
    target, spawned, signals, timer = expect
    assert service.state == (target or before), (state, event, rt.changes)
    assert tuple(os.path.basename(a[0]) for a in rt.spawned) == spawned
    assert tuple(sig for _pgid, sig in rt.signals) == signals, (state, event)
    assert bool(rt.live_timers()) == timer, (state, event)
    gives_up = {(FINISHING, svc.PERMANENT), (STARTING, svc.TIMEOUT_UP), (DOWN, svc.GIVE_UP)}
    want = "down" if (state, event) in gives_up else want_before
    assert service.want == WANT_AFTER.get(event, want), (state, event)
    fatal = event == svc.UNHEALTHY_FATAL and state in (UP, READY)
    assert rt.health_shutdowns == (["svc"] if fatal else []), (state, event)
    service._close_notification()


def test_stop_right_after_start_signals_the_new_process(tmp_path: Path) -> None:
    service, rt = new_service(tmp_path, fd=False)
    service.start()
    service.stop()
    assert rt.signals == [(service.pid, TERM), (service.pid, CONT)]
    assert service.state == STOPPING


def test_a_second_stop_on_a_stopping_service_sends_the_down_signal_again(tmp_path: Path) -> None:
    service, rt = reach(STOPPING, tmp_path)
    service.stop()
    service.stop()
    assert [sig for _p, sig in rt.signals] == [TERM, CONT, TERM, CONT]


def test_finish_that_cannot_be_forked_still_goes_down_before_the_relaunch(tmp_path: Path) -> None:
    service, rt = reach(UP, tmp_path)
    rt.fail_spawn.add("finish")
    run_exits(service, rt, ExitStatus(3, None))
    assert DOWN in rt.changes, rt.changes
    assert rt.changes.index(DOWN) < rt.changes.index(UP)
    assert service.state == UP


def test_a_run_that_cannot_be_forked_backs_off_and_retries(tmp_path: Path) -> None:
    service, rt = new_service(tmp_path, fd=False)
    rt.fail_spawn.add("run")
    service.start()
    assert service.state == BACKOFF and service.pid is None
    assert rt.live_timers()[0].delay == svc.THROTTLE_SECONDS
    rt.fail_spawn.clear()
    rt.fire_timer()
    assert service.state == UP


def test_a_crash_within_a_second_waits_out_the_rest_of_it(tmp_path: Path) -> None:
    service, rt = new_service(tmp_path, fd=False, finish=False)
    service.start()
    rt.clock += 0.3
    run_exits(service, rt, ExitStatus(1, None))
    assert rt.changes == [UP, DOWN, BACKOFF]
    assert rt.live_timers()[0].delay == pytest.approx(0.7)


def test_finish_125_leaves_it_failed_and_wanted_down(tmp_path: Path) -> None:
    service, rt = reach(FINISHING, tmp_path)
    finish_exits(service, rt, 125)
    assert (service.state, service.want) == (FAILED, "down")
    assert "125" in (service.reason or "")


def test_ready_is_derived_from_the_state(tmp_path: Path) -> None:
    service, _rt = reach(STARTING, tmp_path)
    assert service.record()["ready"] is False
    service.fire(svc.NOTIFIED)
    assert service.record()["ready"] is True
    service.stop()
    assert service.record()["ready"] is False
    plain, _ = reach(UP, tmp_path / "b")
    assert plain.record()["ready"] is True


def test_the_record_carries_every_stable_key(tmp_path: Path) -> None:
    service, _rt = reach(READY, tmp_path)
    record = service.record()
    assert set(RECORD_KEYS) <= set(record)
    assert record["state"] == READY and record["pid"] == service.pid


def test_a_changed_down_signal_is_used_from_the_next_start(tmp_path: Path) -> None:
    service, rt = reach(UP, tmp_path)
    directory = Path(service.definition.directory)
    (directory / "down-signal").write_text("SIGQUIT\n")
    service.redefine(read_service("svc", str(directory)))
    service.stop()
    assert [sig for _p, sig in rt.signals] == [TERM, CONT]  # the running one keeps its own
    run_exits(service, rt, ExitStatus(0, None))
    finish_exits(service, rt, 0)
    rt.forget()
    service.start()
    service.stop()
    assert [sig for _p, sig in rt.signals] == [signal.SIGQUIT, CONT]


def test_crash_loop_lines_are_rate_limited(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    service, rt = new_service(tmp_path, fd=False, finish=False)
    service.start()
    for _ in range(25):
        rt.clock += 1.0
        run_exits(service, rt, ExitStatus(2, None))
        if service.state == BACKOFF:
            rt.fire_timer()
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "exited unexpectedly" in line]
    assert 2 <= len(lines) <= 4, err  # one per CRASH_LOG_INTERVAL (10 s) over 25 s
    assert "exit code 2" in lines[0]
    assert "more since the last line" in lines[1]


def test_a_stopped_service_exiting_logs_no_crash(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    service, rt = reach(STOPPING, tmp_path)
    run_exits(service, rt, ExitStatus(None, TERM))
    assert "unexpectedly" not in capfd.readouterr().err


def test_requests_to_run_are_refused_during_shutdown(tmp_path: Path) -> None:
    service, rt = new_service(tmp_path, fd=False)
    rt.shutting_down = True
    service.start()
    service.restart()
    service.once()
    assert service.state == DOWN and rt.spawned == []
