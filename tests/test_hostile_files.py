"""Planted files and odd names (issue #8): PID 1 handles them and says so in one line.

The run dir, `container_environment`, `exitcode` and service names are written by images,
scripts and sometimes other users. Each test plants what the probe planted and checks what an
operator sees: the container's exit code, the files on disk, overlayd's output, `status`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from overlayd import contenv
from tests.conftest import needs_root
from tests.harness import Booted, Tree, wait_until

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


# --- run dir ----------------------------------------------------------------------------------


@needs_root
def test_world_writable_run_dir_is_fixed_and_nobody_can_plant_an_exit_code(
    boot, tree: Tree
) -> None:
    tree.run_dir.mkdir()
    tree.run_dir.chmod(0o777)
    os.chown(tree.run_dir, 65534, 65534)  # and someone else's
    tree.service("web", "exec sleep 100000")
    booted = boot()
    booted.wait_for(r"run dir .* belonged to someone else \(mode 0777, owner uid 65534\)")
    info = tree.run_dir.stat()
    assert (oct(info.st_mode & 0o7777), info.st_uid) == (oct(0o755), 0)
    planted = subprocess.run(
        [*NOBODY, "sh", "-c", f"echo 9 > {tree.run_dir}/exitcode"], capture_output=True
    )
    assert planted.returncode != 0
    booted.wait_for("services.d: starting")
    booted.kill()
    assert booted.wait() == 0, booted.output


@needs_root
def test_group_writable_run_dir_of_ours_is_fixed_with_a_warning(boot, tree: Tree) -> None:
    tree.run_dir.mkdir()
    tree.run_dir.chmod(0o775)
    booted = boot("true")
    assert booted.wait() == 0, booted.output
    booted.wait_for(r"run dir .* was looser than it may be \(mode 0775, owner uid 0\)")
    assert oct(tree.run_dir.stat().st_mode & 0o7777) == oct(0o755)


@needs_root
def test_non_root_without_a_writable_run_falls_back_to_tmp_once(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    tree = Tree(tmp_path)
    fallback = Path("/tmp/overlay-65534")
    if fallback.exists():
        subprocess.run(["rm", "-rf", str(fallback)], check=True)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "OVERLAY_ROOT": str(tree.root),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    done = subprocess.run(
        [*NOBODY, *_python(), "-m", "overlayd", "sh", "-c", "echo env=$HOME; exit 3"],
        env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
    )
    try:
        assert done.returncode == 3, done.stderr
        lines = [line for line in done.stderr.splitlines() if "/tmp/overlay-65534" in line]
        assert len(lines) == 1, done.stderr
        assert "/run/overlay is not usable by uid 65534" in lines[0]
        assert oct(fallback.stat().st_mode & 0o777) == oct(0o700)
    finally:
        subprocess.run(["rm", "-rf", str(fallback)], check=False)


@needs_root
def test_no_usable_run_dir_is_one_line_naming_the_fixes(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    tree = Tree(tmp_path)
    blocked = tmp_path / "root-only"
    blocked.mkdir(mode=0o755)
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "OVERLAY_ROOT": str(tree.root),
        "OVERLAY_RUN_DIR": str(blocked / "run"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    done = subprocess.run(
        [*NOBODY, *_python(), "-m", "overlayd", "true"],
        env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
    )
    assert done.returncode == 100
    lines = [line for line in done.stderr.splitlines() if "subreaper" not in line]
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert str(blocked / "run") in line
    assert "set OVERLAY_RUN_DIR" in line and "writable" in line


def _python() -> list[str]:
    from tests.harness import PYTHON

    return [PYTHON]


# --- container_environment ----------------------------------------------------------------------


@needs_root
def test_symlinked_container_environment_is_replaced_and_its_target_untouched(
    boot, tree: Tree, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (victim / "precious").write_text("keep me\n")
    tree.run_dir.mkdir()
    (tree.run_dir / "container_environment").symlink_to(victim)
    booted = boot("sh", "-c", 'echo "cmd sees $SECRET"', env={"SECRET": "hunter2"})
    assert booted.wait() == 0, booted.output
    booted.wait_for(r"container_environment was a symbolic link to .*victim.*; replaced")
    booted.wait_for("^cmd sees hunter2$")
    assert sorted(os.listdir(victim)) == ["precious"]
    assert (victim / "precious").read_text() == "keep me\n"
    assert oct(victim.stat().st_mode & 0o777) == oct(0o755)
    env_dir = tree.run_dir / "container_environment"
    assert env_dir.is_dir() and not env_dir.is_symlink()
    assert (env_dir / "SECRET").read_text() == "hunter2"


@needs_root
def test_variable_changes_reach_the_next_process_however_quick(boot, tree: Tree) -> None:
    env_dir = tree.run_dir / "container_environment"
    # Each cont-init script starts right after the previous one ends: the same timestamp tick.
    tree.script("cont-init.d", "10", f"printf 1 > {env_dir}/A; printf gone > {env_dir}/B")
    tree.script("cont-init.d", "20", f'echo "20 sees A=$A B=$B"; printf 2 > {env_dir}/A')
    tree.script("cont-init.d", "30", f'echo "30 sees A=$A"; rm {env_dir}/B; printf 3 > {env_dir}/A')
    tree.script("cont-init.d", "40", f'echo "40 sees A=$A B=${{B-unset}}"; echo new > {env_dir}/C')
    booted = boot("sh", "-c", 'echo "cmd sees A=$A C=$C"')
    assert booted.wait() == 0, booted.output
    booted.wait_for("^20 sees A=1 B=gone$")
    booted.wait_for("^30 sees A=2$")
    booted.wait_for("^40 sees A=3 B=unset$")
    booted.wait_for("^cmd sees A=3 C=new$")


@needs_root
def test_ten_megabyte_variable_is_named_and_later_programs_still_run(boot, tree: Tree) -> None:
    env_dir = tree.run_dir / "container_environment"
    tree.script(
        "cont-init.d", "10-huge", f"head -c 10000000 /dev/zero | tr '\\0' x > {env_dir}/HUGE"
    )
    tree.script("cont-init.d", "20-after", 'echo "20 ran: ${HUGE-unset}"')
    booted = boot("sh", "-c", 'echo "cmd ran: ${HUGE-unset}"')
    assert booted.wait() == 0, booted.output
    booted.wait_for(r"HUGE in .* holds 10000000 bytes, more than the kernel passes to a program")
    booted.wait_for("^20 ran: unset$")
    booted.wait_for("^cmd ran: unset$")
    assert booted.count("holds 10000000 bytes") == 1  # said once, not at every spawn


def test_unchanged_store_of_twenty_thousand_variables_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contenv, "_cache", {})  # 20,000 entries must not outlive the test
    store = tmp_path / "container_environment"
    contenv.save(str(store), {f"V{i}": f"value {i}" for i in range(20_000)})
    reads: list[str] = []
    real = contenv._read_value
    monkeypatch.setattr(contenv, "_read_value", lambda path: reads.append(path) or real(path))
    monkeypatch.setattr(contenv, "RACY_NS", 0)  # a test cannot wait out the racy second
    monkeypatch.setattr(contenv, "RACY_FINE_NS", 0)
    first = contenv.load(str(store))
    assert len(first) == 20_000 and len(reads) == 20_000
    reads.clear()
    assert contenv.load(str(store)) == first
    assert reads == []
    (store / "V7").write_text("changed")
    (store / "NEW").write_text("n")
    (store / "V8").unlink()
    third = contenv.load(str(store))
    assert sorted(Path(p).name for p in reads) == ["NEW", "V7"]
    assert third["V7"] == "changed" and third["NEW"] == "n" and "V8" not in third


# --- exitcode ---------------------------------------------------------------------------------


def run_with_exitcode(boot, tree: Tree, plant: str) -> Booted:
    """A CMD that plants `plant` (shell) as $OVERLAY_RUN_DIR/exitcode, then exits 3."""
    booted = boot("sh", "-c", f"cd {tree.run_dir} && {plant}; exit 3")
    return booted


IGNORED_EXITCODES = {
    # what the user saw → what was planted, the one warning line PID 1 now gives
    "a FIFO hung stage 3 forever": (
        "mkfifo exitcode", r"exitcode is a FIFO, not a regular file; ignored"
    ),
    "a link to /dev/zero took PID 1 to 1.6 GB": (
        "ln -s /dev/zero exitcode", r"exitcode is a symbolic link, not a regular file; ignored"
    ),
    "garbage was logged as a 5 KB line": (
        "head -c 5000 /dev/zero | tr '\\0' z > exitcode",
        r"exitcode holds 'z{40}\.\.\.', not a number; ignored$",
    ),
    "a file over 64 KiB": (
        "head -c 70000 /dev/zero | tr '\\0' 1 > exitcode",
        r"exitcode holds more than 65536 bytes; ignored",
    ),
}


@needs_root
@pytest.mark.parametrize("seen", list(IGNORED_EXITCODES))
def test_unusable_exitcode_is_one_short_warning_and_the_cmd_code_stands(
    boot, tree: Tree, seen: str
) -> None:
    plant, warning = IGNORED_EXITCODES[seen]
    booted = run_with_exitcode(boot, tree, plant)
    assert booted.wait(30) == 3, booted.output
    assert len(booted.wait_for(warning).string) < 200


@needs_root
def test_exitcode_of_five_thousand_digits_is_reduced_modulo_256(boot, tree: Tree) -> None:
    digits = "7" * 4999 + "3"
    booted = run_with_exitcode(boot, tree, f"printf {digits} > exitcode")
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        expected = int(digits) % 256
    finally:
        sys.set_int_max_str_digits(limit)
    assert booted.wait(30) == expected, booted.output


# --- names ------------------------------------------------------------------------------------


@needs_root
def test_service_name_that_is_not_utf8_is_shown_escaped_and_status_works_for_all(
    boot, tree: Tree
) -> None:
    tree.service("web", "exec sleep 100000")
    odd = os.fsencode(tree.etc / "services.d") + b"/caf\xe9"
    os.mkdir(odd)
    with open(odd + b"/run", "w") as handle:
        handle.write("#!/bin/sh\nexec sleep 100000\n")
    os.chmod(odd + b"/run", 0o755)
    booted = boot()
    wait_until(lambda: booted.ctl("wait", "--up", "web", "caf\\xe9").returncode == 0,
               what="both services up")
    done = booted.ctl("status", "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(r["name"] for r in json.loads(done.stdout)) == ["caf\\xe9", "web"]
    assert booted.ctl("status").returncode == 0
    assert booted.ctl("check").returncode == 0
    stop = booted.ctl("stop", "caf\\xe9")
    assert stop.returncode == 0, stop.stderr
    assert booted.ctl("status", "web").returncode == 0


def test_small_store_sees_a_same_size_rewrite_made_right_after_a_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No inotify under WATCH_ABOVE files: the racy window (50 ms on a filesystem with
    sub-second timestamps) makes the next look read a file changed so soon after the last."""
    monkeypatch.setattr(contenv, "_cache", {})
    store = tmp_path / "container_environment"
    contenv.save(str(store), {"A": "old", "B": "kept"})
    assert contenv.load(str(store))["A"] == "old"
    (store / "A").write_text("new")  # same size, most likely the same timestamp tick
    assert contenv.load(str(store)) == {"A": "new", "B": "kept"}


def test_watched_store_sees_a_same_size_rewrite_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contenv, "_cache", {})  # its inotify watch must not outlive the test
    store = tmp_path / "container_environment"
    contenv.save(str(store), {f"V{i}": "old" for i in range(contenv.WATCH_ABOVE + 10)})
    assert contenv.load(str(store))["V1"] == "old"
    assert contenv.load(str(store))["V1"] == "old"  # now watched
    (store / "V1").write_text("new")  # same size, same timestamp tick
    assert contenv.load(str(store))["V1"] == "new"
    (store / "V2").write_text("gen")
    (store / "V2").chmod(0o600)
    assert contenv.load(str(store))["V2"] == "gen"
    for cached in contenv._cache.values():
        cached.close()


# --- service definitions ----------------------------------------------------------------------


def test_fifos_planted_as_a_services_settings_do_not_stop_pid1(boot, tree: Tree) -> None:
    """A FIFO where a one-line settings file belongs reads as empty (its default): opened for
    reading it would wait for a writer, and PID 1 with it, deaf even to SIGTERM."""
    tree.service("svc", "echo svc-ran; exec sleep 100", files={"health/check": "exit 0\n"})
    service = tree.etc / "services.d" / "svc"
    for name in ("timeout-finish", "max-death-tally", "start-secs", "health/interval"):
        os.mkfifo(service / name)
    booted = boot("true", env={"S6_CMD_WAIT_FOR_SERVICES": "1"})
    assert booted.wait() == 0, booted.output
    assert booted.count(r"^svc-ran$") == 1
