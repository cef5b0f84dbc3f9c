"""The boot and shutdown sequence (stage 1 → 2 → 3) and the container's exit code.

Signal handlers only queue (through the loop's wakeup fd); each signal's meaning lives in one
`_on_*` method here. Stage 2 and stage 3 are coroutines run as Tasks on the loop.
"""

from __future__ import annotations

import _signal
import os
import time

from . import contenv, log, rundir, scripts, spawn
from .config import Config
from .loop import TIMED_OUT, Future, Loop, Task, first_of
from .outputs import Outputs
from .reaper import ExitStatus, Reaper

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    import _socket

    from .core import Core
    from .rc_run import RcRunner
    from .rpc import ControlServer
    from .s6paths import S6Paths
    from .scan import ServiceDef
    from .supervisor import Supervisor

TERMINATING = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGQUIT)
FORWARDED = (
    _signal.SIGHUP, _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGWINCH, _signal.SIGALRM,
    _signal.SIGPWR,
)
FINAL_KILL_WAIT = 5.0  # after SIGKILL to everything: only D-state processes can hold us here
# Exit code when health/action `shutdown` stops the container: after the exitcode files and a
# stage-2 failure, before the CMD's (decide_exit_code).
HEALTH_FAILURE_CODE = 1


class Container:
    """One run of overlayd: its config, its children and how it ends."""

    def __init__(self, config: Config, cmd: list[str]) -> None:
        self.cfg = config
        self.cmd = [*config.cmd_arg0, *cmd] if cmd else []
        self.loop = Loop()
        log.attach(self.loop)  # its buffered lines flush when stderr is writable again
        self.reaper = Reaper(self.loop)
        self._supervisor: Supervisor | None = None  # made on first use (see `supervisor`)
        self.is_pid1 = os.getpid() == 1
        self.tty = 0 if os.isatty(0) else None
        self.cmd_pid: int | None = None
        self.cmd_since: float | None = None  # epoch seconds the CMD started, then ended
        self.cmd_exit: Future | None = None
        self.cmd_status: ExitStatus | None = None
        self.stopping = False  # stage 3 has begun (stage 2, if running, is cancelled)
        self.stage2: Task | None = None
        self.shutdown_signal = _signal.SIGTERM  # what the CMD gets first in stage 3
        self.services_started = False  # HUP before that defers the rescan until then
        self.rescan_pending = False
        self.rc: RcRunner | None = None  # the dependency layer, once the trees are read
        self._legacy_defs: list[ServiceDef] | None = None  # services.d, read, not yet created
        self.trees_read = False
        self.skip_to_kill = Future()
        self.requested_exit_code: int | None = None
        self.stage2_failure_code: int | None = None
        self.health_failure_code: int | None = None
        self.exit_code = 0
        self.started_at = self.loop.time()
        self.server: ControlServer | None = None
        self._control_sock: _socket.socket | None = None
        self.s6: S6Paths | None = None  # DESIGN §11's paths, when on
        self._env_as_saved: dict[str, str] | None = None  # stage 1's, until a child takes it
        self.outputs = Outputs(self.loop, self.reaper, config.log)

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of every service, made (and its modules loaded) at first use: a
        container with nothing to supervise (lean_boot) never pays for them."""
        if self._supervisor is None:
            from .supervisor import Supervisor

            supervisor = Supervisor(
                self.loop, self.reaper, self.child_env, self.cfg.etc("services.d")
            )
            supervisor.rt.on_health_shutdown = self._health_shutdown
            supervisor.outputs = self.outputs
            self._supervisor = supervisor
            if self.s6 is not None:
                self.s6.attach(supervisor)
        return self._supervisor

    # --- stage 1 ---------------------------------------------------------------------------
    def run(self) -> int:
        """Boot, serve until shutdown completes, and return the container's exit code."""
        self._stage1()
        self.stage2 = Task(self._stage2(), "stage 2")
        self.stage2.finished.add_done_callback(self._boot_ended)
        self.loop.run()
        return self.exit_code

    def _stage1(self) -> None:
        cfg = self.cfg
        if not self.is_pid1:
            _become_subreaper()
            log.info(f"not PID 1 (pid {os.getpid()}): running as a child subreaper")
        self.cfg = cfg = rundir.prepare(cfg)
        try:
            os.unlink(cfg.exitcode_path)
        except FileNotFoundError:
            pass
        self._env_as_saved = contenv.save(cfg.env_dir, os.environ)
        self.outputs.start()  # the catch-all takes fds 1 and 2 before any child starts
        for signum in (_signal.SIGTTIN, _signal.SIGTTOU):
            _signal.signal(signum, _signal.SIG_IGN)
        for signum in TERMINATING:
            self.loop.add_signal_handler(signum, self._on_terminate)
        for signum in FORWARDED:
            self.loop.add_signal_handler(signum, self._on_forwarded)
        self.loop.add_signal_handler(_signal.SIGCHLD, self.reaper.on_sigchld, True)
        # A parent may have started us with these blocked; we must still hear them (children
        # get the original mask back in spawn).
        _signal.pthread_sigmask(
            _signal.SIG_UNBLOCK, {*TERMINATING, *FORWARDED, _signal.SIGCHLD}
        )
        self._open_control_socket()
        if cfg.s6_paths == 1 or (cfg.s6_paths is None and self.is_pid1):
            from .s6paths import S6Paths

            self.s6 = S6Paths(self)
            self.s6.make()
            if self._supervisor is not None:
                self.s6.attach(self._supervisor)

    def _open_control_socket(self) -> None:
        """Listen now; load the RPC server on the loop's first turn (see listener.py)."""
        from .listener import open_listener

        try:
            sock = open_listener(self.cfg.socket_path, self.cfg.socket_gid)
        except OSError as exc:
            log.error(f"cannot open the control socket {self.cfg.socket_path}: {exc.strerror}")
            return

        def serve() -> None:
            # The first client is knocking: load the protocol, msgpack and the handlers now,
            # hand the socket to the server (its own reader accepts this very connection on
            # the next turn). A container nobody queries never pays for them.
            self.loop.remove_reader(sock.fileno())
            from .rpc import ControlServer

            self._control_sock = None
            self.server = ControlServer(self.core(), sock)

        self._control_sock = sock
        self.loop.add_reader(sock.fileno(), serve)

    def child_env(self) -> dict[str, str]:
        """The environment of a child of the container (every one but the catch-all logger)."""
        # The first caller takes what stage 1 wrote instead of reading the store back (~0.7 ms
        # for 40 files here): no child of the container has run yet to change it. Every later
        # one reads the store, which that child may have changed. A writer from outside
        # (docker exec) racing the boot is seen from the next child on, a moment later.
        env, self._env_as_saved = self._env_as_saved, None
        if env is None or self.cfg.keep_env:
            env = contenv.child_environment(self.cfg.run_dir, self.cfg.keep_env)
        if self.s6 is not None:
            from .s6paths import extend_path

            extend_path(env)
        return env

    def core(self) -> Core:
        """The narrow facade the control side gets (core.py); loaded with the first client."""
        from .core import Core

        cfg = self.cfg
        return Core(
            self.loop, self.supervisor, cfg.socket_path, cfg.socket_gid,
            lambda code, reason: self.request_shutdown(code, reason),
            lambda: self.stopping,
            self._info,
            lambda: self.rc,
            lambda: (self.cmd, self.cmd_pid, self.cmd_status, self.cmd_since),
            self.rescan,
        )

    def _info(self) -> dict[str, object]:
        return {
            "pid1": self.is_pid1,
            "orphans_reaped": self.reaper.unknown_reaped,
            "cmd_pid": self.cmd_pid,
        }

    # --- stage 2 ---------------------------------------------------------------------------
    def _boot_ended(self, finished: Future) -> None:
        """Stage 2 returns True once the CMD ran or there is none; anything else was a bug."""
        if finished.result is not True and not self.stopping:
            log.error("stage 2 ended unexpectedly; stopping the container")
            self.stage2_failure_code = 1
            self.request_shutdown(reason="stage 2 crashed")

    async def _stage2(self) -> bool:
        """Steps 1-4. Stage 3 cancels this Task: no step starts after a shutdown began.

        S6_STAGE2_HOOK first; then both trees (s6-rc.d and services.d) are read into one
        dependency graph, and `top` is brought up along it (rc_boot.py, DESIGN §10): fix-attrs
        and cont-init.d are its first built-in steps, services.d its `legacy-services`.
        """
        if not await self._stage2_hook():
            return False
        if lean_boot(self.cfg):
            self.trees_read = True  # (there are none: cont-finish.d still runs at stage 3)
            await self._legacy_services()
            self._run_cmd()
            return True
        from . import rc_boot

        legacy = self.supervisor.read_services_d()  # created at their turn, not before
        self._legacy_defs = legacy
        try:
            defs, graph = rc_boot.read_trees(self.cfg, legacy)
        except rc_boot.BadTree as exc:
            log.error(f"cannot boot: {exc}")
            self.stage2_failure_code = rc_boot.EXIT_BAD_TREE
            self.request_shutdown(reason="the service definitions are invalid")
            return False
        self.trees_read = True
        self.rc = rc_boot.build_runner(
            self.cfg, self.loop, self.reaper, self.supervisor, self.child_env, defs, graph,
            legacy, {"fix-attrs": self._fix_attrs, "legacy-cont-init": self._cont_init,
                     "legacy-services": self._legacy_services}, self._load_services_d,
        )
        failures = [(f"services.d/{d.name}", 1) for d in legacy if d.problem]
        deadline = None
        maxtime = self.cfg.cmd_wait_for_services_maxtime
        if self.cfg.cmd_wait_for_services and maxtime:
            deadline = self.loop.sleep(maxtime / 1000)
        plan = await self.rc.up(["top"], deadline=deadline)
        if not plan.finished:
            late = ", ".join(sorted(plan.targets - plan.done - set(plan.failed)
                                    - set(rc_boot.BUILTIN_ONESHOTS)))
            log.error(f"services not up after S6_CMD_WAIT_FOR_SERVICES_MAXTIME: {late}")
            failures.append(("S6_CMD_WAIT_FOR_SERVICES_MAXTIME", 1))
        legacy_names = {s.name for s in legacy}
        failures += [(name, 1) for name in sorted(plan.failed)
                     if name not in rc_boot.BUILTIN_ONESHOTS and name not in legacy_names]
        if failures and not self._stage2_failed(failures):
            return False
        self._run_cmd()
        return True

    async def _stage2_hook(self) -> bool:
        """S6_STAGE2_HOOK, before the trees are read; False when the boot must stop."""
        if not self.cfg.stage2_hook:
            return True  # (no environment to read for a hook that is not there)
        from . import rc_boot

        status = await rc_boot.run_hook(self.cfg, self.loop, self.reaper, self.child_env())
        if status is None or status.shell_code() == 0:
            return True
        log.warn(f"S6_STAGE2_HOOK {' '.join(self.cfg.stage2_hook)}: {status.describe()}")
        return self._stage2_failed([("S6_STAGE2_HOOK", status.shell_code())])

    async def _fix_attrs(self) -> str | None:
        """The `fix-attrs` step: fix-attrs.d; a failure blocks the rest only under behaviour 2."""
        fix_dir = self.cfg.etc("fix-attrs.d")
        if not os.path.isdir(fix_dir):
            return None
        log.info("fix-attrs.d: applying ownership and permissions")
        from . import fixattrs  # loaded only by an image that has fix-attrs.d

        try:
            fixed = fixattrs.run_fixattrs(fix_dir, self.cfg.fix_attrs_hidden, log.info)
        except Exception:
            log.exception("fix-attrs.d failed")
            fixed = False
        if not fixed and not self._stage2_failed([("fix-attrs.d", 1)]):
            return "fix-attrs.d failed"
        return None

    async def _cont_init(self) -> str | None:
        """The `legacy-cont-init` step: every cont-init.d script, all of them run."""
        init_failures: list[tuple[str, int]] = []
        for path in scripts.list_scripts(self.cfg.etc("cont-init.d")):
            if self.stopping:
                return "shutting down"
            name = "cont-init.d/" + os.path.basename(path)
            log.info(f"{name}: running")
            status = await scripts.run_script(self.loop, self.reaper, self.child_env(), path)
            code = 126 if status is None else status.shell_code()
            log.info(f"{name}: {'exit code 126' if status is None else status.describe()}")
            if code != 0:
                init_failures.append((name, code))
        # Under behaviour 2 nothing after a failed step starts: no service, no CMD (DESIGN §3).
        if init_failures and not self._stage2_failed(init_failures):
            return "a cont-init.d script failed"
        return None

    def _load_services_d(self) -> None:
        """Create the services.d services (once): when the first of them is due to start, so
        none exists while base (cont-init.d) is still running."""
        if self._legacy_defs is None:
            return
        services = self.supervisor.load(self._legacy_defs)
        self._legacy_defs = None
        if services:
            log.info(f"services.d: starting {len(services)} service(s)")

    async def _legacy_services(self) -> str | None:
        """The `legacy-services` step: services.d's services were started in their turn (each
        is a node of the graph); from here on a SIGHUP rescan may run."""
        self._load_services_d()  # when none of them is normally up
        self.services_started = True
        if self.rescan_pending:
            self.rescan_pending = False
            log.info("services.d started: doing the rescan SIGHUP asked for")
            self.supervisor.rescan()
        return None

    def _stage2_failed(self, failures: list[tuple[str, int]]) -> bool:
        """Apply S6_BEHAVIOUR_IF_STAGE2_FAILS; True when the boot goes on."""
        what = ", ".join(f"{name} ({code})" for name, code in failures)
        behaviour = self.cfg.behaviour_if_stage2_fails
        if behaviour == 0:
            log.info(f"stage 2 had failures, continuing: {what}")
            return True
        if behaviour == 1:
            log.warn(f"!!! stage 2 FAILED: {what}; continuing (S6_BEHAVIOUR_IF_STAGE2_FAILS=1)")
            return True
        code = next((c for _, c in failures if c != 0), 1)
        self.stage2_failure_code = code
        log.error(f"stage 2 failed: {what}; stopping (S6_BEHAVIOUR_IF_STAGE2_FAILS=2)")
        self.request_shutdown(reason="stage 2 failed")
        return False

    def _run_cmd(self) -> None:
        """Step 4: start the CMD; its exit (seen by the reaper) starts stage 3."""
        if not self.cmd:
            log.info("no CMD: running until told to stop")
            return
        log.info(f"starting CMD: {' '.join(self.cmd)}")
        stdout, stderr = self.outputs.cmd_fds()
        try:
            pid = spawn.spawn(
                self.cmd, self.child_env(), new_group=True, foreground_tty=self.tty,
                stdout=stdout, stderr=stderr,
            )
        except OSError as exc:
            log.error(f"cannot start the CMD: {exc.strerror}")
            self.cmd_status = ExitStatus(126, None)
            self.request_shutdown(reason="the CMD could not be started")
            return
        self.cmd_pid = pid
        self.cmd_since = time.time()
        self.cmd_exit = self.reaper.exit_future(pid)
        self.cmd_exit.add_done_callback(lambda done: self._cmd_ended(done.result))

    def _cmd_ended(self, status: ExitStatus) -> None:
        self.cmd_pid = None
        self.cmd_status = status
        self.cmd_since = time.time()
        self._reclaim_terminal()
        log.info(f"CMD ended: {status.describe()}")
        self.request_shutdown(reason="the CMD exited")

    def _reclaim_terminal(self) -> None:
        if self.tty is not None:
            try:
                os.tcsetpgrp(self.tty, os.getpgrp())
            except OSError:
                pass

    # --- signals ---------------------------------------------------------------------------
    def _on_terminate(self, signum: int) -> None:
        from protocol.signals import signal_name

        if self.cfg.cmd_receive_signals and self.cmd_pid is not None and not self.stopping:
            log.info(f"received {signal_name(signum)}: passing it to the CMD")
            self._signal_cmd(signum)
            return
        if not self.stopping:
            self.shutdown_signal = signum  # nginx stops gracefully on QUIT: pass it on
            self.request_shutdown(reason=f"received {signal_name(signum)}")
        elif not self.skip_to_kill.done:
            log.info(f"received {signal_name(signum)} again: skipping to the final kill")
            self.skip_to_kill.set_result(None)

    def _on_forwarded(self, signum: int) -> None:
        if self.cmd_pid is not None:
            self._signal_cmd(signum)
        elif signum == _signal.SIGHUP:
            self.rescan("received SIGHUP")

    def rescan(self, origin: str) -> None:
        """Rescan services.d (SIGHUP without a CMD, `s6-svscanctl -a`); before services.d has
        started it is deferred until then, during shutdown it is ignored."""
        if self.stopping:
            return
        if not self.services_started:
            log.info(f"{origin}: rescan deferred until services.d has started")
            self.rescan_pending = True
            return
        log.info(f"{origin}: rescanning services.d")
        self.supervisor.rescan()

    def _signal_cmd(self, signum: int) -> None:
        if self.cmd_pid is None:
            return
        try:
            os.killpg(self.cmd_pid, signum)
        except ProcessLookupError:
            pass

    def _health_shutdown(self, name: str, why: str) -> None:
        """health/action `shutdown`: service `name` failed its checks, so the container fails."""
        if self.stopping:
            return
        log.error(f"service {name}: {why}; stopping the container (health/action)")
        self.health_failure_code = HEALTH_FAILURE_CODE
        self.request_shutdown(reason=f"service {name} is unhealthy")

    # --- stage 3 ---------------------------------------------------------------------------
    def request_shutdown(self, exit_code: int | None = None, reason: str = "requested") -> bool:
        """Start stage 3 (once). An explicit exit code overrides every other source."""
        if exit_code is not None:
            self.requested_exit_code = exit_code % 256
        if self.stopping:
            return False
        self.stopping = True
        log.info(f"shutting down: {reason}")
        if self.stage2 is not None:
            self.stage2.cancel()
        Task(self._stage3(), "stage 3")
        return True

    async def _stage3(self) -> None:
        cfg = self.cfg
        grace = cfg.services_gracetime / 1000
        skip = self.skip_to_kill
        if self.cmd_pid is not None and self.cmd_exit is not None:
            log.info("stopping the CMD")
            self._signal_cmd(self.shutdown_signal)
            self._signal_cmd(_signal.SIGCONT)
            if await self.loop.with_timeout(first_of(self.cmd_exit, skip), grace) is TIMED_OUT:
                log.warn("the CMD outlived S6_SERVICES_GRACETIME; sending SIGKILL")
                self._signal_cmd(_signal.SIGKILL)
                await first_of(self.cmd_exit, skip)
        if not skip.done and self._supervisor is not None and self._supervisor.services:
            log.info("stopping services")
            if self.rc is not None:  # dependents first, oneshots' `down` in their turn
                self.supervisor.rt.shutting_down = True
                down = Task(self.rc.down(sorted(self.rc.active()), cfg.services_gracetime),
                            "stage 3: services down")
                await first_of(down.finished, skip)
            await self.supervisor.shut_down(grace, skip)
        if not skip.done and self.trees_read:  # cont-finish.d is legacy-cont-init's `down`
            await self._cont_finish()
        await self.outputs.stop()  # the catch-all stops last: it has taken every line above
        await self._kill_everything()
        if cfg.sync_disks:
            os.sync()
        self.exit_code = self.decide_exit_code()
        log.info(f"exiting with code {self.exit_code}")
        if self.s6 is not None:
            self.s6.close()
        if self.server is not None:
            self.server.close()
        elif self._control_sock is not None:  # no client ever came: the server never loaded
            self.loop.remove_reader(self._control_sock.fileno())
            self._control_sock.close()
            self._control_sock = None
            try:
                os.unlink(self.cfg.socket_path)
            except OSError:
                pass
        self.loop.stop()

    async def _cont_finish(self) -> None:
        maxtime = self.cfg.kill_finish_maxtime
        paths = scripts.list_scripts(self.cfg.etc("cont-finish.d"))
        if not paths:
            return
        env = self.child_env()
        env["S6_STAGE2_EXITED"] = str(self.decide_exit_code())  # as v2's env-stage3 gave it
        for path in paths:
            name = "cont-finish.d/" + os.path.basename(path)
            log.info(f"{name}: running")
            status = await scripts.run_script(
                self.loop, self.reaper, env, path,
                timeout=maxtime / 1000 if maxtime else None, abandon=self.skip_to_kill,
            )
            if self.skip_to_kill.done:
                return
            log.info(f"{name}: {'not run' if status is None else status.describe()}")

    async def _kill_everything(self) -> None:
        """Stage 3 step 4: TERM everyone left, wait only while something is alive, then KILL."""
        none_left = self.reaper.no_children()
        if none_left.done:
            return
        log.info("sending SIGTERM to all remaining processes")
        self._broadcast(_signal.SIGTERM)
        self._broadcast(_signal.SIGCONT)
        if await self.loop.with_timeout(none_left, self.cfg.kill_gracetime / 1000) is TIMED_OUT:
            log.warn("processes outlived S6_KILL_GRACETIME; sending SIGKILL")
            self._broadcast(_signal.SIGKILL)
            if await self.loop.with_timeout(none_left, FINAL_KILL_WAIT) is TIMED_OUT:
                log.error("some processes could not be killed (uninterruptible sleep?)")

    def _broadcast(self, signum: int) -> None:
        """Signal every remaining process: kill(-1) as PID 1, else our own descendants only."""
        if self.is_pid1:
            try:
                os.kill(-1, signum)
            except ProcessLookupError:
                pass
            return
        for pid in _descendants(os.getpid()):
            try:
                os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    def decide_exit_code(self) -> int:
        """shutdown --exit-code N, else the exitcode file(s) (DESIGN §11), else stage-2
        failure, else the CMD."""
        if self.requested_exit_code is not None:
            return self.requested_exit_code
        from .exitcode import read_exitcode_file

        from_file = read_exitcode_file(self.cfg.exitcode_path)
        if from_file is not None:
            return from_file
        if self.s6 is not None:  # then s6-overlay's v3 exitcode file, then v2's
            from .s6paths import V2_EXITCODE, V3_EXITCODE

            for path in (V3_EXITCODE, V2_EXITCODE):
                from_file = read_exitcode_file(path)
                if from_file is not None:
                    return from_file
        if self.stage2_failure_code is not None:
            return self.stage2_failure_code % 256
        if self.health_failure_code is not None:
            return self.health_failure_code
        if self.cmd_status is not None:
            return self.cmd_status.shell_code() % 256
        return 0


def lean_boot(cfg: Config) -> bool:
    """Has the image nothing to prepare or supervise? True when fix-attrs.d, cont-init.d,
    services.d, s6-rc.d and user-bundles.d are each missing or empty.

    Then stage 2 is the CMD alone, as the graph would have run it (its three built-in steps
    have nothing to do; their "starting"/"up" lines are not logged), and the supervisor, the
    trees' reader and the graph (~3 ms of imports, and their memory) are never loaded.
    Anything at all in one of them, even a broken entry or a file where a directory belongs,
    takes the full path, which reports it.
    """
    for path in (cfg.etc("fix-attrs.d"), cfg.etc("cont-init.d"), cfg.etc("services.d"),
                 os.path.join(cfg.s6_overlay_dir, "s6-rc.d"), cfg.bundle_dir):
        try:
            with os.scandir(path) as entries:
                if next(entries, None) is not None:
                    return False
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return True


def _descendants(root: int) -> list[int]:
    """Every process below `root`, from /proc (used only when not PID 1)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _become_subreaper() -> None:
    """prctl(PR_SET_CHILD_SUBREAPER): orphans below us come to us, as they would to PID 1."""
    from . import clib

    pr_set_child_subreaper = 36
    prctl = clib.function("prctl")
    if prctl is None:
        log.warn("cannot become a child subreaper: this C library has no prctl")
    elif prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        log.warn(f"cannot become a child subreaper: {os.strerror(clib.errno())}")
