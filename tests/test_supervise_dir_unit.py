"""supervise_dir without booting: the status bytes Debian's s6-svstat reads, the events a
fifodir listener gets, the control letters, and atomic rewrites."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from overlayd.supervise_dir import SuperviseDir, notify_fifodir, pack_status, wait_status

needs_s6 = pytest.mark.skipif(shutil.which("s6-svstat") is None, reason="needs Debian's s6")
LISTENER = "ftrig1:@400000006b0f0000000000aa:abcdef"  # the name shape s6-ftrigrd makes


class FakeLoop:
    def __init__(self) -> None:
        self.readers: dict[int, object] = {}

    def add_reader(self, fd: int, callback: object) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)


class FakeService(SimpleNamespace):
    def __init__(self, notification_fd: int | None = None) -> None:
        super().__init__(
            name="svc", pid=None, pgid=None, state="down", want="down", ready=False,
            last_exit=None, definition=SimpleNamespace(notification_fd=notification_fd),
            calls=[],
        )  # fmt: skip

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def once(self) -> None:
        self.calls.append("once")

    def restart(self) -> None:
        self.calls.append("restart")

    def send_signal(self, signum: int) -> bool:
        self.calls.append(signal.Signals(signum).name)
        return True


def make(tmp_path: Path, service: FakeService) -> tuple[SuperviseDir, int]:
    live = tmp_path / "svc"
    live.mkdir()
    supervise = SuperviseDir(service, str(live), FakeLoop())  # type: ignore[arg-type]
    supervise.open()
    os.mkfifo(live / "event" / LISTENER)
    listener = os.open(live / "event" / LISTENER, os.O_RDWR | os.O_NONBLOCK)
    return supervise, listener


def events(fd: int) -> bytes:
    try:
        return os.read(fd, 100)
    except BlockingIOError:
        return b""


@needs_s6
@pytest.mark.parametrize(
    ("pid", "wstat", "flags", "human", "fields"),
    [
        (42, 0, 0x04, r"up \(pid 42\) \d+ seconds", "true true false 42 -1"),
        (42, 0, 0x0C, r"up \(pid 42\) \d+ seconds, ready \d+ seconds", "true true true 42 -1"),
        (0, 3 << 8, 0x08, r"down \(exitcode 3\) \d+ seconds, ready \d+ seconds",
         "false false false -1 3"),
        (0, 15, 0x02, r"down \(signal SIGTERM\) \d+ seconds", "false false false -1 -1"),
    ],
)  # fmt: skip
def test_packed_status_reads_back_through_real_s6_svstat(
    tmp_path: Path, pid: int, wstat: int, flags: int, human: str, fields: str
) -> None:
    import fcntl
    import re
    import time

    (tmp_path / "supervise").mkdir()
    (tmp_path / "supervise" / "status").write_bytes(
        pack_status(time.time(), time.time(), pid, wstat, flags)
    )
    with open(tmp_path / "supervise" / "lock", "w") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        line = subprocess.run(["s6-svstat", str(tmp_path)], capture_output=True, text=True)
        assert re.fullmatch(human, line.stdout.strip().replace(", normally up", ""))
        assert re.search(r" [01] seconds", line.stdout), "TAI64N offset off: " + line.stdout
        out = subprocess.run(
            ["s6-svstat", "-o", "up,wantedup,ready,pid,exitcode", str(tmp_path)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert out.stdout.strip() == fields


def test_wait_status_is_code_shifted_or_the_signal() -> None:
    assert wait_status(None) == 0
    assert wait_status((3, None, 0.0)) == 0x0300
    assert wait_status((None, 9, 0.0)) == 9


def test_events_follow_the_service_through_up_ready_death_and_finish(tmp_path: Path) -> None:
    service = FakeService(notification_fd=3)
    supervise, listener = make(tmp_path, service)
    service.pid, service.state, service.want = 10, "starting", "up"
    supervise.changed()
    service.state, service.ready = "ready", True
    supervise.changed()
    assert events(listener) == b"uU"
    service.pid, service.state, service.ready, service.last_exit = None, "finishing", False, (
        None, 15, 0.0
    )
    supervise.changed()
    assert events(listener) == b"d"
    status = (tmp_path / "svc" / "supervise" / "status").read_bytes()
    assert len(status) == 35 and status[34] == 0x02 | 0x04 and status[32:34] == b"\x00\x0f"
    service.state, service.want = "failed", "down"
    supervise.changed()
    assert events(listener) == b"OD"
    assert (tmp_path / "svc" / "supervise" / "status").read_bytes()[34] == 0x08


def test_status_is_replaced_by_rename_never_rewritten_in_place(tmp_path: Path) -> None:
    service = FakeService()
    supervise, _ = make(tmp_path, service)
    status = tmp_path / "svc" / "supervise" / "status"
    before = status.stat().st_ino
    service.pid, service.state, service.want = 10, "up", "up"
    supervise.changed()
    assert status.stat().st_ino != before
    assert not (tmp_path / "svc" / "supervise" / "status.new").exists()


def test_control_letters_map_to_service_actions(tmp_path: Path) -> None:
    service = FakeService()
    supervise, _ = make(tmp_path, service)
    for letter in b"udoO":
        assert supervise.command(letter)
    service.pid, service.pgid, service.state = 10, 10, "up"
    for letter in b"rhkt12pcyO":
        assert supervise.command(letter)
    assert service.calls == [
        "start", "stop", "once", "restart", "SIGHUP", "SIGKILL", "SIGTERM", "SIGUSR1",
        "SIGUSR2", "SIGSTOP", "SIGCONT", "SIGWINCH", "once",
    ]  # fmt: skip
    assert not supervise.command(ord("Z"))
    supervise.command(ord("D"))
    assert (tmp_path / "svc" / "down").exists()
    supervise.command(ord("U"))
    assert not (tmp_path / "svc" / "down").exists()


def test_notify_unlinks_a_listener_fifo_nobody_reads(tmp_path: Path) -> None:
    stale = tmp_path / LISTENER
    os.mkfifo(stale)
    (tmp_path / "not-a-listener").write_text("")
    assert notify_fifodir(str(tmp_path), "u") == 0
    assert not stale.exists()
    assert (tmp_path / "not-a-listener").exists()


def test_s6_paths_default_on_only_as_pid1_and_the_variable_is_validated() -> None:
    from overlayd import config
    from overlayd.s6paths import enabled

    assert enabled(None, is_pid1=True) and not enabled(None, is_pid1=False)
    assert enabled(1, is_pid1=False) and not enabled(0, is_pid1=True)
    assert config.load({}).s6_paths is None
    assert config.load({"OVERLAY_S6_PATHS": "0"}).s6_paths == 0
    with pytest.raises(config.ConfigError, match="OVERLAY_S6_PATHS"):
        config.load({"OVERLAY_S6_PATHS": "yes"})


def test_live_dir_links_the_definition_and_keeps_what_tools_made(tmp_path: Path) -> None:
    from overlayd.s6paths import _populate

    definition = tmp_path / "def"
    (definition / "log").mkdir(parents=True)
    for name in ("run", "finish", "down", "supervise"):
        (definition / name).write_text("")
    live = tmp_path / "live"
    _populate(str(live), str(definition))
    assert sorted(os.listdir(live)) == ["down", "finish", "run"]
    assert os.readlink(live / "run") == str(definition / "run")
    (definition / "finish").unlink()
    (live / "down").unlink()
    (live / "down").write_text("")  # as `s6-svc -D` leaves it
    _populate(str(live), str(definition))
    assert sorted(os.listdir(live)) == ["down", "run"]
    assert not (live / "down").is_symlink()


def test_extend_path_appends_command_once() -> None:
    from overlayd.s6paths import extend_path

    env = extend_path({"PATH": "/usr/bin:/bin"})
    assert env["PATH"].startswith("/usr/bin:/bin:/command")
    assert extend_path(dict(env)) == env
