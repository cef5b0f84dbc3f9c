"""The run dir (`$OVERLAY_RUN_DIR`, default /run/overlay): created, or hardened, at stage 1.

It holds the control socket, `container_environment/` (secrets) and `exitcode` (which decides
how the container ends), so nobody but overlayd's user may write there. An existing run dir is
fixed to mode 0755 and to overlayd's owner (root, or the container user), with a warning
naming what it was, when it was looser (writable by group or others, or someone else's). A
tighter mode an operator chose (0750, 0700) is kept.

Not root, with OVERLAY_RUN_DIR unset and /run/overlay not usable: overlayd falls back to
/tmp/overlay-UID (mode 0700, never through a symlink, never someone else's directory) and says
so once; overlayctl searches the same two places in that order. When neither works, one line
names the path and the two fixes.
"""

from __future__ import annotations

import os
import stat

from . import log

DEFAULT_RUN_DIR = "/run/overlay"
MODE = 0o755
FALLBACK_MODE = 0o700

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .config import Config


class RunDirError(OSError):
    """No run dir could be made; the message names the path and the fixes."""


def fallback_dir(uid: int) -> str:
    """Where a non-root overlayd keeps its run dir when /run/overlay is not usable."""
    return f"/tmp/overlay-{uid}"


def harden(path: str) -> None:
    """Create ``path`` (mode 0755), or fix an existing one that is looser or not ours."""
    try:
        os.mkdir(path, MODE)
        os.chmod(path, MODE)  # mkdir's mode went through the umask
        return
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(path, MODE, exist_ok=True)
        os.chmod(path, MODE)
        return
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(20, "exists and is not a directory", path)
    uid, gid = os.geteuid(), os.getegid()
    was = f"mode {stat.S_IMODE(info.st_mode):04o}, owner uid {info.st_uid}"
    if info.st_uid not in (0, uid):
        # Whoever owns it could swap the socket or plant an exitcode: take it back.
        os.chown(path, uid, gid)
        os.chmod(path, MODE)
        log.warn(f"run dir {path} belonged to someone else ({was}); now ours, mode 0755")
        return
    if stat.S_IMODE(info.st_mode) & ~MODE:
        try:
            os.chmod(path, MODE)
        except PermissionError:
            log.warn(f"run dir {path} is looser than it should be ({was}) and not ours to fix")
            return
        log.warn(f"run dir {path} was looser than it may be ({was}); now mode 0755")


def _fallback(uid: int) -> str:
    """/tmp/overlay-UID, ours alone, never through a symlink or someone else's directory."""
    path = fallback_dir(uid)
    try:
        os.mkdir(path, FALLBACK_MODE)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
        what = "is not a directory" if not stat.S_ISDIR(info.st_mode) else "is not ours"
        raise PermissionError(13, f"{what} (uid {info.st_uid})", path)
    os.chmod(path, FALLBACK_MODE)
    return path


def prepare(config: Config) -> Config:
    """Make the run dir usable; the config, with the run dir actually used."""
    path = config.run_dir
    try:
        harden(path)
        if os.access(path, os.W_OK | os.X_OK):
            return config
        raise PermissionError(13, "not writable by overlayd", path)
    except OSError as exc:
        problem = exc
    uid = os.geteuid()
    explicit = bool(os.environ.get("OVERLAY_RUN_DIR"))
    if uid != 0 and not explicit and path == DEFAULT_RUN_DIR:
        try:
            fallback = _fallback(uid)
        except OSError as exc:
            tried = f"{path} ({problem.strerror}) nor {fallback_dir(uid)} ({exc.strerror})"
            raise RunDirError(
                problem.errno or 13,
                f"no usable run dir: neither {tried}; make /run writable for uid {uid} "
                "or set OVERLAY_RUN_DIR to a directory it may write",
            ) from None
        log.warn(f"{path} is not usable by uid {uid} ({problem.strerror}); using {fallback}")
        socket_path = config.socket_path
        if not os.environ.get("OVERLAY_SOCKET"):
            socket_path = os.path.join(fallback, "control.sock")
        return config._replace(run_dir=fallback, socket_path=socket_path)
    raise RunDirError(
        problem.errno or 13,
        f"run dir {path} is not usable ({problem.strerror}): make it writable for uid {uid} "
        "or set OVERLAY_RUN_DIR to a directory it may write",
    )
