"""Stage 2's v3 part: S6_STAGE2_HOOK, reading both trees into one graph, building the runner.

Order (DESIGN §10): the hook runs first (it may edit the trees), then the s6-rc.d tree and
services.d are read and checked together — an unknown name, a cycle, or a definition
s6-rc-compile would refuse is one error and exit 100 before anything runs — then `top` is
brought up by the runner.
"""

from __future__ import annotations

import os

from . import log, spawn
from .depgraph import LONGRUN, ONESHOT, Graph, GraphError
from .rc_run import RcRunner, SharedEnv
from .rc_source import (
    BUILTIN_ONESHOTS,
    TOP,
    RcSourceError,
    graph_nodes,
    read_names,
    read_tree,
)

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .config import Config
    from .loop import Loop
    from .oneshot import Oneshot
    from .rc_source import RcDef
    from .reaper import ExitStatus, Reaper
    from .scan import ServiceDef
    from .supervisor import Supervisor

EXIT_BAD_TREE = 100  # as s6-overlay when s6-rc-compile refuses the tree


class BadTree(Exception):
    """The trees cannot be used; one line naming the file or the cycle."""


async def run_hook(cfg: Config, loop: Loop, reaper: Reaper,
                   env: dict[str, str]) -> ExitStatus | None:
    """Run S6_STAGE2_HOOK (word-split, not shell-parsed) and wait for it; None if unset or it
    could not be started (then logged)."""
    if not cfg.stage2_hook:
        return None
    argv = list(cfg.stage2_hook)
    log.info(f"running S6_STAGE2_HOOK: {' '.join(argv)}")
    try:
        pid = spawn.spawn(argv, env, new_group=True, stdin=spawn.devnull())
    except OSError as exc:
        log.error(f"S6_STAGE2_HOOK: cannot start {argv[0]!r}: {exc.strerror}")
        from .reaper import ExitStatus

        return ExitStatus(126, None)
    return await reaper.exit_future(pid)


def legacy_entry(definition: ServiceDef) -> tuple[dict[str, str], bool, str]:
    """What the graph needs of one services.d directory: its dependencies.d names, whether it
    is normally up, and where it is."""
    return (read_names(definition.directory, "dependencies"), definition.normally_up,
            definition.directory)


def read_trees(cfg: Config, legacy: list[ServiceDef]) -> tuple[dict[str, RcDef], Graph]:
    """Both trees as one checked graph; BadTree (one line) when they cannot be used."""
    try:
        defs, notes = read_tree(cfg.s6_overlay_dir, cfg.bundle_dir)
        for note in notes:
            log.warn(note)
        entries = {d.name: legacy_entry(d) for d in legacy}
        graph = Graph(graph_nodes(defs, entries))
    except (RcSourceError, GraphError) as exc:
        raise BadTree(str(exc)) from None
    return defs, graph


def build_runner(
    cfg: Config,
    loop: Loop,
    reaper: Reaper,
    supervisor: Supervisor,
    child_env: Callable[[], dict[str, str]],
    defs: dict[str, RcDef],
    graph: Graph,
    legacy: list[ServiceDef],
    builtins: dict[str, Callable[[], Awaitable[str | None]]],
    create_legacy: Callable[[], None],
) -> RcRunner:
    """Oneshots, the v3 longruns (as supervised Services, pipelines wired) and the runner."""
    at_boot = graph.up_closure([TOP])
    oneshots: dict[str, Oneshot] = {}
    pipes: dict[str, tuple[int, int]] = {}
    for name, rc in defs.items():
        if rc.kind == LONGRUN and rc.consumer_for:
            pipes[name] = os.pipe2(os.O_CLOEXEC)  # held for the container's life (s6-fdholder)

    shared_env = SharedEnv(child_env)

    def changed(unit: Oneshot) -> None:
        supervisor.changed(unit)  # type: ignore[arg-type]

    for name in sorted(defs):
        rc = defs[name]
        if rc.builtin:
            continue
        if rc.kind == ONESHOT:
            from .oneshot import Oneshot  # (with the execline lexer) for a tree that has one

            oneshots[name] = Oneshot(rc, name in at_boot, loop, reaper, shared_env, changed)
            supervisor.adopt_unit(oneshots[name])
        elif rc.kind == LONGRUN:
            definition = rc.service._replace(normally_up=name in at_boot)
            stdin_fd = pipes[name][0] if name in pipes else None
            stdout_fd = pipes[rc.producer_for][1] if rc.producer_for in pipes else None
            supervisor.adopt(definition, stdin_fd=stdin_fd, stdout_fd=stdout_fd)
    missing = set(BUILTIN_ONESHOTS) - set(builtins)
    if missing:
        raise ValueError(f"no built-in step for {sorted(missing)}")
    return RcRunner(loop, supervisor, graph, defs, oneshots, builtins,
                    {d.name for d in legacy}, cfg.cmd_wait_for_services, create_legacy,
                    shared_env)
