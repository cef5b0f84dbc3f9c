"""Signals: what overlayd does with each, and what its children start with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import needs_root
from tests.harness import Tree, proc_status

pytestmark = needs_root

SHOW_SIGNALS = "grep -E '^Sig(Blk|Ign):' /proc/self/status"


def sigset(hexmask: str) -> set[int]:
    value = int(hexmask, 16)
    return {n + 1 for n in range(64) if value >> n & 1}


def baseline(preexec=None) -> dict[str, set[int]]:
    """What a plain child of this test process starts with: what overlayd itself is given.

    Not assumed empty: a CI runner may start the tests with signals ignored (GNU make starts
    every recipe with glibc's 32 and 33 ignored), and overlayd must pass those on unchanged.
    Taken before the boot: glibc installs its own handler for 33 once this process starts a
    thread (the boot's output reader), and a child started after that gets 33 at its default.
    """
    out = subprocess.run(
        ["sh", "-c", SHOW_SIGNALS + " | cat"],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=preexec,
    ).stdout
    fields = dict(line.split(":") for line in out.splitlines())
    return {
        "blocked": sigset(fields["SigBlk"].strip()),
        "ignored": sigset(fields["SigIgn"].strip()),
    }


def shown(booted, who: str) -> dict[str, set[int]]:
    blk = booted.wait_for(rf"^{who}SigBlk:\s+([0-9a-f]+)$").group(1)
    ign = booted.wait_for(rf"^{who}SigIgn:\s+([0-9a-f]+)$").group(1)
    return {"blocked": sigset(blk), "ignored": sigset(ign)}


def test_children_start_with_default_dispositions_and_empty_mask(boot, tree: Tree) -> None:
    """Python ignores SIGPIPE and overlayd ignores SIGTTIN/SIGTTOU; no child may inherit that."""
    tree.script("cont-init.d", "10-show", f"{SHOW_SIGNALS} | sed 's/^/init/'")
    tree.service(  # ready only once it has spoken, so the CMD cannot end the run first
        "svc",
        f"{SHOW_SIGNALS} | sed 's/^/svc/'; echo >&3; exec sleep 100",
        files={"notification-fd": "3\n"},
    )
    given = baseline()
    booted = boot(
        "sh", "-c", f"{SHOW_SIGNALS} | sed 's/^/cmd/'", env={"S6_CMD_WAIT_FOR_SERVICES": "1"}
    )
    assert booted.wait() == 0, booted.output
    for who in ("init", "svc", "cmd"):
        seen = shown(booted, who)
        assert seen == given, who
        assert signal.SIGPIPE not in seen["ignored"], who
        assert not {signal.SIGTTIN, signal.SIGTTOU} & seen["ignored"], who


def test_signal_ignored_by_overlayds_parent_stays_ignored_in_the_cmd(boot) -> None:
    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    given = baseline(ignore_sigint)
    booted = boot("sh", "-c", f"{SHOW_SIGNALS} | sed 's/^/cmd/'", preexec=ignore_sigint)
    assert booted.wait() == 0, booted.output
    seen = shown(booted, "cmd")
    assert seen == given
    assert signal.SIGINT in seen["ignored"]


def test_mask_given_to_overlayd_is_given_to_children_but_overlayd_still_hears_sigterm(
    boot, tree: Tree
) -> None:
    def block_usr2_and_term() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGTERM})

    tree.service("svc", f"{SHOW_SIGNALS} | sed 's/^/svc/'; exec sleep 100")
    given = baseline(block_usr2_and_term)
    booted = boot(preexec=block_usr2_and_term)
    seen = shown(booted, "svc")
    assert seen["blocked"] == {signal.SIGUSR2, signal.SIGTERM}
    assert seen == given
    booted.kill(signal.SIGTERM)  # overlayd unblocked it for itself
    booted.wait_for("shutting down: received SIGTERM")
    assert booted.wait() == 0


@pytest.mark.parametrize("name", ["HUP", "USR1", "USR2", "WINCH"])
def test_signal_is_forwarded_to_the_cmds_process_group(boot, name: str) -> None:
    child = f"trap 'echo child-got-{name}' {name}; echo child-up; while :; do sleep 0.05; done"
    cmd = (
        f"sh -c \"{child}\" & trap 'echo cmd-got-{name}' {name}; echo cmd-up; "
        "while :; do sleep 0.05; done"
    )
    booted = boot("sh", "-c", cmd)
    booted.wait_for("^cmd-up$")
    booted.wait_for("^child-up$")
    booted.kill(signal.Signals["SIG" + name])
    booted.wait_for(f"^cmd-got-{name}$")
    booted.wait_for(f"^child-got-{name}$")
    assert booted.count("shutting down") == 0
    booted.kill(signal.SIGTERM)
    booted.wait()


@pytest.mark.parametrize("name", ["TERM", "INT", "QUIT"])
def test_term_int_quit_start_the_shutdown(boot, tree: Tree, name: str) -> None:
    tree.service("svc", "echo svc-up; exec sleep 100")
    booted = boot()
    booted.wait_for("^svc-up$")
    booted.kill(signal.Signals["SIG" + name])
    assert booted.wait() == 0, booted.output
    booted.wait_for(f"shutting down: received SIG{name}")


def test_cmd_receive_signals_passes_term_to_the_cmd_which_decides(boot) -> None:
    cmd = "trap 'echo cmd-got-TERM; exit 7' TERM; echo cmd-up; while :; do sleep 0.05; done"
    booted = boot("sh", "-c", cmd, env={"S6_CMD_RECEIVE_SIGNALS": "1"})
    booted.wait_for("^cmd-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 7, booted.output
    booted.wait_for("received SIGTERM: passing it to the CMD")
    booted.wait_for("shutting down: the CMD exited")
    assert booted.count("shutting down: received") == 0


def test_hup_without_cmd_rescans_services(boot, tree: Tree) -> None:
    tree.service("first", "echo first-up; exec sleep 100")
    tree.service(
        "doomed",
        "trap 'echo doomed-stopped; exit 0' TERM; echo doomed-up; while :; do sleep 0.05; done",
    )
    booted = boot()
    booted.wait_for("^first-up$")
    booted.wait_for("^doomed-up$")
    tree.service("second", "echo second-up; exec sleep 100")
    for leftover in (tree.etc / "services.d" / "doomed").iterdir():
        leftover.unlink()
    (tree.etc / "services.d" / "doomed").rmdir()
    booted.kill(signal.SIGHUP)
    booted.wait_for("^second-up$")
    booted.wait_for("^doomed-stopped$")
    assert booted.count("^first-up$") == 1
    assert booted.count("shutting down") == 0
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0


def test_overlayd_itself_ignores_ttin_ttou_and_handles_what_it_honours(boot, tree: Tree) -> None:
    tree.service("svc", "echo svc-up; exec sleep 100")
    booted = boot()
    booted.wait_for("^svc-up$")
    status = proc_status(booted.init_pid)
    assert sigset(status["SigIgn"]) >= {signal.SIGTTIN, signal.SIGTTOU}
    caught = sigset(status["SigCgt"])
    for honoured in ("TERM", "INT", "QUIT", "HUP", "USR1", "USR2", "WINCH", "CHLD"):
        assert signal.Signals["SIG" + honoured] in caught, honoured
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0


def _posix_spawned_ignored(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run argv as os.posix_spawn starts it (glibc leaves its own 32 and 33 ignored in the
    child, as GNU make's recipes get them); its exit code and stdout."""
    read_end, write_end = os.pipe()
    pid = os.posix_spawnp(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 1)])
    os.close(write_end)
    with os.fdopen(read_end) as out:
        text = out.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), text


def test_the_c_librarys_own_signals_given_ignored_stay_ignored_in_children(tmp_path) -> None:
    """glibc's 32 and 33 are outside Python's valid_signals; overlayd reads what it was given
    from the kernel, so a child started by posix_spawn gets them as they were given."""
    env = {"PATH": os.environ["PATH"]}
    _, probe = _posix_spawned_ignored(["grep", "^SigIgn", "/proc/self/status"], env)
    if not sigset(probe.split()[1]) >= {32, 33}:
        pytest.skip("this C library's posix_spawn does not leave 32 and 33 ignored")
    env.update({"OVERLAY_ROOT": str(tmp_path), "OVERLAY_RUN_DIR": str(tmp_path / "run"),
                "OVERLAY_S6_PATHS": "0", "S6_VERBOSITY": "0"})
    code, out = _posix_spawned_ignored(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "overlayd",
         "grep", "^SigIgn", "/proc/self/status"], env,
    )
    assert code == 0, out
    assert sigset(out.split()[1]) == {32, 33}
