"""The control socket's listening end: bound and listening in stage 1, served later.

Kept apart from rpc.py so that stage 1 pays only for `_socket` (the C module; `socket` would
bring `enum` and `selectors`): the protocol, msgpack and the handlers are imported when the
first client connects (stages.py watches the listening socket until then), never on the boot's
path. That client waits in the listen backlog meanwhile.
"""

from __future__ import annotations

import _socket
import errno
import os
import stat

from . import log

BACKLOG = 128


def _answers(path: str) -> bool:
    """Does a live server accept on ``path``? (non-blocking: a Unix connect never waits)"""
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK)
    try:
        probe.connect(path)
    except BlockingIOError:
        return True  # its backlog is full: very much alive
    except OSError:
        return False  # ECONNREFUSED: a stale file from a dead run
    finally:
        probe.close()
    return True


def _remove_stale(path: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise FileExistsError(errno.EEXIST, "the path exists and is not a socket", path)
    if _answers(path):
        raise OSError(errno.EADDRINUSE, "another server answers on it", path)
    os.unlink(path)


def open_listener(path: str, gid: int | None) -> _socket.socket:
    """Bind and listen on ``path``: mode 0600, or 0660 owned by group ``gid``.

    The socket is bound under a temporary name and renamed into place once it listens, so a
    client that sees the path never gets ECONNREFUSED, nor a socket with the wrong mode.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    _remove_stale(path)
    staging = path + "~"
    sock = _socket.socket(
        _socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC
    )
    try:
        sock.setblocking(False)
        try:
            os.unlink(staging)
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)  # born 0600: never briefly open to everyone
        try:
            sock.bind(staging)
        finally:
            os.umask(old_umask)
        try:
            if gid is not None:
                try:
                    os.chown(staging, -1, gid)
                    os.chmod(staging, 0o660)
                except OSError as exc:
                    log.error(
                        f"cannot give {path} to group {gid}: {exc.strerror}; keeping mode 0600"
                    )
            sock.listen(max(BACKLOG, _socket.SOMAXCONN))
            os.rename(staging, path)
        except BaseException:
            os.unlink(staging)
            raise
    except BaseException:
        sock.close()
        raise
    return sock

