"""Logging (DESIGN §12) with overlayd as PID 1: the catch-all, prefixes, loggers, `logs`."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.harness import PYTHON, Booted, Tree, _children, wait_until

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("s6-log") is None, reason="needs s6-log (make s6)"),
]

BIN = Path(PYTHON).parent
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9}  ")  # s6-log's T
READY_AFTER_PRINT = "echo >&3; exec sleep 1000"


def logdir_lines(logdir: Path) -> list[str]:
    """Every line of a logdir, oldest first: the archives in name (time) order, then current."""
    files = [*sorted(p for p in logdir.glob("@*.s")), logdir / "current"]
    text = b"".join(p.read_bytes() for p in files if p.exists())
    return text.decode().splitlines()


def without_stamp(lines: list[str]) -> list[str]:
    return [STAMP.sub("", line) for line in lines]


@contextlib.contextmanager
def reachable_by_nobody() -> Iterator[Path]:
    """A scratch directory under /tmp that nobody can traverse (pytest's is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="overlayd-logs-", dir="/tmp"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


PID1 = ["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-m", "overlayd"]


def own_output_env(tree: Tree, **extra: str) -> dict[str, str]:
    """The environment for an overlayd the test starts itself, to give it its own stdout."""
    return {
        "PATH": os.environ["PATH"],
        "OVERLAY_ROOT": str(tree.root),
        "OVERLAY_RUN_DIR": str(tree.run_dir),
        **extra,
    }


def state_of(booted: Booted, name: str) -> dict:
    with booted.client() as client:
        return client.status([name])[0]


# --- the catch-all ----------------------------------------------------------------------------


def catchall_tree(tree: Tree) -> Path:
    """A cont-init, a ready-after-printing service, a cont-finish; returns the logdir path."""
    tree.script("cont-init.d", "10-hello", "echo from-cont-init")
    tree.service(
        "svc",
        f"echo from-service; echo from-service-stderr >&2; {READY_AFTER_PRINT}",
        files={"notification-fd": "3\n"},
    )
    tree.script("cont-finish.d", "10-bye", "echo finishing; echo the-last-line-of-cont-finish")
    return tree.base / "uncaught"


def boot_catchall(
    boot, tree: Tree, mode: str, logdir: Path | None = None, **extra: str
) -> tuple[Booted, Path]:
    default = catchall_tree(tree)
    logdir = logdir or default
    env = {
        "S6_LOGGING": mode,
        "OVERLAY_UNCAUGHT_LOGS": str(logdir),
        "S6_CMD_WAIT_FOR_SERVICES": "1",
        **extra,
    }
    booted = boot("sh", "-c", "echo from-cmd; echo from-cmd-stderr >&2; exit 3", env=env)
    assert booted.wait() == 3
    return booted, logdir


def test_catchall_mode_2_takes_scripts_services_cmd_and_overlayd_and_shows_nothing(
    boot, tree: Tree
) -> None:
    booted, logdir = boot_catchall(boot, tree, "2")
    lines = logdir_lines(logdir)
    assert all(STAMP.match(line) for line in lines), lines  # the default script's T
    caught = without_stamp(lines)
    for expected in (
        "from-cont-init",
        "from-service",
        "from-service-stderr",
        "from-cmd",
        "from-cmd-stderr",
        "[overlayd] services.d: starting 1 service(s)",
    ):
        assert expected in caught
    assert caught[-2:] == [
        "the-last-line-of-cont-finish",
        "[overlayd] cont-finish.d/10-bye: exit code 0",
    ]
    console = booted.lines
    for word in ("from-cont-init", "from-service", "from-cmd", "the-last-line-of-cont-finish"):
        assert not any(word in line for line in console), console
    assert any("exiting with code 3" in line for line in console)  # after the catch-all stopped
    assert (logdir.stat().st_mode & 0o7777) == 0o2750


def test_catchall_mode_1_copies_everything_but_the_cmd_to_the_console(boot, tree: Tree) -> None:
    booted, logdir = boot_catchall(boot, tree, "1")
    caught = without_stamp(logdir_lines(logdir))
    assert {"from-cont-init", "from-service", "from-service-stderr"} <= set(caught)
    assert "the-last-line-of-cont-finish" in caught
    assert "from-cmd" not in caught and "from-cmd-stderr" not in caught
    console = booted.lines
    for line in ("from-cont-init", "from-service", "from-cmd", "from-cmd-stderr"):
        assert line in console  # copies carry no timestamp
    assert "the-last-line-of-cont-finish" in console


def test_catchall_and_prefixes_together_catch_prefixed_lines(boot, tree: Tree) -> None:
    booted, logdir = boot_catchall(boot, tree, "1", OVERLAY_LOG_PREFIX="1")
    caught = without_stamp(logdir_lines(logdir))
    assert "svc | from-service" in caught and "svc | from-service-stderr" in caught
    assert "from-cont-init" in caught  # scripts are not prefixed
    assert "svc | from-service" in booted.lines and "from-cmd" in booted.lines


def test_catchall_mode_0_leaves_everything_on_the_console(boot, tree: Tree) -> None:
    booted, logdir = boot_catchall(boot, tree, "0")
    assert not logdir.exists()
    for line in ("from-cont-init", "from-service", "from-cmd", "the-last-line-of-cont-finish"):
        assert line in booted.lines


def test_catchall_applies_the_whole_script_and_runs_as_the_catchall_user(boot, tree: Tree) -> None:
    with reachable_by_nobody() as base:
        _booted, logdir = boot_catchall(
            boot,
            tree,
            "2",
            base / "uncaught",
            S6_LOGGING_SCRIPT="n3 s4096",
            S6_CATCHALL_USER="nobody",
        )
        current = logdir / "current"
        nobody = pwd.getpwnam("nobody")
        assert (current.stat().st_uid, logdir.stat().st_uid) == (nobody.pw_uid, nobody.pw_uid)
        lines = logdir_lines(logdir)
        assert "from-cmd" in lines and not any(STAMP.match(line) for line in lines)  # no T


@pytest.mark.parametrize("use_terminal", ["0", "1"])
def test_catchall_mode_2_on_a_terminal_keeps_the_cmd_there_with_s6_cmd_use_terminal(
    tree: Tree, use_terminal: str
) -> None:
    logdir = tree.base / "uncaught"
    master, slave = os.openpty()
    env = own_output_env(
        tree, S6_LOGGING="2", S6_CMD_USE_TERMINAL=use_terminal, OVERLAY_UNCAUGHT_LOGS=str(logdir)
    )
    try:
        proc = subprocess.Popen(
            [*PID1, "sh", "-c", "echo cmd-on-terminal"],
            stdin=slave, stdout=slave, stderr=slave, env=env,
        )  # fmt: skip
    finally:
        os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every slave end is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(30) == 0
    caught = without_stamp(logdir_lines(logdir))
    if use_terminal == "1":
        assert b"cmd-on-terminal" in seen and "cmd-on-terminal" not in caught
    else:
        assert b"cmd-on-terminal" not in seen and "cmd-on-terminal" in caught


def test_catchall_user_that_does_not_exist_is_one_line_and_exit_100(boot, tree: Tree) -> None:
    booted = boot("true", env={"S6_LOGGING": "1", "S6_CATCHALL_USER": "no-such-user-x"})
    assert booted.wait() == 100
    assert booted.lines == [
        "[overlayd] fatal: S6_CATCHALL_USER='no-such-user-x' is not valid: "
        "it accepts a user in /etc/passwd"
    ]


def test_catchall_survives_its_logger_dying_without_losing_a_line(boot, tree: Tree) -> None:
    logdir = tree.base / "uncaught"
    fifo = tree.base / "go"
    os.mkfifo(fifo)
    tree.service("svc", f"echo before; read x < {fifo}; seq 1 2000; exec sleep 1000")
    booted = boot(env={"S6_LOGGING": "2", "OVERLAY_UNCAUGHT_LOGS": str(logdir)})
    wait_until(lambda: "before" in without_stamp(logdir_lines(logdir)), what="the first line")
    logger = next(p for p in booted.descendants() if _comm(p) == "s6-log")
    os.kill(logger, 9)
    with open(fifo, "w") as handle:  # the service writes while no s6-log runs
        handle.write("go\n")
    wait_until(lambda: "2000" in without_stamp(logdir_lines(logdir)), what="the last number")
    caught = without_stamp(logdir_lines(logdir))
    numbers = [line for line in caught if line.isdigit()]
    assert numbers == [str(i) for i in range(1, 2001)]
    assert state_of(booted, "svc")["state"] == "up"


def test_without_s6_log_the_catchall_is_one_line_naming_the_package(boot, tree: Tree) -> None:
    bin_dir = tree.base / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "sleep", "unshare"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    tree.service(
        "svc", f"echo service-still-runs; {READY_AFTER_PRINT}", files={"notification-fd": "3\n"}
    )
    booted = boot(
        "sh",
        "-c",
        "echo cmd-still-runs; exit 4",
        env={"PATH": str(bin_dir), "S6_LOGGING": "2", "S6_CMD_WAIT_FOR_SERVICES": "1"},
    )
    assert booted.wait() == 4
    problems = [line for line in booted.lines if "s6-log" in line]
    assert len(problems) == 1 and "apt-get install s6" in problems[0], booted.lines
    assert "service-still-runs" in booted.lines and "cmd-still-runs" in booted.lines


# --- loggers: s6-log under log/ ---------------------------------------------------------------

PRODUCER = """
import os, signal, sys, time
stop = False
def term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, term)
state = os.open({state!r}, os.O_RDWR | os.O_CREAT)
n = int(os.pread(state, 10, 0) or b"0")
while n < {total} and not stop:
    k = min(100, {total} - n)
    os.write(1, b"".join(b"%d\\n" % i for i in range(n + 1, n + k + 1)))  # atomic: < PIPE_BUF
    n += k
    os.pwrite(state, b"%010d" % n, 0)
    time.sleep(0.004)
if not stop:
    signal.pause()
"""


def test_100000_numbered_lines_arrive_once_in_order_across_restarts_and_rotations(
    boot, tree: Tree
) -> None:
    total = 100_000
    state = tree.base / "produced"
    logdir = tree.base / "logs"
    producer = tree.write("producer.py", PRODUCER.format(state=str(state), total=total))
    tree.service(
        "svc",
        f"exec {PYTHON} {producer}",
        files={"log/run": f"#!/bin/sh\nexec s6-log -b -- n200 s65536 {logdir}\n"},
    )
    booted = boot()

    def produced() -> int:
        try:
            return int(state.read_bytes() or b"0")
        except FileNotFoundError:
            return 0

    pids = {"svc": set(), "svc/log": set()}
    with booted.client() as client:
        for round_ in range(5):
            for name, offset in (("svc", 15_000), ("svc/log", 23_000)):
                mark = min(round_ * 16_000 + offset, total)
                wait_until(lambda m=mark: produced() >= m, what=f"{mark} lines produced")
                wait_until(lambda n=name: state_of(booted, n)["pid"], what=f"{name} running")
                pids[name].add(state_of(booted, name)["pid"])
                client.restart([name])
        wait_until(
            lambda: (
                (lines := (logdir / "current").read_text().splitlines()) and lines[-1] == str(total)
            ),
            timeout=120,
            what="the last number in current",
        )
    numbers = logdir_lines(logdir)
    assert numbers == [str(i) for i in range(1, total + 1)]
    assert len(list(logdir.glob("@*.s"))) >= 8  # rotated every ~64 KB
    assert len(pids["svc"]) == 5 and len(pids["svc/log"]) == 5
    assert state_of(booted, "svc")["restarts"] >= 5
    assert state_of(booted, "svc/log")["restarts"] >= 5


COUNTING_WRITER = """
import os, time
fd = os.open({counter!r}, os.O_RDWR | os.O_CREAT)
n = 0
while n < {limit}:
    n += 1
    os.write(1, b"%d " % n + b"y" * 90 + b"\\n")
    os.pwrite(fd, b"%010d" % n, 0)
os.write(1, b"done\\n")
time.sleep(1000)
"""


class CountingWriter:
    """A service writing numbered 100-byte lines as fast as it can, counting them on disk."""

    def __init__(self, tree: Tree, limit: int) -> None:
        self.counter = tree.base / "written"
        script = tree.write(
            "writer.py", COUNTING_WRITER.format(counter=str(self.counter), limit=limit)
        )
        self.run = f"exec {PYTHON} {script}"

    def count(self) -> int:
        try:
            return int(self.counter.read_bytes() or b"0")
        except (FileNotFoundError, ValueError):
            return 0

    def wait_blocked(self, floor: int) -> int:
        """Wait until it has written more than `floor` lines and then stopped; the count."""

        def stalled() -> bool:
            before = self.count()
            time.sleep(0.5)
            return before > floor and self.count() == before

        wait_until(stalled, what="the writer to block")
        return self.count()

    def assert_stays_blocked_while_pid1_is_flat_and_answers(self, init_pid: int, client) -> None:
        """Over a second: no line more, PID 1's RSS within 1 MiB, status answering each time."""
        blocked_at = self.count()
        with client() as control:  # the first client loads the RPC stack: a one-time cost
            assert control.status(["svc"])[0]["state"] == "up"
        rss = [_rss_kb(init_pid)]
        for _ in range(5):
            with client() as control:
                assert control.status(["svc"])[0]["state"] == "up"
            time.sleep(0.2)
            rss.append(_rss_kb(init_pid))
        assert self.count() == blocked_at
        assert max(rss) - min(rss) < 1024, rss


def test_a_full_logdir_blocks_the_service_while_pid1_stays_flat_and_answers(
    boot, tree: Tree
) -> None:
    logdir = tree.base / "tiny"
    logdir.mkdir()
    tree.script("cont-init.d", "10-tiny", f"mount -t tmpfs -o size=64k tmpfs {logdir}")
    writer = CountingWriter(tree, 10**9)
    tree.service(
        "svc",
        writer.run,
        files={"log/run": f"#!/bin/sh\nexec s6-log -b -- n20 s1000000 {logdir}\n"},
    )
    booted = boot()
    # The tmpfs holds ~640 lines, the pipe ~650 more: the writer must stop well before 5000.
    assert writer.wait_blocked(600) < 5000
    writer.assert_stays_blocked_while_pid1_is_flat_and_answers(booted.init_pid, booted.client)
    assert _state_letter(state_of(booted, "svc")["pid"], booted) in ("S", "D")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _state_letter(pid_inside: int, booted: Booted) -> str:
    for pid in booted.descendants():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:") and int(line.split()[-1]) == pid_inside:
                return booted.states().get(pid, "?")
    return "?"


def test_logutil_service_drops_to_nobody_and_applies_the_script(boot, tree: Tree) -> None:
    with reachable_by_nobody() as base:
        logdir = base / "svc"
        logdir.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(logdir, nobody.pw_uid, nobody.pw_gid)
        (base / "fed").mkdir()
        os.chown(base / "fed", nobody.pw_uid, nobody.pw_gid)
        fifo = base / "fifo"
        os.mkfifo(fifo)
        os.chown(fifo, nobody.pw_uid, nobody.pw_gid)
        tree.service(
            "svc",
            "echo through-stdin; exec sleep 1000",
            files={"log/run": f"#!/bin/sh\nexec {BIN / 'logutil-service'} {logdir}\n"},
        )
        tree.service(
            "fed",
            f"exec {BIN / 'logutil-service'} -f {fifo} {base / 'fed'}",
        )
        booted = boot(env={"S6_LOGGING_SCRIPT": "n5 s4096 T"})
        wait_until(
            lambda: (
                (logdir / "current").exists()
                and "through-stdin" in (logdir / "current").read_text()
            ),
            what="the line in current",
        )
        line = (logdir / "current").read_text().splitlines()[0]
        assert STAMP.match(line) and line.endswith("through-stdin")
        assert (logdir / "current").stat().st_uid == nobody.pw_uid
        wait_until(lambda: (base / "fed" / "current").exists(), what="the fifo logger's logdir")
        with open(fifo, "w") as handle:
            handle.write("through-the-fifo\n")
        wait_until(
            lambda: "through-the-fifo" in (base / "fed" / "current").read_text(),
            what="the fifo's line",
        )
        assert state_of(booted, "fed")["state"] == "up"


def test_logutil_service_without_s6_log_says_which_package(tree: Tree) -> None:
    done = subprocess.run(
        [str(BIN / "logutil-service"), str(tree.base / "x")],
        env={"PATH": str(tree.base)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 127
    assert done.stderr.count("\n") == 1 and "apt-get install s6" in done.stderr


def test_logutil_service_usage_error(tree: Tree) -> None:
    done = subprocess.run(
        [str(BIN / "logutil-service")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 100
    assert done.stderr == "logutil-service: usage: logutil-service [-f FIFO] LOGDIR\n"


# --- prefixes ---------------------------------------------------------------------------------


def test_two_services_writing_50000_lines_each_come_out_whole_and_prefixed(
    boot, tree: Tree
) -> None:
    # sed writes in 4 KiB blocks, so lines reach overlayd cut anywhere.
    for name in ("alpha", "beta"):
        tree.service(name, f"seq 1 50000 | sed 's/^/{name}-/'; exec sleep 1000")
    booted = boot(env={"OVERLAY_LOG_PREFIX": "1"})
    wait_until(
        lambda: "alpha | alpha-50000" in booted.lines and "beta | beta-50000" in booted.lines,
        timeout=120,
        what="both last lines",
    )
    for name in ("alpha", "beta"):
        mine = [line for line in booted.lines if line.startswith(f"{name} | ")]
        assert mine == [f"{name} | {name}-{i}" for i in range(1, 50001)]
    strays = [line for line in booted.lines if not line.startswith(("alpha | ", "beta | ", "["))]
    assert strays == []


def test_a_service_that_never_writes_a_newline_comes_out_in_capped_prefixed_lines(
    boot, tree: Tree
) -> None:
    tree.service("blob", "head -c 1000000 /dev/zero | tr '\\0' x; exec sleep 1000")
    booted = boot(env={"OVERLAY_LOG_PREFIX": "1"})
    # The last piece has no newline: it comes out PARTIAL_DELAY (2 s) after it was written.
    wait_until(
        lambda: sum(len(line) - 7 for line in booted.lines if line.startswith("blob | ")) >= 10**6,
        what="all of the blob",
    )
    pieces = [line for line in booted.lines if line.startswith("blob | ")]
    assert "".join(line[7:] for line in pieces) == "x" * 10**6
    assert max(len(line) + 1 for line in pieces) == 4096  # the cap, prefix and newline included


def test_prefix_keeps_stderr_on_stderr_and_adds_timestamps(tree: Tree) -> None:
    tree.service("web", "echo to-out; echo to-err >&2; exec sleep 1000")
    env = own_output_env(tree, OVERLAY_LOG_PREFIX="1", OVERLAY_LOG_TIMESTAMPS="1")
    cmd = f"until grep -q to-err {tree.base}/err 2>/dev/null; do sleep 0.05; done"
    with open(tree.base / "out", "wb") as out_file, open(tree.base / "err", "wb") as err_file:
        done = subprocess.run(
            [*PID1, "sh", "-c", cmd],
            env=env, stdout=out_file, stderr=err_file, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0
    out = (tree.base / "out").read_text().splitlines()
    err = (tree.base / "err").read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
    assert next(line for line in out if "to-" in line) == (
        re.match(stamp, out[0]).group(0) + "web | to-out"
    )
    assert any(re.fullmatch(stamp + r"web \| to-err", line) for line in err), err
    assert not any("to-err" in line for line in out)


def test_a_stalled_container_output_blocks_the_services_not_pid1(tree: Tree) -> None:
    writer = CountingWriter(tree, 200_000)
    tree.service("svc", writer.run)
    read_end, write_end = os.pipe()
    env = own_output_env(tree, OVERLAY_LOG_PREFIX="1")
    proc = subprocess.Popen(
        PID1,
        env=env, stdout=write_end, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write_end)
    outside = _Outside(proc, tree)
    try:
        assert writer.wait_blocked(1000) < 200_000
        writer.assert_stays_blocked_while_pid1_is_flat_and_answers(outside.init_pid, outside.client)
        # Now read: every line arrives, whole, prefixed, in order.
        lines: list[bytes] = []
        pending = b""
        while not lines or lines[-1] != b"svc | done":
            data = os.read(read_end, 1 << 16)
            assert data, "overlayd's output ended early"
            pending += data
            *done, pending = pending.split(b"\n")
            lines += [line for line in done if line.startswith(b"svc | ")]
        assert lines[:-1] == [b"svc | %d " % i + b"y" * 90 for i in range(1, 200_001)]
    finally:
        outside.kill()
        os.close(read_end)


class _Outside:
    """What the test needs of an overlayd started with its own stdout (not a Booted)."""

    def __init__(self, proc: subprocess.Popen, tree: Tree) -> None:
        self.proc = proc
        self.socket = tree.socket

    @property
    def init_pid(self) -> int:
        found = wait_until(lambda: _children(self.proc.pid), 10, "overlayd to be forked")
        return found[0]  # type: ignore[index]

    def kill(self) -> None:
        """SIGKILL the namespace's PID 1 (the kernel kills the rest), then reap unshare."""
        for pid in _children(self.proc.pid):
            os.kill(pid, 9)
        self.proc.wait(10)

    def client(self):
        from overlayctl.client import Client

        wait_until(self.socket.exists, 10, "the control socket")
        return Client(str(self.socket), timeout=10)


# --- overlayctl logs ----------------------------------------------------------------------------


def test_logs_reads_the_last_lines_across_current_and_archives(boot, tree: Tree) -> None:
    logdir = tree.base / "logs"
    tree.service(
        "svc",
        "seq 1 6000; exec sleep 1000",
        files={"log/run": f"#!/bin/sh\nexec s6-log -b -- n50 s4096 {logdir}\n"},
    )
    tree.service("plain", "echo hi; exec sleep 1000")
    booted = boot()
    wait_until(lambda: logdir_lines(logdir)[-1:] == ["6000"], what="the last number")
    assert len(list(logdir.glob("@*.s"))) >= 2
    shown = booted.ctl("logs", "-n", "2500", "svc")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [str(i) for i in range(3501, 6001)]
    every = booted.ctl("logs", "-n", "-1", "svc")
    assert every.stdout.split() == [str(i) for i in range(1, 6001)]
    where = booted.ctl("--json", "logs", "svc")
    assert '"logdir": "' + str(logdir) + '"' in where.stdout
    nothing = booted.ctl("logs", "plain")
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == (
        "overlayctl: logs: plain: no copy of its output is kept; it goes to the container's "
        "output (docker logs); OVERLAY_LOG_PREFIX=1 keeps its recent lines for overlayctl logs"
    )
    unknown = booted.ctl("logs", "nope")
    assert unknown.returncode == 4
    with booted.client() as client:
        records = {r["name"]: r for r in client.status(details=True)}
    assert records["svc"]["log"]["source"] == "logdir"
    assert records["svc"]["log"]["where"] == f"{logdir}/current"
    assert records["plain"]["log"]["source"] == "console"
    table = booted.ctl("status", "--details", "svc", "plain").stdout.splitlines()
    assert table[0].split()[-1] == "log"
    rows = {line.split()[0]: line.split()[-1] for line in table[2:]}
    assert rows == {"svc": str(logdir), "plain": "console"}


@contextlib.contextmanager
def following(booted: Booted, *args: str) -> Iterator:
    """`overlayctl logs -f ARGS` running; yields its stdout; killed (as ^C would) at the end."""
    follower = subprocess.Popen(
        [PYTHON, "-m", "overlayctl", "--socket", str(booted.socket), "logs", "-f", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield follower.stdout
    finally:
        follower.kill()
        follower.wait(10)


def test_logs_follows_a_logdir_across_rotations(boot, tree: Tree) -> None:
    logdir = tree.base / "logs"
    fifo = tree.base / "more"
    os.mkfifo(fifo)
    tree.service(
        "svc",
        f"echo first; read x < {fifo}; seq 1 2000; exec sleep 1000",
        files={"log/run": f"#!/bin/sh\nexec s6-log -b -- n50 s4096 {logdir}\n"},
    )
    booted = boot()
    wait_until(
        lambda: (logdir / "current").exists() and "first" in (logdir / "current").read_text(),
        what="the first line",
    )
    with following(booted, "svc") as lines:
        assert lines.readline() == "first\n"
        with open(fifo, "w") as handle:
            handle.write("go\n")
        got = [lines.readline().strip() for _ in range(2000)]
        assert got == [str(i) for i in range(1, 2001)]


def test_logs_reads_and_follows_the_ring_when_prefixing(boot, tree: Tree) -> None:
    fifo = tree.base / "more"
    os.mkfifo(fifo)
    tree.service("web", f"seq 1 100; read x < {fifo}; echo after-follow; exec sleep 1000")
    booted = boot(env={"OVERLAY_LOG_PREFIX": "1"})
    booted.wait_for(r"^web \| 100$")
    shown = booted.ctl("logs", "-n", "3", "web")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["web | 98", "web | 99", "web | 100"]
    with following(booted, "-n1", "web") as lines:
        assert lines.readline() == "web | 100\n"
        with open(fifo, "w") as handle:
            handle.write("go\n")
        assert lines.readline() == "web | after-follow\n"


def test_idle_with_prefixes_and_the_catchall_overlayd_never_wakes_up(boot, tree: Tree) -> None:
    from tests.test_idle import SLACK, WINDOW, cmdline, wakeups

    for i in range(20):
        tree.service(f"svc{i:02d}", "echo up; exec sleep 1000")
    booted = boot(
        env={
            "OVERLAY_LOG_PREFIX": "1",
            "OVERLAY_LOG_TIMESTAMPS": "1",
            "S6_LOGGING": "1",
            "OVERLAY_UNCAUGHT_LOGS": str(tree.base / "uncaught"),
        }
    )
    booted.wait_for(r"svc\d\d \| up$", count=20)
    wait_until(
        lambda: [cmdline(p) for p in booted.descendants()].count(b"sleep\x001000\x00") == 20,
        what="20 services settled in `sleep 1000`",
    )
    pid = booted.init_pid
    before = wakeups(pid)
    time.sleep(WINDOW)  # the measurement window
    after = wakeups(pid)
    voluntary, involuntary, ticks = (a - b for a, b in zip(after, before, strict=True))
    assert max(voluntary, involuntary, ticks) <= SLACK, (voluntary, involuntary, ticks)
