"""The scan directory's `.s6-svscan/control` FIFO, so `s6-svscanctl` works against overlayd.

Verified with Debian's s6 2.11: `s6-svscanctl -X DIR` opens `DIR/.s6-svscan/control`
O_WRONLY|O_NONBLOCK and writes its letters (ENXIO, no reader: exit 100, "supervisor not
listening"). overlayd reads them like s6-svscan does:

    a, h, n, N   rescan services.d (new directories start, vanished ones stop)
    t, i, q, b   stop the container (stage 3); the exit code follows DESIGN §11's precedence,
                 so a v2 finish script writing S6_STAGE2_EXITED first sets it
    z            nothing: overlayd reaps on every SIGCHLD already

Anything else is ignored with a counted warning. The FIFO is held O_RDWR (never EOF, no spin);
`.s6-svscan/lock` is held with a POSIX write lock, as s6-svscan holds it.
"""

from __future__ import annotations

import os
import stat

from . import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .loop import Loop

READ_CHUNK = 64
RESCAN = frozenset(b"ahnN")
TERMINATE = frozenset(b"tiqb")
NOTHING = frozenset(b"z")


class SvscanControl:
    """Reads `.s6-svscan/control` in `scan_dir` and calls `rescan` or `terminate`."""

    def __init__(
        self,
        scan_dir: str,
        loop: Loop,
        rescan: Callable[[], None],
        terminate: Callable[[str], None],
    ) -> None:
        self.dir = os.path.join(scan_dir, ".s6-svscan")
        self.loop = loop
        self.rescan = rescan
        self.terminate = terminate
        self.fd: int | None = None
        self.lock_fd: int | None = None
        self.ignored_bytes = 0

    def open(self) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        control = os.path.join(self.dir, "control")
        try:
            is_fifo = stat.S_ISFIFO(os.lstat(control).st_mode)
        except FileNotFoundError:
            is_fifo = False
        if not is_fifo:
            if os.path.lexists(control):
                os.unlink(control)
            os.mkfifo(control, 0o600)
        self.fd = os.open(control, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.lock_fd = os.open(
            os.path.join(self.dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            os.lockf(self.lock_fd, os.F_TLOCK, 0)
        except OSError:
            pass
        self.loop.add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        if self.fd is None:
            return
        try:
            data = os.read(self.fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        letters = set(data)
        unknown = sum(1 for byte in data if byte not in RESCAN | TERMINATE | NOTHING)
        if unknown:
            self.ignored_bytes += unknown
            log.warn(
                f"{self.dir}/control: ignored {unknown} unknown byte(s) "
                f"({self.ignored_bytes} so far)"
            )
        if letters & TERMINATE:
            self.terminate("s6-svscanctl asked the scan directory to stop")
        elif letters & RESCAN:
            self.rescan()
