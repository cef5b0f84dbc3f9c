"""spawn.spawn without a PID 1: what a child starts with, by posix_spawn or by the fork way."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from overlayd import spawn, vspawn


def _run(argv: list[str], fd3: bool = False, **kwargs: object) -> tuple[int, bytes]:
    """Spawn `argv` with stdout and stderr (and fd 3 if asked) on a pipe; its exit code and
    everything it wrote."""
    read_end, write_end = os.pipe()
    extra = {3: write_end} if fd3 else None
    try:
        pid = spawn.spawn(
            argv, dict(os.environ), stdout=write_end, stderr=write_end, extra_fds=extra, **kwargs
        )
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as out:
        data = out.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), data


def test_posix_spawn_is_available_here() -> None:
    """The machine's C library has every function the vfork-style start needs."""
    assert vspawn.spawner() is not None


def test_sigset_sets_exactly_the_bits_asked_including_the_c_librarys_own() -> None:
    raw = bytes(vspawn.sigset([1, 32, 33, 64]))
    assert len(raw) == vspawn.SIGSET_BYTES
    assert int.from_bytes(raw, "little") == (1 << 0) | (1 << 31) | (1 << 32) | (1 << 63)


def test_child_gets_its_directory_session_and_fds(tmp_path: Path) -> None:
    code, out = _run(
        ["sh", "-c", "pwd; ps -o sid= -p $$; echo $$; echo to-three >&3"],
        fd3=True, cwd=str(tmp_path), new_session=True,
    )
    lines = out.decode().split()
    assert code == 0, out
    assert lines[0] == str(tmp_path)
    assert lines[1] == lines[2]  # its own session: sid == pid
    assert lines[3] == "to-three"
    assert Path.cwd() != tmp_path  # the spawner's own directory did not move


def test_child_starts_with_no_signal_ignored_or_blocked_that_python_set() -> None:
    spawn.capture_original_signals()
    given = subprocess.run(
        ["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status"],
        capture_output=True, check=True,
    ).stdout
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # overlayd's own change: not passed on
    try:
        code, out = _run(["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status"])
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    assert code == 0
    assert out == given


@pytest.mark.parametrize(
    ("argv", "code", "said"),
    [
        (["/nonexistent/program"], 127, b"No such file or directory"),
        (["/etc/passwd"], 126, b"Permission denied"),
    ],
)
def test_a_program_that_cannot_run_is_one_line_and_the_shells_exit_code(
    argv: list[str], code: int, said: bytes
) -> None:
    got, out = _run(argv)
    assert got == code
    assert out.count(b"\n") == 1 and said in out and argv[0].encode() in out


def test_a_directory_that_is_not_there_fails_the_child_not_the_spawner() -> None:
    got, out = _run(["true"], cwd="/nonexistent-directory")
    assert got == 126
    assert b"No such file or directory" in out


def test_a_fifo_without_its_execute_bit_is_run_through_sh_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    """script_argv reads a non-executable script's #! line; a FIFO must not block that read."""
    fifo = tmp_path / "10-init"
    os.mkfifo(fifo, 0o644)
    argv, warning = spawn.script_argv(str(fifo))
    assert argv == ["/bin/sh", str(fifo)]
    assert warning is not None and "not executable" in warning
