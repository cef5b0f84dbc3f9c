"""The catch-all logger (`S6_LOGGING` 1 or 2), as s6-overlay v3 has it, rotation by s6-log.

overlayd makes one pipe, starts `s6-log -bp -- [1] SCRIPT LOGDIR` on its read end, and puts
the write end on its own fds 1 and 2. From then on everything without a logger of its own
inherits it: services, cont-init and cont-finish scripts, overlayd's own lines, and the CMD
with `S6_LOGGING=2` (with 1 the CMD gets the console back). With 1, s6-log's `1` directive
copies every line, without the timestamp, to its stdout: the container's stderr.

- Whole `S6_LOGGING_SCRIPT` is applied (s6-overlay passes only its `t`/`T`; DESIGN §12).
- overlayd also holds the read end, so the pipe never loses its reader: if s6-log dies it is
  started again (after 1 s), writers wait on the full pipe meanwhile, nothing is lost and no
  one gets SIGPIPE.
- It starts before the first script and stops last: at shutdown, after cont-finish.d, overlayd
  gives its fds 1 and 2 back to the console and closes its write end; s6-log (`-p`: it ignores
  the final SIGTERM) reads to EOF, writes everything out and exits.
- Without s6-log installed: one line naming the package, and output stays on the console.
"""

from __future__ import annotations

import fcntl
import os

from . import log, spawn
from .logsettings import PACKAGE_HINT
from .loop import Future

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from .logsettings import LogSettings
    from .loop import Loop, Timer
    from .reaper import ExitStatus, Reaper

RESTART_DELAY = 1.0


def _dup_cloexec(fd: int) -> int:
    """A close-on-exec copy of the console fd; /dev/null when the container gave none."""
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


def catchall_argv(settings: LogSettings, s6_log: str, setuidgid: str | None) -> list[str]:
    """The logger's command line: `[s6-setuidgid USER] s6-log -bp -- [1] SCRIPT LOGDIR`."""
    copy = ["1"] if settings.mode == 1 else []
    argv = [s6_log, "-bp", "--", *copy, *settings.script, settings.uncaught_dir]
    if setuidgid is not None:
        argv = [setuidgid, settings.catchall_user, *argv]
    return argv


class CatchAll:
    """The catch-all pipe and its s6-log."""

    def __init__(self, loop: Loop, reaper: Reaper, settings: LogSettings) -> None:
        self.loop = loop
        self.reaper = reaper
        self.settings = settings
        self.env = {"PATH": os.environ.get("PATH") or os.defpath}
        self.argv: list[str] = []
        self.read_end = -1
        self.console_out = -1
        self.console_err = -1
        self.pid: int | None = None
        self.stopping = False
        self.exited = Future()
        self._timer: Timer | None = None

    @property
    def active(self) -> bool:
        return self.read_end >= 0

    def start(self) -> bool:
        """Make the logdir and the pipe, start s6-log, take fds 1 and 2; False when it cannot."""
        settings = self.settings
        s6_log = spawn.find_executable("s6-log", self.env)
        if s6_log is None:
            log.error(
                f"S6_LOGGING={settings.mode} needs s6-log, which is not in PATH: {PACKAGE_HINT}; "
                "output stays on the container's output"
            )
            return False
        setuidgid = None
        if settings.catchall_user and os.geteuid() == 0:
            setuidgid = spawn.find_executable("s6-setuidgid", self.env)
            if setuidgid is None:
                log.error(f"S6_CATCHALL_USER needs s6-setuidgid: {PACKAGE_HINT}; running as root")
        try:
            self._make_logdir(setuidgid is not None)
        except OSError as exc:
            log.error(f"cannot make the catch-all logdir {settings.uncaught_dir}: {exc.strerror}")
            return False
        self.argv = catchall_argv(settings, s6_log, setuidgid)
        self.console_out = _dup_cloexec(1)
        self.console_err = _dup_cloexec(2)
        self.read_end, write_end = os.pipe2(os.O_CLOEXEC)
        if not self._spawn():
            os.close(write_end)
            self._give_back_console()
            os.close(self.read_end)
            self.read_end = -1
            return False
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        log.reopen()
        log.debug(f"catch-all logger: {' '.join(self.argv)}")
        return True

    def _make_logdir(self, chown: bool) -> None:
        path = self.settings.uncaught_dir
        os.makedirs(path, mode=0o750, exist_ok=True)
        if chown:
            import pwd

            entry = pwd.getpwnam(self.settings.catchall_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(path, 0o2750)  # as s6-overlay's; mkdir alone cannot set the setgid bit

    def _spawn(self) -> bool:
        try:
            pid = spawn.spawn(
                self.argv,
                self.env,
                new_session=True,
                stdin=self.read_end,
                stdout=self.console_err,
                stderr=self.console_err,
            )
        except OSError as exc:
            log.error(f"cannot start the catch-all logger: {exc.strerror}")
            return False
        self.pid = pid
        self.reaper.watch(pid, self._on_exit)
        return True

    def _on_exit(self, status: ExitStatus) -> None:
        self.pid = None
        if self.stopping:
            self.exited.set_result(status)
            return
        log.warn(f"the catch-all logger ended ({status.describe()}); restarting it in 1 s")
        self._timer = self.loop.call_later(RESTART_DELAY, self._restart)

    def _restart(self) -> None:
        self._timer = None
        if not self.stopping and not self._spawn():
            self._timer = self.loop.call_later(RESTART_DELAY, self._restart)

    def cmd_fds(self) -> tuple[int | None, int | None]:
        """stdout and stderr for the CMD: the console with S6_LOGGING=1 (or with 2, on a
        terminal, with S6_CMD_USE_TERMINAL=1), else inherited: the catch-all."""
        if not self.active:
            return None, None
        if self.settings.mode == 1 or (
            self.settings.cmd_use_terminal and os.isatty(self.console_out)
        ):
            return self.console_out, self.console_err
        return None, None

    def _give_back_console(self) -> None:
        os.dup2(self.console_out, 1)
        os.dup2(self.console_err, 2)
        log.reopen()

    def stop(self) -> Future:
        """Give fds 1 and 2 back to the console; a Future resolved when s6-log has exited."""
        if not self.active or self.stopping:
            return self.exited
        self.stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._give_back_console()
        if self.pid is None:
            self.exited.set_result(None)
        return self.exited
