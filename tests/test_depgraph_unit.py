"""The dependency engine, without processes: orders, parallel waves, failures, cycles."""

from __future__ import annotations

import pytest

from overlayd.depgraph import BUNDLE, LONGRUN, ONESHOT, Graph, GraphError, Plan, node


def graph(spec: dict[str, tuple[str, list[str]]], after: dict[str, list[str]] | None = None,
          ) -> Graph:
    """{name: (kind, deps or bundle contents)}; `after`: order-only edges."""
    nodes = []
    for name, (kind, names) in spec.items():
        edges = {n: f"{name}/dependencies.d/{n}" for n in names}
        order = {n: f"{name}/after" for n in (after or {}).get(name, [])}
        if kind == BUNDLE:
            nodes.append(node(name, kind, contents=edges, source=name))
        else:
            nodes.append(node(name, kind, deps=edges, after=order, source=name))
    return Graph(nodes)


def waves(plan: Plan, fail: set[str] = frozenset()) -> list[list[str]]:
    """Drive a plan the way the executor does, everything of one wave in parallel."""
    seen = []
    while not plan.finished:
        wave = plan.runnable()
        assert wave, f"stuck with {plan.targets - plan.done - set(plan.failed)} left"
        seen.append(wave)
        for name in wave:
            if name in fail:
                plan.failed_with(name, f"{name} exited 1")
            else:
                plan.succeeded(name)
    return seen


# A linuxserver-style init chain: everything waits for base; the app waits for its inits.
LSIO = {
    "fix-attrs": (ONESHOT, []),
    "legacy-cont-init": (ONESHOT, ["fix-attrs"]),
    "base": (BUNDLE, ["fix-attrs", "legacy-cont-init"]),
    "init-os-end": (ONESHOT, ["base"]),
    "init-adduser": (ONESHOT, ["init-os-end"]),
    "init-config": (ONESHOT, ["init-adduser"]),
    "init-mods": (ONESHOT, ["init-config"]),
    "init-custom-files": (ONESHOT, ["init-mods"]),
    "init-nginx": (ONESHOT, ["init-config"]),
    "init-php": (ONESHOT, ["init-config"]),
    "init-keygen": (ONESHOT, ["init-config"]),
    "init-config-end": (ONESHOT, ["init-custom-files", "init-nginx", "init-php", "init-keygen"]),
    "init-services": (ONESHOT, ["init-config-end"]),
    "svc-php-fpm": (LONGRUN, ["init-services"]),
    "svc-nginx": (LONGRUN, ["init-services", "svc-php-fpm"]),
    "user": (BUNDLE, ["init-config-end", "svc-nginx", "svc-php-fpm"]),
    "top": (BUNDLE, ["base", "user"]),
}

UP_CASES = [
    # (name, spec, bring up, already up, fail, expected waves)
    ("chain", {"a": (ONESHOT, []), "b": (ONESHOT, ["a"]), "c": (ONESHOT, ["b"])},
     ["c"], set(), set(), [["a"], ["b"], ["c"]]),
    ("independent ones start together", {"a": (ONESHOT, []), "b": (ONESHOT, []),
                                         "c": (LONGRUN, ["a", "b"])},
     ["c"], set(), set(), [["a", "b"], ["c"]]),
    ("diamond", {"a": (ONESHOT, []), "b": (ONESHOT, ["a"]), "c": (ONESHOT, ["a"]),
                 "d": (ONESHOT, ["b", "c"])},
     ["d"], set(), set(), [["a"], ["b", "c"], ["d"]]),
    ("already up is not started again", {"a": (ONESHOT, []), "b": (ONESHOT, ["a"])},
     ["b"], {"a"}, set(), [["b"]]),
    ("a bundle stands for its members", {"a": (ONESHOT, []), "b": (LONGRUN, []),
                                         "g": (BUNDLE, ["a", "b"]), "c": (ONESHOT, ["g"])},
     ["c"], set(), set(), [["a", "b"], ["c"]]),
    ("bundles of bundles", {"a": (ONESHOT, []), "g1": (BUNDLE, ["a"]), "g2": (BUNDLE, ["g1"]),
                            "b": (ONESHOT, [])},
     ["g2"], set(), set(), [["a"]]),
    ("a service in no bundle stays down", {"a": (ONESHOT, []), "lonely": (LONGRUN, []),
                                           "top": (BUNDLE, ["a"])},
     ["top"], set(), set(), [["a"]]),
    ("linuxserver chain", LSIO, ["top"], set(), set(),
     [["fix-attrs"], ["legacy-cont-init"], ["init-os-end"], ["init-adduser"], ["init-config"],
      ["init-keygen", "init-mods", "init-nginx", "init-php"], ["init-custom-files"],
      ["init-config-end"], ["init-services"], ["svc-php-fpm"], ["svc-nginx"]]),
]


@pytest.mark.parametrize(("spec", "names", "active", "fail", "expected"),
                         [case[1:] for case in UP_CASES], ids=[case[0] for case in UP_CASES])
def test_start_order(spec: dict, names: list[str], active: set[str], fail: set[str],
                     expected: list[list[str]]) -> None:
    assert waves(graph(spec).plan_up(names, active), fail) == expected


def test_failed_oneshot_fails_its_dependents_and_not_the_others() -> None:
    spec = {"a": (ONESHOT, []), "b": (ONESHOT, ["a"]), "c": (LONGRUN, ["b"]),
            "x": (ONESHOT, []), "y": (LONGRUN, ["x"])}
    plan = graph(spec).plan_up(["c", "y"], set())
    assert plan.runnable() == ["a", "x"]
    assert plan.failed_with("a", "exited 1") == ["b", "c"]
    plan.succeeded("x")
    assert plan.runnable() == ["y"]
    plan.succeeded("y")
    assert plan.finished
    assert plan.failed == {"a": "exited 1", "b": "a failed", "c": "a failed"}
    assert plan.done == {"x", "y"}


def test_failure_midway_through_linuxserver_chain_stops_the_app() -> None:
    plan = graph(LSIO).plan_up(["top"], set())
    got = waves(plan, fail={"init-php"})
    assert ["svc-nginx"] not in got and ["init-config-end"] not in got
    assert plan.failed["svc-nginx"] == "init-php failed"
    assert "init-keygen" in plan.done and "init-custom-files" in plan.done


DOWN_CASES = [
    ("dependents first", {"a": (ONESHOT, []), "b": (LONGRUN, ["a"]), "c": (LONGRUN, ["b"])},
     ["a"], {"a", "b", "c"}, [["c"], ["b"], ["a"]]),
    ("independent ones together", {"a": (ONESHOT, []), "b": (LONGRUN, ["a"]),
                                   "c": (LONGRUN, ["a"])},
     ["a"], {"a", "b", "c"}, [["b", "c"], ["a"]]),
    ("what does not need it stays up", {"a": (ONESHOT, []), "b": (LONGRUN, ["a"]),
                                        "c": (LONGRUN, [])},
     ["b"], {"a", "b", "c"}, [["b"]]),
    ("only active ones are stopped", {"a": (ONESHOT, []), "b": (LONGRUN, ["a"]),
                                      "c": (LONGRUN, ["a"])},
     ["a"], {"a", "b"}, [["b"], ["a"]]),
    ("linuxserver shutdown", LSIO, ["top"], {n for n, (k, _) in LSIO.items() if k != BUNDLE},
     [["svc-nginx"], ["svc-php-fpm"], ["init-services"], ["init-config-end"],
      ["init-custom-files", "init-keygen", "init-nginx", "init-php"], ["init-mods"],
      ["init-config"], ["init-adduser"], ["init-os-end"], ["legacy-cont-init"], ["fix-attrs"]]),
]


@pytest.mark.parametrize(("spec", "names", "active", "expected"),
                         [case[1:] for case in DOWN_CASES], ids=[case[0] for case in DOWN_CASES])
def test_stop_order(spec: dict, names: list[str], active: set[str],
                    expected: list[list[str]]) -> None:
    assert waves(graph(spec).plan_down(names, active)) == expected


def test_a_failed_stop_does_not_hold_up_the_rest_of_a_shutdown() -> None:
    spec = {"a": (ONESHOT, []), "b": (ONESHOT, ["a"])}
    assert waves(graph(spec).plan_down(["a"], {"a", "b"}), fail={"b"}) == [["b"], ["a"]]


def test_order_only_edges_order_but_do_not_pull_dependents_down() -> None:
    spec = {"svc1": (LONGRUN, []), "svc2": (LONGRUN, []), "legacy-services": (ONESHOT, []),
            "late": (LONGRUN, ["legacy-services"])}
    g = graph(spec, after={"legacy-services": ["svc1", "svc2"]})
    assert waves(g.plan_up(["late"], set())) == [["svc1", "svc2"], ["legacy-services"], ["late"]]
    every = {"svc1", "svc2", "legacy-services", "late"}
    assert waves(g.plan_down(["svc1"], every)) == [["svc1"]]
    assert waves(g.plan_down(every, every)) == [["late"], ["legacy-services"], ["svc1", "svc2"]]


def test_dependents_closure_names_what_a_stop_takes_down() -> None:
    g = graph(LSIO)
    assert g.dependents_closure(["svc-php-fpm"]) == {"svc-php-fpm", "svc-nginx"}
    assert g.dependents_closure(["init-php"]) >= {"init-config-end", "svc-nginx"}


CYCLES = [
    ({"a": (ONESHOT, ["b"]), "b": (ONESHOT, ["a"])}, "a -> b -> a"),
    ({"a": (ONESHOT, ["a"])}, "a -> a"),
    ({"a": (ONESHOT, ["b"]), "b": (LONGRUN, ["c"]), "c": (ONESHOT, ["a"]),
      "d": (ONESHOT, [])}, "a -> b -> c -> a"),
    ({"a": (ONESHOT, ["g"]), "g": (BUNDLE, ["b"]), "b": (ONESHOT, ["a"])}, "a -> g -> b -> a"),
    ({"g": (BUNDLE, ["h"]), "h": (BUNDLE, ["g"])}, "g -> h -> g"),
]


@pytest.mark.parametrize(("spec", "cycle"), CYCLES)
def test_a_cycle_is_one_error_naming_it(spec: dict, cycle: str) -> None:
    with pytest.raises(GraphError) as caught:
        graph(spec)
    assert str(caught.value) == f"dependency cycle: {cycle}"


def test_unknown_name_error_names_the_file() -> None:
    with pytest.raises(GraphError) as caught:
        graph({"a": (ONESHOT, ["nope"]), "b": (BUNDLE, ["gone"])})
    message = str(caught.value)
    assert "a/dependencies.d/nope names 'nope', which is not defined" in message
    assert "b/dependencies.d/gone names 'gone'" in message


def test_one_name_defined_twice_is_an_error_naming_both_places() -> None:
    with pytest.raises(GraphError, match=r"nginx is defined twice: s6-rc\.d/nginx and services\.d"):
        Graph([node("nginx", LONGRUN, source="s6-rc.d/nginx"),
               node("nginx", LONGRUN, source="services.d/nginx")])


def test_a_plan_ignores_reports_for_names_it_does_not_hold() -> None:
    plan = graph({"a": (ONESHOT, [])}).plan_up(["a"], set())
    plan.succeeded("zzz")
    assert plan.failed_with("zzz", "x") == []
    assert plan.runnable() == ["a"] and plan.runnable() == []
    assert plan.pending == {"a"}
    plan.succeeded("a")
    plan.failed_with("a", "late")
    assert plan.finished and plan.done == {"a"} and not plan.failed


def test_deeply_nested_bundles_and_long_chains_do_not_exhaust_the_stack() -> None:
    depth = 5000
    nodes = [node("leaf", ONESHOT)]
    nodes += [node(f"b{i}", BUNDLE, contents={f"b{i - 1}" if i else "leaf": "x"})
              for i in range(depth)]
    nodes += [node(f"c{i}", ONESHOT, deps={f"c{i - 1}": "x"} if i else {}) for i in range(depth)]
    g = Graph(nodes)
    assert g.atoms(f"b{depth - 1}") == {"leaf"}
    assert len(g.up_closure([f"c{depth - 1}"])) == depth
    ring = [node(f"r{i}", ONESHOT, deps={f"r{(i + 1) % depth}": "x"}) for i in range(depth)]
    with pytest.raises(GraphError, match=r"cycle: r0 -> r1 -> .* -> r0$"):
        Graph(ring)


def test_dry_run_lists_the_order_a_start_and_a_stop_would_take() -> None:
    from overlayd.depgraph import dry_run

    g = graph(LSIO)
    assert dry_run(g.plan_up(["svc-nginx"], set()))[-3:] == [
        "init-services", "svc-php-fpm", "svc-nginx"]
    every = {n for n, (k, _) in LSIO.items() if k != BUNDLE}
    assert dry_run(g.plan_down(["init-services"], every)) == [
        "svc-nginx", "svc-php-fpm", "init-services"]
