"""Debian's real s6 and execline tools against a PID-1 overlayd (DESIGN §11).

Each test boots overlayd with the s6 paths on, over a private tmpfs on /run inside its own
mount namespace (the host's /run is never touched), and runs s6-svc, s6-svstat, s6-svwait,
s6-svok, s6-svscanctl there with `nsenter`, as `docker exec` would. The exit codes expected are
those the same tools give against a real s6-supervise (Debian's s6 2.11.3.2, checked by hand).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.harness import Tree, wait_until
from tests.test_services import state_of as record
from tests.test_services import wait_state
from tests.v3tree import V3

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("s6-svc") is None, reason="needs Debian's s6 (make s6-tools)"),
]

VENV_BIN = str(Path(sys.executable).parent)
SECONDS = r"\d+ seconds"


def boot_s6(boot, *cmd: str, **kwargs):
    return boot(*cmd, s6_paths=True, **kwargs)


def run(booted, *argv: str):
    return booted.in_ns(*argv)


def svstat(booted, name: str, *options: str) -> str:
    result = run(booted, "s6-svstat", *options, f"/run/service/{name}")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_s6_svc_up_down_restart_once_as_against_s6_supervise(boot, tree: Tree) -> None:
    tree.service("web", "exec sleep 1000")
    booted = boot_s6(boot)
    first = wait_state(booted, "web", "up")["pid"]
    assert run(booted, "s6-svok", "/var/run/s6/services/web").returncode == 0

    down = run(booted, "s6-svc", "-d", "-wD", "-T", "5000", "/var/run/s6/services/web")
    assert down.returncode == 0, down.stderr
    assert record(booted, "web")["state"] == "down"
    assert svstat(booted, "web", "-o", "up,wantedup") == "false false"

    up = run(booted, "s6-svc", "-u", "-wu", "-T", "5000", "/run/service/web")
    assert up.returncode == 0, up.stderr
    second = wait_state(booted, "web", "up")["pid"]
    assert second != first

    restarted = run(booted, "s6-svc", "-r", "-wr", "-T", "5000", "/run/service/web")
    assert restarted.returncode == 0, restarted.stderr
    third = wait_state(booted, "web", "up")["pid"]
    assert third != second

    killed = run(booted, "s6-svc", "-k", "-wr", "-T", "5000", "/run/service/web")
    assert killed.returncode == 0, killed.stderr
    assert wait_state(booted, "web", "up")["last_exit"]["signal"] == 9

    once = run(booted, "s6-svc", "-O", "/run/service/web")
    assert once.returncode == 0
    assert wait_until(lambda: record(booted, "web")["want"] == "down")
    assert svstat(booted, "web", "-o", "up,wantedup") == "true false"


def test_s6_svc_h_sends_sighup_to_the_service(boot, tree: Tree) -> None:
    tree.service(
        "web",
        "trap 'echo got-hup' HUP; echo listening; while :; do sleep 1000 & wait $!; done",
    )
    booted = boot_s6(boot)
    booted.wait_for("^listening$")
    assert run(booted, "s6-svc", "-h", "/run/service/web").returncode == 0
    booted.wait_for("^got-hup$")
    assert record(booted, "web")["restarts"] == 0


def test_s6_svc_wU_times_out_with_99_and_unsupervised_dir_gives_100(boot, tree: Tree) -> None:
    tree.service("slow", "exec sleep 1000", files={"notification-fd": "3\n"})
    booted = boot_s6(boot)
    wait_state(booted, "slow", "starting")
    waited = run(booted, "s6-svc", "-wU", "-T", "500", "-u", "/run/service/slow")
    assert waited.returncode == 99, waited.stderr
    assert "timed out" in waited.stderr
    loose = run(booted, "s6-svc", "-u", str(tree.base))
    assert loose.returncode == 100
    assert "supervisor not listening" in loose.stderr
    assert run(booted, "s6-svok", str(tree.base)).returncode == 1


def test_s6_svwait_U_returns_0_once_ready_and_99_on_timeout(boot, tree: Tree) -> None:
    tree.service("slow", "exec sleep 1000", files={"notification-fd": "3\n"})
    tree.service("quick", "echo >&3; exec sleep 1000", files={"notification-fd": "3\n"})
    booted = boot_s6(boot)
    wait_state(booted, "slow", "starting")  # the live dirs exist once services.d is read
    ready = run(booted, "s6-svwait", "-U", "-t", "5000", "/run/service/quick")
    assert ready.returncode == 0, ready.stderr
    late = run(booted, "s6-svwait", "-U", "-t", "300", "/run/service/slow")
    assert late.returncode == 99
    again = run(booted, "s6-svc", "-r", "-wR", "-T", "5000", "/run/service/quick")
    assert again.returncode == 0, again.stderr
    assert record(booted, "quick")["restarts"] == 1
    listened = run(
        booted, "s6-svlisten1", "-D", "-t", "5000", "/run/service/quick",
        "s6-svc", "-d", "/run/service/quick",
    )  # fmt: skip
    assert listened.returncode == 0, listened.stderr
    assert record(booted, "quick")["state"] == "down"


def test_s6_svstat_lines_for_up_ready_normally_down_and_exit_code(boot, tree: Tree) -> None:
    tree.service("web", "exec sleep 1000")
    tree.service("rdy", "echo >&3; exec sleep 1000", files={"notification-fd": "3\n"})
    tree.service("lazy", "exec sleep 1000", down=True)
    tree.service("three", "exit 3", down=True)
    booted = boot_s6(boot)
    web = wait_state(booted, "web", "up")["pid"]
    rdy = wait_state(booted, "rdy", "ready")["pid"]

    assert re.fullmatch(rf"up \(pid {web}\) {SECONDS}", svstat(booted, "web"))
    assert svstat(booted, "web", "-o", "up,ready,pid,exitcode,normallyup") == (
        f"true false {web} -1 true"
    )
    assert re.fullmatch(rf"up \(pid {rdy}\) {SECONDS}, ready {SECONDS}", svstat(booted, "rdy"))
    assert svstat(booted, "rdy", "-o", "up,ready,pid,exitcode,normallyup") == (
        f"true true {rdy} -1 true"
    )
    assert re.fullmatch(rf"down \(exitcode 0\) {SECONDS}, ready {SECONDS}", svstat(booted, "lazy"))
    assert svstat(booted, "lazy", "-o", "up,ready,pid,exitcode,normallyup") == (
        "false false -1 0 false"
    )
    # Not -wD: on a service already down, s6-svlisten1 is satisfied at once (real s6 too).
    once = run(booted, "s6-svc", "-o", "/run/service/three")
    assert once.returncode == 0, once.stderr
    wait_until(lambda: (record(booted, "three")["last_exit"] or {}).get("code") == 3)
    wait_state(booted, "three", "down")
    assert re.fullmatch(rf"down \(exitcode 3\) {SECONDS}, ready {SECONDS}", svstat(booted, "three"))
    assert svstat(booted, "three", "-o", "up,exitcode,normallyup") == "false 3 false"


def test_s6_svstat_while_finish_runs(boot, tree: Tree) -> None:
    tree.service(
        "fin",
        "exec sleep 1000",
        finish="echo finishing; exec sleep 1000",
        files={"timeout-finish": "0\n"},
    )
    booted = boot_s6(boot)
    wait_state(booted, "fin", "up")
    assert run(booted, "s6-svc", "-d", "/run/service/fin").returncode == 0
    wait_state(booted, "fin", "finishing")
    assert re.fullmatch(rf"down \(signal SIGTERM\) {SECONDS}, normally up", svstat(booted, "fin"))
    assert svstat(booted, "fin", "-o", "up,ready,pid,exitcode,normallyup") == (
        "false false -1 -1 true"
    )


def test_s6_svscanctl_t_from_v2_finish_stops_with_stage2_exited_code(boot, tree: Tree) -> None:
    tree.service(
        "stopper",
        "exit 0",
        finish="echo 42 > /var/run/s6/env-stage3/S6_STAGE2_EXITED\n"
        "exec s6-svscanctl -t /var/run/s6/services",
    )
    report = 'echo "cont-finish sees S6_STAGE2_EXITED=$S6_STAGE2_EXITED"'
    tree.script("cont-finish.d", "report", report)
    booted = boot_s6(boot)
    assert booted.wait() == 42
    assert "cont-finish sees S6_STAGE2_EXITED=42" in booted.output


def test_s6_svscanctl_a_rescans_services_d(boot, tree: Tree) -> None:
    tree.service("first", "exec sleep 1000")
    booted = boot_s6(boot)
    wait_state(booted, "first", "up")
    tree.service("late", "echo late-up; exec sleep 1000")
    assert run(booted, "s6-svscanctl", "-a", "/run/service").returncode == 0
    booted.wait_for("^late-up$")
    assert wait_state(booted, "late", "up")
    assert run(booted, "s6-svok", "/run/service/late").returncode == 0


def test_s6_setuidgid_and_fdmove_work_in_scripts(boot, tree: Tree) -> None:
    tree.service(
        "merged",
        "exec fdmove -c 2 1 sh -c 'echo on-stderr >&2; exec sleep 1000'",
        files={"log/run": "#!/bin/sh\nwhile read -r line; do echo \"logged: $line\"; done\n"},
    )
    booted = boot_s6(boot, "sh", "-c", "echo uid=$(s6-setuidgid nobody id -u); sleep 1000")
    booted.wait_for("^uid=65534$")
    booted.wait_for("^logged: on-stderr$")
    assert re.fullmatch(rf"up \(pid \d+\) {SECONDS}", svstat(booted, "merged/log"))
    assert run(booted, "test", "-L", "/run/s6/services/merged/log").returncode == 1  # real dir


def test_run_starts_in_the_live_dir_with_command_on_path(boot, tree: Tree) -> None:
    tree.service("web", 'echo "cwd=$(pwd -P) path=$PATH"; exec sleep 1000')
    booted = boot_s6(boot, env={"FOO": "bar"})
    line = booted.wait_for(r"^cwd=(\S+) path=(\S+)$")
    assert line.group(1) == "/run/s6/services/web"
    assert "/command" in line.group(2).split(":")
    env = run(
        booted, "cat", "/run/s6/container_environment/FOO", "/var/run/s6/container_environment/FOO"
    )
    assert env.stdout == "barbar"
    links = run(booted, "readlink", "/run/service/web/run")
    assert links.stdout.strip() == str(tree.etc / "services.d" / "web" / "run")


def test_halt_from_a_finish_exits_with_the_v3_exitcode_file(boot, tree: Tree) -> None:
    tree.service(
        "web",
        "exec sleep 1000",
        finish="echo 7 > /run/s6-linux-init-container-results/exitcode\n"
        "exec /run/s6/basedir/bin/halt",
    )
    booted = boot_s6(boot)
    wait_state(booted, "web", "up")
    assert run(booted, "s6-svc", "-d", "/run/service/web").returncode == 0
    assert booted.wait() == 7


def test_cmd_exit_code_wins_when_the_exitcode_files_are_untouched(boot, tree: Tree) -> None:
    booted = boot_s6(boot, "sh", "-c", "exit 5")
    assert booted.wait() == 5


def test_printcontenv_and_with_retries(boot, tree: Tree) -> None:
    path = VENV_BIN + ":/usr/bin:/bin"
    cmd = (
        "echo value=$(printcontenv FOO); printcontenv NOPE; echo missing=$?; "
        "with-retries -n 2 -t 1000 sh -c 'echo attempt; exit 1'; echo retries=$?; "
        "with-retries -n 0 -t 100 sleep 5; echo timeout=$?"
    )
    booted = boot_s6(boot, "sh", "-c", cmd, env={"FOO": "bar", "PATH": path})
    assert booted.wait() == 0
    assert "value=bar" in booted.lines
    assert "missing=1" in booted.lines
    assert booted.count("^attempt$") == 3
    assert "retries=1" in booted.lines
    assert "timeout=99" in booted.lines


def test_s6_rc_front_end_changes_and_lists(boot, tree: Tree) -> None:
    tree.service("lazy", "exec sleep 1000", down=True)
    tree.service("web", "exec sleep 1000")
    booted = boot_s6(boot)
    wait_state(booted, "web", "up")
    env = {"PATH": VENV_BIN + ":/usr/bin:/bin"}
    assert booted.in_ns("s6-rc", "-a", "list", env=env).stdout.split() == ["web"]
    assert sorted(booted.in_ns("s6-rc", "listall", env=env).stdout.split()) == ["lazy", "web"]
    started = booted.in_ns("s6-rc", "-u", "change", "lazy", env=env)
    assert started.returncode == 0, started.stderr
    assert record(booted, "lazy")["state"] == "up"
    stopped = booted.in_ns("s6-rc", "-d", "change", "web", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert record(booted, "web")["state"] == "down"
    assert booted.in_ns("s6-rc", "-da", "list", env=env).stdout.split() == ["web"]


def test_garbage_in_control_fifo_is_ignored_and_counted(boot, tree: Tree) -> None:
    tree.service("lazy", "exec sleep 1000", down=True)
    booted = boot_s6(boot)
    wait_state(booted, "lazy", "down")
    garbage = run(
        booted, "sh", "-c", r"printf '\000Z\377\nu' > /run/service/lazy/supervise/control"
    )
    assert garbage.returncode == 0
    booted.wait_for(
        r"service lazy: ignored 4 unknown byte\(s\) written to supervise/control \(4 so far\)"
    )
    assert wait_state(booted, "lazy", "up")
    assert run(booted, "s6-svstat", "/run/service/lazy").returncode == 0


@pytest.mark.parametrize("how", ["rm -rf {0}", "rm -rf {0} && mkdir {0}"])
def test_deleted_or_replaced_supervise_dir_is_made_again_at_the_next_change(
    boot, tree: Tree, how: str
) -> None:
    tree.service("web", "exec sleep 1000")
    booted = boot_s6(boot)
    wait_state(booted, "web", "up")
    damage = how.format("/run/service/web/supervise")
    assert run(booted, "sh", "-c", damage).returncode == 0
    assert run(booted, "s6-svok", "/run/service/web").returncode == 1
    assert booted.ctl("restart", "web").returncode == 0
    booted.wait_for("supervise was removed or replaced; making it again")
    assert run(booted, "s6-svok", "/run/service/web").returncode == 0
    wait_state(booted, "web", "up")
    assert re.fullmatch(rf"up \(pid \d+\) {SECONDS}", svstat(booted, "web"))
    assert run(booted, "s6-svc", "-d", "-wD", "-T", "5000", "/run/service/web").returncode == 0


def test_not_executable_run_warns_once_not_at_every_restart(boot, tree: Tree) -> None:
    tree.service("crashy", "echo crashed; exit 1", run_mode=0o644)
    booted = boot_s6(boot)
    booted.wait_for("^crashed$", count=3, timeout=30)
    assert booted.count("crashy/run is not executable; running it with /bin/sh") == 1


def test_s6_paths_off_makes_nothing_under_run(boot, tree: Tree) -> None:
    tree.service("web", "exec sleep 1000")
    booted = boot_s6(boot, env={"OVERLAY_S6_PATHS": "0"})
    wait_state(booted, "web", "up")
    assert run(booted, "ls", "-A", "/run").stdout == ""


def test_read_only_run_names_each_path_it_could_not_make_and_carries_on(
    boot, tree: Tree
) -> None:
    tree.service("web", "echo web-up; exec sleep 1000")
    booted = boot(s6_paths="read-only")
    booted.wait_for("^web-up$")
    for path in ("/run/s6/services", "/run/service", "/run/s6/container_environment",
                 "/run/s6-linux-init-container-results/exitcode", "/run/s6/basedir/bin/halt"):
        assert booted.count(rf"s6 paths: cannot make {path}: Read-only file system") == 1
    assert booted.ctl("shutdown", "--exit-code", "3").returncode == 0
    assert booted.wait() == 3


def test_supervise_interface_costs_two_fds_per_service_and_no_idle_wakeups(
    boot, tree: Tree
) -> None:
    import os
    import time

    from tests.test_idle import SERVICES, SLACK, WINDOW, boot_idle, wakeups

    booted = boot_idle(lambda: boot_s6(boot), tree)
    pid = booted.init_pid
    targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    per_service = [t for t in targets if t.startswith("/run/s6/services/svc")]
    assert len(per_service) == 2 * SERVICES
    assert sorted({t.rsplit("/", 1)[1] for t in per_service}) == ["control", "lock"]
    before = wakeups(pid)
    time.sleep(WINDOW)  # the measurement window
    voluntary, involuntary, ticks = (a - b for a, b in zip(wakeups(pid), before, strict=True))
    woke = {"voluntary": voluntary, "involuntary": involuntary, "cpu ticks": ticks}
    assert max(woke.values()) <= SLACK, f"idle overlayd woke up in {WINDOW:g} s: {woke}"


def test_s6_notifyoncheck_makes_the_service_ready_through_data_check(boot, tree: Tree) -> None:
    tree.service(
        "checked",
        "exec s6-notifyoncheck -w 50 -n 20 sleep 1000",
        files={"notification-fd": "3\n", "data/check": "#!/bin/sh\nexit 0\n"},
    )
    (tree.etc / "services.d" / "checked" / "data" / "check").chmod(0o755)
    booted = boot_s6(boot)
    assert wait_state(booted, "checked", "ready")
    assert svstat(booted, "checked", "-o", "up,ready") == "true true"


def test_s6_rc_u_change_brings_a_v3_longruns_dependencies_up_first(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("prep")  # in no bundle: both stay down at boot
    v3.longrun("extra", "exec sleep 1000", deps=("prep",))
    booted = boot_s6(boot)
    booted.wait_for(r"no CMD")
    assert record(booted, "extra")["state"] == "down"
    env = {"PATH": VENV_BIN + ":/usr/bin:/bin"}
    started = booted.in_ns("s6-rc", "-u", "change", "extra", env=env)
    assert started.returncode == 0, started.stderr
    assert record(booted, "prep")["state"] == "up"  # the oneshot's `up` ran and exited 0
    assert record(booted, "extra")["state"] == "up"
    wait_until(lambda: "run extra" in v3.events(), what="extra's run")
    assert v3.events()[0] == "up prep"


def test_halt_from_a_v3_longruns_finish_exits_with_the_v3_exitcode_file(
    boot, tree: Tree
) -> None:
    v3 = V3(tree)
    finish = (
        "#!/bin/sh\necho 9 > /run/s6-linux-init-container-results/exitcode\n"
        "exec /run/s6/basedir/bin/halt\n"
    )
    v3.longrun("web", "exec sleep 1000", files={"finish": finish})
    v3.user("web")
    booted = boot_s6(boot)
    wait_state(booted, "web", "up")
    assert run(booted, "s6-svc", "-d", "/run/service/web").returncode == 0  # its live dir
    assert booted.wait() == 9
