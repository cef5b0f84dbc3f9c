"""Unit tests for overlayctl's command line: formatting, parsing, exit codes, the cheap path.

No overlayd runs here. Commands get a stub client through `Invocation.factory` (the same hook
`dispatch.run` and `cli.run` take); the subprocess tests point at a socket that does not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayctl import commands, dispatch, render
from overlayctl.client import ConnectError, ProtocolMismatch, RemoteError
from overlayctl.dispatch import Call
from overlayctl.signals import parse_signal, signal_name

REPO = Path(__file__).resolve().parent.parent
HEAVY_MODULES = ("typer", "click", "rich", "tabulate")
ALL_COMMANDS = (
    "status",
    "start",
    "stop",
    "restart",
    "once",
    "signal",
    "wait",
    "check",
    "shutdown",
    "events",
    "version",
    "pid",
    "rescan",
)


# -- a stub client --------------------------------------------------------------------------


class StubClient:
    """Stands in for overlayctl.client.Client: records calls, returns canned answers."""

    def __init__(self, **answers: object) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []
        self.closed = False

    def _answer(self, method: str, *args: object, **kwargs: object) -> object:
        self.calls.append((method, args, kwargs))
        answer = self.answers.get(method)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def hello(self) -> object:
        return self._answer("hello")

    def status(self, names: object = (), details: bool = False) -> object:
        return self._answer("status", names=names, details=details)

    def start(self, names: object) -> object:
        return self._answer("start", names)

    def stop(self, names: object) -> object:
        return self._answer("stop", names)

    def restart(self, names: object) -> object:
        return self._answer("restart", names)

    def once(self, names: object) -> object:
        return self._answer("once", names)

    def signal(self, sig: object, names: object, group: bool = False) -> object:
        if group:
            return self._answer("signal", sig, names, group=True)
        return self._answer("signal", sig, names)

    def rescan(self) -> object:
        return self._answer("rescan")

    def watch_status(self, names: object = ()) -> object:
        """Subscribe and status in one: answers with the `status` answer."""
        self.calls.append(("watch_status", (names,), {}))
        answer = self.answers.get("status")
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def next_state(self, timeout: float | None) -> object:
        states = self.answers.get("states") or []
        if not states:
            if timeout is None:
                raise AssertionError("would block forever")
            return None
        answer = states.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def wait(self, condition: str, names: object, timeout: object = None) -> object:
        return self._answer("wait", condition, names, timeout=timeout)

    def check(self) -> object:
        return self._answer("check")

    def shutdown(self, exit_code: object = None) -> object:
        return self._answer("shutdown", exit_code=exit_code)

    def subscribe(self) -> object:
        self.calls.append(("subscribe", (), {}))
        return self.answers["subscribe"]()

    def close(self) -> None:
        self.closed = True


class Factory:
    """Records the socket path and timeout each connection was asked for."""

    def __init__(self, client: StubClient | None = None, error: Exception | None = None) -> None:
        self.client = client or StubClient()
        self.error = error
        self.opened: list[tuple[str | None, float | None]] = []

    def __call__(self, path: str | None, timeout: float | None) -> StubClient:
        self.opened.append((path, timeout))
        if self.error is not None:
            raise self.error
        return self.client


def _run_cli(args: list[str], factory: Factory | None = None) -> int:
    from overlayctl import cli

    return cli.run(args, factory=factory)


NOW = 1_800_000_000.0
RECORDS = [
    {
        "name": "web",
        "state": "up",
        "want": "up",
        "pid": 123,
        "pgid": 123,
        "since": NOW - 252,
        "restarts": 0,
        "last_exit": None,
        "ready": True,
        "normally_up": True,
    },
    {
        "name": "db",
        "state": "backoff",
        "want": "up",
        "pid": None,
        "pgid": None,
        "since": NOW - 1,
        "restarts": 12,
        "last_exit": {"code": None, "signal": 9, "at": NOW - 1},
        "ready": False,
        "normally_up": True,
    },
]


@pytest.fixture(autouse=True)
def _no_env_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVERLAY_SOCKET", raising=False)


# -- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (3, "3s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (252, "4m12s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (2 * 3600 + 3 * 60 + 59, "2h03m"),
        (86399, "23h59m"),
        (86400, "1d00h"),
        (5 * 86400 + 2 * 3600 + 59 * 60, "5d02h"),
        (400 * 86400, "400d00h"),
        (-5, "0s"),  # clock stepped back: never a negative uptime
    ],
)
def test_format_uptime(seconds: float, text: str) -> None:
    assert render.format_uptime(seconds) == text


@pytest.mark.parametrize(
    ("last_exit", "text"),
    [
        (None, "-"),
        ({}, "-"),
        ({"code": 0, "signal": None, "at": NOW}, "0"),
        ({"code": 1, "signal": None, "at": NOW}, "1"),
        ({"code": 125, "signal": None, "at": NOW}, "125"),
        ({"code": None, "signal": 9, "at": NOW}, "SIGKILL"),
        ({"code": 256, "signal": 15, "at": NOW}, "SIGTERM"),
        ({"code": None, "signal": "KILL", "at": NOW}, "SIGKILL"),
        ({"code": None, "signal": None, "at": NOW}, "-"),
    ],
)
def test_format_last_exit(last_exit: dict[str, object] | None, text: str) -> None:
    assert render.format_last_exit(last_exit) == text


def test_signal_name_of_unknown_number() -> None:
    assert signal_name(200) == "signal 200"
    assert signal_name("sighup") == "SIGHUP"


def test_status_table_columns_and_placeholders() -> None:
    lines = render.status_table(RECORDS[:1], now=NOW).splitlines()
    assert lines[0] == (
        "name    state      pid    uptime    restarts  last exit    ready    health      checked"
    )
    assert lines[2].split() == ["web", "up", "123", "4m12s", "0", "-", "yes", "-", "-"]


def test_status_table_shows_health_and_when_it_was_checked() -> None:
    rec = dict(RECORDS[0], health="unhealthy", health_checked=NOW - 7)
    assert render.status_row(rec, NOW)[7:] == ["unhealthy", "7s ago"]


def test_status_table_says_why_a_service_is_in_backoff_or_failed() -> None:
    failed = dict(RECORDS[1], name="api", state="failed", reason="finish exited 125")
    lines = render.status_table([*RECORDS, failed], now=NOW).splitlines()
    assert lines[0].split()[-2:] == ["checked", "reason"]
    assert lines[2].split() == ["web", "up", "123", "4m12s", "0", "-", "yes", "-", "-"]
    # Not running: no pid, no uptime, the signal it last died of, and why it waits.
    assert lines[3].split()[:7] == ["db", "backoff", "-", "-", "12", "SIGKILL", "no"]
    assert lines[3].endswith("killed by SIGKILL within 1 s of starting; restarting after a pause")
    assert lines[4].endswith(" finish exited 125")


def test_status_table_has_a_type_column_once_a_oneshot_is_listed() -> None:
    assert "type" not in render.status_table(RECORDS, now=NOW).splitlines()[0].split()
    init = dict(RECORDS[0], name="init-config", type="oneshot", pid=None, state="up")
    web = dict(RECORDS[0], type="longrun")
    lines = render.status_table([init, web], now=NOW).splitlines()
    assert lines[0].split()[-2:] == ["checked", "type"]
    assert lines[2].split()[0] == "init-config" and lines[2].split()[-1] == "oneshot"
    assert lines[3].split()[-1] == "longrun"


def test_uptime_counts_from_started_when_overlayd_sends_it() -> None:
    base = dict(RECORDS[0], started=NOW - 300)
    ready = dict(base, state="ready", since=NOW - 5)  # ready 5 s ago, running for 5 min
    starting = dict(base, state="starting", since=NOW - 300, ready=False)
    stopping = dict(base, state="stopping", since=NOW - 1)
    gone = dict(base, state="down", pid=None, pgid=None)  # a stale `started` is ignored
    lines = render.status_table([ready, starting, stopping, gone], now=NOW).splitlines()
    assert [line.split()[3] for line in lines[2:]] == ["5m00s", "5m00s", "5m00s", "-"]
    # An overlayd without `started`: `since` of an up or ready service, as before.
    assert render.status_row(dict(RECORDS[0]), NOW)[3] == "4m12s"


def test_status_table_details_adds_columns() -> None:
    log = {"source": "logdir", "logdir": "/var/log/web", "where": "/var/log/web/current"}
    rec = dict(RECORDS[0], cpu_percent=1.25, rss=12 * 1024 * 1024, nprocs=3, log=log)
    lines = render.status_table([rec], now=NOW, details=True).splitlines()
    assert lines[0].split()[-4:] == ["cpu", "rss", "procs", "log"]
    assert lines[2].split()[-4:] == ["1.2%", "12.0M", "3", "/var/log/web"]


@pytest.mark.parametrize(
    ("log", "shown"),
    [
        (None, "-"),
        ({"source": "console", "logdir": None}, "console"),
        ({"source": "ring", "logdir": None}, "console, prefixed"),
        ({"source": "catchall", "logdir": "/run/uncaught-logs"}, "catch-all /run/uncaught-logs"),
        ({"source": "logger", "logdir": None, "where": "its logger web/log, which is not running"},
         "its logger web/log, which is not running"),
    ],
)  # fmt: skip
def test_status_details_says_where_each_service_logs(log: object, shown: str) -> None:
    assert render.format_log(log) == shown  # type: ignore[arg-type]


def test_status_table_with_no_services_is_just_the_header() -> None:
    assert len(render.status_table([], now=NOW).splitlines()) == 2


@pytest.mark.parametrize(
    "rows",
    [
        [["web", "up", "123", "4m12s", "0", "-", "yes", "healthy", "3s ago"]],
        [
            ["a-much-longer-name", "finishing", "4194304", "5d02h", "1234", "SIGSEGV", "no", "-",
             "-"],
            ["x", "up", "1", "3s", "0", "0", "yes", "unhealthy", "1h02m ago"],
            ["café", "ready", "-", "-", "0", "255", "yes", "-", "-"],
        ],
    ],
)
def test_table_matches_tabulate_simple(rows: list[list[str]]) -> None:
    # The table is drawn by hand to keep tabulate's import cost off `status`; it must look
    # exactly like tabulate's "simple" format all the same.
    tabulate = pytest.importorskip("tabulate").tabulate
    headers = list(render.STATUS_HEADERS)
    colalign = ["right" if i in render.STATUS_RIGHT else "left" for i in range(len(headers))]
    expected = tabulate(rows, headers, tablefmt="simple", disable_numparse=True, colalign=colalign)
    assert render.table(headers, rows, render.STATUS_RIGHT) == expected


def test_format_event_line() -> None:
    since = time.mktime((2026, 11, 29, 8, 30, 1, 0, 0, -1))
    record = dict(RECORDS[0], since=since)
    assert render.format_event(record) == "2026-11-29T08:30:01 web up pid=123"
    down = dict(RECORDS[1], since=since)
    assert render.format_event(down) == "2026-11-29T08:30:01 db backoff exit=SIGKILL"
    sick = dict(RECORDS[0], since=since, health="unhealthy")
    assert render.format_event(sick) == "2026-11-29T08:30:01 web up pid=123 health=unhealthy"


def test_error_line_is_always_one_line() -> None:
    assert render.error_line("bad\nthing\n") == "overlayctl: bad thing"


# -- signal names and exit codes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("HUP", "SIGHUP"),
        ("SIGHUP", "SIGHUP"),
        ("sighup", "SIGHUP"),
        ("hup", "SIGHUP"),
        ("Term", "SIGTERM"),
        ("IOT", "SIGABRT"),  # an alias goes out under its canonical name
        ("1", 1),
        ("9", 9),
        ("64", 64),
    ],
)
def test_parse_signal(text: str, sent: str | int) -> None:
    assert parse_signal(text) == sent


@pytest.mark.parametrize("text", ["bad", "", "SIG", "SIGBAD", "0", "65", "999", "-1", "SIG_DFL"])
def test_parse_signal_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_signal(text)


@pytest.mark.parametrize(
    ("given", "sent"),
    [(0, 0), (3, 3), (255, 255), (256, 0), (257, 1), (-1, 255), (-256, 0), (10**12 + 5, 5)],
)
def test_exit_code_is_reduced_modulo_256(given: int, sent: int) -> None:
    assert commands.reduce_exit_code(given) == sent
    factory = Factory()
    assert commands.shutdown(commands.Invocation(factory=factory), given) == 0
    assert factory.client.calls == [("shutdown", (), {"exit_code": sent})]


def test_shutdown_without_exit_code_sends_none() -> None:
    factory = Factory()
    assert _run_cli(["shutdown"], factory) == 0
    assert factory.client.calls == [("shutdown", (), {"exit_code": None})]


@pytest.mark.parametrize(("arg", "sent"), [("-1", 255), ("300", 44), ("=-2", 254)])
def test_shutdown_exit_code_option_accepts_negative_and_large(arg: str, sent: int) -> None:
    factory = Factory()
    argv = ["shutdown", f"--exit-code{arg}"] if arg.startswith("=") else ["shutdown"]
    if not arg.startswith("="):
        argv += ["--exit-code", arg]
    assert _run_cli(argv, factory) == 0
    assert factory.client.calls == [("shutdown", (), {"exit_code": sent})]


# -- --json without the json package -------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_json_values)
def test_json_output_matches_the_json_module(value: object) -> None:
    from overlayctl.jsonout import dumps

    assert dumps(value, indent=2) == json.dumps(value, indent=2, default=str)
    assert dumps(value) == json.dumps(value, separators=(",", ":"), default=str)


def test_json_output_of_records_and_odd_values() -> None:
    from overlayctl.jsonout import dumps

    odd = {"t": (1, 2), 3: "x", "s": {1, 2} and "set", "o": object.__name__, "e": [], "d": {}}
    for value in (RECORDS, odd, [float("inf"), float("nan"), -0.0, "é\n\x00"]):
        assert dumps(value, indent=2) == json.dumps(value, indent=2, default=str)


# -- the cheap parser ----------------------------------------------------------------------


def C(command: str, socket: str | None = None, json: bool = False, **values: object) -> Call:
    """The Call dispatch.parse should produce: the command's defaults updated with `values`."""
    from overlayctl.spec import COMMANDS

    return Call(command, {**COMMANDS[command].defaults(), **values}, socket, json)


CHEAP_ACCEPTS = [
        (["status"], C("status")),
        (["check"], C("check")),
        (["version"], C("version")),
        (["status", "web", "db"], C("status", names=("web", "db"))),
        (["status", "--socket", "/s"], C("status", socket="/s")),
        (["status", "--socket=/s"], C("status", socket="/s")),
        (["--socket", "/s", "check"], C("check", socket="/s")),
        (["--socket=/a", "status", "--socket", "/b"], C("status", socket="/b")),
        (["--json", "status"], C("status", json=True)),
        (["check", "--json"], C("check", json=True)),
        (
            ["status", "--details", "web", "--json", "--socket", "/s"],
            C("status", "/s", True, details=True, names=("web",)),
        ),
        (["version", "--json", "--socket=/s"], C("version", "/s", True)),
        (["stop", "web"], C("stop", names=("web",))),
        (["stop", "web", "--kill-after", "2.5", "db"],
         C("stop", names=("web", "db"), kill_after=2.5)),
        (["restart", "--no-wait", "web"], C("restart", names=("web",), no_wait=True)),
        (["start", "--timeout=3", "web"], C("start", names=("web",), timeout=3.0)),
        (["once", "web", "--timeout", ".5"], C("once", names=("web",), timeout=0.5)),
        (["signal", "HUP", "web"], C("signal", sig="HUP", names=("web",))),
        (["wait", "--ready", "--timeout", "1", "a"],
         C("wait", names=("a",), ready=True, timeout=1.0)),
        (["shutdown", "--exit-code", "-1"], C("shutdown", exit_code=-1)),
        (["shutdown", "--exit-code=300"], C("shutdown", exit_code=300)),
        (["events", "--snapshot"], C("events", snapshot=True)),
        (["pid", "web"], C("pid", name="web")),
        (["rescan"], C("rescan")),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), CHEAP_ACCEPTS)
def test_cheap_parse_accepts(argv: list[str], expected: Call) -> None:
    assert dispatch.parse(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["-h"],
        ["status", "--help"],
        ["check", "-h"],
        ["version", "--help"],
        ["frobnicate"],
        ["status", "--socket"],  # missing value
        ["status", "--socket="],
        ["status", "--socket", "--json"],
        ["status", "--bogus"],
        ["status", "-x"],
        ["status", "--", "web"],
        ["status", ""],
        ["--details", "status"],  # --details belongs after the command
        ["check", "web"],  # check takes no names
        ["check", "--details"],
        ["version", "extra"],
        ["--socket", "/s"],  # no command
        ["stop"],  # missing names
        ["pid"],
        ["pid", "a", "b"],
        ["stop", "web", "--timeout", "-1"],  # below the minimum
        ["stop", "web", "--timeout", "1e3"],  # not the plain form: Typer decides
        ["stop", "web", "--timeout", "nan"],
        ["shutdown", "--exit-code", "abc"],
        ["shutdown", "--exit-code", "+3"],
        ["shutdown", "--exit-code", "٣"],  # a digit, but not ASCII
        ["signal", "FOO", "web"],  # the check fails: Typer words the error
        ["signal", "-9", "web"],
        ["wait", "--up", "--down", "web"],
        ["--json=1", "status"],
        ["--install-completion"],
        ["--show-completion", "bash"],
    ],
)
def test_cheap_parse_defers_to_typer(argv: list[str]) -> None:
    assert dispatch.parse(argv) is None


def _typer_call(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Call | None:
    """The Call the Typer app runs for `argv` (None when it refuses it)."""
    from overlayctl import cli

    seen: list[Call] = []
    with monkeypatch.context() as m:
        m.setattr(dispatch, "run", lambda call, factory=None: seen.append(call) or 0)
        code = cli.run(argv)
    return seen[0] if code == 0 and seen else None


@pytest.mark.parametrize("argv", [argv for argv, _ in CHEAP_ACCEPTS])
def test_typer_runs_what_the_cheap_parser_runs(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _typer_call(argv, monkeypatch) == dispatch.parse(argv)


_VALUES = {"int": ["1", "-1", "300"], "float": ["1", "0.5", ".5", "2."], "str": ["/s", "/t"]}
_ODD_VALUES = ["-1", "abc", "", "1e3", "--json", "HUP"]


@st.composite
def _command_lines(draw: st.DrawFn) -> list[str]:
    """A command and words drawn from what it declares: mostly well formed, sometimes not."""
    from overlayctl.spec import COMMANDS, GLOBAL_OPTS

    name = draw(st.sampled_from(sorted(COMMANDS)))
    command = COMMANDS[name]
    opts = [*command.opts, *GLOBAL_OPTS]
    pieces: list[list[str]] = []
    kinds = ["opt", "opt="] + ["word", "word"] * bool(command.args)
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(kinds))
        if kind == "word":
            pieces.append([draw(st.sampled_from(["web", "db", "HUP", "9", "-x", "--", ""]))])
            continue
        opt = draw(st.sampled_from(opts))
        if opt.kind == "flag":
            pieces.append([opt.flag])
            continue
        odd = draw(st.integers(0, 4)) == 0
        value = draw(st.sampled_from(_ODD_VALUES if odd else _VALUES[opt.kind]))
        pieces.append([f"{opt.flag}={value}"] if kind == "opt=" else [opt.flag, value])
    before = draw(st.sampled_from([[], ["--json"], ["--socket", "/a"]]))
    return [*before, name, *(word for piece in pieces for word in piece)]


@settings(max_examples=300, deadline=None)
@given(_command_lines())
def test_cheap_parser_never_disagrees_with_typer(argv: list[str]) -> None:
    # Whatever the cheap parser accepts, Typer parses to the same call (it may refuse more).
    call = dispatch.parse(argv)
    if call is None:
        return
    with pytest.MonkeyPatch.context() as m:
        assert _typer_call(argv, m) == call, argv


def test_completion_requests_go_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_OVERLAYCTL_COMPLETE", "complete_bash")
    assert dispatch.parse(["status"]) is None


def test_main_hands_typer_the_untouched_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    from overlayctl import __main__, cli

    seen: list[list[str]] = []
    monkeypatch.setattr(cli, "run", lambda args: seen.append(args) or 7)
    monkeypatch.setattr(dispatch, "run", lambda call: pytest.fail("cheap path taken"))
    argv = ["--json", "status", "--help"]
    assert __main__.main(argv) == 7
    assert seen == [argv]


def test_main_takes_the_cheap_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from overlayctl import __main__, cli

    seen: list[Call] = []
    monkeypatch.setattr(dispatch, "run", lambda call: seen.append(call) or 0)
    monkeypatch.setattr(cli, "run", lambda args: pytest.fail("Typer path taken"))
    assert __main__.main(["status", "--socket", "/s", "web"]) == 0
    assert seen == [C("status", socket="/s", names=("web",))]


# -- both paths print the same thing -------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--json"],
        ["--json", "status", "web"],
        ["status", "--details"],
        ["check"],
        ["check", "--json"],
        ["version"],
        ["--json", "version"],
    ],
)
def test_cheap_and_typer_paths_print_the_same(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    records = [dict(r, since=time.time() - 252) for r in RECORDS]

    def stub() -> Factory:
        return Factory(
            StubClient(
                status=records,
                check={"healthy": False, "problems": [{"name": "db", "state": "backoff"}]},
                hello={"server": "overlayd", "version": "9.9", "protocol": 1, "methods": []},
            )
        )

    parsed = dispatch.parse(argv)
    assert parsed is not None
    fast_code = dispatch.run(parsed, factory=stub())
    fast_out = capsys.readouterr()
    typer_code = _run_cli(argv, stub())
    typer_out = capsys.readouterr()
    assert (fast_code, fast_out.out, fast_out.err) == (typer_code, typer_out.out, typer_out.err)
    assert fast_out.out or fast_out.err


# -- the real entry point, in a subprocess -------------------------------------------------


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("OVERLAY_SOCKET", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


PROBE = """
import sys
from overlayctl.__main__ import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(",".join(heavy))
sys.exit(code)
"""


@pytest.mark.parametrize("command", ["status", "check"])
def test_cheap_path_unreachable_exits_3_without_typer(command: str, tmp_path: Path) -> None:
    sock = str(tmp_path / "nonexistent" / "control.sock")
    proc = _python("-c", PROBE.format(heavy=set(HEAVY_MODULES)), command, "--socket", sock)
    assert proc.returncode == 3
    assert proc.stdout.strip() == ""  # none of typer/click/rich/tabulate was imported
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"overlayctl: cannot reach overlayd at {sock}: ")


def test_python_m_overlayctl_status_imports_nothing_heavy(tmp_path: Path) -> None:
    sock = str(tmp_path / "nonexistent")
    proc = _python("-X", "importtime", "-m", "overlayctl", "status", "--socket", sock)
    assert proc.returncode == 3
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "overlayctl.dispatch" in imported
    assert not {m for m in imported if m.split(".")[0] in HEAVY_MODULES}
    messages = [line for line in proc.stderr.splitlines() if line.startswith("overlayctl:")]
    assert len(messages) == 1
    assert messages[0].startswith(f"overlayctl: cannot reach overlayd at {sock}: ")


def test_typer_path_unreachable_has_the_same_message(tmp_path: Path) -> None:
    sock = str(tmp_path / "nonexistent")
    typer_path = _python("-m", "overlayctl", "stop", "x", "--socket", sock, "--timeout", "1e1")
    fast_path = _python("-m", "overlayctl", "status", "--socket", sock)
    assert typer_path.returncode == fast_path.returncode == 3
    assert typer_path.stderr == fast_path.stderr
    assert typer_path.stderr.count("\n") == 1
    assert sock in typer_path.stderr


def test_unknown_command_exits_2_in_a_subprocess() -> None:
    proc = _python("-m", "overlayctl", "frobnicate")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "overlayctl: No such command 'frobnicate'. (see 'overlayctl --help')"
    ]


def test_socket_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERLAY_SOCKET", "/env/sock")
    factory = Factory(StubClient(check={"healthy": True, "problems": []}))
    assert dispatch.run(C("check"), factory=factory) == 0
    assert _run_cli(["stop", "--no-wait", "x"], factory) == 0
    assert _run_cli(["--socket", "/opt", "stop", "--no-wait", "x"], factory) == 0
    assert [path for path, _ in factory.opened] == ["/env/sock", "/env/sock", "/opt"]


# -- the Typer app -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [*ALL_COMMANDS, None])
def test_help_exits_0_with_an_example(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    assert _run_cli(argv) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    assert "overlayctl " in out.split("Examples:")[1]


def test_no_arguments_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli([]) == 2
    assert "Commands:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["frobnicate"], "No such command 'frobnicate'"),
        (["signal", "FOO", "web"], "unknown signal: FOO"),
        (["signal", "0", "web"], "out of range"),
        (["wait", "--up", "--down", "web"], "only one of --up, --ready, --down"),
        (["wait", "--timeout", "-1", "web"], "--timeout"),
        (["start"], "Missing argument"),
        (["shutdown", "--exit-code", "soon"], "--exit-code"),
        (["status", "--bogus"], "No such option: --bogus"),
        (["check", "web"], "unexpected extra argument"),
    ],
)
def test_usage_errors_exit_2_on_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    factory = Factory()
    assert _run_cli(argv, factory) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("overlayctl: ")
    assert needle in err
    assert factory.opened == []  # a usage error never reaches overlayd


def test_json_before_or_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--json", "status"], ["status", "--json"]):
        factory = Factory(StubClient(status=RECORDS))
        assert _run_cli(argv, factory) == 0
        assert json.loads(capsys.readouterr().out) == RECORDS


def test_socket_after_the_command_wins() -> None:
    factory = Factory(StubClient())
    argv = ["--socket", "/a", "restart", "web", "--socket", "/b", "--no-wait"]
    assert _run_cli(argv, factory) == 0
    assert _run_cli(["--socket", "/a", "once", "--no-wait", "web"], factory) == 0
    assert [path for path, _ in factory.opened] == ["/b", "/a"]
    assert factory.client.calls == [("restart", (["web"],), {}), ("once", (["web"],), {})]


@pytest.mark.parametrize(("sig", "sent"), [("hup", "SIGHUP"), ("SIGUSR1", "SIGUSR1"), ("9", 9)])
def test_signal_sends_the_canonical_name_or_number(sig: str, sent: str | int) -> None:
    factory = Factory()
    assert _run_cli(["signal", sig, "web", "db"], factory) == 0
    assert factory.client.calls == [("signal", (sent, ["web", "db"]), {})]


@pytest.mark.parametrize(
    ("options", "condition", "timeout"),
    [([], "up", None), (["--ready"], "ready", None), (["--down", "--timeout", "2.5"], "down", 2.5)],
)
def test_wait_condition_and_timeout(
    options: list[str], condition: str, timeout: float | None
) -> None:
    factory = Factory()
    assert _run_cli(["wait", *options, "web"], factory) == 0
    assert factory.client.calls == [("wait", (condition, ["web"]), {"timeout": timeout})]


# -- outcomes and exit codes ---------------------------------------------------------------


def test_check_healthy_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    factory = Factory(StubClient(check={"healthy": True, "problems": []}))
    assert commands.check(commands.Invocation(factory=factory)) == 0
    assert capsys.readouterr() == ("", "")
    assert factory.client.closed


def test_check_names_each_culprit(capsys: pytest.CaptureFixture[str]) -> None:
    problems = [
        {"name": "web", "state": "backoff", "reason": "exited 1 less than a second after start"},
        {"name": "db", "state": "failed", "reason": ""},
        {"name": "api", "state": "up", "reason": "not ready"},
    ]
    factory = Factory(StubClient(check={"healthy": False, "problems": problems}))
    assert commands.check(commands.Invocation(factory=factory)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "overlayctl: check: web is backoff (exited 1 less than a second after start)",
        "overlayctl: check: db is failed",
        "overlayctl: check: api is up (not ready)",
    ]


def test_check_json_still_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    result = {"healthy": False, "problems": [{"name": "db", "state": "failed", "reason": "x"}]}
    factory = Factory(StubClient(check=result))
    assert commands.check(commands.Invocation(json=True, factory=factory)) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == result
    assert err == "overlayctl: check: db is failed (x)\n"


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (
            RemoteError("no_such_service", "no such service: x"),
            4,
            "overlayctl: no such service: x",
        ),
        (RemoteError("permission_denied", "read-only client"), 4, "overlayctl: read-only client"),
        (RemoteError("shutting_down", ""), 4, "overlayctl: shutting_down"),
        (RemoteError("timeout", "web not up after 1s"), 1, "overlayctl: web not up after 1s"),
        (
            ConnectError("/s", "Connection refused"),
            3,
            "overlayctl: cannot reach overlayd at /s: Connection refused",
        ),
        (
            ProtocolMismatch("overlayd at /s speaks protocol 0"),
            3,
            "overlayctl: overlayd at /s speaks protocol 0",
        ),
        (ProtocolMismatch("too old"), 3, "overlayctl: too old (socket /s)"),
        (RuntimeError("oops"), 1, "overlayctl: internal error: RuntimeError: oops"),
    ],
)
def test_failures_map_to_exit_codes(
    error: Exception, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    factory = Factory(StubClient(stop=error, wait=error))
    inv = commands.Invocation(socket="/s", factory=factory)
    assert commands.action(inv, "stop", ["x"], no_wait=True) == code
    assert capsys.readouterr().err.splitlines() == [line]
    assert commands.wait(inv, "up", ["x"], timeout=1) == code
    assert capsys.readouterr().err.splitlines() == [line]
    assert factory.client.closed


def test_connect_failure_in_the_factory(capsys: pytest.CaptureFixture[str]) -> None:
    factory = Factory(error=ConnectError("/s", "No such file or directory"))
    assert commands.status(commands.Invocation(socket="/s", factory=factory)) == 3
    assert capsys.readouterr() == (
        "",
        "overlayctl: cannot reach overlayd at /s: No such file or directory\n",
    )


def test_version_prints_client_then_server(capsys: pytest.CaptureFixture[str]) -> None:
    hello = {"server": "overlayd", "version": "1.2.3", "protocol": 1, "methods": []}
    factory = Factory(StubClient(hello=hello))
    assert commands.version(commands.Invocation(factory=factory)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"overlayctl {commands.client_version()}", "overlayd 1.2.3 (protocol 1)"]


def test_version_unreachable_still_prints_client(capsys: pytest.CaptureFixture[str]) -> None:
    factory = Factory(error=ConnectError("/s", "Connection refused"))
    assert commands.version(commands.Invocation(factory=factory)) == 3
    out, err = capsys.readouterr()
    assert out == f"overlayctl {commands.client_version()}\n"
    assert err == "overlayctl: cannot reach overlayd at /s: Connection refused\n"


def _events(*batches: object, then: BaseException | None = None) -> object:
    def generate() -> object:
        yield from batches
        if then is not None:
            raise then

    return generate


def test_events_one_line_each_until_interrupted(capsys: pytest.CaptureFixture[str]) -> None:
    since = time.mktime((2026, 11, 29, 8, 30, 1, 0, 0, -1))
    up = dict(RECORDS[0], since=since)
    stub = StubClient(subscribe=_events([up], [dict(up, pid=124)], then=KeyboardInterrupt()))
    assert commands.events(commands.Invocation(factory=Factory(stub))) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "2026-11-29T08:30:01 web up pid=123",
        "2026-11-29T08:30:01 web up pid=124",
    ]
    assert err == ""  # ^C is the normal way out: no message, no traceback


def test_events_json_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    stub = StubClient(subscribe=_events([RECORDS[0]], [RECORDS[1]]))
    assert commands.events(commands.Invocation(json=True, factory=Factory(stub))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == RECORDS


def test_events_lost_connection_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    lost = ConnectError("/s", "overlayd closed the connection")
    stub = StubClient(subscribe=_events([RECORDS[0]], then=lost))
    assert commands.events(commands.Invocation(factory=Factory(stub))) == 3
    assert capsys.readouterr().err == (
        "overlayctl: cannot reach overlayd at /s: overlayd closed the connection\n"
    )


def test_interrupt_elsewhere_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    factory = Factory(StubClient(wait=KeyboardInterrupt()))
    assert commands.wait(commands.Invocation(factory=factory), "up", ["web"]) == 130
    assert capsys.readouterr() == ("", "")


# -- when a start/stop/restart/once is done (progress.py) ----------------------------------


def _rec(state: str, pid: int | None = None, **extra: object) -> dict[str, object]:
    return {"name": "web", "state": state, "pid": pid, "want": "up", "notification_fd": None,
            "last_exit": None, **extra}  # fmt: skip


def _follow(verb: str, before: dict[str, object], *changes: dict[str, object]) -> object:
    from overlayctl.progress import Progress

    progress = Progress(verb, before)
    for change in changes:
        progress.update(change)
    return progress


def test_restart_is_done_at_the_new_process_through_the_throttle() -> None:
    killed = {"code": None, "signal": 15, "at": 2.0}
    steps = [
        _rec("stopping", 41),
        _rec("down", last_exit=killed),
        _rec("backoff", last_exit=killed),
    ]
    waiting = _follow("restart", _rec("up", 41), *steps)
    assert not waiting.done and waiting.line() == "web: still backoff"
    done = _follow("restart", _rec("up", 41), *steps, _rec("up", 57))
    assert done.done and not done.failed
    assert done.line() == "web: restarted (pid 41 → 57)"


def test_start_waits_for_readiness_and_reports_a_death_before_it() -> None:
    nfd = {"notification_fd": 3}
    ready = _follow(
        "start", _rec("down", **nfd), _rec("starting", 7, **nfd), _rec("ready", 7, **nfd)
    )
    assert (ready.done, ready.line()) == (True, "web: started, ready (pid 7)")
    crashed = {"code": 3, "signal": None, "at": 1.0}
    died = _follow(
        "start", _rec("down", **nfd), _rec("starting", 7, **nfd),
        _rec("backoff", last_exit=crashed, **nfd),
    )  # fmt: skip
    assert died.failed and died.line() == "web: died before it was ready (exit code 3); now backoff"


def test_start_of_a_stopping_service_waits_through_its_death() -> None:
    before = _rec("stopping", 41)
    progress = _follow(
        "start", before, _rec("down", last_exit={"code": 0, "signal": None, "at": 1})
    )
    assert not progress.done  # the old process died: not a failure of the start
    assert progress.notice() is not None and "still stopping (pid 41)" in progress.notice()
    progress.update(_rec("up", 57))
    assert (progress.done, progress.failed, progress.line()) == (
        True,
        False,
        "web: started, up (pid 57)",
    )


def test_stop_from_backoff_and_already_down() -> None:
    assert _follow("stop", _rec("backoff"), _rec("down")).line() == "web: stopped"
    assert _follow("stop", _rec("down")).line() == "web: already down"
    failed = _follow("stop", _rec("failed", reason="x"))
    assert failed.done and failed.line() == "web: already failed"


def test_once_left_down_by_overlayd_is_said() -> None:
    progress = _follow("once", _rec("backoff"), _rec("down", want="down"))
    assert progress.failed and progress.line() == "web: left down by overlayd (it was backoff)"


def test_the_action_waits_on_notifications_after_subscribing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stub = StubClient(status=[_rec("up", 41)], states=[_rec("stopping", 41), _rec("up", 57)])
    assert commands.action(commands.Invocation(factory=Factory(stub)), "restart", ["web"]) == 0
    assert [c[0] for c in stub.calls] == ["watch_status", "restart"]
    assert capsys.readouterr() == ("web: restarted (pid 41 → 57)\n", "")


def test_the_action_times_out_naming_the_state(capsys: pytest.CaptureFixture[str]) -> None:
    stub = StubClient(status=[_rec("up", 41)], states=[_rec("stopping", 41)])
    inv = commands.Invocation(factory=Factory(stub))
    assert commands.action(inv, "stop", ["web"], timeout=0.01) == 1
    assert capsys.readouterr() == (
        "",
        "overlayctl: stop: timed out after 0.01 s: web: still stopping (pid 41)\n",
    )


def test_output_into_a_closed_pipe_is_quiet() -> None:
    # `overlayctl --show-completion bash | head -1`: the reader leaves early; no traceback,
    # no "internal error", exit 0. Here the reader is gone before the first write.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "overlayctl", "--show-completion", "bash"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (0, "")
