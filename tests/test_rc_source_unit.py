"""Reading s6-overlay v3 source definitions as s6-rc-compile reads them (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlayd.depgraph import Graph, GraphError
from overlayd.rc_source import RcSourceError, graph_nodes, read_names, read_tree


def put(root: Path, files: dict[str, str]) -> None:
    """Write {relative path: content}; a path ending in / is a directory."""
    for rel, content in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def longrun(name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    files = {f"s6-rc.d/{name}/type": "longrun\n", f"s6-rc.d/{name}/run": "#!/bin/sh\nexec true\n"}
    files.update({f"s6-rc.d/{name}/{k}": v for k, v in (extra or {}).items()})
    return files


def oneshot(name: str, up: str = "true\n", deps: tuple[str, ...] = ()) -> dict[str, str]:
    files = {f"s6-rc.d/{name}/type": "oneshot\n", f"s6-rc.d/{name}/up": up}
    files.update({f"s6-rc.d/{name}/dependencies.d/{d}": "" for d in deps})
    return files


def test_oneshot_longrun_and_bundle_are_read(tmp_path: Path) -> None:
    put(tmp_path, {
        **oneshot("init-config", "/etc/s6-overlay/s6-rc.d/init-config/run\n", ("base",)),
        **longrun("svc-app", {"notification-fd": "3\n", "timeout-up": "5000\n",
                              "timeout-kill": "2000", "down-signal": "SIGQUIT",
                              "dependencies.d/init-config": "", "data/check": "x",
                              "env/FOO": "bar"}),
        "s6-rc.d/group/type": "bundle\n",
        "s6-rc.d/group/contents.d/svc-app": "",
        "user-bundles.d/user/contents.d/group": "",
        "user-bundles.d/user/contents.d/init-config": "",
    })
    defs, notes = read_tree(str(tmp_path))
    assert notes == []
    init = defs["init-config"]
    assert init.kind == "oneshot" and list(init.dependencies) == ["base"]
    assert init.up[1] == ("/etc/s6-overlay/s6-rc.d/init-config/run",) and init.down is None
    app = defs["svc-app"]
    assert app.kind == "longrun" and app.timeout_up_ms == 5000
    assert app.service.notification_fd == 3 and app.service.timeout_kill_ms == 2000
    assert app.service.down_signal == 3 and app.service.normally_up
    assert app.service.directory == str(tmp_path / "s6-rc.d/svc-app")
    assert list(defs["group"].contents) == ["svc-app"]
    assert set(defs["user"].contents) == {"group", "init-config"}
    assert set(defs["top"].contents) == {"base", "user", "legacy-services", "user2"}
    assert defs["user2"].contents == {}


def test_old_list_files_work_beside_the_d_directories(tmp_path: Path) -> None:
    put(tmp_path, {"d/dependencies": "# a comment\nalpha\n\n  beta  \n",
                   "d/dependencies.d/gamma": "", "d/dependencies.d/.hidden": ""})
    assert set(read_names(str(tmp_path / "d"), "dependencies")) == {"alpha", "beta", "gamma"}


def test_legacy_user_bundle_in_s6_rc_d_without_type_is_a_bundle(tmp_path: Path) -> None:
    put(tmp_path, {**oneshot("a"), "s6-rc.d/user/contents.d/a": "",
                   "s6-rc.d/user2/contents": "b\n", **oneshot("b"),
                   "user-bundles.d/user/contents.d/ignored": ""})
    defs, notes = read_tree(str(tmp_path))
    assert list(defs["user"].contents) == ["a"] and list(defs["user2"].contents) == ["b"]
    assert any("deprecated" in note for note in notes)


def test_s6_rc_down_file_and_log_dir_are_ignored_with_a_note(tmp_path: Path) -> None:
    put(tmp_path, {**longrun("svc", {"down": "", "log/run": "x"})})
    defs, notes = read_tree(str(tmp_path))
    assert defs["svc"].service.normally_up and defs["svc"].service.logger is None
    assert len(notes) == 2 and all("ignored" in n for n in notes)


def test_pipeline_two_producers_into_one_logger_makes_a_bundle(tmp_path: Path) -> None:
    put(tmp_path, {
        **longrun("web", {"producer-for": "logger\n"}),
        **longrun("worker", {"producer-for": "logger\n"}),
        **longrun("logger", {"consumer-for": "web\nworker\n", "pipeline-name": "app-pipeline\n"}),
    })
    defs, _ = read_tree(str(tmp_path))
    assert set(defs["logger"].consumer_for) == {"web", "worker"}
    assert set(defs["app-pipeline"].contents) == {"web", "worker", "logger"}
    graph = Graph(graph_nodes(defs, {}))
    waves = []
    plan = graph.plan_up(["app-pipeline"], set())
    while not plan.finished:
        wave = plan.runnable()
        waves.append(wave)
        for name in wave:
            plan.succeeded(name)
    assert waves == [["logger"], ["web", "worker"]]


BAD = [
    ({"s6-rc.d/x/up": "true"}, "s6-rc.d/x/type is missing"),
    ({"s6-rc.d/x/type": "daemon\n"}, "s6-rc.d/x/type holds 'daemon'"),
    ({"s6-rc.d/x/type": "oneshot\n"}, "s6-rc.d/x/up is missing"),
    ({**oneshot("x", 'echo "open\n')}, "s6-rc.d/x/up: execline syntax error"),
    ({**oneshot("x"), "s6-rc.d/x/timeout-up": "5s"}, "s6-rc.d/x/timeout-up holds '5s'"),
    ({"s6-rc.d/x/type": "longrun\n"}, "run is missing"),
    ({**longrun("x", {"notification-fd": "two"})}, "notification-fd holds 'two'"),
    ({**longrun("x", {"max-death-tally": "5000"})}, "s6-rc.d/x/max-death-tally holds '5000'"),
    ({**oneshot("s6rc-x")}, "reserved prefix"),
    ({**oneshot("base")}, "base is s6-overlay's own name"),
    ({**longrun("user")}, "user must be a bundle"),
    ({**longrun("p", {"producer-for": "c"}), **longrun("c")},
     "s6-rc.d/p/producer-for names c, but"),
    ({**longrun("c", {"consumer-for": "p"}), **longrun("p")},
     "s6-rc.d/c/consumer-for names p, but"),
    ({**longrun("p", {"producer-for": "gone"})}, "'gone' is not a longrun"),
    ({**longrun("p", {"producer-for": "c\nd\n"})}, "producer-for must hold exactly one"),
    ({**longrun("p", {"producer-for": "c", "pipeline-name": "pipe"}),
      **longrun("c", {"consumer-for": "p"})}, "only the last consumer"),
    ({**oneshot("a"), "user-bundles.d/a/contents.d/b": ""}, "a is defined twice"),
]


@pytest.mark.parametrize(("files", "message"), BAD)
def test_bad_definition_is_one_error_naming_the_file(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    put(tmp_path, files)
    with pytest.raises(RcSourceError) as caught:
        read_tree(str(tmp_path))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_dependency_names_the_file_and_cycle_names_the_chain(tmp_path: Path) -> None:
    put(tmp_path, {**oneshot("a", deps=("nope",))})
    defs, _ = read_tree(str(tmp_path))
    with pytest.raises(GraphError, match=r"s6-rc.d/a/dependencies.d/nope names 'nope'"):
        Graph(graph_nodes(defs, {}))
    put(tmp_path, {**oneshot("a", deps=("b",)), **oneshot("b", deps=("a",))})
    (tmp_path / "s6-rc.d/a/dependencies.d/nope").unlink()
    defs, _ = read_tree(str(tmp_path))
    with pytest.raises(GraphError, match="dependency cycle: a -> b -> a"):
        Graph(graph_nodes(defs, {}))


def test_services_d_service_waits_for_base_and_user_and_legacy_services_for_it(
    tmp_path: Path,
) -> None:
    put(tmp_path, {**oneshot("init", deps=("base",)), **longrun("late", {
        "dependencies.d/legacy-services": ""}),
        "user-bundles.d/user/contents.d/init": "", "user-bundles.d/user2/contents.d/late": ""})
    defs, _ = read_tree(str(tmp_path))
    legacy = {"nginx": ({"init": "services.d/nginx/dependencies.d/init"}, True, "services.d/nginx"),
              "spare": ({}, False, "services.d/spare")}
    graph = Graph(graph_nodes(defs, legacy))
    plan = graph.plan_up(["top"], set())
    waves = []
    while not plan.finished:
        wave = plan.runnable()
        waves.append(wave)
        for name in wave:
            plan.succeeded(name)
    assert waves == [["fix-attrs"], ["legacy-cont-init"], ["init"], ["nginx"],
                     ["legacy-services"], ["late"]]


def test_services_d_name_also_in_s6_rc_d_is_an_error(tmp_path: Path) -> None:
    put(tmp_path, {**longrun("nginx")})
    defs, _ = read_tree(str(tmp_path))
    with pytest.raises(GraphError, match="nginx is defined twice"):
        Graph(graph_nodes(defs, {"nginx": ({}, True, "services.d/nginx")}))


def test_services_d_depending_on_a_user2_service_is_a_cycle(tmp_path: Path) -> None:
    put(tmp_path, {**longrun("late", {"dependencies.d/legacy-services": ""}),
                   "user-bundles.d/user2/contents.d/late": ""})
    defs, _ = read_tree(str(tmp_path))
    with pytest.raises(GraphError, match=r"cycle: .*late -> legacy-services -> nginx -> late"):
        Graph(graph_nodes(defs, {"nginx": ({"late": "x"}, True, "services.d/nginx")}))


def test_runtime_profile_and_bundledir_move_the_trees() -> None:
    from overlayd.config import ConfigError, load

    cfg = load({"OVERLAY_ROOT": "/img", "S6_RUNTIME_PROFILE": "dev",
                "S6_STAGE2_HOOK": "/bin/hook  --fast"})
    assert cfg.etc("cont-init.d") == "/img/etc/cont-profile.d/dev/cont-init.d"
    assert cfg.s6_overlay_dir == "/img/etc/cont-profile.d/dev/s6-overlay"
    assert cfg.bundle_dir == "/img/etc/cont-profile.d/dev/s6-overlay/user-bundles.d"
    assert cfg.stage2_hook == ("/bin/hook", "--fast")
    cfg = load({"OVERLAY_ROOT": "/img", "S6_RUNTIME_BUNDLEDIR": "/etc/start-sets/minimal"})
    assert cfg.bundle_dir == "/img/etc/start-sets/minimal"
    assert cfg.s6_overlay_dir == "/img/etc/s6-overlay"
    for bad in ("../escape", "a/b"):
        with pytest.raises(ConfigError, match="S6_RUNTIME_PROFILE"):
            load({"S6_RUNTIME_PROFILE": bad})
    with pytest.raises(ConfigError, match="S6_RUNTIME_BUNDLEDIR"):
        load({"S6_RUNTIME_BUNDLEDIR": "relative"})
