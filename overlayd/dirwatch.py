"""Has anything in a directory changed since the last look? inotify says, without a scan.

Used for large environment stores (thousands of files), where even a stat of every file at
each spawn would stall PID 1. Not for small ones: a watch costs ~2 ms to add and 5-14 ms to
tear down at exit here (the kernel waits out a grace period), the price of reading some 300
small files. One non-blocking inotify descriptor per watched directory; a look is one read()
that finds nothing when nothing changed. Anything unexpected (no inotify, the
directory replaced, the event queue overflowed) answers "changed", and the caller scans.
The C library is called through clib.py (`_ctypes`, not the 4 ms `ctypes`).
"""

from __future__ import annotations

import os
import sys

# <sys/inotify.h>
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_IN_Q_OVERFLOW, _IN_IGNORED = 0x4000, 0x8000
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000
_WATCHED = (
    _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
    | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR | _IN_DONT_FOLLOW
)
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_Q_OVERFLOW | _IN_IGNORED
# struct inotify_event: int wd; uint32 mask, cookie, len; then len bytes of name (native order)
_EVENT_SIZE = 16


class DirWatch:
    """An inotify watch on one directory; ``changed()`` drains and reports its events."""

    __slots__ = ("_fd",)

    def __init__(self, path: str) -> None:
        """Raises OSError when inotify is unavailable or the path cannot be watched."""
        from . import clib

        init, add_watch = clib.function("inotify_init1"), clib.function("inotify_add_watch")
        if init is None or add_watch is None:
            raise OSError(0, "this C library has no inotify")
        fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(clib.errno(), "inotify_init1")
        if add_watch(fd, os.fsencode(path), _WATCHED) < 0:
            err = clib.errno()
            os.close(fd)
            raise OSError(err, "inotify_add_watch", path)
        self._fd = fd

    @property
    def alive(self) -> bool:
        """False once the watch can no longer tell (see ``changed``)."""
        return self._fd >= 0

    def changed(self) -> bool:
        """Did anything happen since the last call? Drains the queue.

        When the directory itself went away or events were lost, the watch closes itself
        (``alive`` turns False) and answers True.
        """
        if self._fd < 0:
            return True
        seen = False
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return seen
            except OSError:
                self.close()
                return True
            if not data:
                return seen
            seen = True
            offset = 0
            while offset + _EVENT_SIZE <= len(data):
                mask = int.from_bytes(data[offset + 4 : offset + 8], sys.byteorder)
                length = int.from_bytes(data[offset + 12 : offset + 16], sys.byteorder)
                if mask & _GONE:
                    self.close()
                    return True
                offset += _EVENT_SIZE + length

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
