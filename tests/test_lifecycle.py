"""Lifecycle defects a user saw, each pinned by booting overlayd as PID 1 (issue #7).

Each test is named after what was seen: a stop that followed a start was lost, a behaviour-2
failure still started services, rescan was wrong four ways, QUIT reached the CMD as TERM,
Python's LC_CTYPE leaked into the container, a crash loop printed nothing.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import msgpack
import pytest

from protocol import pack_request
from tests.conftest import needs_root
from tests.harness import Booted, Tree, wait_until, write_to_reader

pytestmark = needs_root

KILLED_AFTER_GRACE = "outlived the grace time"


def comms(booted: Booted) -> list[str]:
    """The command names of every process below overlayd."""
    names = []
    for pid in booted.descendants():
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return names


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- a stop that follows a start -------------------------------------------------------------


def send_pipelined(sock: socket.socket, *requests: tuple[str, list[object]]) -> list[object]:
    """Write every request in one go (served in one loop turn), then read every reply."""
    sock.sendall(b"".join(pack_request(i, m, p) for i, (m, p) in enumerate(requests)))
    unpacker = msgpack.Unpacker(raw=False)
    replies: list[object] = []
    while len(replies) < len(requests):
        data = sock.recv(1 << 16)
        assert data, "overlayd closed the connection"
        unpacker.feed(data)
        replies.extend(unpacker)
    return replies


def test_start_then_stop_back_to_back_500_times_leaves_nothing_stuck_stopping(
    boot, tree: Tree
) -> None:
    names = [f"s{i}" for i in range(10)]
    for name in names:
        tree.service(name, "exec sleep 1000", down=True)
    booted = boot()
    with booted.client(timeout=90) as client, socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(booted.socket))
        for _ in range(50):
            replies = send_pipelined(sock, ("start", [names]), ("stop", [names]))
            assert [reply[2] for reply in replies] == [None, None], replies  # type: ignore[index]
            # Not stuck: a stop that followed a start reaches the new process (a later
            # start of a service still stopping only changes what it wants).
            assert client.wait("down", names, 30) is True
        states = {record["name"]: record["state"] for record in client.status(names)}
    assert set(states.values()) == {"down"}, states
    wait_until(lambda: "sleep" not in comms(booted), what="every sleep gone")
    assert booted.count(KILLED_AFTER_GRACE) == 0, booted.output


def test_a_second_stop_resends_the_down_signal_to_a_service_still_stopping(
    boot, tree: Tree
) -> None:
    run = (
        "trap 'if [ -e got-one ]; then echo second-term; exit 0; fi; : > got-one; "
        "echo first-term-ignored' TERM; echo svc-up; while :; do sleep 0.05; done"
    )
    tree.service("svc", run)
    booted = boot()
    booted.wait_for("^svc-up$")
    assert booted.ctl("stop", "--no-wait", "svc").returncode == 0
    booted.wait_for("^first-term-ignored$")
    assert booted.ctl("stop", "svc").returncode == 0  # waits until down: the second TERM
    booted.wait_for("^second-term$")
    with booted.client() as client:
        assert client.wait("down", ["svc"], 15) is True


def test_docker_stop_during_boot_never_sigkills_a_prompt_service_50_times(tree: Tree) -> None:
    for i in range(20):  # the TERM lands while the last ones are still being forked
        tree.service(f"s{i}", "exec sleep 1000")
    for attempt in range(50):
        with Booted(tree) as booted:
            booted.wait_for("services.d: starting")
            booted.kill(signal.SIGTERM)
            assert booted.wait() == 0, booted.output
            assert booted.count(KILLED_AFTER_GRACE) == 0, f"boot {attempt}:\n{booted.output}"


def test_services_stopped_by_a_stage2_failure_the_instant_they_started_stop_cleanly(
    boot, tree: Tree
) -> None:
    """Behaviour 2 with a broken directory stops the services in the very turn that forked
    them: every stop lands before the children's setsid()."""
    for i in range(30):
        tree.service(f"s{i}", "exec sleep 1000")
    (tree.etc / "services.d" / "broken").mkdir()  # no run file
    booted = boot(env={"S6_BEHAVIOUR_IF_STAGE2_FAILS": "2"})
    assert booted.wait() == 1, booted.output
    assert booted.count(KILLED_AFTER_GRACE) == 0, booted.output


# --- S6_BEHAVIOUR_IF_STAGE2_FAILS=2 ----------------------------------------------------------


def test_behaviour_2_after_a_failed_cont_init_starts_no_service_and_no_cmd(
    boot, tree: Tree
) -> None:
    svc_ran, cmd_ran = tree.base / "svc-ran", tree.base / "cmd-ran"
    tree.script("cont-init.d", "10-fails", "exit 3")
    tree.script("cont-init.d", "20-still-runs", "echo second-init-ran")
    tree.service("svc", f": > {svc_ran}; exec sleep 100")
    booted = boot("sh", "-c", f": > {cmd_ran}", env={"S6_BEHAVIOUR_IF_STAGE2_FAILS": "2"})
    assert booted.wait() == 3, booted.output
    booted.wait_for("^second-init-ran$")  # every cont-init script still runs
    assert not svc_ran.exists(), booted.output
    assert not cmd_ran.exists(), booted.output
    assert booted.count("services.d: starting") == 0


def test_docker_stop_during_cont_init_starts_no_service_and_no_cmd(boot, tree: Tree) -> None:
    """Stage 2 is cancelled where it waits: the script's end does not resume the boot."""
    svc_ran, cmd_ran = tree.base / "svc-ran", tree.base / "cmd-ran"
    tree.script("cont-init.d", "10-slow", "trap 'echo init-got-TERM; exit 0' TERM; "
                "echo init-waiting; while :; do sleep 0.05; done")
    tree.service("svc", f": > {svc_ran}; exec sleep 100")
    booted = boot("sh", "-c", f": > {cmd_ran}")
    booted.wait_for("^init-waiting$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    booted.wait_for("^init-got-TERM$")  # the final kill reached it, and it exited 0
    assert not svc_ran.exists() and not cmd_ran.exists(), booted.output
    assert booted.count("services.d: starting") == 0


# --- rescan ------------------------------------------------------------------------------------


def test_an_image_booted_with_nothing_to_supervise_starts_services_a_rescan_finds(
    boot, tree: Tree
) -> None:
    """The lean boot (no tree at all) loads no supervisor; a SIGHUP rescan after a service
    directory appeared makes one and starts the service, and a stop stops it."""
    booted = boot()
    booted.wait_for("running until told to stop")
    tree.service("late", "echo late-up; exec sleep 100")
    booted.kill(signal.SIGHUP)
    booted.wait_for("^late-up$")
    with booted.client() as client:
        assert [(s["name"], s["state"]) for s in client.status()] == [("late", "up")]
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0
    assert booted.count("stopping services") == 1, booted.output
    assert booted.count("fix-attrs") == 0, booted.output  # the lean boot: no graph was run


def test_hup_during_cont_init_starts_no_service_before_cont_init_has_finished(
    boot, tree: Tree
) -> None:
    gate = tree.base / "gate"
    os.mkfifo(gate)
    tree.script("cont-init.d", "10-gate", f"read x < {gate}; echo init-done")
    tree.service("svc", "echo svc-up; exec sleep 100")
    booted = boot()
    booted.wait_for("cont-init.d/10-gate: running")
    booted.kill(signal.SIGHUP)
    booted.wait_for("SIGHUP")
    with booted.client() as client:  # served after the SIGHUP was handled
        assert client.status() == [], "a service exists while cont-init.d is still running"
    write_to_reader(gate, b"go\n")
    booted.wait_for("^svc-up$")
    lines = booted.lines
    assert lines.index("init-done") < lines.index("svc-up"), booted.output
    assert booted.count("^svc-up$") == 1
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0


def test_rescan_forgets_a_removed_service_stops_its_logger_and_starts_it_anew_when_restored(
    boot, tree: Tree
) -> None:
    tree.service(
        "svc", "echo svc-up >&2; exec sleep 1000", files={"log/run": "#!/bin/sh\nexec cat\n"}
    )
    here, away = tree.etc / "services.d" / "svc", tree.base / "svc-away"
    booted = boot()
    with booted.client() as client:
        assert client.wait("up", ["svc", "svc/log"], 20)
        init = booted.init_pid
        baseline = fd_count(init)
        pids = set()
        for _ in range(5):
            here.rename(away)
            booted.kill(signal.SIGHUP)
            wait_until(lambda: client.status() == [], what="svc and its logger forgotten")
            wait_until(lambda: not {"sleep", "cat"} & set(comms(booted)), what="both gone")
            wait_until(lambda: fd_count(init) == baseline - 2, what="the log pipe closed")
            away.rename(here)
            booted.kill(signal.SIGHUP)
            wait_until(lambda: len(client.status()) == 2, what="svc and its logger back")
            assert client.wait("up", ["svc", "svc/log"], 20)
            record = client.status(["svc"])[0]
            assert record["restarts"] == 0  # a new service, not the old one restarted
            pids.add(record["pid"])
        assert len(pids) == 5
        assert fd_count(init) == baseline
    assert booted.count(KILLED_AFTER_GRACE) == 0, booted.output


def test_a_changed_down_signal_is_used_from_the_next_start_after_a_rescan(
    boot, tree: Tree
) -> None:
    run = (
        "trap 'echo got-TERM; exit 0' TERM; trap 'echo got-QUIT; exit 0' QUIT; "
        "echo svc-up; while :; do sleep 0.05; done"
    )
    directory = tree.service("svc", run)
    booted = boot()
    booted.wait_for("^svc-up$")
    (directory / "down-signal").write_text("SIGQUIT\n")
    booted.kill(signal.SIGHUP)
    booted.wait_for("rescanning services.d")
    assert booted.ctl("restart", "svc").returncode == 0
    booted.wait_for("^got-TERM$")  # the running one keeps the signal it was started with
    booted.wait_for("^svc-up$", count=2)
    assert booted.ctl("stop", "--no-wait", "svc").returncode == 0
    booted.wait_for("^got-QUIT$")


# --- signals to overlayd -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["QUIT", "INT", "TERM"])
def test_the_cmd_gets_the_signal_that_started_the_shutdown(boot, name: str) -> None:
    traps = "; ".join(f"trap 'echo cmd-got-{n}; exit 0' {n}" for n in ("QUIT", "INT", "TERM"))
    booted = boot("sh", "-c", f"{traps}; echo cmd-up; while :; do sleep 0.05; done")
    booted.wait_for("^cmd-up$")
    booted.kill(signal.Signals["SIG" + name])
    assert booted.wait() == 0, booted.output
    assert booted.count("^cmd-got-") == 1, booted.output
    booted.wait_for(f"^cmd-got-{name}$")


@pytest.mark.parametrize("name", ["ALRM", "PWR"])
def test_alrm_and_pwr_are_forwarded_to_the_cmd_as_tini_does(boot, name: str) -> None:
    cmd = f"trap 'echo cmd-got-{name}' {name}; echo cmd-up; while :; do sleep 0.05; done"
    booted = boot("sh", "-c", cmd)
    booted.wait_for("^cmd-up$")
    booted.kill(signal.Signals["SIG" + name])
    booted.wait_for(f"^cmd-got-{name}$")
    assert booted.count("shutting down") == 0
    booted.kill(signal.SIGTERM)
    booted.wait()


# --- the environment -------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["", "C", "xx_YY.UTF-8"])
def test_pythons_locale_coercion_does_not_reach_the_container_environment(
    boot, tree: Tree, lang: str
) -> None:
    tree.service("svc", "env | sed 's/^/svc-env /'; echo svc-printed >&3; exec sleep 100",
                 files={"notification-fd": "3\n"})
    booted = boot("sh", "-c", "env | sed 's/^/cmd-env /'",
                  env={"LANG": lang, "S6_CMD_WAIT_FOR_SERVICES": "1"})
    assert booted.wait() == 0, booted.output
    booted.wait_for("^cmd-env PATH=")
    booted.wait_for("^svc-env PATH=")
    assert booted.count("^(cmd|svc)-env LC_CTYPE=") == 0, booted.output
    assert not (tree.run_dir / "container_environment" / "LC_CTYPE").exists()


def test_an_lc_ctype_the_container_was_given_is_kept(boot, tree: Tree) -> None:
    booted = boot("sh", "-c", "env | sed 's/^/cmd-env /'", env={"LC_CTYPE": "C.UTF-8"})
    assert booted.wait() == 0, booted.output
    booted.wait_for("^cmd-env LC_CTYPE=C.UTF-8$")
    assert (tree.run_dir / "container_environment" / "LC_CTYPE").read_text() == "C.UTF-8"


# --- crash loops ---------------------------------------------------------------------------------


def test_a_crash_loop_is_visible_at_the_default_verbosity_without_flooding(
    boot, tree: Tree
) -> None:
    tree.service("crashy", "echo crashy-ran; exit 3")
    booted = boot()
    booted.wait_for("^crashy-ran$", count=4)
    booted.wait_for("service crashy: exited unexpectedly, exit code 3")
    assert booted.count("service crashy: exited unexpectedly") == 1, booted.output


# --- a finish that cannot be forked ------------------------------------------------------------

PIDS_HIERARCHY = Path("/sys/fs/cgroup/pids")


@pytest.fixture
def pids_cgroup(tmp_path: Path):
    """A cgroup v1 `pids` group of our own, to make fork() fail with EAGAIN on demand."""
    if not os.access(PIDS_HIERARCHY / "cgroup.procs", os.W_OK):
        pytest.skip("needs a writable cgroup v1 pids hierarchy")
    group = PIDS_HIERARCHY / f"overlayd-test-{os.getpid()}-{tmp_path.name}"
    group.mkdir()
    try:
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                (PIDS_HIERARCHY / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        group.rmdir()


def test_finish_that_cannot_be_forked_still_reports_down_before_the_next_start(
    boot, tree: Tree, pids_cgroup: Path
) -> None:
    tree.service("svc", "echo svc-up; exec sleep 1000", finish="echo finish-ran")
    booted = boot(env={"S6_VERBOSITY": "3"})
    booted.wait_for("^svc-up$")
    booted.wait_for("service svc: up$")
    (pids_cgroup / "cgroup.procs").write_text(str(booted.init_pid))  # overlayd alone moves
    (pids_cgroup / "pids.max").write_text("1")  # so its next fork fails
    with booted.client() as client:
        os.kill(_host_pid(booted, client.status(["svc"])[0]["pid"]), signal.SIGKILL)
        booted.wait_for("cannot run finish")
        booted.wait_for("service svc: down$")
        (pids_cgroup / "pids.max").write_text("max")
        assert client.wait("up", ["svc"], 20)
    booted.wait_for("^svc-up$", count=2)
    states = [line.rsplit(": ", 1)[1] for line in booted.lines if "debug: service svc: " in line]
    after_kill = states[states.index("up") + 1 :]
    assert "down" in after_kill, states
    assert after_kill.index("down") < after_kill.index("up"), states
    assert booted.count("^finish-ran$") == 0


def _host_pid(booted: Booted, ns_pid: int) -> int:
    """The host pid of a process overlayd's namespace calls `ns_pid`."""
    for pid in booted.descendants():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == str(ns_pid):
                return pid
    raise AssertionError(f"no process with namespace pid {ns_pid}")
