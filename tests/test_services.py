"""Supervision of services.d directories: DESIGN §4, with overlayd as PID 1."""

from __future__ import annotations

import os
import signal
import time

from tests.conftest import needs_root
from tests.harness import PYTHON, Tree, wait_until, write_to_reader

pytestmark = needs_root


def state_of(booted, name: str) -> dict:
    with booted.client() as client:
        return client.status([name])[0]


def wait_state(booted, name: str, *states: str) -> dict:
    return wait_until(  # type: ignore[return-value]
        lambda: (r := state_of(booted, name))["state"] in states and r,
        what=f"{name} to be {states}",
    )


def test_finish_gets_exit_code_signal_name_and_pgid(boot, tree: Tree) -> None:
    flag = tree.base / "second-run"
    tree.service(
        "svc",
        f"echo run-pid=$$; if [ -e {flag} ]; then kill -KILL $$; fi; touch {flag}; exit 3",
        finish='echo "finish:$1:$2:$3:$4"; [ "$1" = 256 ] && exit 125; exit 0',
    )
    booted = boot()
    first = booted.wait_for(r"^run-pid=(\d+)$").group(1)
    booted.wait_for(rf"^finish:3:0:svc:{first}$")
    second = booted.wait_for(r"^run-pid=(\d+)$", count=2).group(1)
    booted.wait_for(rf"^finish:256:{int(signal.SIGKILL)}:svc:{second}$")
    record = wait_state(booted, "svc", "failed")
    assert record["want"] == "down"
    assert record["last_exit"]["signal"] == signal.SIGKILL
    booted.wait_for("service svc: finish exited 125 \\(permanent failure\\): not restarted")


def test_finish_past_timeout_finish_is_killed_and_service_restarts(boot, tree: Tree) -> None:
    tree.service(
        "svc",
        "echo run-started; exit 1",
        finish="echo finish-started; exec sleep 100",
        files={"timeout-finish": "200\n"},
    )
    booted = boot()
    booted.wait_for("^finish-started$")
    booted.wait_for("service svc: finish ran past timeout-finish; sending SIGKILL")
    booted.wait_for("^run-started$", count=2)


def test_down_file_means_not_started_at_boot(boot, tree: Tree) -> None:
    tree.service("lazy", "echo lazy-ran; exec sleep 100", down=True)
    tree.service("eager", "echo eager-up; exec sleep 100")
    booted = boot()
    booted.wait_for("^eager-up$")
    record = state_of(booted, "lazy")
    assert (record["state"], record["want"], record["normally_up"], record["pid"]) == (
        "down",
        "down",
        False,
        None,
    )
    assert booted.count("^lazy-ran$") == 0


def test_notification_fd_moves_starting_to_ready(boot, tree: Tree) -> None:
    gate = tree.base / "gate"
    os.mkfifo(gate)
    tree.service(
        "svc",
        f"echo svc-waiting; read line < {gate}; echo >&5; echo svc-ready-sent; exec sleep 100",
        files={"notification-fd": "5\n"},
    )
    booted = boot()
    booted.wait_for("^svc-waiting$")
    record = state_of(booted, "svc")
    assert (record["state"], record["ready"]) == ("starting", False)
    with open(gate, "w") as writer:
        writer.write("go\n")
    record = wait_state(booted, "svc", "ready")
    assert record["ready"] is True


def test_down_signal_is_what_a_stop_sends(boot, tree: Tree) -> None:
    tree.service(
        "svc",
        "trap 'echo got-HUP; exit 0' HUP; echo svc-up; while :; do sleep 0.05; done",
        files={"down-signal": "SIGHUP\n"},
    )
    booted = boot()
    booted.wait_for("^svc-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    booted.wait_for("^got-HUP$")


def test_run_has_its_own_session_devnull_stdin_and_its_directory_as_cwd(boot, tree: Tree) -> None:
    directory = tree.service(
        "svc",
        'echo "ids $$ $(ps -o pgid= -p $$) $(ps -o sid= -p $$)"; '
        'echo "stdin $(readlink /proc/$$/fd/0)"; echo "cwd $(pwd)"; exec sleep 100',
    )
    booted = boot()
    pid, pgid, sid = booted.wait_for(r"^ids (\d+)\s+(\d+)\s+(\d+)$").groups()
    assert pid == pgid == sid
    booted.wait_for("^stdin /dev/null$")
    booted.wait_for(f"^cwd {directory}$")


def test_crash_loop_is_throttled_to_one_start_per_second(boot, tree: Tree) -> None:
    tree.service("crashy", "echo crash-tick; exit 1")
    booted = boot()
    booted.wait_for("^crash-tick$")
    first = time.monotonic()
    record = wait_state(booted, "crashy", "backoff")
    assert record["last_exit"]["code"] == 1
    booted.wait_for("^crash-tick$", count=3)
    # Three starts need at least two throttle periods of one second each.
    assert time.monotonic() - first >= 1.8
    assert state_of(booted, "crashy")["restarts"] >= 2


def test_stopping_signals_the_whole_process_group(boot, tree: Tree) -> None:
    helper = (
        "trap 'echo helper-got-TERM; exit 0' TERM; echo helper-up; while :; do sleep 0.05; done"
    )
    tree.service("svc", f'sh -c "{helper}" & echo svc-up; wait')
    booted = boot()
    booted.wait_for("^helper-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    booted.wait_for("^helper-got-TERM$")


def test_logger_gets_every_line_and_finishes_writing_at_shutdown(boot, tree: Tree) -> None:
    logfile = tree.base / "svc.log"
    tree.service(
        "svc",
        "i=0; while [ $i -lt 500 ]; do i=$((i+1)); echo line-$i; done; echo >&2 svc-done; "
        "exec sleep 100",
        files={"log/run": f"#!/bin/sh\nexec cat >> {logfile}\n"},
    )
    booted = boot()
    booted.wait_for("^svc-done$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    assert logfile.read_text().split() == [f"line-{i}" for i in range(1, 501)]
    assert booted.count("^line-") == 0  # stdout went to the logger, not the container


def test_logger_restart_loses_no_line(boot, tree: Tree) -> None:
    """The pipe belongs to overlayd: lines written while the logger restarts wait in it."""
    logfile = tree.base / "svc.log"
    gate = tree.base / "gate"
    os.mkfifo(gate)
    tree.service(
        "svc",
        f"echo before; read x < {gate}; echo after; echo >&2 svc-wrote-after; exec sleep 100",
        files={"log/run": f"#!/bin/sh\necho >&2 logger-start\nexec cat >> {logfile}\n"},
    )
    booted = boot()
    booted.wait_for("^logger-start$")
    wait_until(lambda: logfile.exists() and "before" in logfile.read_text(), what="first line")
    logger_pid = state_of(booted, "svc/log")["pid"]
    with booted.client() as client:
        client.stop(["svc/log"])
    wait_state(booted, "svc/log", "down")
    with open(gate, "w") as writer:
        writer.write("go\n")
    booted.wait_for("^svc-wrote-after$")
    with booted.client() as client:
        client.start(["svc/log"])
    booted.wait_for("^logger-start$", count=2)
    wait_until(lambda: "after" in logfile.read_text(), what="the line written while down")
    assert logfile.read_text().split() == ["before", "after"]
    assert state_of(booted, "svc/log")["pid"] != logger_pid


def test_finish_script_brings_the_container_down_with_its_code(boot, tree: Tree) -> None:
    """The Docker way: when the main service dies, its finish script stops the container."""
    overlayctl = f"{PYTHON} -m overlayctl"
    tree.service("helper", "echo helper-up; exec sleep 1000")
    tree.service(
        "main",
        "echo main-up; read x < ./gate; exit 3",
        finish=f'[ "$1" = 0 ] || exec {overlayctl} shutdown --exit-code "$1"',
    )
    os.mkfifo(tree.etc / "services.d" / "main" / "gate")
    tree.script("cont-finish.d", "10-mark", f"echo finished > {tree.base}/cont-finish-ran")
    booted = boot()
    booted.wait_for("^helper-up$")
    booted.wait_for("^main-up$")
    write_to_reader(tree.etc / "services.d" / "main" / "gate", b"die\n")
    assert booted.wait() == 3, booted.output
    assert (tree.base / "cont-finish-ran").read_text() == "finished\n"
    booted.wait_for("shutting down: overlayctl shutdown")


def test_finish_script_exitcode_file_then_shutdown(boot, tree: Tree) -> None:
    tree.service(
        "main",
        "echo main-up; exit 0",
        finish=f'echo 42 > "$OVERLAY_RUN_DIR/exitcode"; exec {PYTHON} -m overlayctl shutdown',
    )
    booted = boot()
    assert booted.wait() == 42, booted.output
