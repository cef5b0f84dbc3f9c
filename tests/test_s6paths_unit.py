"""s6paths' own pieces, without a boot: the directories and the halt commands it makes."""

from __future__ import annotations

import os
import stat
import subprocess
import types
from pathlib import Path

import pytest

from overlayd import s6paths
from tests.conftest import needs_root


@pytest.fixture
def basedir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "run/s6/basedir/bin"
    monkeypatch.setattr(s6paths, "BASEDIR_BIN", str(bin_dir))
    return bin_dir


def _write_halt(path: Path) -> None:
    cfg = types.SimpleNamespace(socket_path="/run/overlay/control.sock")
    paths = types.SimpleNamespace(container=types.SimpleNamespace(cfg=cfg))
    s6paths.S6Paths._write_halt(paths, str(path), "halt")  # type: ignore[arg-type]


def test_mkdirs_makes_every_missing_level_0755_and_accepts_an_existing_directory(
    tmp_path: Path,
) -> None:
    old = os.umask(0o077)
    try:
        s6paths._mkdirs(str(tmp_path / "a/b/c"))
        s6paths._mkdirs(str(tmp_path / "a/b/c"))  # there already: nothing to do
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a/b").stat().st_mode) == 0o700  # (mkdir's mode & umask)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        s6paths._mkdirs(str(tmp_path / "file"))


def test_halt_is_made_0755_whatever_the_umask(basedir: Path) -> None:
    old = os.umask(0o077)
    try:
        _write_halt(basedir / "halt")
    finally:
        os.umask(old)
    halt = basedir / "halt"
    assert stat.S_IMODE(halt.stat().st_mode) == 0o755
    assert "overlayctl.s6cmds halt" in halt.read_text()


def test_an_earlier_runs_halt_is_kept_when_it_is_this_one_and_replaced_otherwise(
    basedir: Path,
) -> None:
    halt = basedir / "halt"
    _write_halt(halt)
    made = halt.stat().st_ino
    _write_halt(halt)  # a restart with /run kept: the same file, no new one
    assert halt.stat().st_ino == made
    text = halt.read_text()
    halt.write_text("#!/bin/sh\nexit 0\n")  # someone else's content
    _write_halt(halt)
    assert halt.read_text() == text and halt.stat().st_ino != made
    halt.chmod(0o777)  # the right content with the wrong mode
    _write_halt(halt)
    assert stat.S_IMODE(halt.stat().st_mode) == 0o755
    assert sorted(os.listdir(basedir)) == ["halt"]  # no temporary left behind


@needs_root
def test_a_halt_that_does_not_fit_on_a_full_run_is_not_left_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = tmp_path / "run"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(full)], check=True)
    try:
        (full / "filler").write_bytes(b"x" * 4096)
        monkeypatch.setattr(s6paths, "BASEDIR_BIN", str(full))
        with pytest.raises(OSError):
            _write_halt(full / "halt")
        assert sorted(os.listdir(full)) == ["filler"]
    finally:
        subprocess.run(["umount", str(full)], check=True)
