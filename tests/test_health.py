"""Readiness by check, liveness checks and giving up (DESIGN §13), with overlayd as PID 1.

Checks and run scripts count what they do in files of their service directory (their cwd), so
each test reads what really ran, and waits on overlayd's own answers (status, wait, log lines).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.harness import Booted, Tree, proc_status, wait_until

pytestmark = needs_root

UP = "echo {name}-up; exec sleep 1000"


def record(booted: Booted, name: str) -> dict:
    with booted.client() as client:
        return client.status([name])[0]


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def wait_record(booted: Booted, name: str, what: str, **expected: object) -> dict:
    def matches() -> dict | None:
        rec = record(booted, name)
        return rec if all(rec.get(k) == v for k, v in expected.items()) else None

    return wait_until(matches, what=f"{name}: {what} ({expected})")  # type: ignore[return-value]


# --- readiness ------------------------------------------------------------------------------

COUNTING_CHECK = """#!/bin/sh
echo try >> tries
n=$(wc -l < tries)
if [ "$n" -lt 3 ]; then echo "not yet ($n)"; exit 1; fi
echo ready
"""


def test_data_check_makes_the_service_ready_on_the_third_try(boot, tree: Tree) -> None:
    svc = tree.service(
        "db",
        UP.format(name="db"),
        files={"notification-fd": "3\n", "notifyoncheck-options": "-w 100\n"},
    )
    tree.write("etc/services.d/db/data/check", COUNTING_CHECK)
    booted = boot()
    with booted.client() as client:
        assert client.wait("ready", ["db"], timeout=20) is True
    assert lines(svc / "tries") == ["try"] * 3
    rec = record(booted, "db")
    assert rec["state"] == "ready" and rec["ready"] is True
    assert booted.ctl("check").returncode == 0


def test_never_ready_when_the_tries_run_out_but_still_up(boot, tree: Tree) -> None:
    svc = tree.service(
        "db",
        UP.format(name="db"),
        files={"notification-fd": "3\n", "notifyoncheck-options": "-n 2 -w 50\n"},
    )
    check = "#!/bin/sh\necho try >> tries; echo refused; exit 1\n"
    tree.write("etc/services.d/db/data/check", check)
    booted = boot()
    booted.wait_for(r"service db: readiness check failed 2 time\(s\).*never ready")
    time.sleep(0.5)  # a window in which a third try would have run (-w 50)
    assert lines(svc / "tries") == ["try", "try"]
    rec = record(booted, "db")
    assert rec["state"] == "starting" and rec["pid"] is not None
    result = booted.ctl("check")
    assert result.returncode == 1
    assert (
        "db is starting (never ready: readiness check failed 2 time(s): exit code 1: refused)"
        in result.stderr
    )


@pytest.mark.skipif(not shutil.which("s6-notifyoncheck"), reason="Debian's s6 not installed")
def test_debians_s6_notifyoncheck_in_the_run_script_makes_it_ready(boot, tree: Tree) -> None:
    svc = tree.service(
        "web",
        "exec s6-notifyoncheck -d -w 100 -n 0 sleep 1000",
        files={"notification-fd": "3\n"},
    )
    tree.write("etc/services.d/web/data/check", COUNTING_CHECK)
    # s6-notifyoncheck insists on a supervisor: a locked supervise/lock and an event/ fifodir
    # (DESIGN §11's interface, issue 11). Here the test stands in for them.
    (svc / "supervise").mkdir()
    (svc / "event").mkdir(mode=0o3730)
    lock = os.open(svc / "supervise" / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        booted = boot()
        with booted.client() as client:
            assert client.wait("ready", ["web"], timeout=20) is True
        # The tool polled, and overlayd did not poll a second time: three tries in all.
        assert lines(svc / "tries") == ["try"] * 3
        assert booted.ctl("check").returncode == 0
    finally:
        os.close(lock)


# --- liveness -------------------------------------------------------------------------------

FAILS_WHEN_BROKEN = """#!/bin/sh
if [ -e broken ]; then echo fail >> failures; echo "{message}"; exit 1; fi
echo fine
"""


def health(tree: Tree, name: str, action: str, retries: int, message: str = "boom", **extra: str):
    files = {
        "health/interval": "100\n",
        "health/retries": f"{retries}\n",
        "health/action": f"{action}\n",
        **{f"health/{k}": v for k, v in extra.items()},
    }
    svc = tree.service(name, f"echo {name}-up $$; exec sleep 1000", files=files)
    tree.write(
        f"etc/services.d/{name}/health/check", FAILS_WHEN_BROKEN.format(message=message)
    )
    return svc


def test_liveness_failures_restart_the_service_after_retries(boot, tree: Tree) -> None:
    svc = health(tree, "api", "restart", 3)
    # The restarted `run` repairs what broke: its first act is to remove the marker.
    (svc / "run").write_text("#!/bin/sh\nrm -f broken\necho api-up $$\nexec sleep 1000\n")
    booted = boot()
    first = booted.wait_for(r"^api-up (\d+)$").group(1)
    wait_record(booted, "api", "healthy first", health="healthy")
    (svc / "broken").touch()
    second = booted.wait_for(r"^api-up (\d+)$", count=2).group(1)
    assert second != first
    assert lines(svc / "failures") == ["fail"] * 3
    booted.wait_for(r"service api: health check failed 3 time\(s\) in a row: exit code 1: boom")
    rec = wait_record(booted, "api", "healthy again", health="healthy")
    assert rec["restarts"] == 1 and rec["state"] == "up"


def test_mark_shows_unhealthy_then_healthy_without_a_restart(boot, tree: Tree) -> None:
    svc = health(tree, "api", "mark", 2, message="disk full")
    booted = boot()
    wait_record(booted, "api", "healthy", health="healthy")
    pid = record(booted, "api")["pid"]
    (svc / "broken").touch()
    rec = wait_record(booted, "api", "unhealthy", health="unhealthy")
    assert rec["pid"] == pid and rec["restarts"] == 0 and rec["health_output"] == "disk full"
    result = booted.ctl("check")
    assert result.returncode == 1
    assert "api is up (unhealthy:" in result.stderr and "health/check" in result.stderr
    assert "disk full" in result.stderr
    status = booted.ctl("status")
    assert "unhealthy" in status.stdout and "ago" in status.stdout
    (as_json,) = json.loads(booted.ctl("status", "--json", "api").stdout)
    assert as_json["health"] == "unhealthy" and as_json["health_output"] == "disk full"
    (svc / "broken").unlink()
    rec = wait_record(booted, "api", "healthy again", health="healthy")
    assert rec["pid"] == pid
    assert booted.ctl("check").returncode == 0
    assert record(booted, "api")["health_checked"] <= time.time()


def test_shutdown_action_stops_the_container_with_exit_code_1(boot, tree: Tree) -> None:
    svc = health(tree, "db", "shutdown", 2, message="replica lost")
    (svc / "broken").touch()
    booted = boot()
    assert booted.wait() == 1, booted.output
    assert "service db: health check failed 2 time(s) in a row: exit code 1: replica lost" in (
        booted.output
    )
    assert "stopping the container (health/action)" in booted.output


def test_shutdown_action_exit_code_from_the_exitcode_file(boot, tree: Tree) -> None:
    svc = health(tree, "db", "shutdown", 1)
    (svc / "finish").write_text(f'#!/bin/sh\necho 7 > "{tree.run_dir}/exitcode"\n')
    (svc / "finish").chmod(0o755)
    (svc / "broken").touch()
    booted = boot()
    assert booted.wait() == 7, booted.output


def marked_on_first_failure(tree: Tree, check: str, **extra: str) -> None:
    """Service `api` whose health/check (a shell body) runs every 50 ms; one failure marks it."""
    files = {"health/interval": "50\n", "health/retries": "1\n", "health/action": "mark\n"}
    files.update({f"health/{k}": v for k, v in extra.items()})
    tree.service("api", "exec sleep 1000", files=files)
    tree.write("etc/services.d/api/health/check", "#!/bin/sh\n" + check + "\n")


def test_a_hanging_check_is_killed_at_its_timeout_and_counts_as_failed(boot, tree: Tree) -> None:
    marked_on_first_failure(tree, "echo hanging\nexec sleep 777", timeout="300\n", retries="2\n")
    booted = boot()
    rec = wait_record(booted, "api", "unhealthy", health="unhealthy")
    assert rec["health_output"] == "hanging"
    result = booted.ctl("check")
    assert "timed out after 0.3 s: hanging" in result.stderr
    # Every hung check was killed: at most the one running now is alive.
    assert len([p for p in booted.descendants() if b"777" in _cmdline(p)]) <= 1


def test_a_check_printing_a_megabyte_costs_overlayd_nothing(boot, tree: Tree) -> None:
    marked_on_first_failure(
        tree,
        "echo run >> runs\nhead -c 1048576 /dev/zero | tr '\\0' x\necho\necho last words\nexit 1",
    )
    booted = boot()
    runs = tree.etc / "services.d" / "api" / "runs"
    wait_until(lambda: len(lines(runs)) >= 2, what="two checks of 1 MB")
    rss_before = int(proc_status(booted.init_pid)["VmRSS"].split()[0])
    wait_until(lambda: len(lines(runs)) >= 12, what="ten more checks of 1 MB")
    rss_after = int(proc_status(booted.init_pid)["VmRSS"].split()[0])
    rec = record(booted, "api")
    assert rec["health"] == "unhealthy" and rec["health_output"] == "last words"
    assert rss_after - rss_before < 1024, f"PID 1 grew {rss_after - rss_before} KB"


def test_a_megabyte_line_shows_its_first_kilobyte(boot, tree: Tree) -> None:
    marked_on_first_failure(tree, "head -c 1048576 /dev/zero | tr '\\0' y\nexit 2")
    booted = boot()
    rec = wait_record(booted, "api", "unhealthy", health="unhealthy")
    assert rec["health_output"] == "y" * 1024


# --- giving up ------------------------------------------------------------------------------


def test_start_retries_give_up_and_a_start_by_hand_tries_again(boot, tree: Tree) -> None:
    svc = tree.service(
        "flaky",
        "echo start >> starts\nexit 1",
        finish="echo finish >> finishes",
        files={"start-retries": "2\n", "start-secs": "5\n"},
    )
    booted = boot()
    rec = wait_record(booted, "flaky", "failed", state="failed")
    assert rec["reason"] == (
        "died 3 times in a row within 5 s of starting (start-retries 2): not restarted"
    )
    assert lines(svc / "starts") == ["start"] * 3
    assert lines(svc / "finishes") == ["finish"] * 3  # finish ran after every death
    result = booted.ctl("check")
    assert result.returncode == 1 and "flaky is failed (died 3 times" in result.stderr
    assert booted.ctl("start", "flaky").returncode == 0
    wait_until(lambda: len(lines(svc / "starts")) == 6, what="three more starts")
    wait_record(booted, "flaky", "failed again", state="failed")


def test_timeout_up_fails_a_service_that_is_not_ready_in_time(boot, tree: Tree) -> None:
    tree.service(
        "slow",
        "echo $$ > pid\nexec sleep 1000",
        files={"notification-fd": "3\n", "timeout-up": "300\n"},
    )
    booted = boot()
    rec = wait_record(booted, "slow", "failed", state="failed")
    assert rec["reason"] == "not ready within timeout-up (300 ms): start failed"
    assert rec["pid"] is None
    assert not [p for p in booted.descendants() if b"1000" in _cmdline(p)]  # it was stopped
    result = booted.ctl("check")
    assert result.returncode == 1 and "slow is failed (not ready within timeout-up" in (
        result.stderr
    )


needs_s6_permafailon = pytest.mark.skipif(
    not shutil.which("s6-permafailon"), reason="Debian's s6 not installed"
)


def crashing_under_permafailon(tree: Tree, max_death_tally: int) -> Path:
    """A service exiting 3 at once, whose finish gives up after 3 such deaths in 60 s (s6's
    tool, reading the tally overlayd writes in supervise/)."""
    svc = tree.service(
        "crashy",
        "echo start >> starts\nexit 3",
        finish="exec s6-permafailon 60 3 3 true",
        files={"max-death-tally": f"{max_death_tally}\n"},
    )
    (svc / "supervise").mkdir()
    return svc


@needs_s6_permafailon
def test_s6_permafailon_reads_the_death_tally(boot, tree: Tree) -> None:
    svc = crashing_under_permafailon(tree, 5)
    booted = boot()
    rec = wait_record(booted, "crashy", "failed", state="failed")
    assert "finish exited 125" in rec["reason"]
    assert lines(svc / "starts") == ["start"] * 3
    assert (svc / "supervise" / "death_tally").stat().st_size == 3 * 14


@needs_s6_permafailon
def test_max_death_tally_bounds_what_s6_permafailon_can_see(boot, tree: Tree) -> None:
    svc = crashing_under_permafailon(tree, 2)
    booted = boot()
    wait_until(lambda: len(lines(svc / "starts")) >= 4, what="a fourth start: no give-up")
    assert record(booted, "crashy")["state"] != "failed"
    assert (svc / "supervise" / "death_tally").stat().st_size == 2 * 14


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_check_starts_like_run_does_own_session_cwd_signals(boot, tree: Tree) -> None:
    probe = (
        "#!/bin/sh\n"
        'echo "$(pwd) $(ps -o sid= -p $$ | tr -d \' \') $$ '
        '$(grep -E \'^Sig(Blk|Ign)\' /proc/$$/status | tr -d \'\\t\\n\')" > {out}\n'
    )
    svc = tree.service(
        "api",
        probe.replace("{out}", "run.seen").replace("#!/bin/sh\n", "") + "exec sleep 1000",
        files={"health/interval": "50\n", "health/action": "mark\n"},
    )
    tree.write("etc/services.d/api/health/check", probe.replace("{out}", "check.seen"))
    booted = boot()
    wait_record(booted, "api", "checked", health="healthy")
    run_cwd, run_sid, run_pid, run_signals = (svc / "run.seen").read_text().split(" ", 3)
    cwd, sid, pid, signals = (svc / "check.seen").read_text().split(" ", 3)
    assert (cwd, run_cwd) == (str(svc), str(svc))
    assert sid == pid and run_sid == run_pid  # each leads its own session
    assert signals == run_signals, (signals, run_signals)


def test_a_check_that_never_stops_printing_is_cut_off_not_read_for_ever(boot, tree: Tree) -> None:
    # No timeout to save it: the output bound does.
    marked_on_first_failure(tree, "exec yes", timeout="600000\n")
    booted = boot()
    wait_record(booted, "api", "unhealthy", health="unhealthy")
    result = booted.ctl("check")
    assert "killed by SIGPIPE: y" in result.stderr, result.stderr


def test_health_checks_wait_until_the_service_is_ready(boot, tree: Tree) -> None:
    svc = tree.service(
        "db",
        "exec sleep 1000",  # never writes on its notification fd
        files={
            "notification-fd": "3\n",
            "health/interval": "50\n",
            "health/action": "mark\n",
        },
    )
    tree.write("etc/services.d/db/health/check", "#!/bin/sh\necho x >> checks\n")
    booted = boot()
    wait_record(booted, "db", "starting", state="starting")
    time.sleep(0.5)  # a window of ten intervals in which no check may run
    assert lines(svc / "checks") == []
    assert record(booted, "db")["health"] is None


def test_a_hung_readiness_check_is_killed_at_t_and_the_next_try_runs(boot, tree: Tree) -> None:
    svc = tree.service(
        "db",
        UP.format(name="db"),
        files={"notification-fd": "3\n", "notifyoncheck-options": "-t 200 -w 50\n"},
    )
    tree.write(
        "etc/services.d/db/data/check",
        "#!/bin/sh\necho try >> tries\n"
        'if [ "$(wc -l < tries)" -lt 2 ]; then exec sleep 555; fi\n',
    )
    booted = boot()
    with booted.client() as client:
        assert client.wait("ready", ["db"], timeout=20) is True
    assert lines(svc / "tries") == ["try", "try"]
    assert not [p for p in booted.descendants() if b"555" in _cmdline(p)]


def test_a_bad_health_file_fails_that_service_only_with_one_clear_line(boot, tree: Tree) -> None:
    tree.service("bad", "exec sleep 1000", files={"health/action": "reboot\n"})
    tree.write("etc/services.d/bad/health/check", "#!/bin/sh\n")
    tree.service("good", UP.format(name="good"))
    booted = boot()
    booted.wait_for("^good-up$")
    rec = record(booted, "bad")
    assert rec["state"] == "failed"
    assert "health/action holds 'reboot', not one of restart, mark, shutdown" in rec["reason"]
    assert booted.count(r"health/action holds 'reboot'") == 1
    assert record(booted, "good")["state"] == "up"
    (good,) = json.loads(booted.ctl("status", "--json", "good").stdout)
    assert good["health"] is None  # no health/ directory: null, not a verdict


def test_a_health_directory_added_while_down_counts_from_the_next_start(boot, tree: Tree) -> None:
    svc = tree.service("api", UP.format(name="api"))
    booted = boot()
    booted.wait_for("^api-up$")
    assert record(booted, "api")["health"] is None
    assert booted.ctl("stop", "api").returncode == 0
    wait_record(booted, "api", "stopped", state="down")
    tree.write("etc/services.d/api/health/interval", "50\n", 0o644)
    tree.write("etc/services.d/api/health/check", "#!/bin/sh\necho x >> checks\n")
    booted.kill(signal.SIGHUP)  # rescan: read again, used from the next start
    booted.wait_for("received SIGHUP: rescanning services.d")
    assert booted.ctl("start", "api").returncode == 0
    wait_record(booted, "api", "checked after the start", health="healthy")
    assert lines(svc / "checks")
