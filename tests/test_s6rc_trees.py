"""s6-overlay v3 images booted unchanged, overlayd as PID 1 (DESIGN §10).

Every script appends its event (`up X`, `run X`, `down X`) to one log file, so the tests read
the order in which things really happened.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import needs_root
from tests.harness import Tree, wait_until, write_to_reader
from tests.v3tree import V3

pytestmark = needs_root

# linuxserver.io's baseimage shape: init-* oneshots hanging off init-config, ending in an app.
LSIO_ONESHOTS = {
    "init-migrations": ("base",),
    "init-adduser": ("init-migrations",),
    "init-os-end": ("base", "init-adduser"),
    "init-config": ("init-os-end",),
    "init-folders": ("init-config",),
    "init-keygen": ("init-config",),
    "init-nginx": ("init-folders", "init-keygen"),
    "init-php": ("init-config",),
    "init-permissions": ("init-nginx", "init-php"),
    "init-mods": ("init-config",),
    "init-custom-files": ("init-mods",),
    "init-config-end": ("init-permissions", "init-custom-files"),
    "init-services": ("init-config-end",),
}
COMMENT_ONLY = ("init-config-end", "init-services")  # real images ship these as no-ops


def lsio_tree(v3: V3) -> None:
    for name, deps in LSIO_ONESHOTS.items():
        if name in COMMENT_ONLY:
            v3.oneshot(name, deps=deps, up_text=(
                "# This file doesn't do anything, it's just the end of the downstream image "
                "init process\n"))
        else:
            v3.oneshot(name, "sleep 0.05", deps=deps)
    v3.longrun("svc-php-fpm", "exec sleep 1000", deps=("init-services",))
    v3.longrun("svc-nginx", "exec sleep 1000", deps=("init-services", "svc-php-fpm"))
    v3.user(*LSIO_ONESHOTS, "svc-php-fpm", "svc-nginx")


def assert_order(events: list[str], before: str, after: str) -> None:
    assert before in events and after in events, events
    assert events.index(before) < events.index(after), events


def started_before(booted, first: str, then: str) -> None:
    """overlayd's own log: `first` was up before `then` was started (a longrun without a
    notification-fd is up once spawned; its run script may print later)."""
    lines = booted.output.splitlines()
    up = lines.index(f"[overlayd] service {first}: up")
    starting = lines.index(f"[overlayd] service {then}: starting")
    assert up < starting, booted.output


def status(booted, *names: str) -> dict[str, dict]:
    with booted.client() as client:
        return {r["name"]: r for r in client.status(list(names))}


def test_linuxserver_style_dag_boots_in_dependency_order(boot, tree: Tree) -> None:
    v3 = V3(tree)
    lsio_tree(v3)
    tree.script("cont-init.d", "10-legacy", f"echo 'cont-init' >> {v3.log}")
    booted = boot()
    booted.wait_for(r"service svc-nginx: up")
    # Both run scripts: svc-nginx is started once svc-php-fpm is spawned (no notification-fd),
    # so its script may well print first.
    wait_until(lambda: {"run svc-php-fpm", "run svc-nginx"} <= set(v3.events()),
               what="both run scripts")
    events = v3.events()
    print("observed order:", events)  # evidence for the note
    assert events[0] == "cont-init"  # base (fix-attrs, legacy-cont-init) first
    for name, deps in LSIO_ONESHOTS.items():
        if name in COMMENT_ONLY:
            continue
        for dep in deps:
            if dep != "base" and dep not in COMMENT_ONLY:
                assert_order(events, f"up {dep}", f"up {name}")
    assert_order(events, "up init-permissions", "run svc-php-fpm")
    started_before(booted, "init-services", "svc-php-fpm")
    started_before(booted, "svc-php-fpm", "svc-nginx")
    records = status(booted)
    for name in LSIO_ONESHOTS:
        assert records[name]["type"] == "oneshot" and records[name]["state"] == "up", name
    assert records["svc-nginx"]["type"] == "longrun"
    assert records["svc-nginx"]["state"] == "up" and records["svc-nginx"]["pid"]
    assert booted.ctl("check").returncode == 0


def test_independent_oneshots_run_at_the_same_time(boot, tree: Tree) -> None:
    """init-folders and init-keygen both wait only for init-config: they overlap."""
    v3 = V3(tree)
    gate = tree.base / "gate"
    os.mkfifo(gate)
    v3.oneshot("a", f"read x < {gate}; echo 'a done' >> {v3.log}")
    v3.oneshot("b", f"echo 'b done' >> {v3.log}")
    v3.user("a", "b")
    booted = boot()
    wait_until(lambda: "b done" in v3.events(), what="b to finish while a is blocked")
    assert "a done" not in v3.events()
    assert status(booted, "a")["a"]["state"] == "starting"
    write_to_reader(gate, b"go\n")
    wait_until(lambda: "a done" in v3.events(), what="a to finish")


def test_a_oneshots_container_environment_reaches_each_oneshot_started_after_it(
    boot, tree: Tree
) -> None:
    """`a` writes a variable; `b` and `c` (started together once `a` is up) and `d` (after
    them) all see it; `b` and `c` write theirs, which only `d` sees."""
    v3 = V3(tree)
    store = tree.run_dir / "container_environment"
    v3.oneshot("a", f"printf a > {store}/FROM_A")
    for name in ("b", "c"):
        v3.oneshot(name, f'echo "{name} saw A=$FROM_A B=$FROM_B" >> {v3.log}; '
                         f"printf {name} > {store}/FROM_{name.upper()}", deps=("a",))
    v3.oneshot("d", f'echo "d saw A=$FROM_A B=$FROM_B C=$FROM_C" >> {v3.log}', deps=("b", "c"))
    v3.user("a", "b", "c", "d")
    boot()
    wait_until(lambda: any(e.startswith("d saw") for e in v3.events()), what="d to run")
    events = v3.events()
    assert "b saw A=a B=" in events and "c saw A=a B=" in events, events
    assert "d saw A=a B=b C=c" in events, events


def test_bundles_in_user_and_user2_around_legacy_services(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("prepare")
    v3.longrun("early-daemon", "exec sleep 1000", deps=("base", "prepare"))
    v3.bundle("early", ["prepare", "early-daemon"])
    v3.oneshot("announce", deps=("legacy-services",))
    v3.longrun("late-daemon", "exec sleep 1000", deps=("legacy-services",))
    v3.bundle("late", ["announce", "late-daemon"])
    v3.user("early")
    v3.user("late", bundle="user2")
    tree.service("classic", f"echo 'run classic' >> {v3.log}; exec sleep 1000")
    booted = boot("/bin/sh", "-c", f"echo 'cmd' >> {v3.log}; exec sleep 1000")
    wait_until(lambda: "cmd" in v3.events(), what="the CMD")
    booted.wait_for(r"starting CMD")
    events = v3.events()
    print("observed order:", events)
    assert_order(events, "up prepare", "up announce")
    started_before(booted, "prepare", "early-daemon")
    started_before(booted, "early-daemon", "classic")  # user before legacy-services
    started_before(booted, "classic", "legacy-services")
    started_before(booted, "legacy-services", "announce")  # user2 after legacy-services
    started_before(booted, "legacy-services", "late-daemon")
    assert_order(events, "up announce", "cmd")
    lines = booted.output.splitlines()
    cmd_line = next(i for i, line in enumerate(lines) if "starting CMD" in line)
    assert lines.index("[overlayd] service late-daemon: up") < cmd_line
    booted.kill()
    assert booted.wait() == 143  # the CMD's: sleep killed by SIGTERM


def test_two_producers_funnel_into_one_logger(boot, tree: Tree) -> None:
    v3 = V3(tree)
    out = tree.base / "logged"
    v3.longrun("web", "echo web-line-1; echo web-line-2; exec sleep 1000",
               files={"producer-for": "app-log\n"})
    v3.longrun("worker", "echo worker-line; exec sleep 1000", files={"producer-for": "app-log\n"})
    v3.longrun("app-log", f"while read -r line; do echo \"got $line\" >> {out}; done",
               files={"consumer-for": "web\nworker\n", "pipeline-name": "app\n"})
    v3.user("app")
    booted = boot()

    def logged() -> list[str]:
        return out.read_text().splitlines() if out.exists() else []

    wait_until(lambda: len(logged()) == 3, what="three lines through the logger")
    assert sorted(logged()) == ["got web-line-1", "got web-line-2", "got worker-line"]
    started_before(booted, "app-log", "web")  # the reader is there first
    started_before(booted, "app-log", "worker")
    assert "web-line-1" not in booted.output  # it went to the logger, not the console
    # The pipe outlives a restart of the logger: nothing written meanwhile is lost.
    booted.ctl("restart", "app-log")
    booted.ctl("restart", "worker")
    wait_until(lambda: logged().count("got worker-line") == 2, what="the line after restarts")


def test_notification_fd_gates_the_oneshot_that_depends_on_it(boot, tree: Tree) -> None:
    v3 = V3(tree)
    gate = tree.base / "gate"
    os.mkfifo(gate)
    v3.longrun("db", f"read x < {gate}; echo >&3; exec sleep 1000",
               files={"notification-fd": "3\n"})
    v3.oneshot("migrate", deps=("db",))
    v3.user("db", "migrate")
    booted = boot()
    wait_until(lambda: "run db" in v3.events(), what="db to start")
    records = status(booted, "db", "migrate")
    assert records["db"]["state"] == "starting" and records["migrate"]["state"] == "down"
    assert "up migrate" not in v3.events()
    write_to_reader(gate, b"ready\n")
    wait_until(lambda: "up migrate" in v3.events(), what="migrate after db is ready")
    assert status(booted, "db")["db"]["state"] == "ready"


def test_services_d_beside_s6_rc_d_with_dependencies_both_ways(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("init-db")
    v3.longrun("api", "exec sleep 1000", deps=("legacy-services",))
    v3.user("init-db")
    v3.user("api", bundle="user2")
    tree.service("db", f"echo 'run db' >> {v3.log}; exec sleep 1000",
                 files={"dependencies.d/init-db": ""})
    tree.service("cache", f"echo 'run cache' >> {v3.log}; exec sleep 1000")
    booted = boot()
    booted.wait_for(r"service api: up")
    wait_until(lambda: {"run db", "run cache", "run api"} <= set(v3.events()),
               what="every run script")
    events = v3.events()
    print("observed order:", events)
    assert_order(events, "up init-db", "run db")
    started_before(booted, "init-db", "db")
    started_before(booted, "db", "legacy-services")
    started_before(booted, "cache", "legacy-services")
    started_before(booted, "legacy-services", "api")
    records = status(booted, "db", "api", "init-db")
    assert records["db"]["type"] == "longrun" and records["api"]["state"] == "up"


@pytest.mark.parametrize(("setup", "message"), [
    (lambda v3, tree: v3.oneshot("a", deps=("nope",)),
     r"s6-rc.d/a/dependencies.d/nope names 'nope', which is not defined"),
    (lambda v3, tree: (v3.oneshot("a", deps=("b",)), v3.oneshot("b", deps=("a",))),
     r"dependency cycle: a -> b -> a"),
    (lambda v3, tree: (v3.longrun("web", "exec sleep 1"),
                       tree.service("web", "exec sleep 1")),
     r"web is defined twice"),
    (lambda v3, tree: (v3.rc / "x").mkdir(), r"s6-rc.d/x/type is missing"),
    # A FIFO planted as a definition file must not hang PID 1 waiting for a writer.
    (lambda v3, tree: ((v3.rc / "x").mkdir(), os.mkfifo(v3.rc / "x" / "type")),
     r"s6-rc.d/x/type holds '', not oneshot"),
])
def test_bad_tree_is_one_error_and_exit_100_with_nothing_run(boot, tree: Tree, setup,
                                                               message: str) -> None:
    v3 = V3(tree)
    setup(v3, tree)
    marker = tree.base / "ran"
    tree.script("cont-init.d", "00-init", f"touch {marker}")
    tree.script("cont-finish.d", "00-finish", f"touch {marker}")
    tree.service("svc", f"touch {marker}; exec sleep 100")
    booted = boot("/bin/sh", "-c", f"touch {marker}")
    assert booted.wait() == 100
    booted.wait_for(message)
    assert not marker.exists()


def test_failed_oneshot_stops_its_dependents_and_the_container(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("init-broken", "exit 3")
    v3.oneshot("init-after", deps=("init-broken",))
    v3.longrun("svc-app", "exec sleep 1000", deps=("init-after",))
    v3.user("init-broken", "init-after", "svc-app")
    booted = boot("/bin/sh", "-c", f"echo cmd >> {v3.log}",
                  env={"S6_BEHAVIOUR_IF_STAGE2_FAILS": "2"})
    assert booted.wait() == 1
    assert v3.events() == ["up init-broken"]
    booted.wait_for(r"service init-broken: failed to start: .*exit code 3")
    booted.wait_for(r"not starting .*init-after.*svc-app.*: init-broken failed")


def test_failed_oneshot_under_behaviour_0_still_runs_the_rest_and_the_cmd(boot,
                                                                          tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("init-broken", "exit 3")
    v3.oneshot("init-after", deps=("init-broken",))
    v3.oneshot("independent")
    v3.user("init-broken", "init-after", "independent")
    gate = tree.base / "gate"
    os.mkfifo(gate)
    booted = boot("/bin/sh", "-c", f"echo cmd >> {v3.log}; read x < {gate}; exit 4")
    wait_until(lambda: "cmd" in v3.events(), what="the CMD")
    events = v3.events()
    assert "up independent" in events and "up init-after" not in events
    check = booted.ctl("check")
    assert check.returncode == 1 and "init-broken" in check.stderr, check
    assert status(booted, "init-broken")["init-broken"]["state"] == "failed"
    write_to_reader(gate, b"go\n")
    assert booted.wait() == 4


def test_longrun_not_up_within_timeout_up_fails_its_dependents(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.longrun("slow", "exec sleep 1000", files={"notification-fd": "3\n", "timeout-up": "300\n"})
    v3.oneshot("needs-slow", deps=("slow",))
    v3.user("slow", "needs-slow")
    booted = boot(env={"S6_BEHAVIOUR_IF_STAGE2_FAILS": "2"})
    assert booted.wait() == 1
    booted.wait_for(r"service slow: failed to start: not up after timeout-up \(300 ms\)")
    assert "up needs-slow" not in v3.events()


def test_shutdown_goes_in_reverse_dependency_order_with_cont_finish_last(boot,
                                                                         tree: Tree) -> None:
    v3 = V3(tree)
    # "trapped" is written once the trap is set: a TERM before that would kill it silently.
    term = ("trap 'echo \"stop $0\" >> {log}; exit 0' TERM; echo \"trapped $0\" >> {log}; "
            "while :; do sleep 1; done")
    v3.oneshot("init-a", down="")
    v3.oneshot("init-b", deps=("init-a",), down="")
    v3.longrun("svc-db", term.format(log=v3.log).replace("$0", "svc-db"), deps=("init-b",))
    v3.longrun("svc-web", term.format(log=v3.log).replace("$0", "svc-web"), deps=("svc-db",))
    v3.user("init-a", "init-b", "svc-db", "svc-web")
    tree.script("cont-finish.d", "00-bye", f"echo 'cont-finish' >> {v3.log}")
    booted = boot()
    booted.wait_for(r"service svc-web: up")
    wait_until(lambda: {"trapped svc-web", "trapped svc-db"} <= set(v3.events()),
               what="both run scripts' TERM traps")
    booted.kill()
    assert booted.wait() == 0
    events = v3.events()
    shutdown = [e for e in events if e.split()[0] in ("stop", "down", "cont-finish")]
    print("observed shutdown order:", shutdown)
    assert shutdown == ["stop svc-web", "stop svc-db", "down init-b", "down init-a",
                        "cont-finish"]


def test_start_brings_dependencies_up_first_and_stop_names_dependents(boot,
                                                                      tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("prep")  # in no bundle: stays down at boot
    v3.longrun("extra", "exec sleep 1000", deps=("prep",))
    v3.longrun("extra-ui", "exec sleep 1000", deps=("extra",))
    v3.bundle("extras", ["extra", "extra-ui"])
    booted = boot()
    booted.wait_for(r"no CMD")
    records = status(booted, "prep", "extra")
    assert records["prep"]["state"] == "down" and records["extra"]["state"] == "down"
    assert v3.events() == []
    started = booted.ctl("start", "extra-ui")
    assert started.returncode == 0, started.stderr
    assert "also starting prep, extra (needed by extra-ui)" in started.stderr
    assert booted.ctl("wait", "--up", "prep").returncode == 0  # a oneshot: its up exited 0
    assert v3.events()[0] == "up prep"
    assert status(booted, "prep")["prep"]["state"] == "up"
    assert booted.ctl("wait", "--up", "extra-ui", "extra").returncode == 0
    wait_until(lambda: {"run extra", "run extra-ui"} <= set(v3.events()), what="both runs")
    assert v3.events()[0] == "up prep"
    booted.wait_for(r"service extra-ui: up")
    started_before(booted, "prep", "extra")
    started_before(booted, "extra", "extra-ui")
    stopped = booted.ctl("stop", "prep")
    assert stopped.returncode == 0, stopped.stderr
    assert "also stopping extra-ui, extra (they depend on prep)" in stopped.stderr
    assert booted.ctl("wait", "--down", "prep", "extra", "extra-ui").returncode == 0
    records = status(booted, "prep", "extra", "extra-ui")
    assert {r["state"] for r in records.values()} == {"down"}
    assert booted.ctl("start", "extras").returncode == 0  # a bundle name
    assert booted.ctl("wait", "--up", "extras").returncode == 0
    assert status(booted, "extra-ui")["extra-ui"]["state"] == "up"
    assert booted.ctl("stop", "extras").returncode == 0
    assert booted.ctl("wait", "--down", "extras").returncode == 0
    assert status(booted, "prep")["prep"]["state"] == "up"  # not in the bundle


def test_status_shows_the_type_of_every_service_in_json_and_in_the_table(boot,
                                                                         tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("init-x")
    v3.user("init-x")
    tree.service("classic", "exec sleep 1000")
    booted = boot()
    booted.wait_for(r"service classic: up|service legacy-services: up")
    wait_until(lambda: status(booted, "init-x")["init-x"]["state"] == "up", what="init-x up")
    listed = json.loads(booted.ctl("status", "--json").stdout)
    types = {r["name"]: r["type"] for r in listed}
    assert types["init-x"] == "oneshot" and types["classic"] == "longrun"
    table = booted.ctl("status").stdout.splitlines()
    assert table[0].split()[-1] == "type", table
    rows = {line.split()[0]: line.split() for line in table[2:]}
    assert rows["init-x"][-1] == "oneshot" and rows["classic"][-1] == "longrun", table


def test_stage2_hook_runs_first_and_can_enable_a_service(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("optional")
    hook = tree.write("hook.sh", (
        "#!/bin/sh\n"
        f"echo \"hook $1\" >> {v3.log}\n"
        f"mkdir -p {v3.base}/user-bundles.d/user/contents.d\n"
        f"touch {v3.base}/user-bundles.d/user/contents.d/optional\n"))
    booted = boot(env={"S6_STAGE2_HOOK": f"{hook} word"})
    wait_until(lambda: "up optional" in v3.events(), what="the service the hook enabled")
    assert v3.events()[0] == "hook word"
    booted.kill()
    assert booted.wait() == 0


def test_stage2_hook_failure_under_behaviour_2_stops_with_its_code(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("never")
    v3.user("never")
    hook = tree.write("hook.sh", "#!/bin/sh\nexit 7\n")
    booted = boot(env={"S6_STAGE2_HOOK": str(hook), "S6_BEHAVIOUR_IF_STAGE2_FAILS": "2"})
    assert booted.wait() == 7
    booted.wait_for(r"S6_STAGE2_HOOK .*exit code 7")
    assert v3.events() == []


def test_runtime_profile_picks_its_own_trees(boot, tree: Tree) -> None:
    main = V3(tree)
    main.oneshot("from-main")
    main.user("from-main")
    profile = V3(tree, "etc/cont-profile.d/dev/s6-overlay")
    profile.oneshot("from-profile")
    profile.user("from-profile")
    tree.write("etc/cont-profile.d/dev/cont-init.d/10-x",
               f"#!/bin/sh\necho 'profile cont-init' >> {profile.log}\n")
    booted = boot(env={"S6_RUNTIME_PROFILE": "dev"})
    wait_until(lambda: "up from-profile" in profile.events(), what="the profile's service")
    assert "profile cont-init" in profile.events()
    assert "up from-main" not in profile.events()
    booted.kill()
    assert booted.wait() == 0


@pytest.mark.skipif(shutil.which("execlineb") is None, reason="execline is not installed")
def test_oneshot_with_an_execline_block_runs_through_execlineb(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.oneshot("blocky", up_text=(
        "#!/command/execlineb -P\n"
        f"foreground {{ sh -c \"echo first-$RC_NAME >> {v3.log}\" }}\n"
        f"sh -c \"echo second >> {v3.log}\"\n"))
    v3.user("blocky")
    booted = boot()
    wait_until(lambda: v3.events() == ["first-blocky", "second"], what="both block parts")
    assert status(booted, "blocky")["blocky"]["state"] == "up"


def test_longrun_ignoring_term_is_killed_after_its_timeout_down(boot, tree: Tree) -> None:
    v3 = V3(tree)
    v3.longrun("stubborn", "trap '' TERM; echo stubborn-deaf; while :; do sleep 0.05; done",
               files={"timeout-down": "300\n"})
    v3.user("stubborn")
    booted = boot(env={"S6_SERVICES_GRACETIME": "60000"})
    booted.wait_for(r"^stubborn-deaf$")
    booted.kill()
    assert booted.wait() == 0
    booted.wait_for(r"service stubborn outlived timeout-down \(300 ms\); sending SIGKILL")


def test_oneshot_naming_a_script_without_its_execute_bit_runs_it_with_a_warning(
    boot, tree: Tree
) -> None:
    v3 = V3(tree)
    script = v3.oneshot("init-perms")
    (script / "run").chmod(0o644)  # images built on Windows hosts ship them so
    v3.user("init-perms")
    booted = boot()
    wait_until(lambda: "up init-perms" in v3.events(), what="the script to run")
    booted.wait_for(r"init-perms/run is not executable; running it with /bin/sh")
    wait_until(lambda: status(booted, "init-perms")["init-perms"]["state"] == "up",
               what="init-perms up")
