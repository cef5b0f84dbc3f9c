"""overlayctl as an operator meets it (issue #14), through the real CLI against a PID-1 overlayd.

start/stop/restart/once wait until done and say so in one line; --timeout, --kill-after and
--no-wait; rescan, pid, events --snapshot, the CMD's row, reasons; a socket refused for its
permissions; the per-user socket directory in the search order; bash completion; bad option
values. Nothing waits by sleeping: on output lines, states, or conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import DEADLINE, PYTHON, REPO, Booted, Tree, can_unshare, wait_until
from tests.harness import write_to_reader as release_fifo
from tests.test_control_e2e import ok, overlay, record

__all__ = ["overlay"]  # a fixture, imported for pytest

SLEEP = "exec sleep 1000"
#: A run script that ignores SIGTERM, and a child in its process group that ignores it too.
STUBBORN = (
    "trap '' TERM\n"
    "sh -c 'trap \"\" TERM; echo $$ > child.pid; while :; do sleep 1; done' &\n"
    "echo stubborn-running\nwhile :; do sleep 1; done"
)
VENV_BIN = Path(PYTHON).parent


def state_is(booted: Booted, name: str, state: str) -> Callable[[], bool]:
    return lambda: record(booted, name)["state"] == state


def background(booted: Booted, *args: str) -> subprocess.Popen[str]:
    """`overlayctl ARGS` started, not waited for."""
    return subprocess.Popen(
        [PYTHON, "-m", "overlayctl", "--socket", str(booted.socket), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- synchronous by default --------------------------------------------------------------------


def test_start_returns_only_once_a_notifying_service_is_ready(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    gate = tree.base / "gate"
    os.mkfifo(gate)
    tree.service("db", f"read go < {gate}\necho >&3\n{SLEEP}", down=True,
                 files={"notification-fd": "3\n"})  # fmt: skip
    booted = overlay()
    proc = background(booted, "start", "db")
    wait_until(state_is(booted, "db", "starting"), what="db starting")
    assert proc.poll() is None, "start returned before db was ready"
    release_fifo(gate, b"go\n")
    out, err = proc.communicate(timeout=DEADLINE)
    pid = record(booted, "db")["pid"]
    assert (proc.returncode, out, err) == (0, f"db: started, ready (pid {pid})\n", "")


def test_stop_returns_only_once_the_finish_script_is_done(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    gate = tree.base / "gate"
    os.mkfifo(gate)
    tree.service("web", SLEEP, finish=f"read go < {gate}\necho web-finished")
    booted = overlay()
    ok(booted, "wait", "web")
    pid = record(booted, "web")["pid"]
    proc = background(booted, "stop", "web")
    wait_until(state_is(booted, "web", "finishing"), what="web finishing")
    assert proc.poll() is None, "stop returned before finish was done"
    release_fifo(gate, b"go\n")
    out, err = proc.communicate(timeout=DEADLINE)
    assert (proc.returncode, out, err) == (0, f"web: stopped (pid {pid}, killed by SIGTERM)\n", "")
    assert booted.count(r"^web-finished$") == 1
    assert record(booted, "web")["state"] == "down"


def test_restart_goes_through_the_throttle_to_the_new_process(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", SLEEP)
    booted = overlay()
    ok(booted, "wait", "web")
    first = ok(booted, "restart", "web")  # up for under a second: the restart waits it out
    middle = record(booted, "web")["pid"]
    second = ok(booted, "restart", "web", "web")  # a name given twice is done once
    last = record(booted, "web")["pid"]
    assert re.fullmatch(rf"web: restarted \(pid \d+ → {middle}\)\n", first), first
    assert second == f"web: restarted (pid {middle} → {last})\n"
    assert record(booted, "web")["restarts"] == 2


def test_already_there_says_so(tree: Tree, overlay: Callable[..., Booted]) -> None:
    tree.service("web", SLEEP)
    tree.service("idle", SLEEP, down=True)
    booted = overlay()
    ok(booted, "wait", "web")
    pid = record(booted, "web")["pid"]
    assert ok(booted, "start", "web", "idle").splitlines() == [
        f"web: already up (pid {pid})",
        f"idle: started, up (pid {record(booted, 'idle')['pid']})",
    ]
    ok(booted, "stop", "idle")
    assert ok(booted, "stop", "idle") == "idle: already down\n"


def test_stop_timeout_exits_1_naming_the_state_reached(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("stubborn", STUBBORN)
    booted = overlay()
    booted.wait_for(r"^stubborn-running$")
    pid = record(booted, "stubborn")["pid"]
    done = booted.ctl("stop", "--timeout", "0.5", "stubborn")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"overlayctl: stop: timed out after 0.5 s: stubborn: still stopping (pid {pid})\n"
    )


def test_stop_kill_after_kills_the_whole_process_group(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    directory = tree.service("stubborn", STUBBORN)
    booted = overlay()
    booted.wait_for(r"^stubborn-running$")
    wait_until(lambda: (directory / "child.pid").exists(), what="the child's pid file")
    pid = record(booted, "stubborn")["pid"]
    done = booted.ctl("stop", "--kill-after", "0.3", "stubborn")
    assert (done.returncode, done.stdout) == (
        0,
        f"stubborn: stopped (pid {pid}, killed by SIGKILL)\n",
    )
    assert done.stderr == (
        "overlayctl: stubborn: not down after --kill-after; sent SIGKILL to its process group\n"
    )
    child = int((directory / "child.pid").read_text())
    wait_until(lambda: child not in booted.descendants(), what="the child gone (killed, reaped)")


def test_start_of_a_service_stuck_stopping_says_so_and_starts_after_it_dies(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("stubborn", STUBBORN)
    booted = overlay()
    booted.wait_for(r"^stubborn-running$")
    old = record(booted, "stubborn")["pid"]
    assert ok(booted, "stop", "--no-wait", "stubborn") == ""  # the old behaviour, on request
    assert record(booted, "stubborn")["state"] == "stopping"
    proc = background(booted, "start", "stubborn")
    assert proc.stderr is not None
    notice = proc.stderr.readline()  # said at once, while it waits
    assert proc.poll() is None
    ok(booted, "signal", "KILL", "stubborn")
    out, err = proc.communicate(timeout=DEADLINE)
    new = record(booted, "stubborn")["pid"]
    assert new != old
    assert (proc.returncode, out, err) == (0, f"stubborn: started, up (pid {new})\n", "")
    assert notice == (
        f"overlayctl: stubborn: still stopping (pid {old}); it starts again once that process"
        " exits (overlayctl signal KILL stubborn to hurry it)\n"
    )


def test_start_of_a_notifying_service_that_dies_first_exits_1(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("flaky", "exit 3", down=True, files={"notification-fd": "3\n"})
    booted = overlay()
    done = booted.ctl("start", "flaky")
    assert (done.returncode, done.stdout) == (1, "")
    assert re.fullmatch(
        r"overlayctl: flaky: died before it was ready \(exit code 3\); now (down|backoff)\n",
        done.stderr,
    ), done.stderr


# --- verbs -------------------------------------------------------------------------------------


def test_rescan_works_with_a_cmd_running(tree: Tree, overlay: Callable[..., Booted]) -> None:
    tree.service("old", SLEEP)
    booted = overlay("sleep", "1000")
    ok(booted, "wait", "old")
    tree.service("new", "echo new-running\n" + SLEEP)
    (tree.etc / "services.d" / "old" / "run").unlink()
    for leftover in (tree.etc / "services.d" / "old").iterdir():
        leftover.unlink()
    (tree.etc / "services.d" / "old").rmdir()
    assert ok(booted, "rescan") == "rescan: added new; stopped old\n"
    booted.wait_for(r"^new-running$")
    # A vanished directory is stopped and forgotten (DESIGN §4): no row, no second stop.
    assert "old" not in [r["name"] for r in json.loads(ok(booted, "--json", "status"))]
    assert ok(booted, "rescan") == "rescan: no change\n"


def test_pid_prints_a_service_and_the_cmd_pid(tree: Tree, overlay: Callable[..., Booted]) -> None:
    tree.service("web", SLEEP)
    tree.service("idle", SLEEP, down=True)
    booted = overlay("sleep", "1000")
    ok(booted, "wait", "web")
    assert ok(booted, "pid", "web") == f"{record(booted, 'web')['pid']}\n"
    cmd = record(booted, "CMD")
    assert cmd["state"] == "up"
    assert ok(booted, "pid", "CMD") == f"{cmd['pid']}\n"
    done = booted.ctl("pid", "idle")
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", "overlayctl: idle has no process (state down)\n",
    )  # fmt: skip


def test_the_cmd_is_a_status_row(tree: Tree, overlay: Callable[..., Booted]) -> None:
    tree.service("web", SLEEP)
    booted = overlay("sleep", "1000")
    ok(booted, "wait", "web")
    rows = {line.split()[0]: line.split() for line in ok(booted, "status").splitlines()[2:]}
    assert list(rows) == ["web", "CMD"]
    cmd = record(booted, "CMD")
    assert (cmd["name"], cmd["state"], cmd["cmd"]) == ("CMD", "up", ["sleep", "1000"])
    assert rows["CMD"][1:3] == ["up", str(cmd["pid"])]
    assert re.fullmatch(r"\d+s", rows["CMD"][3])  # an uptime, read from /proc
    # check is about services: the CMD's row never makes it unhealthy.
    assert booted.ctl("check").returncode == 0


def test_status_says_why_a_service_is_in_backoff(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("crashy", "exit 4")
    booted = overlay()
    wait_until(state_is(booted, "crashy", "backoff"), what="crashy in backoff")
    lines = ok(booted, "status", "crashy").splitlines()
    assert lines[0].split()[-1] == "reason"
    assert lines[2].endswith("exit code 4 within 1 s of starting; restarting after a pause")


def test_events_snapshot_prints_current_states_then_changes(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    tree.service("web", SLEEP)
    tree.service("idle", SLEEP, down=True)
    booted = overlay()
    ok(booted, "wait", "web")
    proc = background(booted, "events", "--snapshot")
    assert proc.stdout is not None
    first = [proc.stdout.readline().split()[1:3] for _ in range(2)]
    assert sorted(first) == [["idle", "down"], ["web", "up"]]
    ok(booted, "start", "idle")
    assert proc.stdout.readline().split()[1:3] == ["idle", "up"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(DEADLINE) == 0


# --- errors with the fix in them ---------------------------------------------------------------


def test_socket_refused_for_permissions_names_the_fix(
    tree: Tree, overlay: Callable[..., Booted], tmp_path_factory: pytest.TempPathFactory
) -> None:
    open_dir = Path(tempfile.mkdtemp(prefix="overlayctl-perm-"))
    open_dir.chmod(0o755)  # pytest's tmp_path sits under a 0700 parent
    try:
        booted = overlay(OVERLAY_SOCKET=str(open_dir / "control.sock"))
        done = booted.ctl("status", user="1000")
    finally:
        shutil.rmtree(open_dir, ignore_errors=True)
    assert done.returncode == 3
    line = done.stderr
    assert line.count("\n") == 1
    assert line.startswith(
        f"overlayctl: cannot reach overlayd at {booted.socket}: Permission denied"
    )
    for needle in ("socket mode 0600", "owner root", "group root", "you are uid 1000",
                   "OVERLAY_SOCKET_GROUP=GROUP"):  # fmt: skip
        assert needle in line, (needle, line)


def test_bad_option_values_are_one_line_in_the_clis_words() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAY_")}
    for args, needle in (
        (["shutdown", "--exit-code", "abc"], "'--exit-code': 'abc' is not a valid"),
        (["stop", "web", "--timeout", "soon"], "'--timeout': 'soon' is not a valid"),
        (["stop", "web", "--timeout", "-1"], "Invalid value for '--timeout'"),
    ):  # fmt: skip
        done = subprocess.run([PYTHON, "-m", "overlayctl", *args], capture_output=True,
                              text=True, env=env, timeout=DEADLINE)  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
        assert "pydantic" not in done.stderr and "Input should be" not in done.stderr


@pytest.mark.parametrize("command", ["start", "stop", "restart", "once", "wait", "signal"])
def test_help_shows_names_as_name_dots(command: str) -> None:
    done = subprocess.run([PYTHON, "-m", "overlayctl", command, "--help"], capture_output=True,
                          text=True, timeout=DEADLINE)  # fmt: skip
    assert done.returncode == 0
    assert f"Usage: overlayctl {command} [OPTIONS] " in done.stdout
    assert "NAME..." in done.stdout.splitlines()[0]
    assert "list[str]" not in done.stdout and "{NAME}" not in done.stdout


# --- where overlayctl looks for the socket ----------------------------------------------------


def test_the_per_user_directory_is_searched_after_the_default(tree: Tree) -> None:
    """A non-root overlayd whose run dir is /tmp/overlay-UID (#8's fallback, placed here by
    hand): overlayctl run as that user with no OVERLAY_* variable finds it there."""
    if not can_unshare():
        pytest.skip("needs root")
    if os.path.exists("/run/overlay/control.sock"):
        pytest.skip("a real overlayd owns the default socket on this machine")
    uid = 1414  # a uid no other test uses, so its /tmp/overlay-UID is ours alone
    run_dir = Path(f"/tmp/overlay-{uid}")
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, uid, uid)
    home = Path(tempfile.mkdtemp(prefix="overlayctl-user-"))
    home.chmod(0o755)  # pytest's tmp_path sits under a 0700 parent
    service = home / "etc" / "services.d" / "web"
    service.mkdir(parents=True)
    (service / "run").write_text("#!/bin/sh\nexec sleep 1000\n")
    (service / "run").chmod(0o755)
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERLAY_", "S6_"))}

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, PYTHON, "-m", "overlayctl", *args], capture_output=True,
                              text=True, env=env, timeout=DEADLINE, cwd=str(REPO))  # fmt: skip

    overlayd = subprocess.Popen(
        [*as_user, PYTHON, "-m", "overlayd"],
        env={**env, "OVERLAY_ROOT": str(home), "OVERLAY_RUN_DIR": str(run_dir),
             "OVERLAY_S6_PATHS": "0", "PYTHONPATH": str(REPO)},
        cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until((run_dir / "control.sock").exists, 10, "the control socket")
        done = ctl("wait", "web")
        assert (done.returncode, done.stderr) == (0, "")
        done = ctl("pid", "web")
        assert done.returncode == 0 and done.stdout.strip().isdigit(), done
        overlayd.terminate()
        overlayd.wait(DEADLINE)
        done = ctl("status")  # gone: the message names both places it looked
        assert done.returncode == 3
        assert done.stderr.startswith(
            "overlayctl: cannot reach overlayd at /run/overlay/control.sock or"
            f" {run_dir}/control.sock: "
        ), done.stderr
    finally:
        if overlayd.poll() is None:
            overlayd.kill()
            overlayd.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


# --- completion --------------------------------------------------------------------------------

BASH_COMPLETE = """
source <(overlayctl --show-completion bash)
complete -p overlayctl >/dev/null || exit 9
COMP_WORDS=($WORDS); COMP_CWORD=$CWORD
_overlayctl_completion overlayctl
printf '%s\\n' "${COMPREPLY[@]}"
"""


def _bash_complete(words: str, env: dict[str, str]) -> list[str]:
    parts = words.split(" ")
    done = subprocess.run(
        ["bash", "-c", BASH_COMPLETE],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env={
            **env,
            "WORDS": words,
            "CWORD": str(len(parts) - 1),
            "PATH": f"{VENV_BIN}:{env.get('PATH', os.defpath)}",
        },
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_bash_completion_offers_commands_options_and_live_service_names(
    tree: Tree, overlay: Callable[..., Booted]
) -> None:
    if not (VENV_BIN / "overlayctl").exists():
        pytest.skip("overlayctl is not installed as a command in this venv")
    tree.service("web", SLEEP)
    tree.service("worker", SLEEP)
    booted = overlay()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAY_")}
    env["OVERLAY_SOCKET"] = str(booted.socket)
    assert _bash_complete("overlayctl st", env) == ["status", "start", "stop"]
    assert _bash_complete("overlayctl re", env) == ["restart", "rescan"]
    assert sorted(_bash_complete("overlayctl stop w", env)) == ["web", "worker"]
    assert _bash_complete("overlayctl stop --k", env) == ["--kill-after"]
    assert "HUP" in _bash_complete("overlayctl signal H", env)
    # overlayd gone: no names, no noise, no error.
    env["OVERLAY_SOCKET"] = str(tree.base / "nowhere.sock")
    assert _bash_complete("overlayctl stop w", env) == []


def test_install_completion_writes_the_script_for_bash(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAY_")}
    env["HOME"] = str(tmp_path)
    argv = [PYTHON, "-m", "overlayctl", "--install-completion", "bash"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=DEADLINE, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "bash completion installed in" in done.stdout
    scripts = list(tmp_path.rglob("overlayctl*"))
    assert scripts and "_OVERLAYCTL_COMPLETE=complete_bash" in scripts[0].read_text()
    assert "overlayctl" in (tmp_path / ".bashrc").read_text()


# --- a read-only root -------------------------------------------------------------------------

READ_ONLY_ROOT = """
set -e
mount --bind / "$NEW"
mount -o remount,bind,ro "$NEW"
mount -t tmpfs -o mode=755 tmpfs "$NEW/run"
mount -t proc proc "$NEW/proc"
mount --rbind /dev "$NEW/dev"
exec chroot "$NEW" "$@"
"""
IN_THE_CONTAINER = f"""
if touch /read-only-probe 2>/dev/null; then echo root-is-writable; fi
{PYTHON} -m overlayctl wait web
{PYTHON} -m overlayctl status
echo "cmd-pid=$({PYTHON} -m overlayctl pid CMD) mine=$$"
exit 5
"""


def test_a_read_only_root_with_a_tmpfs_run_boots_and_overlayctl_finds_it(tree: Tree) -> None:
    """`docker run --read-only --tmpfs /run`: overlayd as PID 1 on a read-only root makes
    /run/overlay on the tmpfs, and overlayctl with no --socket nor OVERLAY_* finds it."""
    if not can_unshare():
        pytest.skip("needs root and unshare (PID and mount namespaces)")
    tree.service("web", SLEEP)
    new_root = tree.base / "newroot"
    new_root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OVERLAY_", "S6_"))}
    env.update(NEW=str(new_root), OVERLAY_ROOT=str(tree.root), PYTHONPATH=str(REPO))
    done = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private",
         "sh", "-c", READ_ONLY_ROOT, "sh",
         PYTHON, "-m", "overlayd", "sh", "-c", IN_THE_CONTAINER],
        capture_output=True, text=True, env=env, timeout=DEADLINE, cwd="/",
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 5, out
    assert not re.search(r"^root-is-writable$", out, re.M), out
    assert re.search(r"^web +up +\d+ ", out, re.M), out
    assert re.search(r"^CMD +up +(\d+) ", out, re.M), out
    cmd_pid, mine = re.search(r"^cmd-pid=(\d+) mine=(\d+)$", out, re.M).groups()  # type: ignore[union-attr]
    assert cmd_pid == mine  # the CMD's row is the shell running these lines
