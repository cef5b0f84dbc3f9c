"""The container environment: saved at boot into a directory, read back for every child.

`container_environment/` holds one file per variable, the value as its content. It may hold
secrets, so the directory is 0700 and each file 0600. Every process overlayd starts gets the
directory's content as it stands at that moment, so a cont-init script that writes a file there
reaches every later process. One trailing newline is dropped, so `echo v > X` works; an empty
file is an empty variable (s6-overlay drops those).

This module is also `with-contenv CMD…`, for shebangs written for s6-overlay.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping

DEFAULT_RUN_DIR = "/run/overlay"
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def env_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "container_environment")


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and "=" not in name and name not in (".", "..")


def save(directory: str, environ: Mapping[str, str]) -> None:
    """Write `environ` into `directory`, replacing whatever an earlier run left there."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    for stale in os.listdir(directory):
        path = os.path.join(directory, stale)
        if os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)
    for name, value in environ.items():
        if not _valid_name(name):
            continue
        fd = os.open(
            os.path.join(directory, name),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o600,
        )
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, value.encode("utf-8", "surrogateescape"))
        finally:
            os.close(fd)


def load(directory: str) -> dict[str, str]:
    """Read the directory back into a mapping; unreadable entries are skipped."""
    environ: dict[str, str] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return environ
    for name in names:
        if name.startswith(".") or not _valid_name(name):
            continue
        try:  # never wait on a FIFO or a device someone put there: regular files only
            fd = os.open(os.path.join(directory, name), _READ_FLAGS)
            with open(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                data = handle.read()
        except OSError:
            continue
        if data.endswith(b"\n"):
            data = data[:-1]
        if b"\0" in data:
            continue
        environ[name] = data.decode("utf-8", "surrogateescape")
    return environ


def child_environment(run_dir: str, keep_env: bool) -> dict[str, str]:
    """The environment a child of overlayd starts with."""
    if keep_env:
        return dict(os.environ)
    saved = load(env_dir(run_dir))
    return saved if saved else dict(os.environ)


def with_contenv_main() -> None:
    """`with-contenv CMD [ARG...]`: exec CMD with the saved container environment."""
    args = sys.argv[1:]
    if not args:
        sys.stderr.write("usage: with-contenv PROGRAM [ARG...]\n")
        raise SystemExit(100)
    run_dir = os.environ.get("OVERLAY_RUN_DIR") or DEFAULT_RUN_DIR
    keep = os.environ.get("S6_KEEP_ENV", "0") not in ("", "0")
    environ = child_environment(run_dir, keep)
    import signal

    for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignored these; give them back
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvpe(args[0], args, environ)
    except OSError as exc:
        sys.stderr.write(f"with-contenv: cannot run {args[0]!r}: {exc.strerror}\n")
        raise SystemExit(127 if isinstance(exc, FileNotFoundError) else 126) from None
