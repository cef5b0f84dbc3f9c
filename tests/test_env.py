"""The container environment: saved at boot, secret-safe, read fresh by every process."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from overlayd import contenv
from tests.conftest import needs_root
from tests.harness import PYTHON, Tree

pytestmark = needs_root

WITH_CONTENV = str(Path(PYTHON).with_name("with-contenv"))


def test_saved_directory_is_0700_and_files_0600_with_exact_values(boot, tree: Tree) -> None:
    env_dir = tree.run_dir / "container_environment"
    cmd = (
        f'echo "dir $(stat -c %a {env_dir})"; echo "file $(stat -c %a {env_dir}/SECRET)"; '
        f'echo "value $(cat {env_dir}/SECRET)"'
    )
    booted = boot("sh", "-c", cmd, env={"SECRET": "hunter2 with spaces", "EMPTY": ""})
    assert booted.wait() == 0, booted.output
    booted.wait_for("^dir 700$")
    booted.wait_for("^file 600$")
    booted.wait_for("^value hunter2 with spaces$")
    assert (env_dir / "SECRET").read_bytes() == b"hunter2 with spaces"
    assert (env_dir / "EMPTY").read_bytes() == b""
    assert stat.S_IMODE((env_dir / "EMPTY").stat().st_mode) == 0o600


def test_variable_written_by_cont_init_reaches_later_services_and_cmd(boot, tree: Tree) -> None:
    env_dir = tree.run_dir / "container_environment"
    tree.script("cont-init.d", "10-set", f"echo from-init > {env_dir}/FROM_INIT")
    tree.script("cont-init.d", "20-change", f"printf changed > {env_dir}/GREETING")
    tree.service(  # ready only once it has spoken, so the CMD cannot end the run first
        "svc",
        'echo "svc sees $FROM_INIT $GREETING"; echo >&3; exec sleep 100',
        files={"notification-fd": "3\n"},
    )
    booted = boot(
        "sh",
        "-c",
        'echo "cmd sees $FROM_INIT $GREETING empty=[${EMPTY-unset}]"',
        env={"GREETING": "hello", "EMPTY": "", "S6_CMD_WAIT_FOR_SERVICES": "1"},
    )
    assert booted.wait() == 0, booted.output
    booted.wait_for("^svc sees from-init changed$")
    booted.wait_for(r"^cmd sees from-init changed empty=\[\]$")


def test_keep_env_gives_children_overlayds_own_environment(boot, tree: Tree) -> None:
    env_dir = tree.run_dir / "container_environment"
    tree.script("cont-init.d", "10-set", f"echo from-init > {env_dir}/FROM_INIT")
    booted = boot("sh", "-c", 'echo "cmd sees [${FROM_INIT-unset}]"', env={"S6_KEEP_ENV": "1"})
    assert booted.wait() == 0, booted.output
    booted.wait_for(r"^cmd sees \[unset\]$")


def test_with_contenv_runs_a_program_with_the_saved_environment(tree: Tree) -> None:
    env_dir = tree.run_dir / "container_environment"
    env_dir.mkdir(parents=True)
    (env_dir / "PATH").write_text("/usr/bin:/bin")
    (env_dir / "FOO").write_text("bar\n")
    result = subprocess.run(
        ["env", "-i", f"OVERLAY_RUN_DIR={tree.run_dir}", WITH_CONTENV, "sh", "-c", 'echo "[$FOO]"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "[bar]\n"


def test_with_contenv_as_a_shebang(tree: Tree) -> None:
    env_dir = tree.run_dir / "container_environment"
    env_dir.mkdir(parents=True)
    (env_dir / "PATH").write_text(f"{Path(WITH_CONTENV).parent}:/usr/bin:/bin")
    (env_dir / "FOO").write_text("from-shebang")
    script = tree.base / "script"
    script.write_text(f'#!{WITH_CONTENV} sh\necho "[$FOO]"\n')
    script.chmod(0o755)
    result = subprocess.run(
        ["env", "-i", f"OVERLAY_RUN_DIR={tree.run_dir}", str(script)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "[from-shebang]\n"


def test_with_contenv_program_not_found_exits_127(tree: Tree) -> None:
    result = subprocess.run(
        ["env", "-i", f"OVERLAY_RUN_DIR={tree.run_dir}", WITH_CONTENV, "no-such-prog"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 127
    assert "no-such-prog" in result.stderr


def test_a_fifo_in_the_environment_store_is_skipped_not_waited_on(tmp_path: Path) -> None:
    """PID 1 reads the store before every spawn: a FIFO there must not hang it."""
    import os

    from overlayd import contenv

    (tmp_path / "GOOD").write_bytes(b"yes\n")
    os.mkfifo(tmp_path / "A_FIFO")
    (tmp_path / "A_DIR").mkdir()
    assert contenv.load(str(tmp_path)) == {"GOOD": "yes"}


def test_a_restart_keeps_files_already_holding_their_value_and_replaces_the_rest(
    tmp_path: Path,
) -> None:
    """A restart with /run kept: a file that is exactly what a new one would be is kept (no new
    file); a changed value, a looser mode, a second link or a symlink is made anew; names the
    new environment lacks are removed; a directory of a variable's name is left alone."""
    store = tmp_path / "container_environment"
    contenv.save(str(store), {"SAME": "v", "CHANGED": "old", "LOOSE": "x", "LINKED": "y",
                              "GONE": "z"})
    for path in store.iterdir():  # a mark a file made anew cannot have (inode numbers recur)
        os.utime(path, (1_000_000, 1_000_000))
    (store / "LOOSE").chmod(0o644)
    os.link(store / "LINKED", tmp_path / "elsewhere")
    (store / "LINK").symlink_to(tmp_path / "elsewhere")
    (store / "DIR").mkdir()
    contenv.save(str(store), {"SAME": "v", "CHANGED": "new", "LOOSE": "x", "LINKED": "y",
                              "LINK": "l", "DIR": "d"})
    assert (store / "SAME").stat().st_mtime == 1_000_000  # kept
    for name in ("CHANGED", "LOOSE", "LINKED"):
        assert (store / name).stat().st_mtime != 1_000_000, name  # made anew
    assert not (store / "LINK").is_symlink() and (store / "LINK").read_text() == "l"
    assert (tmp_path / "elsewhere").read_text() == "y"  # nothing followed, nothing written
    assert sorted(p.name for p in store.iterdir()) == [
        "CHANGED", "DIR", "LINK", "LINKED", "LOOSE", "SAME"]
    for path in store.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
            assert path.stat().st_nlink == 1, path.name
    assert contenv.load(str(store)) == {"SAME": "v", "CHANGED": "new", "LOOSE": "x",
                                        "LINKED": "y", "LINK": "l"}


def test_save_returns_exactly_what_reading_the_store_back_gives(tmp_path: Path) -> None:
    """The first child gets save()'s return instead of a read of the store (stages.py), so
    the two must agree: a trailing newline dropped, a name that cannot be a file or is
    blocked by a directory left out, a value too long to exec left out, odd bytes kept; on a
    fresh store and on a restart that keeps some files."""
    store = tmp_path / "container_environment"
    environ = {
        "PLAIN": "v", "EMPTY": "", "NEWLINE": "line\n", "TWO_NEWLINES": "x\n\n",
        "UTF8": "héllo ✓", "RAW": b"\xff\xfe".decode("utf-8", "surrogateescape"),
        "BLOCKED": "a directory is in the way", "a/b": "slash", "": "no name",
        "HUGE": "x" * contenv.MAX_VARIABLE,
    }
    store.mkdir(mode=0o700)
    (store / "BLOCKED").mkdir()
    fresh = contenv.save(str(store), environ)
    assert fresh == contenv.load(str(store))
    assert fresh["NEWLINE"] == "line" and fresh["TWO_NEWLINES"] == "x\n"
    assert "BLOCKED" not in fresh and "HUGE" not in fresh and "a/b" not in fresh
    environ["PLAIN"] = "changed"
    restarted = contenv.save(str(store), environ)  # PLAIN made anew, the rest kept
    assert restarted == contenv.load(str(store))
    assert restarted["PLAIN"] == "changed" and restarted["UTF8"] == "héllo ✓"


@pytest.mark.parametrize("logging", ["0", "1"])  # 1: the catch-all logger starts first
def test_a_lean_boots_cmd_sees_what_a_child_before_it_wrote_into_the_store(
    boot, tree: Tree, logging: str
) -> None:
    """Only the first child of the container gets stage 1's copy of the environment: here
    S6_STAGE2_HOOK runs first and edits the store, and the CMD after it sees the edit."""
    env_dir = tree.run_dir / "container_environment"
    hook = tree.write("hook.sh", (
        "#!/bin/sh\n"
        f"printf 'from the hook' > {env_dir}/GREETING\n"
        f"printf 'added' > {env_dir}/ADDED\n"))
    booted = boot("sh", "-c", 'echo "greeting=$GREETING added=$ADDED"',
                  env={"S6_STAGE2_HOOK": str(hook), "GREETING": "from the container",
                       "S6_LOGGING": logging})
    assert booted.wait() == 0, booted.output
    booted.wait_for("^greeting=from the hook added=added$")


def test_a_full_run_dir_leaves_variables_out_whole_and_the_boot_goes_on(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """/run is full: a variable that does not fit is left out with a warning (never half
    written), the others are saved, and save() still returns exactly what a read gives."""
    full = tmp_path / "run"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
    try:
        store = full / "container_environment"
        environ = {"SMALL": "fits", "BIG": "x" * 100_000, "AFTER": "also fits",
                   **{f"HUGE{i}": "y" * 20_000 for i in range(12)}}
        saved = contenv.save(str(store), environ)
        assert saved == contenv.load(str(store))
        assert saved.keys() >= {"SMALL", "AFTER"} and "BIG" not in saved
        assert not (store / "BIG").exists()
        for name in {f"HUGE{i}" for i in range(12)} - saved.keys():  # never half there
            assert not (store / name).exists()
    finally:
        subprocess.run(["umount", str(full)], check=True)
    warnings = [line for line in capfd.readouterr().err.splitlines() if "cannot save" in line]
    assert len(warnings) == 1, warnings  # one line for every variable the same cause kept out
    assert "BIG" in warnings[0] and "No space left on device" in warnings[0]
