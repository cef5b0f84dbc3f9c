"""Every overlayctl command, through the real CLI, against overlayd running as PID 1 (issue #3,
item 7).

Each test runs `python -m overlayctl --socket …` as a user would and checks what that user sees:
the exit code, the text on stdout and stderr, the lines the services print (a run script that
traps a signal says so), pids, and bytes on disk. Nothing waits by sleeping: it waits for an
output line, for `overlayctl wait`, or for a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from overlayd import __version__ as OVERLAYD_VERSION
from protocol import PROTOCOL_VERSION, pack_request
from tests.harness import (
    DEADLINE,
    PYTHON,
    REPO,
    Booted,
    Tree,
    can_unshare,
    wait_until,
    write_to_reader,
)

STATUS_COLUMNS = [
    "name", "state", "pid", "uptime", "restarts", "last exit", "ready", "health", "checked",
]
#: DESIGN §6: stable keys of a JSON status record (additions allowed, removals never).
RECORD_KEYS = {
    "name", "state", "want", "pid", "pgid", "since", "restarts", "last_exit", "ready",
    "normally_up",
}  # fmt: skip
COMMANDS = [
    "status", "start", "stop", "restart", "once", "signal", "wait", "check", "shutdown",
    "events", "version",
]  # fmt: skip

# Run scripts. A trap only runs between commands, so the script waits in `wait` (which a
# trapped signal interrupts) on a background sleep rather than in a foreground one.
SLEEP = "exec sleep 1000"
IDLE_LOOP = "while :; do sleep 1000 & wait $!; done"


def traps(name: str, *signals_: str, exit_on: tuple[str, ...] = ()) -> str:
    """A run script that prints `NAME-got-SIG` for each signal it traps, then `NAME-running`.

    Signals in `exit_on` make it exit 0 after printing (and reap its sleep).
    """
    lines = []
    for sig in signals_:
        end = "; kill $! 2>/dev/null; exit 0" if sig in exit_on else ""
        lines.append(f"trap 'echo {name}-got-{sig}{end}' {sig}")
    lines += [f"echo {name}-running", IDLE_LOOP]
    return "\n".join(lines)


def notifying(name: str) -> str:
    """A run script with `notification-fd` 3 that says it is ready at once."""
    return f"echo >&3\necho {name}-ready\n{SLEEP}"


NOTIFY = {"notification-fd": "3\n"}


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture
def overlay(tree: Tree, boot: Callable[..., Booted]) -> Callable[..., Booted]:
    """overlay(*cmd, **env) → a PID-1 overlayd over `tree`, its control socket answering."""
    if not can_unshare():
        pytest.skip("needs root and unshare (PID namespace)")

    def start(*cmd: str, **env: str) -> Booted:
        booted = boot(*cmd, env=env)
        wait_until(booted.socket.exists, 10, "the control socket")
        return booted

    return start


def ok(booted: Booted, *args: str) -> str:
    """Run `overlayctl ARGS`; it must exit 0 with nothing on stderr. Returns its stdout."""
    done = booted.ctl(*args)
    assert (done.returncode, done.stderr) == (0, ""), (args, done.stdout, done.stderr)
    return done.stdout


def records(booted: Booted, *names: str) -> list[dict[str, object]]:
    return json.loads(ok(booted, "--json", "status", *names))


def record(booted: Booted, name: str) -> dict[str, object]:
    (found,) = records(booted, name)
    return found


def state_of(booted: Booted, name: str) -> str:
    return str(record(booted, name)["state"])


def parse_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The header cells and row cells of an `overlayctl status` table.

    Columns are read off the dashed rule under the header, so a cell with a space in it
    ("last exit") stays one cell.
    """
    header, rule, *rows = text.rstrip("\n").split("\n")
    assert re.fullmatch(r"-+( {2}-+)*", rule), rule
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]

    def cells(line: str) -> list[str]:
        return [line[start:end].strip() for start, end in spans]

    return cells(header), [cells(row) for row in rows]


def table_rows(booted: Booted, *names: str) -> dict[str, dict[str, str]]:
    """`overlayctl status` as {name: {column: cell}}."""
    header, rows = parse_table(ok(booted, "status", *names))
    assert header in (STATUS_COLUMNS, [*STATUS_COLUMNS, "reason"])  # why: backoff, failed
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def make_fifo(tree: Tree, name: str) -> Path:
    path = tree.base / name
    os.mkfifo(path)
    return path


def release(fifo: Path) -> None:
    """Write a line into `fifo` once a script has it open for reading."""
    write_to_reader(fifo, b"go\n")


def overlayctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with no overlayd behind it (and no OVERLAY_* variables unless given)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAY_")}
    return subprocess.run(
        [PYTHON, "-m", "overlayctl", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        cwd=str(REPO),
        env={**base, **(env or {})},
    )


class Follow:
    """A long-running `overlayctl` (events, wait): its stdout lines as they arrive."""

    def __init__(self, booted: Booted, *args: str) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "overlayctl", "--socket", str(booted.socket), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str] | None:
        """The first line matching `pattern`, waiting up to `timeout`; None if none came."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                left = end - time.monotonic()
                if left <= 0 or self._eof:
                    return None
                self._cond.wait(left)

    def connected(self) -> bool:
        """Has it opened its connection to overlayd (a socket among its fds)?"""
        try:
            fds = os.listdir(f"/proc/{self.proc.pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{self.proc.pid}/fd/{fd}").startswith("socket:"):
                    return True
            except OSError:
                continue
        return False

    def blocked(self, booted: Booted) -> bool:
        """Connected, and still running after another client's full round trip.

        The request follows the connection within microseconds, so by the time a second
        overlayctl has started, asked and been answered, a wait that was going to return at
        once has returned.
        """
        wait_until(self.connected, what="overlayctl to connect")
        ok(booted, "status")
        return self.proc.poll() is None

    def finish(self, timeout: float = DEADLINE) -> tuple[int, str]:
        """Exit code and stderr, once it ended."""
        code = self.proc.wait(timeout)
        self._thread.join(5)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def follow() -> Iterator[Callable[..., Follow]]:
    started: list[Follow] = []

    def start(booted: Booted, *args: str) -> Follow:
        started.append(Follow(booted, *args))
        return started[-1]

    yield start
    for follower in started:
        follower.close()


# --- status ----------------------------------------------------------------------------------


def test_status_table_has_the_columns_and_one_row_per_service(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", "echo web-running\n" + SLEEP)
    tree.service("idle", SLEEP, down=True)
    tree.service("warming", SLEEP, files=NOTIFY)  # never says it is ready
    booted = overlay()
    booted.wait_for(r"^web-running$")
    assert ok(booted, "wait", "--up", "web", "warming") == ""

    rows = table_rows(booted)
    assert sorted(rows) == ["idle", "warming", "web"]
    pids = {r["name"]: r["pid"] for r in records(booted)}
    web, idle, warming = rows["web"], rows["idle"], rows["warming"]
    assert web["state"] == "up" and web["pid"] == str(pids["web"])
    assert re.fullmatch(r"\d+s", web["uptime"]), web
    assert (web["restarts"], web["last exit"], web["ready"]) == ("0", "-", "yes")
    assert idle == {
        "name": "idle", "state": "down", "pid": "-", "uptime": "-", "restarts": "0",
        "last exit": "-", "ready": "no", "health": "-", "checked": "-",
    }  # fmt: skip
    assert warming["state"] == "starting" and warming["pid"] == str(pids["warming"])
    assert re.fullmatch(r"\d+s", warming["uptime"]) and warming["ready"] == "no"


@pytest.mark.parametrize("where", ["before", "after"])
def test_status_json_lists_records_with_the_stable_keys(
    tree: Tree, overlay: Callable[..., Booted], where: str
) -> None:
    tree.service("web", SLEEP)
    tree.service("idle", SLEEP, down=True)
    booted = overlay()
    ok(booted, "wait", "--up", "web")
    args = ("--json", "status") if where == "before" else ("status", "--json")
    started = time.time()
    answer = json.loads(ok(booted, *args))

    assert isinstance(answer, list) and len(answer) == 2
    by_name = {r["name"]: r for r in answer}
    for one in answer:
        assert set(one) >= RECORD_KEYS, one
    web, idle = by_name["web"], by_name["idle"]
    assert web["state"] == "up" and web["want"] == "up"
    assert isinstance(web["pid"], int) and web["pgid"] == web["pid"]
    assert started - 60 < web["since"] <= time.time()
    assert (web["restarts"], web["last_exit"], web["ready"], web["normally_up"]) == (
        0, None, True, True,
    )  # fmt: skip
    assert (idle["state"], idle["want"], idle["pid"], idle["pgid"]) == ("down", "down", None, None)
    assert (idle["ready"], idle["normally_up"]) == (False, False)

    # After an exit, last_exit is {code, signal, at}.
    ok(booted, "restart", "web")
    ok(booted, "wait", "--up", "web")
    last = json.loads(ok(booted, *args, "web"))[0]["last_exit"]
    assert set(last) == {"code", "signal", "at"}
    assert last["signal"] == signal.SIGTERM and started - 60 < last["at"] <= time.time()


def test_status_name_shows_only_the_named_services_in_that_order(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    for name in ("alpha", "beta", "gamma"):
        tree.service(name, SLEEP)
    booted = overlay()
    ok(booted, "wait", "alpha", "beta", "gamma")
    header, rows = parse_table(ok(booted, "status", "beta"))
    assert header == STATUS_COLUMNS and [row[0] for row in rows] == ["beta"]
    _, rows = parse_table(ok(booted, "status", "gamma", "alpha"))
    assert [row[0] for row in rows] == ["gamma", "alpha"]
    assert [r["name"] for r in records(booted, "gamma")] == ["gamma"]


# --- start, stop, restart, once, signal ------------------------------------------------------


def test_start_runs_a_normally_down_service(tree: Tree, overlay: Callable[..., Booted]) -> None:
    tree.service("idle", "echo idle-running\n" + SLEEP, down=True)
    booted = overlay()
    assert (state_of(booted, "idle"), booted.count(r"^idle-running$")) == ("down", 0)

    said = ok(booted, "start", "idle")  # returns once it is up, saying so
    now = record(booted, "idle")
    assert (now["state"], now["want"], now["normally_up"]) == ("up", "up", False)
    assert said == f"idle: started, up (pid {now['pid']})\n"
    booted.wait_for(r"^idle-running$")


def test_stop_sends_the_down_signal_and_the_service_goes_down(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service(
        "hupper",
        traps("hupper", "HUP", "TERM", exit_on=("HUP", "TERM")),
        files={"down-signal": "HUP\n"},
    )
    booted = overlay()
    booted.wait_for(r"^hupper-running$")

    pid = record(booted, "hupper")["pid"]
    said = ok(booted, "stop", "hupper")  # returns once it is down
    now = record(booted, "hupper")
    assert (now["state"], now["want"], now["pid"]) == ("down", "down", None)
    assert said == f"hupper: stopped (pid {pid}, exit code 0)\n"
    booted.wait_for(r"^hupper-got-HUP$")
    assert now["last_exit"]["code"] == 0  # its trap exited 0
    assert booted.count(r"^hupper-got-TERM$") == 0, "the down signal is HUP, not TERM"


def test_restart_gives_a_new_pid_and_counts_the_restart(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", "echo web-running\n" + SLEEP)
    booted = overlay()
    booted.wait_for(r"^web-running$")
    ok(booted, "wait", "--up", "web")
    before = record(booted, "web")

    said = ok(booted, "restart", "web")  # returns once the new process is up
    after = record(booted, "web")
    assert said == f"web: restarted (pid {before['pid']} → {after['pid']})\n"
    booted.wait_for(r"^web-running$", count=2)
    assert after["state"] == "up" and isinstance(after["pid"], int)
    assert after["pid"] != before["pid"]
    assert (before["restarts"], after["restarts"]) == (0, 1)
    assert table_rows(booted)["web"]["last exit"] == "SIGTERM"


def test_once_runs_once_and_is_not_restarted_after_it_exits(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("job", "echo job-ran\nexit 0", down=True)
    booted = overlay()
    assert re.fullmatch(r"job: started once, up \(pid \d+\)\n", ok(booted, "once", "job"))
    booted.wait_for(r"^job-ran$")
    ok(booted, "wait", "--down", "job")
    # Down, not backoff: nothing is going to start it again.
    done = record(booted, "job")
    assert (done["state"], done["want"], done["restarts"]) == ("down", "down", 0)
    assert done["last_exit"]["code"] == 0

    ok(booted, "shutdown")
    assert booted.wait() == 0
    assert booted.count(r"^job-ran$") == 1, booted.output


@pytest.mark.parametrize("spelling", ["HUP", "SIGHUP", "hup", "1"])
def test_signal_reaches_the_run_script(
    tree: Tree, overlay: Callable[..., Booted], spelling: str
) -> None:
    tree.service("reloader", traps("reloader", "HUP"))
    booted = overlay()
    booted.wait_for(r"^reloader-running$")
    before = record(booted, "reloader")

    assert ok(booted, "signal", spelling, "reloader") == ""
    booted.wait_for(r"^reloader-got-HUP$")
    after = record(booted, "reloader")
    assert (after["state"], after["pid"], after["restarts"]) == ("up", before["pid"], 0)


def test_signal_to_a_service_that_is_not_running_is_refused(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("idle", SLEEP, down=True)
    booted = overlay()
    done = booted.ctl("signal", "HUP", "idle")
    assert done.returncode == 4
    assert done.stderr == "overlayctl: service idle is not running (state down)\n"


def test_signal_goes_to_the_main_process_and_stop_to_the_whole_group(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    # As s6-svc: `signal` reaches the process `run` became, not its children; `stop` (the
    # down signal) reaches the whole process group.
    child = (
        'trap "echo child-got-HUP" HUP; trap "echo child-got-TERM; exit 0" TERM; '
        f"echo child-running; {IDLE_LOOP}"
    )
    parent = "\n".join(
        [
            "trap 'echo parent-got-HUP' HUP",
            "trap 'echo parent-got-TERM; exit 0' TERM",
            f"sh -c '{child}' &",
            IDLE_LOOP,
        ]
    )
    tree.service("wrapper", parent)
    booted = overlay()
    booted.wait_for(r"^child-running$")
    ok(booted, "signal", "HUP", "wrapper")
    booted.wait_for(r"^parent-got-HUP$")
    ok(booted, "stop", "wrapper")
    booted.wait_for(r"^parent-got-TERM$")
    booted.wait_for(r"^child-got-TERM$")
    # The child would have run its HUP trap at once, and before a later TERM's.
    assert booted.count(r"^child-got-HUP$") == 0, booted.output
    ok(booted, "wait", "--down", "wrapper")


def seconds(uptime: str) -> int:
    """An uptime cell under a minute (`7s`) as a number."""
    match = re.fullmatch(r"(\d+)s", uptime)
    assert match, uptime
    return int(match.group(1))


def test_uptime_of_a_notifying_service_counts_from_its_start(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    gate = make_fifo(tree, "gate")
    tree.service("web", SLEEP)
    tree.service("db", f"read go < {gate}\necho >&3\necho db-ready\n{SLEEP}", files=NOTIFY)
    booted = overlay()
    ok(booted, "wait", "--up", "web", "db")  # both started at boot, a few ms apart
    wait_until(lambda: seconds(table_rows(booted)["web"]["uptime"]) >= 2, what="2 s of uptime")
    release(gate)
    booted.wait_for(r"^db-ready$")
    ok(booted, "wait", "--ready", "db")
    rows = table_rows(booted)
    assert abs(seconds(rows["db"]["uptime"]) - seconds(rows["web"]["uptime"])) <= 1, rows


# --- wait ------------------------------------------------------------------------------------


def test_wait_up_ready_down_exit_0_when_already_there(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", SLEEP)
    tree.service("db", notifying("db"), files=NOTIFY)
    tree.service("idle", SLEEP, down=True)
    booted = overlay()
    booted.wait_for(r"^db-ready$")
    for args in (
        ("wait", "web"),  # --up is the default
        ("wait", "--up", "web", "db"),
        ("wait", "--up", "--timeout", "5", "web"),
        ("wait", "--ready", "db", "web"),  # web has no notification-fd: up is ready
        ("wait", "--ready", "--timeout", "5", "db"),
        ("wait", "--down", "idle"),
        ("wait", "--down", "--timeout", "5", "idle"),
    ):
        assert ok(booted, *args) == "", args
    assert state_of(booted, "db") == "ready"


def test_wait_timeout_exits_1_naming_the_late_service(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", SLEEP)
    tree.service("warming", SLEEP, files=NOTIFY)  # never ready
    tree.service("idle", SLEEP, down=True)
    booted = overlay()
    ok(booted, "wait", "--up", "web", "warming")
    for condition, name in (("--down", "web"), ("--ready", "warming"), ("--up", "idle")):
        started = time.monotonic()
        done = booted.ctl("wait", condition, "--timeout", "0.3", "web", name)
        assert done.returncode == 1, (condition, done.stderr)
        assert done.stdout == ""
        assert re.fullmatch(rf"overlayctl: wait \w+: timed out after 0\.3 s: {name}\n", done.stderr)
        assert time.monotonic() - started < 10


def test_wait_ready_returns_when_the_service_becomes_ready(
    tree: Tree, overlay: Callable[..., Booted], follow: Callable[..., Follow]
) -> None:
    gate = make_fifo(tree, "gate")
    tree.service(
        "db", f"echo db-waiting\nread go < {gate}\necho >&3\necho db-ready\n{SLEEP}", files=NOTIFY
    )
    booted = overlay()
    booted.wait_for(r"^db-waiting$")
    assert booted.ctl("wait", "--ready", "--timeout", "0.2", "db").returncode == 1

    waiter = follow(booted, "wait", "--ready", "db")  # no --timeout: blocks until ready
    assert waiter.blocked(booted), "wait --ready returned before db was ready"
    assert state_of(booted, "db") == "starting"
    release(gate)
    booted.wait_for(r"^db-ready$")
    assert waiter.finish() == (0, "")
    assert state_of(booted, "db") == "ready" and record(booted, "db")["ready"] is True


def test_wait_down_returns_when_the_service_stops(
    tree: Tree, overlay: Callable[..., Booted], follow: Callable[..., Follow]
) -> None:
    tree.service("web", traps("web", "TERM", exit_on=("TERM",)))
    booted = overlay()
    booted.wait_for(r"^web-running$")
    waiter = follow(booted, "wait", "--down", "web")
    ok(booted, "wait", "--up", "web")
    assert waiter.blocked(booted), "wait --down returned while web was up"
    ok(booted, "stop", "web")
    assert waiter.finish() == (0, "")
    booted.wait_for(r"^web-got-TERM$")  # the line may still be on its way to the reader
    assert booted.count(r"^web-got-TERM$") == 1
    assert state_of(booted, "web") == "down"


def test_wait_with_two_conditions_is_a_usage_error(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", SLEEP)
    booted = overlay()
    done = booted.ctl("wait", "--up", "--down", "web")
    assert done.returncode == 2
    assert "give only one of --up, --ready, --down" in done.stderr
    assert done.stderr.count("\n") == 1


# --- check -----------------------------------------------------------------------------------


def test_check_healthy_exits_0_silently(tree: Tree, overlay: Callable[..., Booted]) -> None:
    tree.service("web", SLEEP)
    tree.service("db", notifying("db"), files=NOTIFY)
    tree.service("idle", SLEEP, down=True)  # normally down: not a problem
    booted = overlay()
    ok(booted, "wait", "--ready", "web", "db")
    assert ok(booted, "check") == ""
    assert json.loads(ok(booted, "--json", "check")) == {"healthy": True, "problems": []}


def test_check_unhealthy_exits_1_naming_each_culprit(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", SLEEP)
    tree.service("crashy", "echo crashy-ran\nexit 3")  # a crash loop: mostly in backoff
    tree.service("warming", SLEEP, files=NOTIFY)  # up, never ready
    tree.service("doomed", "exit 3", finish="exit 125")  # permanent failure
    booted = overlay()
    ok(booted, "wait", "--down", "doomed")
    ok(booted, "wait", "--up", "web", "warming")
    booted.wait_for(r"^crashy-ran$", count=2)  # it has been restarted: it crash-loops

    def unhealthy_with_three() -> subprocess.CompletedProcess[str] | None:
        done = booted.ctl("check")
        return done if done.stderr.count("\n") == 3 else None  # crashy may be up for a moment

    done = wait_until(unhealthy_with_three, what="check to name three culprits")
    assert done.returncode == 1 and done.stdout == ""
    lines = sorted(done.stderr.splitlines())
    assert lines[0].startswith("overlayctl: check: crashy is backoff (")
    assert lines[1].startswith("overlayctl: check: doomed is failed (")
    assert "125" in lines[1]
    assert lines[2] == "overlayctl: check: warming is starting (up but not ready)"
    assert "web" not in done.stderr


def test_check_service_stopped_on_request_is_not_a_failure(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", SLEEP)
    tree.service("db", SLEEP)
    booted = overlay()
    ok(booted, "wait", "web", "db")
    ok(booted, "stop", "web")
    ok(booted, "wait", "--down", "web")
    assert record(booted, "web")["normally_up"] is True
    assert ok(booted, "check") == ""


def test_finish_exiting_125_leaves_the_service_failed_and_not_restarted(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    finish = 'echo "doomed-finish $1 $2 $3"\nexit 125'
    tree.service("doomed", "echo doomed-ran\nexit 3", finish=finish)
    booted = overlay()
    booted.wait_for(r"^doomed-finish 3 0 doomed$")
    ok(booted, "wait", "--down", "doomed")  # failed counts as down: nothing will start it
    now = record(booted, "doomed")
    assert (now["state"], now["want"], now["pid"], now["restarts"]) == ("failed", "down", None, 0)
    assert now["last_exit"]["code"] == 3
    row = table_rows(booted)["doomed"]
    assert (row["state"], row["last exit"]) == ("failed", "3")
    assert row["reason"] == "finish exited 125 (permanent failure): not restarted"
    assert booted.count(r"^doomed-ran$") == 1

    # Failed is not a dead end: starting it by hand runs it again.
    ok(booted, "start", "doomed")
    booted.wait_for(r"^doomed-finish 3 0 doomed$", count=2)
    ok(booted, "wait", "--down", "doomed")
    assert record(booted, "doomed")["state"] == "failed"
    assert booted.count(r"^doomed-ran$") == 2


# --- shutdown --------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "container"), [("7", 7), ("263", 7), ("-1", 255), ("0", 0)])
def test_shutdown_exit_code_is_the_containers_and_cont_finish_runs(
    tree: Tree, overlay: Callable[..., Booted], given: str, container: int
) -> None:
    marker = tree.base / "finished"
    tree.service("web", traps("web", "TERM", exit_on=("TERM",)))
    tree.script("cont-finish.d", "10-note", f"printf 'cont-finish ran\\n' > {marker}")
    booted = overlay()
    booted.wait_for(r"^web-running$")

    assert ok(booted, "shutdown", "--exit-code", given) == ""
    assert booted.wait() == container
    assert marker.read_bytes() == b"cont-finish ran\n"
    assert booted.count(r"^web-got-TERM$") == 1
    gone = booted.ctl("status")
    assert gone.returncode == 3 and str(booted.socket) in gone.stderr


# --- events ----------------------------------------------------------------------------------


def test_events_shows_a_restart_as_it_happens(
    tree: Tree, overlay: Callable[..., Booted], follow: Callable[..., Follow]
) -> None:
    tree.service("web", SLEEP)
    tree.service("ping", "exit 0", down=True)
    booted = overlay()
    ok(booted, "wait", "web")
    events = follow(booted, "events")

    def subscribed() -> bool:
        # A state change we cause; once events prints one, it is surely subscribed.
        ok(booted, "once", "ping")
        return events.wait_for(r"^\S+ ping down\b", timeout=1.0) is not None

    wait_until(subscribed, what="overlayctl events to print a state change")
    old = record(booted, "web")["pid"]
    ok(booted, "restart", "web")
    ok(booted, "wait", "--up", "web")
    new = record(booted, "web")["pid"]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"
    assert events.wait_for(rf"^{stamp} web stopping pid={old}$")
    assert events.wait_for(rf"^{stamp} web down exit=SIGTERM$")
    assert events.wait_for(rf"^{stamp} web up pid={new}$")

    events.proc.send_signal(signal.SIGINT)  # ^C is the way out, and not an error
    assert events.finish() == (0, "")


def test_events_json_prints_one_record_per_line(
    tree: Tree, overlay: Callable[..., Booted], follow: Callable[..., Follow]
) -> None:
    tree.service("ping", "exit 0", down=True)
    booted = overlay()
    events = follow(booted, "--json", "events")

    def subscribed() -> bool:
        ok(booted, "once", "ping")
        return events.wait_for(r'"state":"down"', timeout=1.0) is not None

    wait_until(subscribed, what="overlayctl --json events to print a state change")
    line = events.wait_for(r'"state":"down"').string
    event = json.loads(line)
    assert set(event) >= RECORD_KEYS and event["name"] == "ping"
    ok(booted, "shutdown")
    assert booted.wait() == 0
    assert events.finish() == (0, ""), "events ends quietly when overlayd goes away"


# --- version, errors, help -------------------------------------------------------------------


def test_version_shows_client_and_server(tree: Tree, overlay: Callable[..., Booted]) -> None:
    booted = overlay()
    assert ok(booted, "version") == (
        f"overlayctl {OVERLAYD_VERSION}\n"
        f"overlayd {OVERLAYD_VERSION} (protocol {PROTOCOL_VERSION})\n"
    )
    assert json.loads(ok(booted, "--json", "version")) == {
        "client": OVERLAYD_VERSION,
        "server": f"overlayd {OVERLAYD_VERSION}",
        "protocol": PROTOCOL_VERSION,
    }


def test_unknown_service_exits_4_naming_it(tree: Tree, overlay: Callable[..., Booted]) -> None:
    tree.service("web", SLEEP)
    booted = overlay()
    ok(booted, "wait", "web")
    pid = record(booted, "web")["pid"]
    seen = {}
    for args in (
        ("status", "nosuch"),
        ("start", "nosuch"),
        ("stop", "web", "nosuch"),  # one unknown name: nothing is done, web keeps running
        ("restart", "nosuch", "web"),
        ("once", "nosuch"),
        ("signal", "KILL", "web", "nosuch"),
        ("wait", "nosuch"),
        ("wait", "--down", "--timeout", "1", "nosuch"),
    ):
        done = booted.ctl(*args)
        seen[args] = (done.returncode, done.stdout, done.stderr)
    assert set(seen.values()) == {(4, "", "overlayctl: no such service: nosuch\n")}, seen
    now = record(booted, "web")
    assert (now["state"], now["pid"], now["restarts"]) == ("up", pid, 0)


@pytest.mark.parametrize(
    "args",
    [
        ("status",), ("status", "web"), ("check",), ("version",), ("start", "web"),
        ("stop", "web"), ("restart", "web"), ("once", "web"), ("signal", "HUP", "web"),
        ("wait", "web"), ("shutdown",), ("events",),
    ],
)  # fmt: skip
def test_no_socket_exits_3_naming_the_socket(tmp_path: Path, args: tuple[str, ...]) -> None:
    path = tmp_path / "nowhere.sock"
    done = overlayctl("--socket", str(path), *args)
    assert done.returncode == 3, done
    *_, last = done.stderr.splitlines()
    assert done.stderr.count("\n") == 1
    assert last == f"overlayctl: cannot reach overlayd at {path}: No such file or directory"


@pytest.mark.parametrize("variable", ["OVERLAY_SOCKET", "OVERLAY_RUN_DIR"])
def test_no_socket_message_names_the_socket_from_the_environment(
    tmp_path: Path, variable: str
) -> None:
    value = str(tmp_path / ("x.sock" if variable == "OVERLAY_SOCKET" else "run"))
    expected = value if variable == "OVERLAY_SOCKET" else f"{value}/control.sock"
    done = overlayctl("check", env={variable: value})
    assert done.returncode == 3
    assert f"cannot reach overlayd at {expected}:" in done.stderr


def test_stale_socket_exits_3_connection_refused(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))  # what an overlayd killed by SIGKILL leaves behind
    left.close()
    done = overlayctl("--socket", str(path), "status")
    assert done.returncode == 3
    assert done.stderr == f"overlayctl: cannot reach overlayd at {path}: Connection refused\n"


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_for_each_command_exits_0(command: str) -> None:
    done = overlayctl(*([command] if command else []), "--help")
    assert (done.returncode, done.stderr) == (0, ""), done
    assert done.stdout.startswith(f"Usage: overlayctl {command}".rstrip() + " ")
    if not command:
        for name in COMMANDS:
            assert re.search(rf"^\s+{name}\s", done.stdout, re.M), name


def test_client_refused_when_full_says_too_many_clients(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", SLEEP)
    booted = overlay(OVERLAY_RPC_IDLE_TIMEOUT="60")
    held = []
    try:
        for msgid in range(128):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(str(booted.socket))
            sock.sendall(pack_request(msgid, "hello", []))
            assert sock.recv(1 << 16)  # accepted and answered
            held.append(sock)
        done = booted.ctl("status")
        assert done.returncode == 4, done
        assert done.stderr == (
            "overlayctl: too many clients: overlayd serves at most 128 at once; try again later\n"
        )
        held.pop().close()
        wait_until(lambda: booted.ctl("status").returncode == 0, what="a free slot")
    finally:
        for sock in held:
            sock.close()


# --- the Python client -----------------------------------------------------------------------

HEALTH_SCRIPT = """
import sys

from overlayctl.client import Client, ClientError

try:
    records = Client(sys.argv[1], timeout=5).status()
except ClientError as exc:
    print(f"unreachable: {exc}")
    sys.exit(2)
bad = [r["name"] for r in records
       if r["state"] in ("failed", "backoff")
       or (r["want"] == "up" and r["state"] not in ("up", "ready"))]
for r in records:
    print(r["name"], r["state"])
print("unhealthy: " + " ".join(bad) if bad else "healthy")
sys.exit(1 if bad else 0)
"""


def test_python_client_status_from_a_health_check_script(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    script = tree.base / "healthcheck.py"
    script.write_text(HEALTH_SCRIPT)
    tree.service("web", SLEEP)
    tree.service("doomed", "exit 3", finish="exit 125", down=True)
    booted = overlay()
    ok(booted, "wait", "web")

    def health() -> tuple[int, str]:
        done = subprocess.run(
            [PYTHON, str(script), str(booted.socket)],
            capture_output=True, text=True, timeout=DEADLINE, cwd=str(REPO),
            env={"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        assert done.stderr == ""
        return done.returncode, done.stdout

    assert health() == (0, "doomed down\nweb up\nhealthy\n")
    ok(booted, "start", "doomed")
    ok(booted, "wait", "--down", "doomed")
    assert health() == (1, "doomed failed\nweb up\nunhealthy: doomed\n")
    ok(booted, "shutdown")
    booted.wait()
    code, out = health()
    assert code == 2 and out.startswith(f"unreachable: cannot reach overlayd at {booted.socket}")


# --- the eight states ------------------------------------------------------------------------


def test_every_state_shows_in_status(tree: Tree, overlay: Callable[..., Booted]) -> None:
    gate = make_fifo(tree, "gate")
    tree.service("idle", SLEEP, down=True)  # down
    tree.service("warming", SLEEP, files=NOTIFY)  # starting: never ready
    tree.service("web", SLEEP)  # up
    tree.service("db", notifying("db"), files=NOTIFY)  # ready
    tree.service("stubborn", traps("stubborn", "TERM", "USR1", exit_on=("USR1",)))  # stopping
    tree.service(  # finishing: its finish waits on a fifo we hold
        "cleanup", "echo cleanup-ran\nexit 0", finish=f"read go < {gate}\necho cleanup-finished",
        down=True, files={"timeout-finish": "60000\n"},
    )  # fmt: skip
    tree.service("crashy", "exit 1")  # backoff
    tree.service("doomed", "exit 3", finish="exit 125")  # failed
    booted = overlay()
    booted.wait_for(r"^stubborn-running$")
    booted.wait_for(r"^db-ready$")
    ok(booted, "stop", "--no-wait", "stubborn")
    booted.wait_for(r"^stubborn-got-TERM$")  # ...and it keeps running: no timeout-kill
    ok(booted, "once", "cleanup")
    booted.wait_for(r"^cleanup-ran$")
    expected = {
        "idle": "down", "warming": "starting", "web": "up", "db": "ready",
        "stubborn": "stopping", "cleanup": "finishing", "crashy": "backoff", "doomed": "failed",
    }  # fmt: skip

    def all_eight() -> dict[str, dict[str, str]] | None:
        rows = table_rows(booted)
        states = {name: row["state"] for name, row in rows.items()}
        return rows if states == expected else None

    rows = wait_until(all_eight, what=f"status to show {expected}")
    assert sorted(row["state"] for row in rows.values()) == sorted(  # type: ignore[union-attr]
        ["down", "starting", "up", "ready", "stopping", "finishing", "backoff", "failed"]
    )

    # Out of the two states we hold them in: both end down.
    release(gate)
    booted.wait_for(r"^cleanup-finished$")
    ok(booted, "signal", "USR1", "stubborn")
    booted.wait_for(r"^stubborn-got-USR1$")
    ok(booted, "wait", "--down", "--timeout", "10", "cleanup", "stubborn")
    assert state_of(booted, "cleanup") == state_of(booted, "stubborn") == "down"
