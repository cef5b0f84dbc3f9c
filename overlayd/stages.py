"""The boot and shutdown sequence (stage 1 → 2 → 3) and the container's exit code.

Signal handlers only queue (through the loop's wakeup fd); each signal's meaning lives in one
`_on_*` method here. Stage 2 and stage 3 are coroutines run as Tasks on the loop.
"""

from __future__ import annotations

import os
import signal

from . import contenv, fixattrs, log, rundir, scripts, spawn
from .config import Config
from .exitcode import read_exitcode_file
from .loop import TIMED_OUT, Future, Loop, Task, first_of
from .reaper import ExitStatus, Reaper
from .service import READY, UP, Runtime, Service
from .supervisor import Supervisor

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    import socket

    from .rpc import ControlServer

TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
FORWARDED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
FINAL_KILL_WAIT = 5.0  # after SIGKILL to everything: only D-state processes can hold us here


class Container:
    """One run of overlayd: its config, its children and how it ends."""

    def __init__(self, config: Config, cmd: list[str]) -> None:
        self.cfg = config
        self.cmd = [*config.cmd_arg0, *cmd] if cmd else []
        self.loop = Loop()
        log.attach(self.loop)  # its buffered lines flush when stderr is writable again
        self.reaper = Reaper()
        self.runtime = Runtime(self.loop, self.reaper, self.child_env, self._service_changed)
        self.supervisor = Supervisor(self.runtime, config.etc("services.d"))
        self.is_pid1 = os.getpid() == 1
        self.tty = 0 if os.isatty(0) else None
        self.cmd_pid: int | None = None
        self.cmd_exit: Future | None = None
        self.cmd_status: ExitStatus | None = None
        self.stopping = False
        self.skip_to_kill = Future()
        self.requested_exit_code: int | None = None
        self.stage2_failure_code: int | None = None
        self.exit_code = 0
        self.started_at = self.loop.time()
        self.server: ControlServer | None = None
        self._control_sock: socket.socket | None = None

    # --- stage 1 ---------------------------------------------------------------------------
    def run(self) -> int:
        """Boot, serve until shutdown completes, and return the container's exit code."""
        self._stage1()
        boot = Task(self._stage2(), "stage 2")
        boot.finished.add_done_callback(self._boot_ended)
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
        contenv.save(cfg.env_dir, os.environ)
        for signum in (signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, signal.SIG_IGN)
        for signum in TERMINATING:
            self.loop.add_signal_handler(signum, self._on_terminate)
        for signum in FORWARDED:
            self.loop.add_signal_handler(signum, self._on_forwarded)
        self.loop.add_signal_handler(signal.SIGCHLD, lambda _s: self.reaper.reap(), True)
        # A parent may have started us with these blocked; we must still hear them (children
        # get the original mask back in spawn).
        signal.pthread_sigmask(
            signal.SIG_UNBLOCK, {*TERMINATING, *FORWARDED, signal.SIGCHLD}
        )
        self._open_control_socket()

    def _open_control_socket(self) -> None:
        """Listen now; load the RPC server on the loop's first turn (see listener.py)."""
        from .listener import open_listener

        try:
            sock = open_listener(self.cfg.socket_path, self.cfg.socket_gid)
        except OSError as exc:
            log.error(f"cannot open the control socket {self.cfg.socket_path}: {exc.strerror}")
            return

        def serve() -> None:
            from .rpc import ControlServer

            self.server = ControlServer(self, sock)

        self._control_sock = sock
        self.loop.call_soon(serve)

    def child_env(self) -> dict[str, str]:
        return contenv.child_environment(self.cfg.run_dir, self.cfg.keep_env)

    def _service_changed(self, service: Service) -> None:
        self.supervisor.changed(service)

    # --- stage 2 ---------------------------------------------------------------------------
    def _boot_ended(self, finished: Future) -> None:
        """Stage 2 returns True once the CMD ran or there is none; anything else was a bug."""
        if finished.result is not True and not self.stopping:
            log.error("stage 2 ended unexpectedly; stopping the container")
            self.stage2_failure_code = 1
            self.request_shutdown(reason="stage 2 crashed")

    async def _stage2(self) -> bool:
        cfg = self.cfg
        failures: list[tuple[str, int]] = []
        fix_dir = cfg.etc("fix-attrs.d")
        if os.path.isdir(fix_dir):
            log.info("fix-attrs.d: applying ownership and permissions")
            try:
                fixed = fixattrs.run_fixattrs(fix_dir, cfg.fix_attrs_hidden, log.info)
            except Exception:
                log.exception("fix-attrs.d failed")
                fixed = False
            if not fixed:
                failures.append(("fix-attrs.d", 1))
        for path in scripts.list_scripts(cfg.etc("cont-init.d")):
            name = "cont-init.d/" + os.path.basename(path)
            log.info(f"{name}: running")
            status = await scripts.run_script(
                self.loop, self.reaper, self.child_env(), path, abandon=self.skip_to_kill
            )
            if self.stopping:
                return False
            code = 126 if status is None else status.shell_code()
            log.info(f"{name}: {'exit code 126' if status is None else status.describe()}")
            if code != 0:
                failures.append((name, code))
        if await self._start_services(failures) is False or self.stopping:
            return False
        if failures and not self._stage2_failed(failures):
            return False
        await self._run_cmd()
        return True

    async def _start_services(self, failures: list[tuple[str, int]]) -> bool:
        services = self.supervisor.load()
        failures.extend((f"services.d/{s.name}", 1) for s in services if s.broken)
        if services:
            log.info(f"services.d: starting {len(services)} service(s)")
        self.supervisor.start_normally_up(services)
        if not self.cfg.cmd_wait_for_services:
            return True
        watched = [s for s in services if s.definition.normally_up and not s.broken]

        def all_up() -> bool:
            return self.stopping or all(
                s.state == READY or (s.state == UP and s.definition.notification_fd is None)
                for s in watched
            )

        maxtime = self.cfg.cmd_wait_for_services_maxtime
        result = await self.loop.with_timeout(
            self.supervisor.when(all_up), maxtime / 1000 if maxtime else None
        )
        if result is TIMED_OUT:
            late = ", ".join(s.name for s in watched if s.state not in (UP, READY))
            log.error(f"services not up after S6_CMD_WAIT_FOR_SERVICES_MAXTIME: {late}")
            failures.append(("S6_CMD_WAIT_FOR_SERVICES_MAXTIME", 1))
        return not self.stopping

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

    async def _run_cmd(self) -> None:
        if not self.cmd:
            log.info("no CMD: running until told to stop")
            return
        log.info(f"starting CMD: {' '.join(self.cmd)}")
        try:
            pid = spawn.spawn(self.cmd, self.child_env(), new_group=True, foreground_tty=self.tty)
        except OSError as exc:
            log.error(f"cannot start the CMD: {exc.strerror}")
            self.cmd_status = ExitStatus(126, None)
            self.request_shutdown(reason="the CMD could not be started")
            return
        self.cmd_pid = pid
        self.cmd_exit = self.reaper.exit_future(pid)
        status: ExitStatus = await self.cmd_exit
        self.cmd_pid = None
        self.cmd_status = status
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
            self.request_shutdown(reason=f"received {signal_name(signum)}")
        elif not self.skip_to_kill.done:
            log.info(f"received {signal_name(signum)} again: skipping to the final kill")
            self.skip_to_kill.set_result(None)
            self.supervisor.recheck()

    def _on_forwarded(self, signum: int) -> None:
        if self.cmd_pid is not None:
            self._signal_cmd(signum)
        elif signum == signal.SIGHUP and not self.stopping:
            log.info("received SIGHUP: rescanning services.d")
            self.supervisor.rescan()

    def _signal_cmd(self, signum: int) -> None:
        if self.cmd_pid is None:
            return
        try:
            os.killpg(self.cmd_pid, signum)
        except ProcessLookupError:
            pass

    # --- stage 3 ---------------------------------------------------------------------------
    def request_shutdown(self, exit_code: int | None = None, reason: str = "requested") -> bool:
        """Start stage 3 (once). An explicit exit code overrides every other source."""
        if exit_code is not None:
            self.requested_exit_code = exit_code % 256
        if self.stopping:
            return False
        self.stopping = True
        log.info(f"shutting down: {reason}")
        Task(self._stage3(), "stage 3")
        return True

    async def _stage3(self) -> None:
        cfg = self.cfg
        grace = cfg.services_gracetime / 1000
        skip = self.skip_to_kill
        if self.cmd_pid is not None and self.cmd_exit is not None:
            log.info("stopping the CMD")
            self._signal_cmd(signal.SIGTERM)
            self._signal_cmd(signal.SIGCONT)
            if await self.loop.with_timeout(first_of(self.cmd_exit, skip), grace) is TIMED_OUT:
                log.warn("the CMD outlived S6_SERVICES_GRACETIME; sending SIGKILL")
                self._signal_cmd(signal.SIGKILL)
                await first_of(self.cmd_exit, skip)
        if not skip.done and self.supervisor.services:
            log.info("stopping services")
            await self.supervisor.shut_down(grace, skip)
        if not skip.done:
            await self._cont_finish()
        await self._kill_everything()
        if cfg.sync_disks:
            os.sync()
        self.exit_code = self.decide_exit_code()
        log.info(f"exiting with code {self.exit_code}")
        if self.server is not None:
            self.server.close()
        elif self._control_sock is not None:  # stopped before the loop's first turn
            self._control_sock.close()
            try:
                os.unlink(self.cfg.socket_path)
            except OSError:
                pass
        self.loop.stop()

    async def _cont_finish(self) -> None:
        maxtime = self.cfg.kill_finish_maxtime
        for path in scripts.list_scripts(self.cfg.etc("cont-finish.d")):
            name = "cont-finish.d/" + os.path.basename(path)
            log.info(f"{name}: running")
            status = await scripts.run_script(
                self.loop, self.reaper, self.child_env(), path,
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
        self._broadcast(signal.SIGTERM)
        self._broadcast(signal.SIGCONT)
        if await self.loop.with_timeout(none_left, self.cfg.kill_gracetime / 1000) is TIMED_OUT:
            log.warn("processes outlived S6_KILL_GRACETIME; sending SIGKILL")
            self._broadcast(signal.SIGKILL)
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
        """shutdown --exit-code N, else the exitcode file, else stage-2 failure, else the CMD."""
        if self.requested_exit_code is not None:
            return self.requested_exit_code
        from_file = read_exitcode_file(self.cfg.exitcode_path)
        if from_file is not None:
            return from_file
        if self.stage2_failure_code is not None:
            return self.stage2_failure_code % 256
        if self.cmd_status is not None:
            return self.cmd_status.shell_code() % 256
        return 0


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
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        log.warn(f"cannot become a child subreaper: {os.strerror(ctypes.get_errno())}")
