"""Reading the small files of a service definition (timeouts, signals, fds, health settings,
s6-rc.d's `type`, `up`, dependency lists) the one way PID 1 may: never waiting. Also the check
that a file overlayd made on an earlier run is already the one it would make now (`holds`),
and the making of such a file, whole or not at all (`write_new`).

One open, one read, no buffered text layer. O_NONBLOCK: a FIFO planted where a file is
expected reads as empty instead of waiting for a writer, which would stop PID 1 (its signal
handlers only queue, so not even SIGTERM would end the wait).
"""

from __future__ import annotations

import os
import stat

#: What a one-line settings file may hold; more is not read.
SMALL = 4096


def read_small(path: str, limit: int = SMALL) -> bytes | None:
    """At most `limit` bytes of `path`; None when it does not exist. Other errors (a
    directory, no permission) are raised as OSError, for the caller to name the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, limit)
    except BlockingIOError:  # a FIFO whose writer has written nothing yet
        return b""
    finally:
        os.close(fd)


def read_text(path: str, limit: int = SMALL) -> str | None:
    """`read_small` as text (undecodable bytes replaced), stripped; None when absent."""
    data = read_small(path, limit)
    return None if data is None else data.decode("utf-8", "replace").strip()


def holds(name: str, data: bytes, mode: int, dir_fd: int | None = None) -> bool:
    """Is `name` a regular file of this process's user, with exactly `mode` and one link,
    holding exactly `data`? A symlink is not followed and a FIFO never waited on (False)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) != mode
                or info.st_uid != os.geteuid() or info.st_nlink != 1
                or info.st_size != len(data)):
            return False
        return os.read(fd, len(data) + 1) == data
    except OSError:
        return False
    finally:
        os.close(fd)


def write_new(name: str, data: bytes, mode: int, dir_fd: int | None = None) -> None:
    """Make `name` (which must not exist; a symlink is not followed) holding `data` whole, with
    `mode` as the umask leaves it; or raise OSError and leave nothing behind: a full disk never
    leaves a file half written. A short write is retried, so the error says why (ENOSPC…)."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode,
                 dir_fd=dir_fd)
    try:
        rest = memoryview(data)
        while rest:
            written = os.write(fd, rest)
            if not written:
                raise OSError("the file system took no more bytes")
            rest = rest[written:]
    except OSError:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
