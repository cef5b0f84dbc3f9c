"""Checks driven without processes: a manual clock and fake check processes.

Each fake check is a pid the test ends by hand (`host.exit(pid, code)`), with a real pipe whose
write end the test holds, so the bounded output reader is exercised as on the loop.
"""

from __future__ import annotations

import heapq
import os
import signal
import struct
from pathlib import Path

import pytest

from overlayd.check_process import LAST_LINE_MAX, CheckResult, CheckRun, LastLine
from overlayd.check_specs import (
    DEFAULTS,
    GiveUpPolicy,
    HealthSpec,
    parse_options,
    read_give_up,
    read_health,
    read_poll_options,
)
from overlayd.give_up import DeathTally, StartFailures
from overlayd.liveness import Liveness
from overlayd.readiness_check import ReadinessPoller
from overlayd.reaper import ExitStatus
from protocol.states import HEALTHY, UNHEALTHY


class FakeTimer:
    def __init__(self, when: float, callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: FakeTimer) -> bool:
        return self.when < other.when


class FakeHost:
    """The Runtime's side that checks use, with a manual clock; checks wait for `exit()`."""

    def __init__(self) -> None:
        self.clock = 1000.0
        self.timers: list[FakeTimer] = []
        self.readers: dict[int, object] = {}
        self.spawned: list[list[str]] = []
        self.running: dict[int, tuple[object, int]] = {}  # pid → (on_exit, write end)
        self.killed: list[tuple[int, int]] = []
        self.swept: list[int] = []  # groups swept after their check exited
        self.next_pid = 100
        self.fail_spawn = False

    # clock
    def now(self) -> float:
        return self.clock

    def wall(self) -> float:
        return 1_700_000_000.0 + self.clock

    def call_later(self, delay: float, callback) -> FakeTimer:
        timer = FakeTimer(self.clock + delay, callback)
        heapq.heappush(self.timers, timer)
        return timer

    def advance(self, seconds: float) -> None:
        end = self.clock + seconds
        while self.timers and self.timers[0].when <= end:
            timer = heapq.heappop(self.timers)
            if timer.cancelled:
                continue
            self.clock = max(self.clock, timer.when)
            timer.callback()
        self.clock = end

    def pending(self) -> list[float]:
        return sorted(t.when - self.clock for t in self.timers if not t.cancelled)

    # fds
    def add_reader(self, fd: int, callback) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)

    # processes
    def spawn_check(self, argv: list[str], cwd: str) -> tuple[int, int]:
        if self.fail_spawn:
            raise OSError(11, "Resource temporarily unavailable")
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_end, False)
        self.next_pid += 1
        self.spawned.append(argv)
        self._pending_exit = None
        self.running[self.next_pid] = (None, write_end)
        return self.next_pid, read_end

    def watch(self, pid: int, on_exit) -> None:
        self.running[pid] = (on_exit, self.running[pid][1])

    def signal_group(self, pgid: int, signum: int) -> None:
        self.killed.append((pgid, signum))

    def sweep_group(self, pgid: int) -> None:
        self.swept.append(pgid)

    def write(self, pid: int, data: bytes) -> None:
        """The check prints; the loop sees the pipe readable."""
        fd = self.running[pid][1]
        os.write(fd, data)
        for callback in list(self.readers.values()):
            callback()

    def exit(self, pid: int, code: int | None = 0, signum: int | None = None) -> None:
        on_exit, write_end = self.running.pop(pid)
        os.close(write_end)
        on_exit(ExitStatus(code, signum))

    @property
    def current(self) -> int:
        assert len(self.running) == 1, self.running
        return next(iter(self.running))


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


# --- the last output line ---------------------------------------------------------------------


def test_last_line_keeps_the_last_non_blank_line() -> None:
    lines = LastLine()
    lines.feed(b"first\nsec")
    lines.feed(b"ond\n\n  \n")
    lines.close()
    assert lines.text == "second"


def test_last_line_without_a_newline_counts_at_the_end() -> None:
    lines = LastLine()
    lines.feed(b"one\ntwo")
    lines.close()
    assert lines.text == "two"


def test_a_megabyte_line_is_kept_to_its_first_kilobyte() -> None:
    lines = LastLine()
    for _ in range(16):
        lines.feed(b"x" * 65536)
    lines.close()
    assert lines.text == "x" * LAST_LINE_MAX
    assert len(lines._current) == 0 and len(lines._last) == LAST_LINE_MAX


# --- one run ----------------------------------------------------------------------------------


def test_a_check_that_exits_0_passes_with_its_last_line(host: FakeHost) -> None:
    results: list[CheckResult] = []
    run = CheckRun(host, ["check"], "/", 5.0, results.append)
    host.write(run.pid, b"starting\nall good\n")
    host.exit(run.pid, 0)
    assert [(r.passed, r.what, r.output) for r in results] == [(True, "exit code 0", "all good")]
    assert host.readers == {} and host.swept == [run.pid]  # whatever it left is killed


def test_a_hanging_check_is_killed_at_its_timeout_and_fails(host: FakeHost) -> None:
    results: list[CheckResult] = []
    run = CheckRun(host, ["check"], "/", 5.0, results.append)
    host.advance(4.9)
    assert host.killed == [] and results == []
    host.advance(0.2)
    assert host.killed == [(run.pid, signal.SIGKILL)]
    host.exit(run.pid, None, signal.SIGKILL)
    assert [(r.passed, r.what) for r in results] == [(False, "timed out after 5 s")]


def test_a_check_that_cannot_be_forked_fails_on_a_later_turn(host: FakeHost) -> None:
    host.fail_spawn = True
    results: list[CheckResult] = []
    CheckRun(host, ["check"], "/", 5.0, results.append)
    assert results == []
    host.advance(0)
    assert not results[0].passed and "cannot start check" in results[0].what


def test_a_cancelled_check_is_killed_and_never_reported(host: FakeHost) -> None:
    results: list[CheckResult] = []
    run = CheckRun(host, ["check"], "/", 5.0, results.append)
    run.cancel()
    assert host.killed == [(run.pid, signal.SIGKILL)]
    host.exit(run.pid, None, signal.SIGKILL)
    host.advance(10)
    assert results == []


# --- liveness ---------------------------------------------------------------------------------


SPEC = HealthSpec("/svc/health/check", 10000, 5000, 3, "restart")


def liveness(host: FakeHost, spec: HealthSpec = SPEC):
    changes: list[str | None] = []
    actions: list[tuple[str, str]] = []
    live: Liveness = Liveness(host, spec, "svc", "/svc", lambda: None, lambda *a: actions.append(a))
    live._on_change = lambda: changes.append(live.health)
    return live, changes, actions


def test_the_first_check_runs_one_interval_after_up(host: FakeHost) -> None:
    live, _, _ = liveness(host)
    live.service_up()
    host.advance(9.99)
    assert host.spawned == []
    host.advance(0.02)
    assert host.spawned == [["/svc/health/check"]]


def test_the_interval_counts_from_the_end_of_the_previous_check(host: FakeHost) -> None:
    live, changes, _ = liveness(host)
    live.service_up()
    host.advance(10)
    host.advance(3)  # the check takes 3 s
    host.exit(host.current, 0)
    assert changes == [HEALTHY]
    assert host.pending() == [10.0]


def test_checks_never_overlap_even_when_one_outlasts_the_interval(host: FakeHost) -> None:
    spec = SPEC._replace(interval_ms=100, timeout_ms=60000)
    live, _, _ = liveness(host, spec)
    live.service_up()
    host.advance(0.1)
    host.advance(30)  # thirty seconds of one running check
    assert len(host.spawned) == 1 and len(host.running) == 1


def test_restart_is_asked_after_retries_failures_in_a_row_only(host: FakeHost) -> None:
    live, changes, actions = liveness(host)
    live.service_up()
    for _ in range(2):
        host.advance(10)
        host.exit(host.current, 1)
    host.advance(10)
    host.exit(host.current, 0)  # a pass resets the count
    for _ in range(2):
        host.advance(10)
        host.exit(host.current, 1)
    assert actions == []
    host.advance(10)
    host.write(host.current, b"connection refused\n")
    host.exit(host.current, 1)
    assert actions == [
        ("restart", "health check failed 3 time(s) in a row: exit code 1: connection refused")
    ]
    assert changes == [HEALTHY, UNHEALTHY]
    assert not live.active  # no more checks until the service is up again


def test_mark_makes_it_unhealthy_then_healthy_again(host: FakeHost) -> None:
    live, changes, actions = liveness(host, SPEC._replace(action="mark", retries=2))
    live.service_up()
    for _ in range(3):
        host.advance(10)
        host.exit(host.current, 1)
    assert changes == [UNHEALTHY]
    host.advance(10)
    host.exit(host.current, 0)
    assert changes == [UNHEALTHY, HEALTHY]
    assert actions == []


def test_going_down_kills_the_running_check_and_forgets_the_verdict(host: FakeHost) -> None:
    live, changes, _ = liveness(host)
    live.service_up()
    host.advance(10)
    host.exit(host.current, 0)
    host.advance(10)
    pid = host.current
    live.service_down()
    assert (pid, signal.SIGKILL) in host.killed
    assert changes == [HEALTHY, None] and host.pending() == []


def test_health_directory_defaults_and_bad_values(tmp_path: Path) -> None:
    assert read_health(str(tmp_path)) is None
    (tmp_path / "health").mkdir()
    with pytest.raises(ValueError, match="health/check is missing"):
        read_health(str(tmp_path))
    (tmp_path / "health" / "check").write_text("#!/bin/sh\n")
    spec = read_health(str(tmp_path))
    assert spec == HealthSpec(str(tmp_path / "health" / "check"), 10000, 5000, 3, "restart")
    (tmp_path / "health" / "action").write_text("reboot\n")
    with pytest.raises(ValueError, match="health/action holds 'reboot'"):
        read_health(str(tmp_path))
    (tmp_path / "health" / "action").write_text("mark\n")
    (tmp_path / "health" / "retries").write_text("0\n")
    with pytest.raises(ValueError, match="health/retries holds '0'"):
        read_health(str(tmp_path))


# --- readiness by polling ---------------------------------------------------------------------


def test_s6_notifyoncheck_options_and_defaults() -> None:
    assert DEFAULTS == (10, 0, 0, 1000, 7, None)
    assert parse_options(["-d", "-3", "5", "-n0", "-w", "250", "-t", "100", "-c", "true"]) == (
        10, 0, 100, 250, 0, "true"
    )
    with pytest.raises(ValueError, match="unknown option '-x'"):
        parse_options(["-x"])
    with pytest.raises(ValueError, match="-n 'seven'"):
        parse_options(["-n", "seven"])


def test_poll_options_come_from_the_directory(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("#!/bin/sh\nexec sleep 100\n")
    assert read_poll_options(str(tmp_path), True) is None  # no data/check
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "check").write_text("#!/bin/sh\n")
    assert read_poll_options(str(tmp_path), False) is None  # no notification-fd
    assert read_poll_options(str(tmp_path), True) == DEFAULTS
    (tmp_path / "notifyoncheck-options").write_text("-n 2 -w 50\n")
    assert read_poll_options(str(tmp_path), True) == DEFAULTS._replace(tries=2, wait_ms=50)
    (tmp_path / "run").write_text("#!/bin/sh\n# s6-notifyoncheck is not used here\nexec x\n")
    assert read_poll_options(str(tmp_path), True) is not None
    (tmp_path / "run").write_text("#!/bin/sh\nexec s6-notifyoncheck -n 0 sleep 100\n")
    assert read_poll_options(str(tmp_path), True) is None  # the run script polls itself


def poller(host: FakeHost, **changes: object):
    ready: list[bool] = []
    options = DEFAULTS._replace(**changes)
    return ReadinessPoller(host, options, "svc", "/svc", lambda: ready.append(True)), ready


def test_ready_after_the_third_try_with_s6_timing(host: FakeHost) -> None:
    poll, ready = poller(host)
    poll.start()
    host.advance(0.009)
    assert host.spawned == []
    host.advance(0.001)  # -s 10 ms
    host.exit(host.current, 1)
    host.advance(0.999)
    assert len(host.spawned) == 1
    host.advance(0.001)  # -w 1000 ms after the end of the previous try
    host.exit(host.current, 1)
    host.advance(1)
    assert ready == []
    host.exit(host.current, 0)
    assert ready == [True] and poll.tries == 3 and not poll.active


def test_never_ready_after_seven_failed_tries(host: FakeHost) -> None:
    poll, ready = poller(host)
    poll.start()
    for _ in range(7):
        host.advance(1)
        host.write(host.current, b"not yet\n")
        host.exit(host.current, 3)
    host.advance(60)
    assert ready == [] and len(host.spawned) == 7 and not poll.active
    assert poll.gave_up == "readiness check failed 7 time(s): exit code 3: not yet"


def test_the_global_timeout_kills_the_running_try_and_gives_up(host: FakeHost) -> None:
    poll, ready = poller(host, global_timeout_ms=2500, tries=0)
    poll.start()
    host.advance(0.01)
    host.exit(host.current, 1)
    host.advance(1)
    pid = host.current  # this try hangs
    host.killed.clear()
    host.advance(1.48)
    assert host.killed == []
    host.advance(0.02)  # 2.5 s after the spawn
    assert host.killed == [(pid, signal.SIGKILL)]
    host.exit(pid, None, signal.SIGKILL)
    assert ready == [] and poll.gave_up.startswith("not ready after 2500 ms (-T)")
    assert host.pending() == []


def test_stopping_the_poller_kills_its_check(host: FakeHost) -> None:
    poll, _ready = poller(host)
    poll.start()
    host.advance(0.01)
    pid = host.current
    poll.stop()
    assert host.killed == [(pid, signal.SIGKILL)] and not poll.active


# --- giving up --------------------------------------------------------------------------------


def test_start_retries_give_up_on_the_retries_plus_first_quick_death() -> None:
    failures = StartFailures(GiveUpPolicy(100, 2, 1.0, 0))
    assert failures.death(0.2) is None
    assert failures.death(0.2) is None
    assert failures.death(5.0) is None  # a start that held resets the count
    assert failures.death(0.1) is None
    assert failures.death(0.1) is None
    assert failures.death(0.1) == (
        "died 3 times in a row within 1 s of starting (start-retries 2): not restarted"
    )


def test_without_start_retries_it_never_gives_up() -> None:
    failures = StartFailures(GiveUpPolicy(100, None, 1.0, 0))
    assert all(failures.death(0.0) is None for _ in range(1000))


def test_policy_files(tmp_path: Path) -> None:
    assert read_give_up(str(tmp_path)) == GiveUpPolicy(100, None, 1.0, 0)
    (tmp_path / "max-death-tally").write_text("99999\n")
    (tmp_path / "start-retries").write_text("3\n")
    (tmp_path / "start-secs").write_text("2.5\n")
    (tmp_path / "timeout-up").write_text("4000\n")
    assert read_give_up(str(tmp_path)) == GiveUpPolicy(4096, 3, 2.5, 4000)
    (tmp_path / "start-secs").write_text("soon\n")
    with pytest.raises(ValueError, match="start-secs holds 'soon'"):
        read_give_up(str(tmp_path))


def test_the_death_tally_is_bounded_and_packed_as_s6_does() -> None:
    tally = DeathTally(3)
    for i in range(5):
        tally.add(1_700_000_000.5 + i, i, None)
    tally.add(1_700_000_010.0, None, signal.SIGKILL)
    packed = tally.pack()
    assert len(packed) == 3 * 14
    records = [struct.unpack(">QLBB", packed[i : i + 14]) for i in range(0, 42, 14)]
    assert [(code, sig) for _, _, code, sig in records] == [(3, 0), (4, 0), (137, 9)]
    assert records[0][0] == (1 << 62) + 10 + 1_700_000_003 and records[0][1] == 500_000_000


# --- the service table with checks ---------------------------------------------------------------


def checked_service(tmp_path: Path, files: dict[str, str]):
    """A Service over a directory with `files`, on the table tests' fake runtime."""
    from overlayd import service as svc
    from overlayd.scan import read_service
    from tests.test_service_table_unit import FakeRuntime, make_dir

    rt = FakeRuntime()
    directory = make_dir(tmp_path / "svc", fd="notification-fd" in files, finish=False)
    for name, text in files.items():
        (directory / name).write_text(text)
    service = svc.Service(read_service("svc", str(directory)), rt)  # type: ignore[arg-type]
    return service, rt


def test_quick_deaths_past_start_retries_end_failed_and_a_start_resets(tmp_path: Path) -> None:
    from overlayd import service as svc

    service, rt = checked_service(tmp_path, {"start-retries": "1\n", "start-secs": "2\n"})
    service.start()
    for _ in range(2):
        rt.clock += 1.5  # dies 1.5 s after its start: less than start-secs
        rt.watched.pop(service.pid)(ExitStatus(1, None))
        if service.state == "backoff":
            rt.fire_timer()
    assert (service.state, service.want) == ("failed", "down")
    assert service.reason == (
        "died 2 times in a row within 2 s of starting (start-retries 1): not restarted"
    )
    service.fire(svc.START)
    assert service.state == "up" and service.checks.failures.count == 0


def test_timeout_up_stops_a_starting_service_and_leaves_it_failed(tmp_path: Path) -> None:
    service, rt = checked_service(tmp_path, {"notification-fd": "3\n", "timeout-up": "500\n"})
    service.start()
    assert service.state == "starting"
    assert [t.delay for t in rt.live_timers()] == [0.5]
    rt.fire_timer()  # timeout-up
    assert service.state == "stopping" and rt.signals[0][1] == signal.SIGTERM
    rt.watched.pop(service.pid)(ExitStatus(None, signal.SIGTERM))
    assert (service.state, service.reason) == (
        "failed", "not ready within timeout-up (500 ms): start failed"
    )
    service._close_notification()


def test_a_service_ready_in_time_cancels_timeout_up(tmp_path: Path) -> None:
    from overlayd import service as svc

    service, rt = checked_service(tmp_path, {"notification-fd": "3\n", "timeout-up": "500\n"})
    service.start()
    service.fire(svc.NOTIFIED)
    assert service.state == "ready" and rt.live_timers() == []


def test_a_check_that_never_stops_printing_is_cut_off_after_the_output_bound(
    host: FakeHost,
) -> None:
    from overlayd.check_process import OUTPUT_MAX

    results: list[CheckResult] = []
    run = CheckRun(host, ["check"], "/", None, results.append)
    fd = host.running[run.pid][1]
    os.set_blocking(fd, False)
    written = 0
    while host.readers:  # the check writes as fast as PID 1 reads
        try:
            written += os.write(fd, b"y" * 65536)
        except BlockingIOError:
            pass
        for callback in list(host.readers.values()):
            callback()
    assert OUTPUT_MAX <= written <= OUTPUT_MAX + 2 * 65536
    with pytest.raises(BrokenPipeError):  # its next write fails: SIGPIPE for a real check
        os.write(fd, b"more")
    host.exit(run.pid, None, signal.SIGPIPE)
    assert not results[0].passed and results[0].output == "y" * LAST_LINE_MAX


def test_a_check_that_cannot_be_exec_prepared_fails_cleanly(host: FakeHost) -> None:
    def refuse(argv: list[str], cwd: str) -> tuple[int, int]:
        raise ValueError("embedded null byte")

    host.spawn_check = refuse  # type: ignore[method-assign]
    results: list[CheckResult] = []
    CheckRun(host, ["che\0ck"], "/", 1.0, results.append)
    host.advance(0)
    assert results[0].what == "cannot start che\0ck: embedded null byte"
