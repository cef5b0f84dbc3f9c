"""PID 1 never dies of a bug, nor of a broken image: a broken service directory, script or
fix-attrs file gets one clear log line, and everything else keeps running — the other services
come up, later scripts run, the CMD runs and its exit code is exact. Heavy loads (a service with
thousands of children, a flood of orphans) leave overlayd answering and shutting down cleanly.

Every test has the same witness: a healthy service writes `up` into a fifo that the CMD reads;
the CMD prints `cmd-saw-up` and exits 5. So the CMD ran, the healthy service ran, and the
container's exit code must be exactly 5.
"""

from __future__ import annotations

import os
import resource
import signal
import stat
from collections.abc import Callable

import pytest

from tests.conftest import needs_root
from tests.harness import PYTHON, Booted, Tree, wait_until, write_to_reader

pytestmark = needs_root

CMD_CODE = 5


def witness(tree: Tree, writer: str = "service") -> list[str]:
    """Set up the fifo witness; returns the CMD. `writer`: `service` (a healthy service
    writes `up`) or `test` (the test, see `tell_cmd`, or a service of the test's own)."""
    fifo = tree.base / "cmd.fifo"
    os.mkfifo(fifo)
    if writer == "service":
        tree.service("healthy", f"echo healthy-up; echo up > {fifo}; exec sleep 1000")
    tree.script("cont-init.d", "99-last", "echo cont-init-last-ran")
    return ["sh", "-c", f'read x < {fifo}; echo "cmd-saw-$x"; exit {CMD_CODE}']


def tell_cmd(tree: Tree, word: str) -> None:
    """Write `word` into the CMD's fifo, once the CMD has it open for reading."""
    write_to_reader(tree.base / "cmd.fifo", word.encode() + b"\n", 60)


def assert_everything_else_ran(booted: Booted, *, healthy: bool = True) -> None:
    """The witness: overlayd carried on past the breakage, to an exact exit code."""
    assert booted.wait(60) == CMD_CODE, booted.output
    booted.wait_for("^cont-init-last-ran$")
    if healthy:
        booted.wait_for("^healthy-up$")
        booted.wait_for("^cmd-saw-up$")
    booted.wait_for(f"exiting with code {CMD_CODE}$")
    assert "Traceback" not in booted.output, booted.output


# --- broken trees: (setup, the log line that must name the problem) ----------------------------


def no_run(tree: Tree) -> None:
    (tree.etc / "services.d" / "broken").mkdir()
    (tree.etc / "services.d" / "broken" / "finish").write_text("#!/bin/sh\n")


def run_is_directory(tree: Tree) -> None:
    (tree.etc / "services.d" / "broken" / "run").mkdir(parents=True)


def run_is_dangling_link(tree: Tree) -> None:
    (tree.etc / "services.d" / "broken").mkdir()
    (tree.etc / "services.d" / "broken" / "run").symlink_to("/nonexistent/run")


def notification_fd(content: str) -> Callable[[Tree], None]:
    def setup(tree: Tree) -> None:
        tree.service(
            "broken", "echo broken-ran; exec sleep 1000", files={"notification-fd": content}
        )

    return setup


def notification_fd_is_directory(tree: Tree) -> None:
    directory = tree.service("broken", "echo broken-ran; exec sleep 1000")
    (directory / "notification-fd").mkdir()


def bad_down_signal(tree: Tree) -> None:
    tree.service("broken", "exec sleep 1000", files={"down-signal": "SIGNOPE"})


def timeout_kill(content: str) -> Callable[[Tree], None]:
    def setup(tree: Tree) -> None:
        tree.service("broken", "exec sleep 1000", files={"timeout-kill": content})

    return setup


bad_timeout_kill = timeout_kill("soon")


def services_entry_is_a_file(tree: Tree) -> None:
    (tree.etc / "services.d" / "stray-file").write_text("not a service\n")


def services_entry_is_dangling_link(tree: Tree) -> None:
    (tree.etc / "services.d" / "gone").symlink_to("/nonexistent/service")


def cont_init_is_directory(tree: Tree) -> None:
    (tree.etc / "cont-init.d" / "10-dir").mkdir()


def cont_init_is_dangling_link(tree: Tree) -> None:
    (tree.etc / "cont-init.d" / "10-link").symlink_to("/nonexistent/script")


def cont_init_bad_interpreter(tree: Tree) -> None:
    tree.write("etc/cont-init.d/10-bad", "#!/nonexistent/interpreter\necho never\n")


def fix_attrs_is_directory(tree: Tree) -> None:
    (tree.etc / "fix-attrs.d" / "10-dir").mkdir()


def fix_attrs_dangling_link(tree: Tree) -> None:
    (tree.etc / "fix-attrs.d" / "10-link").symlink_to("/nonexistent/fix-attrs")


def fix_attrs_missing_fields(tree: Tree) -> None:
    tree.write("etc/fix-attrs.d/10-bad", "/tmp true root\n", 0o644)


def fix_attrs_bad_mode(tree: Tree) -> None:
    tree.write("etc/fix-attrs.d/10-bad", "/tmp true root 0999 0755\n", 0o644)


def fix_attrs_binary_garbage(tree: Tree) -> None:
    path = tree.etc / "fix-attrs.d" / "10-binary"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00\n/\xff\xfe true r\xffoot 0644 0755\n")


def fix_attrs_nul_in_account(tree: Tree) -> None:
    path = tree.etc / "fix-attrs.d" / "10-nul"
    path.write_bytes(b"/tmp false ro\x00ot 0644 0755\n")


def case(name: str, setup: Callable[[Tree], None], line: str):
    return pytest.param(setup, line, id=name)


BROKEN = [
    # case(id, setup, regex of the log line naming the problem)
    case("service-without-run", no_run, r"error: service broken \(.*\): run is missing"),
    case("run-is-a-directory", run_is_directory, r"service broken \(.*\): run is not a regular"),
    case("run-dangling-link", run_is_dangling_link, r"error: service broken \(.*\): run is"),
    case(
        "notification-fd-not-a-number",
        notification_fd("banana"),
        r"error: service broken \(.*\): notification-fd holds 'banana', not a number",
    ),
    case(
        "notification-fd-below-3",
        notification_fd("1"),
        r"error: service broken \(.*\): notification-fd holds '1'",
    ),
    case(
        "notification-fd-unicode-digit",
        notification_fd("\u00b2"),
        r"error: service broken \(.*\): notification-fd",
    ),
    case(
        "notification-fd-beyond-fd-limit",
        notification_fd("99999999999"),
        r"service broken.*notification-fd",
    ),
    case(
        "notification-fd-is-a-directory",
        notification_fd_is_directory,
        r"error: service broken \(.*\): Is a directory",
    ),
    case("bad-down-signal", bad_down_signal, r"service broken \(.*\): unknown signal: SIGNOPE"),
    case("bad-timeout-kill", bad_timeout_kill, r"service broken \(.*\): timeout-kill holds"),
    case(
        "timeout-kill-unicode-digit",
        timeout_kill("\u00b2"),
        r"service broken \(.*\): timeout-kill",
    ),
    case("services-entry-is-a-file", services_entry_is_a_file, r"stray-file is not a directory"),
    case("services-entry-dangling", services_entry_is_dangling_link, r"gone is not a directory"),
    case("cont-init-is-a-directory", cont_init_is_directory, r"cont-init.d/10-dir is a directory"),
    case("cont-init-dangling-link", cont_init_is_dangling_link, r"cont-init.d/10-link is not a"),
    case(
        "cont-init-bad-interpreter",
        cont_init_bad_interpreter,
        r"cannot run '/nonexistent/interpreter'|cannot run '.*/10-bad'",
    ),
    case("fix-attrs-is-a-directory", fix_attrs_is_directory, r"fix-attrs.d/10-dir: cannot read"),
    case(
        "fix-attrs-dangling-link",
        fix_attrs_dangling_link,
        r"fix-attrs.d/10-link: cannot read: dangling symbolic link",
    ),
    case(
        "fix-attrs-missing-fields",
        fix_attrs_missing_fields,
        r"fix-attrs.d/10-bad line 1: expected 5 fields .*line skipped",
    ),
    case("fix-attrs-bad-mode", fix_attrs_bad_mode, r"fix-attrs.d/10-bad line 1: mode '0999'"),
    case("fix-attrs-binary-file", fix_attrs_binary_garbage, r"fix-attrs.d/10-binary line 1:"),
    case(
        "fix-attrs-nul-in-account",
        fix_attrs_nul_in_account,
        r"fix-attrs.d/10-nul line 1:",
    ),
]


@pytest.mark.parametrize(("setup", "line"), BROKEN)
def test_broken_piece_is_named_and_everything_else_runs(
    boot, tree: Tree, setup: Callable[[Tree], None], line: str
) -> None:
    cmd = witness(tree)
    setup(tree)
    booted = boot(*cmd)
    # The line naming the problem, or a traceback: overlayd hit a bug (fail fast on it).
    found = booted.wait_for(rf"{line}|Traceback")
    assert "Traceback" not in found.group(0), booted.output
    assert_everything_else_ran(booted)


def test_broken_service_is_reported_failed_and_not_started(boot, tree: Tree) -> None:
    cmd = witness(tree)
    notification_fd("banana")(tree)
    booted = boot(*cmd)
    assert_everything_else_ran(booted)
    booted.wait_for(r"error: service broken .*the service is marked failed")
    assert booted.count("^broken-ran$") == 0


def test_run_without_execute_bit_still_runs_with_a_warning(boot, tree: Tree) -> None:
    cmd = witness(tree, writer="test")
    # The 0644 service is the one the CMD waits for: it ran, or the CMD never ends.
    fifo = tree.base / "cmd.fifo"
    body = f"echo noexec-ran; echo up > {fifo}; exec sleep 1000"
    run = tree.service("noexec", body, run_mode=0o644) / "run"
    booted = boot(*cmd)
    booted.wait_for("^noexec-ran$")
    booted.wait_for(rf"warning: {run} is not executable; running it with /bin/sh$")
    assert_everything_else_ran(booted, healthy=False)
    booted.wait_for("^cmd-saw-up$")


def test_script_without_execute_bit_or_shebang_runs_with_sh(boot, tree: Tree) -> None:
    cmd = witness(tree)
    script = tree.write("etc/cont-init.d/10-plain", "echo plain-ran\n", 0o644)
    booted = boot(*cmd)
    booted.wait_for("^plain-ran$")
    booted.wait_for(rf"warning: {script} is not executable; running it with /bin/sh$")
    assert_everything_else_ran(booted)


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_child_that_cannot_be_set_up_is_named_and_the_rest_runs(boot, tree: Tree) -> None:
    """A failure between fork and exec (here: notification-fd 1000 under a 256-fd limit, which
    no scan can foresee) is one line naming the program, not a silent exit 126."""
    cmd = witness(tree)
    directory = tree.service(
        "broken", "echo broken-ran; exec sleep 1000", files={"notification-fd": "1000"}
    )
    booted = boot(*cmd, preexec=_low_fd_limit)
    found = booted.wait_for(rf"cannot start '{directory}/run'|Traceback")
    assert "Traceback" not in found.group(0), booted.output
    assert_everything_else_ran(booted)
    assert booted.count("^broken-ran$") == 0


def test_good_fix_attrs_lines_apply_around_a_bad_one(boot, tree: Tree) -> None:
    cmd = witness(tree)
    target = tree.base / "target"
    target.write_text("data\n")
    target.chmod(0o644)
    other = tree.base / "other"
    other.write_text("data\n")
    other.chmod(0o644)
    tree.write(
        "etc/fix-attrs.d/10-mixed",
        f"{target} false root 0600 0700\nthis line is not a rule\n{other} false root 0640 0750\n",
        0o644,
    )
    booted = boot(*cmd)
    assert_everything_else_ran(booted)
    booted.wait_for(r"fix-attrs.d/10-mixed line 2: expected 5 fields .*line skipped")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(other.stat().st_mode) == 0o640


def test_crash_looping_service_does_not_disturb_the_others(boot, tree: Tree) -> None:
    cmd = witness(tree, writer="test")
    tree.service("crasher", "echo crasher-ran; exit 1")
    tree.service("steady", 'echo "steady-pid=$$"; exec sleep 1000')
    booted = boot(*cmd)
    booted.wait_for("^steady-pid=")
    booted.wait_for("^crasher-ran$", count=3)
    assert booted.count("^steady-pid=") == 1
    tell_cmd(tree, "up")
    assert_everything_else_ran(booted, healthy=False)
    booted.wait_for("^cmd-saw-up$")


# --- heavy loads ------------------------------------------------------------------------------

# A cont-finish script that reports how many `sleep` processes are still alive (zombies aside)
# once the services are down; it waits for them to finish dying, bounded.
COUNT_SLEEPS = """\
for i in $(seq 200); do
    left=$(ps -e -o stat=,comm= | awk '$1 !~ /^Z/ && $2 == "sleep"' | wc -l)
    [ "$left" -eq 0 ] && break
    sleep 0.1
done
echo "left=$left"
"""


def test_service_with_thousands_of_children_is_stopped_whole(boot, tree: Tree) -> None:
    cmd = witness(tree, writer="test")
    tree.service("forker", "for i in $(seq 3000); do sleep 30 & done; echo forked; wait")
    tree.script("cont-finish.d", "10-count", COUNT_SLEEPS)
    booted = boot(*cmd)
    booted.wait_for("^forked$", timeout=180)
    # overlayd still answers: the CMD it started proceeds when told, and its exit is handled.
    tell_cmd(tree, "go")
    assert booted.wait(120) == CMD_CODE, booted.output
    booted.wait_for("^cmd-saw-go$")
    booted.wait_for("^cont-init-last-ran$")
    # Stopping the service took its whole process group: nothing was left for the final kill.
    booted.wait_for("^left=0$")
    booted.wait_for(f"exiting with code {CMD_CODE}$")
    assert "Traceback" not in booted.output


FLOOD = """\
import os, sys
count = int(sys.argv[1])
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
print("flood-done", flush=True)
os.execvp("sleep", ["sleep", "1000"])
"""


def test_orphan_flood_while_services_restart(boot, tree: Tree) -> None:
    cmd = witness(tree, writer="test")
    flood = tree.base / "flood.py"
    flood.write_text(FLOOD)
    tree.service("flapper", "echo flap; sleep 0.2; exit 1")
    tree.service("flood", f"exec {PYTHON} {flood} 5000")
    booted = boot(*cmd)
    booted.wait_for("^flap$")
    booted.wait_for("^flood-done$", timeout=180)
    # Supervision went on through the flood and goes on after it.
    flaps = booted.count("^flap$")
    booted.wait_for("^flap$", count=flaps + 2, timeout=30)
    wait_until(lambda: not booted.zombies(), 60, "every orphan of the flood to be reaped")
    assert booted.count("^flood-done$") == 1  # the flood service itself was never restarted
    tell_cmd(tree, "go")
    assert booted.wait(60) == CMD_CODE, booted.output
    booted.wait_for("^cmd-saw-go$")
    assert "Traceback" not in booted.output


def test_sigterm_during_boot_with_a_broken_tree_exits_cleanly(boot, tree: Tree) -> None:
    """A broken tree does not confuse shutdown either: SIGTERM → the CMD's own exit code."""
    no_run(tree)
    fix_attrs_is_directory(tree)
    booted = boot("sh", "-c", "trap 'exit 6' TERM; echo cmd-up; while :; do sleep 0.1; done")
    booted.wait_for("^cmd-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 6, booted.output
    assert "Traceback" not in booted.output
