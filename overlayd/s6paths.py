"""s6-overlay's absolute paths (DESIGN §11), made at stage 1, and the live service directories.

On by default when overlayd is PID 1 (OVERLAY_S6_PATHS=0 turns them off; not PID 1 they are off
unless OVERLAY_S6_PATHS=1). `OVERLAY_RUN_DIR` stays the source of truth; these paths lead there.

    /run/s6/services/NAME        live service directory (a real directory, the physical path
                                 LSIO's with-contenv checks): links to the definition's files,
                                 plus supervise/ and event/ (supervise_dir.py); `run` starts here
    /run/service, /var/run/s6/services        → /run/s6/services (v3 and v2 scan directories)
    /run/s6/services/.s6-svscan/control       s6-svscanctl's FIFO (svscan_control.py)
    /run/s6/container_environment, /var/run/s6/container_environment  → the run dir's
    /run/s6-linux-init-container-results/exitcode   v3 exit code file (made empty: unset)
    /var/run/s6/env-stage3/                   where v2 scripts write S6_STAGE2_EXITED
    /run/s6/basedir/bin/{halt,poweroff,reboot}  ask overlayd to stop the container

A path that cannot be made (not root, read-only /run) costs one line naming it; the rest goes on.
"""

from __future__ import annotations

import os
import sys

from . import log
from .smallfile import holds, write_new
from .svscan_control import SvscanControl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .service import Service
    from .stages import Container
    from .supervise_dir import SuperviseDir
    from .supervisor import Supervisor

S6_DIR = "/run/s6"
SERVICES_DIR = "/run/s6/services"
SCAN_LINKS = ("/run/service", "/var/run/s6/services")
CONTENV_LINKS = ("/run/s6/container_environment", "/var/run/s6/container_environment")
V3_RESULTS_DIR = "/run/s6-linux-init-container-results"
V3_EXITCODE = V3_RESULTS_DIR + "/exitcode"
V2_STAGE3_DIR = "/var/run/s6/env-stage3"
V2_EXITCODE = V2_STAGE3_DIR + "/S6_STAGE2_EXITED"
BASEDIR_BIN = "/run/s6/basedir/bin"
HALT_COMMANDS = ("halt", "poweroff", "reboot")
# Appended to children's PATH when missing: the archive's tools, and Debian's execline.
EXTRA_PATH = ("/command", "/usr/lib/execline/bin")
# Files of a definition that are overlayd's to make in the live directory, never linked.
NOT_LINKED = frozenset(("supervise", "event", "log"))


def enabled(setting: int | None, is_pid1: bool) -> bool:
    """OVERLAY_S6_PATHS: explicit 0/1 wins; unset means on exactly when PID 1."""
    return is_pid1 if setting is None else bool(setting)


def extend_path(env: dict[str, str]) -> dict[str, str]:
    """Append /command (and Debian's execline directory, when present) to env's PATH."""
    parts = (env.get("PATH") or os.defpath).split(":")
    for extra in EXTRA_PATH:
        if extra not in parts and (extra == "/command" or os.path.isdir(extra)):
            parts.append(extra)
    env["PATH"] = ":".join(parts)
    return env


def _same_place(a: str, b: str) -> bool:
    """True when `a` already resolves to `b` (e.g. /var/run → /run on most images)."""
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except OSError:
        return False


def _mkdirs(path: str) -> None:
    """`os.makedirs(path, 0o755, exist_ok=True)` (every missing level 0755), at one mkdir for
    the usual case: a fresh container's /run has none of them, and its parent is there."""
    try:
        os.mkdir(path, 0o755)
    except FileNotFoundError:
        _mkdirs(os.path.dirname(path))
        os.mkdir(path, 0o755)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def _symlink(link: str, target: str) -> None:
    """Make `link` point at `target`, replacing a stale link (never a real file or directory)."""
    try:
        os.symlink(target, link)  # a fresh container: one call
        return
    except FileNotFoundError:
        _mkdirs(os.path.dirname(link))
        os.symlink(target, link)
        return
    except FileExistsError:
        pass  # already there (an earlier run), or reached through a link (/var/run → /run)
    if _same_place(link, target):
        return
    if os.path.islink(link):
        os.unlink(link)
    _mkdirs(os.path.dirname(link))
    os.symlink(target, link)


class S6Paths:
    """The compat paths of one boot and a supervise interface for every service."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.dirs: dict[str, SuperviseDir] = {}
        self.live_ok = False
        self.svscan: SvscanControl | None = None

    # --- stage 1 ---------------------------------------------------------------------------
    def make(self) -> None:
        """Make every path; each failure is one line naming it."""
        cfg = self.container.cfg
        self.live_ok = self._try(SERVICES_DIR, lambda: _mkdirs(SERVICES_DIR))
        if self.live_ok:
            self.svscan = SvscanControl(
                SERVICES_DIR, self.container.loop, self._rescan, self._terminate
            )
            self._try(SERVICES_DIR + "/.s6-svscan/control", self.svscan.open)
        for link in SCAN_LINKS:
            self._try(link, lambda link=link: _symlink(link, SERVICES_DIR))
        for link in CONTENV_LINKS:
            self._try(link, lambda link=link: _symlink(link, cfg.env_dir))
        self._try(V3_EXITCODE, self._make_v3_exitcode)
        self._try(V2_STAGE3_DIR, lambda: _mkdirs(V2_STAGE3_DIR))
        for name in HALT_COMMANDS:
            path = os.path.join(BASEDIR_BIN, name)
            self._try(path, lambda path=path, name=name: self._write_halt(path, name))

    def attach(self, supervisor: Supervisor) -> None:
        """Mirror `supervisor`'s services from now on (the container calls this when it makes
        its supervisor, which a container with nothing to supervise never does)."""
        supervisor.on_add.append(self._added)
        supervisor.add_listener(self._changed)

    @staticmethod
    def _try(path: str, make: object) -> bool:
        try:
            make()  # type: ignore[operator]
        except OSError as exc:
            log.warn(f"s6 paths: cannot make {path}: {exc.strerror or exc}; carrying on")
            return False
        return True

    @staticmethod
    def _make_v3_exitcode() -> None:
        """Present and empty: an empty file means "no code", so the CMD's code still counts."""
        _mkdirs(V3_RESULTS_DIR)
        os.close(os.open(V3_EXITCODE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))

    def _write_halt(self, path: str, name: str) -> None:
        _mkdirs(BASEDIR_BIN)
        socket = _quote(self.container.cfg.socket_path)
        body = (
            "#!/bin/sh\n"
            f"# {name}: stop the container (overlayd); the exit code is decided by overlayd\n"
            f"OVERLAY_SOCKET={socket} exec {_quote(sys.executable)} -I "
            f"-m overlayctl.s6cmds {name} \"$@\"\n"
        ).encode()
        old_umask = os.umask(0o022)  # 0755 whatever the container's umask
        try:
            try:  # a fresh container: written in place, nobody can have it open yet
                write_new(path, body, 0o755)
            except FileExistsError:  # an earlier run's: kept when it is this one, else replaced
                if holds(path, body, 0o755):  # (no new file to make)
                    return
                temporary = path + ".new"  # (whole: never seen half-written)
                try:
                    os.unlink(temporary)
                except FileNotFoundError:
                    pass
                write_new(temporary, body, 0o755)
                os.rename(temporary, path)
        finally:
            os.umask(old_umask)

    # --- services --------------------------------------------------------------------------
    def live_dir(self, name: str) -> str:
        return os.path.join(SERVICES_DIR, name)

    def _added(self, service: Service) -> None:
        """A new service: its live directory, `run`'s cwd, and its supervise interface."""
        if not self.live_ok:
            return
        previous = self.dirs.pop(service.name, None)
        if previous is not None:  # a name that came back after a rescan: a new Service
            previous.close(announce=False)
        live = self.live_dir(service.name)
        from .supervise_dir import SuperviseDir  # (a container with no service never needs it)

        try:
            _populate(live, service.definition.directory)
            supervise = SuperviseDir(service, live, self.container.loop)
            supervise.open()
        except OSError as exc:
            log.warn(f"s6 paths: cannot make {live}: {exc.strerror or exc}; carrying on")
            return
        service.directory = live
        self.dirs[service.name] = supervise

    def _changed(self, service: Service) -> None:
        supervise = self.dirs.get(service.name)
        if supervise is not None:
            supervise.changed()

    def close(self) -> None:
        """overlayd is exiting: `x` to every listener."""
        for supervise in self.dirs.values():
            supervise.close()

    # --- scan directory --------------------------------------------------------------------
    def _rescan(self) -> None:
        self.container.rescan("s6-svscanctl")

    def _terminate(self, reason: str) -> None:
        self.container.request_shutdown(reason=reason)


def _quote(text: str) -> str:
    """Single-quoted for sh (shlex would cost PID 1 the import of re)."""
    return "'" + text.replace("'", "'\\''") + "'"


def _populate(live: str, definition_dir: str) -> None:
    """Make `live` a real directory linking to each file of `definition_dir`.

    Links left by an earlier boot are replaced; files overlayd's tools made there (a `down`
    from `s6-svc -D`) are left as they are.
    """
    _mkdirs(live)
    wanted = {n for n in os.listdir(definition_dir) if n not in NOT_LINKED}
    for name in os.listdir(live):
        path = os.path.join(live, name)
        if os.path.islink(path) and name not in wanted:
            os.unlink(path)
    for name in wanted:
        path = os.path.join(live, name)
        target = os.path.join(definition_dir, name)
        if os.path.islink(path):
            if os.readlink(path) == target:
                continue
            os.unlink(path)
        elif os.path.lexists(path):
            continue
        os.symlink(target, path)
