"""`docker run -it image bash`: on a terminal the CMD gets the foreground process group, so job
control works and ^C reaches the CMD (and whatever it runs in the foreground), never overlayd.

Each test starts overlayd as PID 1 with a pseudo-terminal as its controlling terminal and
stdin/stdout/stderr, and talks to bash through the master side as a user at a keyboard would.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import signal
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.harness import PYTHON, Tree, wait_until

pytestmark = needs_root

DEADLINE = 20.0
PROMPT = "PROMPT> "
BASH = ["bash", "--norc", "--noprofile", "--noediting", "-i"]


def _take_terminal() -> None:
    """In the child, after setsid: make the pty (its stdin) the controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class TtyBooted:
    """overlayd as PID 1 on a pty: the test holds the master, overlayd sees a terminal."""

    def __init__(self, tree: Tree, cmd: list[str]) -> None:
        self.master, slave = os.openpty()
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "PS1": PROMPT,
            "HOME": str(tree.base),
            "OVERLAY_ROOT": str(tree.root),
            "OVERLAY_RUN_DIR": str(tree.run_dir),
            "S6_SERVICES_GRACETIME": "3000",
            "OVERLAY_S6_PATHS": "0",  # a test's PID 1 never touches the host's /run
        }
        try:
            self.proc = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-m", "overlayd", *cmd],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                preexec_fn=_take_terminal,
                env=env,
                cwd=str(tree.base),
            )
        finally:
            os.close(slave)
        self.data = b""
        self.pos = 0  # expect() searches from here on
        self.eof = False

    # --- the terminal ----------------------------------------------------------------------
    def _read_some(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if not ready:
            return
        try:
            chunk = os.read(self.master, 65536)
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: every slave fd is closed
                raise
            chunk = b""
        if chunk:
            self.data += chunk
        else:
            self.eof = True

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def expect(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        """Wait for `pattern` (multiline regex) in the output after the last match."""
        regex = re.compile(pattern, re.MULTILINE)
        end = time.monotonic() + timeout
        while True:
            match = regex.search(self.text, self.pos)
            if match:
                self.pos = match.end()
                return match
            if self.eof or time.monotonic() > end:
                raise AssertionError(f"no {pattern!r} on the terminal; it shows:\n{self.text}")
            self._read_some(end - time.monotonic())

    def send(self, text: str | bytes) -> None:
        os.write(self.master, text.encode() if isinstance(text, str) else text)

    def command(self, line: str) -> None:
        """Type a command at bash's prompt."""
        self.expect(re.escape(PROMPT))
        self.send(line + "\n")

    # --- processes -------------------------------------------------------------------------
    @property
    def init_pid(self) -> int:
        kids = wait_until(lambda: _children(self.proc.pid), 10, "overlayd to be forked")
        return kids[0]  # type: ignore[index]

    def wait(self, timeout: float = DEADLINE) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            self._read_some(0.1)  # keep draining: a full pty would block overlayd's writes
        code = self.proc.wait(max(0.0, end - time.monotonic()))
        while not self.eof:
            self._read_some(0.5)
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            for pid in _children(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)
        os.close(self.master)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        for kid in _children(pending.pop()):
            found.append(kid)
            pending.append(kid)
    return found


def _stat(pid: int) -> list[str] | None:
    """[state, ppid, pgrp, session, tty_nr, tpgid, ...] from /proc/PID/stat."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].decode().split()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip().decode()
    except OSError:
        return ""


@pytest.fixture
def tty_boot(tree: Tree) -> Iterator:
    started: list[TtyBooted] = []

    def start(*cmd: str) -> TtyBooted:
        booted = TtyBooted(tree, list(cmd))
        started.append(booted)
        return booted

    yield start
    for booted in started:
        booted.close()


def test_bash_on_a_terminal_is_the_foreground_process_group(tty_boot) -> None:
    term = tty_boot(*BASH)
    term.command('echo "fg: $$ $(ps -o tpgid= -p $$) $(ps -o pgid= -p $$)"')
    match = term.expect(r"^fg: (\d+) +(\d+) +(\d+)\r?$")
    shell, tpgid, pgid = match.groups()
    # The terminal's foreground group is bash's own group, and bash leads it.
    assert tpgid == shell == pgid, term.text
    assert "no job control" not in term.text
    assert "cannot set terminal process group" not in term.text


def test_job_control_works_in_bash_run_as_the_cmd(tty_boot) -> None:
    term = tty_boot(*BASH)
    term.command('case $- in *m*) echo "monitor=on";; *) echo "monitor=off";; esac')
    term.expect(r"^monitor=on\r?$")
    term.command("sleep 100 &")
    term.expect(r"^\[1\] \d+\r?$")
    term.command("jobs")
    term.expect(r"^\[1\]\+ +Running +sleep 100 &\r?$")
    # The background job got its own process group, not the terminal.
    term.command('echo "bg: $! $(ps -o pgid= -p $!) $(ps -o tpgid= -p $$)"')
    match = term.expect(r"^bg: (\d+) +(\d+) +(\d+)\r?$")
    job, job_pgid, tpgid = match.groups()
    assert job == job_pgid and tpgid != job_pgid, term.text
    term.command("kill %1; wait")
    term.command("exit 0")
    assert term.wait() == 0, term.text


def test_ctrl_c_reaches_the_foreground_job_not_overlayd(tty_boot) -> None:
    term = tty_boot(*BASH)
    term.command("sleep 100")
    # Wait until `sleep 100` holds the terminal: only then is ^C meant for it.
    init = term.init_pid

    def sleep_in_foreground() -> bool:
        for pid in _descendants(init):
            fields = _stat(pid)
            if fields and _cmdline(pid) == "sleep 100" and fields[5] == fields[2]:
                return True
        return False

    wait_until(sleep_in_foreground, DEADLINE, "`sleep 100` in the terminal's foreground")
    term.send(b"\x03")
    # bash gets its prompt back; the interrupted job reports 128+SIGINT.
    term.command('echo "status=$?"')
    term.expect(rf"^status={128 + signal.SIGINT}\r?$")
    assert not [p for p in _descendants(init) if _cmdline(p) == "sleep 100"]
    # overlayd never saw the ^C: it is still running and did not start shutting down.
    assert term.proc.poll() is None
    assert "shutting down" not in term.text, term.text
    term.command("exit 3")
    assert term.wait() == 3, term.text
    assert "CMD ended: exit code 3" in term.text
    assert "exiting with code 3" in term.text


def test_ctrl_c_to_a_cmd_that_dies_of_it_gives_130(tty_boot) -> None:
    """A non-shell CMD in the foreground: ^C kills it, the container reports 128+SIGINT."""
    term = tty_boot("sh", "-c", "echo cmd-up; exec sleep 100")
    term.expect(r"^cmd-up\r?$")
    init = term.init_pid
    wait_until(
        lambda: any(_cmdline(p) == "sleep 100" for p in _descendants(init)),
        DEADLINE,
        "the CMD to exec sleep",
    )
    term.send(b"\x03")
    assert term.wait() == 128 + signal.SIGINT, term.text
    assert "killed by SIGINT" in term.text
