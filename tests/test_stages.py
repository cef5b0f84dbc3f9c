"""Boot (stage 2) and shutdown (stage 3) in the order DESIGN §3 gives, with overlayd as PID 1."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.harness import Tree

pytestmark = needs_root


def order_of(path: Path) -> list[str]:
    return path.read_text().split()


def test_boot_runs_fixattrs_then_cont_init_in_byte_order_then_services_then_cmd(
    boot, tree: Tree
) -> None:
    order = tree.base / "order"
    target = tree.base / "data"
    target.mkdir()
    target.chmod(0o700)
    tree.write("etc/fix-attrs.d/01-data", f"{target} false root:root 0600 0750\n", 0o644)
    for name in ("9-nine", "10-ten", "B-upper", "a-lower", ".hidden"):
        tree.script(
            "cont-init.d",
            name,
            f"echo init:{name} >> {order}; "
            f"[ $(stat -c %a {target}) = 750 ] || echo fixattrs-not-applied >> {order}",
        )
    tree.service(
        "svc",
        f"echo svc >> {order}; echo >&3; exec sleep 100",
        files={"notification-fd": "3\n"},
    )
    booted = boot("sh", "-c", f"echo cmd >> {order}", env={"S6_CMD_WAIT_FOR_SERVICES": "1"})
    assert booted.wait() == 0, booted.output
    assert order_of(order) == [
        "init:10-ten",
        "init:9-nine",
        "init:B-upper",
        "init:a-lower",
        "svc",
        "cmd",
    ]
    assert booted.count(r"cont-init\.d/\.hidden") == 0


def test_every_cont_init_script_runs_and_each_exit_code_is_logged(boot, tree: Tree) -> None:
    tree.script("cont-init.d", "10-fails", "exit 4")
    tree.script("cont-init.d", "20-killed", "kill -KILL $$")
    tree.script("cont-init.d", "30-ok", "echo third-ran")
    booted = boot("sh", "-c", "exit 0")
    assert booted.wait() == 0, booted.output
    booted.wait_for(r"cont-init\.d/10-fails: exit code 4$")
    booted.wait_for(r"cont-init\.d/20-killed: killed by SIGKILL$")
    booted.wait_for(r"^third-ran$")
    booted.wait_for(r"cont-init\.d/30-ok: exit code 0$")


def test_cont_init_without_execute_bit_runs_through_its_interpreter(boot, tree: Tree) -> None:
    tree.write(
        "etc/cont-init.d/10-python",
        "#!/usr/bin/env python3\nprint('python-said', 6 * 7)\n",
        0o644,
    )
    tree.write("etc/cont-init.d/20-noshebang", "echo sh-said-$((6*7))\n", 0o644)
    booted = boot("true")
    assert booted.wait() == 0
    booted.wait_for(r"^python-said 42$")
    booted.wait_for(r"^sh-said-42$")
    booted.wait_for(r"warning: .*10-python is not executable; running it with /usr/bin/env python3")


def test_shutdown_order_cmd_then_services_and_finish_then_cont_finish(boot, tree: Tree) -> None:
    order = tree.base / "order"
    tree.service(
        "svc",
        f"trap 'echo svc-term >> {order}; exit 0' TERM; echo svc-up; while :; do sleep 0.05; done",
        finish=f"echo svc-finish:$1:$2:$3 >> {order}",
    )
    tree.script("cont-finish.d", "10-first", f"echo finish-10 >> {order}")
    tree.script("cont-finish.d", "20-second", f"echo finish-20 >> {order}")
    tree.script("cont-finish.d", ".hidden", f"echo hidden >> {order}")
    cmd = f"trap 'echo cmd-term >> {order}; exit 0' TERM; echo cmd-up; while :; do sleep 0.05; done"
    booted = boot("sh", "-c", cmd)
    booted.wait_for("^svc-up$")
    booted.wait_for("^cmd-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    assert order_of(order) == [
        "cmd-term",
        "svc-term",
        "svc-finish:0:0:svc",
        "finish-10",
        "finish-20",
    ]


@pytest.mark.parametrize("behaviour", ["0", "1"])
def test_stage2_failure_behaviour_0_and_1_go_on(boot, tree: Tree, behaviour: str) -> None:
    tree.script("cont-init.d", "10-fails", "exit 5")
    booted = boot(
        "sh", "-c", "echo cmd-ran; exit 3", env={"S6_BEHAVIOUR_IF_STAGE2_FAILS": behaviour}
    )
    assert booted.wait() == 3, booted.output
    booted.wait_for("^cmd-ran$")
    loud = booted.count(r"warning: !!! stage 2 FAILED: cont-init\.d/10-fails \(5\)")
    assert loud == (1 if behaviour == "1" else 0)


def test_stage2_failure_behaviour_2_stops_with_the_scripts_code(boot, tree: Tree) -> None:
    order = tree.base / "order"
    tree.script("cont-init.d", "10-fails", "exit 5")
    tree.script("cont-init.d", "20-still-runs", f"echo second >> {order}")
    tree.script("cont-finish.d", "10-finish", f"echo finish >> {order}")
    booted = boot("sh", "-c", f"echo cmd >> {order}", env={"S6_BEHAVIOUR_IF_STAGE2_FAILS": "2"})
    assert booted.wait() == 5, booted.output
    assert order_of(order) == ["second", "finish"]
    booted.wait_for(r"stage 2 failed: cont-init\.d/10-fails \(5\)")


def test_stage2_failure_behaviour_2_broken_service_exits_1(boot, tree: Tree) -> None:
    (tree.etc / "services.d" / "norun").mkdir()
    booted = boot("echo", "cmd-ran", env={"S6_BEHAVIOUR_IF_STAGE2_FAILS": "2"})
    assert booted.wait() == 1, booted.output
    assert booted.count("^cmd-ran$") == 0
    booted.wait_for(r"service norun .*: run is missing")


def test_cmd_waits_for_readiness_with_wait_for_services(boot, tree: Tree) -> None:
    order = tree.base / "order"
    tree.service(
        "slow",
        f"sleep 0.3; echo ready >> {order}; echo >&3; exec sleep 100",
        files={"notification-fd": "3\n"},
    )
    booted = boot("sh", "-c", f"echo cmd >> {order}", env={"S6_CMD_WAIT_FOR_SERVICES": "1"})
    assert booted.wait() == 0, booted.output
    assert order_of(order) == ["ready", "cmd"]


def test_wait_for_services_maxtime_is_a_stage2_failure(boot, tree: Tree) -> None:
    tree.service("never", "exec sleep 100", files={"notification-fd": "3\n"})
    env = {
        "S6_CMD_WAIT_FOR_SERVICES": "1",
        "S6_CMD_WAIT_FOR_SERVICES_MAXTIME": "300",
        "S6_BEHAVIOUR_IF_STAGE2_FAILS": "2",
    }
    booted = boot("echo", "cmd-ran", env=env)
    assert booted.wait() == 1, booted.output
    assert booted.count("^cmd-ran$") == 0
    booted.wait_for("services not up after S6_CMD_WAIT_FOR_SERVICES_MAXTIME: never")


def test_wait_for_services_maxtime_under_behaviour_0_still_runs_cmd(boot, tree: Tree) -> None:
    tree.service("never", "exec sleep 100", files={"notification-fd": "3\n"})
    env = {"S6_CMD_WAIT_FOR_SERVICES": "1", "S6_CMD_WAIT_FOR_SERVICES_MAXTIME": "300"}
    booted = boot("sh", "-c", "echo cmd-ran; exit 2", env=env)
    assert booted.wait() == 2, booted.output
    booted.wait_for("^cmd-ran$")


def test_service_ignoring_term_is_killed_after_services_gracetime(boot, tree: Tree) -> None:
    order = tree.base / "order"
    tree.service(
        "stubborn",
        "trap '' TERM; echo stubborn-up; while :; do sleep 0.05; done",
        finish=f"echo finish:$1:$2 >> {order}",
    )
    booted = boot(env={"S6_SERVICES_GRACETIME": "300"})
    booted.wait_for("^stubborn-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    booted.wait_for("service stubborn outlived the grace time; sending SIGKILL")
    assert order_of(order) == [f"finish:256:{int(signal.SIGKILL)}"]


def test_timeout_kill_shorter_than_grace_kills_the_service_earlier(boot, tree: Tree) -> None:
    tree.service(
        "stubborn",
        "trap '' TERM; echo stubborn-up; while :; do sleep 0.05; done",
        files={"timeout-kill": "200\n"},
    )
    booted = boot(env={"S6_SERVICES_GRACETIME": "60000"})
    booted.wait_for("^stubborn-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    booted.wait_for("service stubborn: still running after timeout-kill; sending SIGKILL")
    assert booted.count("outlived the grace time") == 0


def test_cont_finish_script_killed_after_kill_finish_maxtime(boot, tree: Tree) -> None:
    order = tree.base / "order"
    tree.script("cont-finish.d", "10-hangs", f"echo hang >> {order}; exec sleep 1000")
    tree.script("cont-finish.d", "20-next", f"echo next >> {order}")
    booted = boot("true", env={"S6_KILL_FINISH_MAXTIME": "300"})
    assert booted.wait() == 0, booted.output
    assert order_of(order) == ["hang", "next"]
    booted.wait_for(r"cont-finish\.d/10-hangs: still running after 0\.3 s; killing it")


def test_final_kill_does_not_sleep_out_the_grace_when_nothing_is_left(boot, tree: Tree) -> None:
    """s6-overlay sleeps S6_KILL_GRACETIME unconditionally (#628); overlayd stops waiting."""
    tree.script("cont-init.d", "10-daemon", "setsid sleep 1000 > /dev/null 2>&1 &")
    booted = boot("true", env={"S6_KILL_GRACETIME": "60000"})
    begun = time.monotonic()
    assert booted.wait(timeout=50) == 0, booted.output
    assert time.monotonic() - begun < 30  # the grace (60 s) was not slept out
    booted.wait_for("sending SIGTERM to all remaining processes")
    assert booted.count("outlived S6_KILL_GRACETIME") == 0


def test_final_kill_sigkills_what_ignores_sigterm(boot, tree: Tree) -> None:
    tree.script(
        "cont-init.d",
        "10-daemon",
        "setsid sh -c 'trap \"\" TERM; echo daemon-up; while :; do sleep 0.05; done' &",
    )
    booted = boot(env={"S6_KILL_GRACETIME": "300"})
    booted.wait_for("^daemon-up$")
    booted.kill(signal.SIGTERM)
    assert booted.wait() == 0, booted.output
    booted.wait_for("processes outlived S6_KILL_GRACETIME; sending SIGKILL")


def test_second_sigterm_skips_to_the_final_kill(boot, tree: Tree) -> None:
    tree.service("stubborn", "trap '' TERM; echo stubborn-up; while :; do sleep 0.05; done")
    tree.script("cont-finish.d", "10-finish", "echo cont-finish-ran")
    env = {"S6_SERVICES_GRACETIME": "60000", "S6_KILL_GRACETIME": "200"}
    booted = boot(env=env)
    booted.wait_for("^stubborn-up$")
    booted.kill(signal.SIGTERM)
    booted.wait_for("stopping services")
    booted.kill(signal.SIGTERM)
    assert booted.wait(timeout=30) == 0, booted.output
    booted.wait_for("received SIGTERM again: skipping to the final kill")
    assert booted.count("^cont-finish-ran$") == 0
