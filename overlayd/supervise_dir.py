"""s6-supervise's on-disk interface for one live service directory, so s6's own tools work.

overlayd does not run s6-supervise; it presents what s6-supervise presents, and the real
`s6-svc`, `s6-svstat`, `s6-svwait`, `s6-svlisten1` and `s6-svok` work unmodified. The format was
verified against Debian's s6 2.11.3.2 (a real s6-svscan on a scratch dir, status hexdumps in
every state, strace of each tool):

supervise/lock   `s6-svok` opens it O_RDONLY and asks fcntl(F_GETLK, F_WRLCK): the directory is
                 supervised when some process holds a POSIX write lock on it. PID 1 holds one.
supervise/control  FIFO 0600. `s6-svc -X` opens it O_WRONLY|O_NONBLOCK and writes one byte per
                 command (ENXIO, no reader: "supervisor not listening", exit 100 on 2.11, 102 on
                 2.15). overlayd keeps it open O_RDWR: always a reader, so the FIFO never reads
                 EOF and the loop never spins after a writer closes.
supervise/status 35 bytes, rewritten (write + rename, never torn) on every change:
                   0-11  TAI64N of the last up/down change: 2^62 + 37 + unix seconds, then
                         nanoseconds (skalibs counts TAI: 10 s + the 27 leap seconds to date;
                         with +10 only, s6-svstat said "up 27 seconds" at once)
                   12-23 TAI64N of the last readiness change
                   24-31 pid, big-endian u64 (0 when not running)
                   32-33 wait status of the last death, big-endian u16 (code<<8 | signal)
                   34    flags: 1 paused, 2 finishing, 4 want up, 8 ready
                 Observed: up without notification-fd 0x04; up and ready 0x0c; never started
                 with `down` 0x08 (pid 0, wstat 0, both stamps equal); finish running 0x02;
                 down after `-d` 0x08 with wstat 0x000f (SIGTERM); down after exit 3, 0x0300;
                 waiting out the 1 s throttle 0x0c; paused (`-p`) adds 0x01. s6 ≥ 2.12 uses a
                 43-byte layout (pgid after pid); 2.11's readers are what Debian ships.
event/           a fifodir, mode 03730. A listener (s6-ftrigrd) makes a FIFO named
                 `ftrig1:@` + 24 hex digits + `:` + 6 characters (39 in all) and reads it; the
                 supervisor opens each such FIFO O_WRONLY|O_NONBLOCK, writes the event byte and
                 closes it, unlinking it on ENXIO or EPIPE (its listener is gone). Events seen:
                 `-o` on a down service `u d D`; `-k` without finish `d D u`; `-d` `d`, then `D`
                 once finish ends; readiness `U`; exit 125 from finish `O D`; supervisor start
                 `s`, exit `x`.

PID 1 holds two fds per service (control and lock); event FIFOs are opened for one write.
"""

from __future__ import annotations

import _signal
import errno
import os
import stat
import time

from . import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .loop import Loop
    from .service import Service

STATUS_SIZE = 35
TAI_OFFSET = (1 << 62) + 10 + 27  # TAI - UTC has been 37 s since 2017
FIFODIR_MODE = 0o3730
READ_CHUNK = 256  # control bytes handled per wake-up; more wake the loop again
_EVENT_NAME_LENGTH = 39
_EVENT_PREFIX = "ftrig1:@"

# s6-svc's letters that send a signal to the service's process (ignored while it is down).
PROCESS_SIGNALS = {
    ord("a"): _signal.SIGALRM,
    ord("b"): _signal.SIGABRT,
    ord("q"): _signal.SIGQUIT,
    ord("h"): _signal.SIGHUP,
    ord("k"): _signal.SIGKILL,
    ord("t"): _signal.SIGTERM,
    ord("i"): _signal.SIGINT,
    ord("1"): _signal.SIGUSR1,
    ord("2"): _signal.SIGUSR2,
    ord("p"): _signal.SIGSTOP,
    ord("c"): _signal.SIGCONT,
    ord("y"): _signal.SIGWINCH,
    ord("l"): _signal.SIGHUP,  # s6 2.15's reload; the default reload-signal is SIGHUP
}
# ... and the ones that signal its whole process group.
GROUP_SIGNALS = {ord("P"): _signal.SIGSTOP, ord("C"): _signal.SIGCONT, ord("K"): _signal.SIGKILL}


def tai64n(epoch: float) -> bytes:
    """A 12-byte TAI64N label, as skalibs packs it."""
    seconds = int(epoch)
    nanos = int((epoch - seconds) * 1e9)
    return (TAI_OFFSET + seconds).to_bytes(8, "big") + min(nanos, 999_999_999).to_bytes(4, "big")


def pack_status(
    stamp: float, readystamp: float, pid: int, wstat: int, flags: int
) -> bytes:
    """The 35-byte supervise/status image s6 2.11's tools read."""
    return (
        tai64n(stamp)
        + tai64n(readystamp)
        + pid.to_bytes(8, "big")
        + (wstat & 0xFFFF).to_bytes(2, "big")
        + bytes((flags,))
    )


def wait_status(last_exit: tuple[int | None, int | None, float] | None) -> int:
    """A Linux wait status for the last death: code << 8, or the signal number."""
    if last_exit is None:
        return 0
    code, signum, _ = last_exit
    if signum:
        return signum & 0x7F
    return ((code or 0) & 0xFF) << 8


def notify_fifodir(directory: str, events: str) -> int:
    """Write `events` to every listener FIFO in the fifodir; returns how many were reached."""
    data = events.encode("ascii")
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    reached = 0
    for name in names:
        if len(name) != _EVENT_NAME_LENGTH or not name.startswith(_EVENT_PREFIX):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nobody reads it any more: a stale listener
                _unlink(path)
            continue
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue  # a file posing as a listener gets nothing written into it
            os.write(fd, data)
            reached += 1
        except BrokenPipeError:
            _unlink(path)
        except OSError:
            pass  # full FIFO: the listener is not reading; never block PID 1 for it
        finally:
            os.close(fd)
    return reached


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class SuperviseDir:
    """supervise/ and event/ of one live service directory, kept in step with its Service."""

    def __init__(self, service: Service, live_dir: str, loop: Loop) -> None:
        self.service = service
        self.live_dir = live_dir
        self.loop = loop
        self.supervise = os.path.join(live_dir, "supervise")
        self.event_dir = os.path.join(live_dir, "event")
        self.control_fd: int | None = None
        self.lock_fd: int | None = None
        self._identity: tuple[int, int] | None = None
        now = time.time()
        self.stamp = now
        self.readystamp = now
        self.paused = False
        self.ignored_bytes = 0
        self._last = self._snapshot()

    # --- the directory ---------------------------------------------------------------------
    def open(self) -> None:
        """Make supervise/ (control FIFO, lock, status) and event/, then announce `s`."""
        self._make()
        self.write_status()
        notify_fifodir(self.event_dir, "s")

    def _make(self) -> None:
        os.makedirs(self.supervise, mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.event_dir)
        except FileExistsError:
            pass
        os.chmod(self.event_dir, FIFODIR_MODE)
        control = os.path.join(self.supervise, "control")
        if not _is_fifo(control):
            _unlink(control)
            os.mkfifo(control, 0o600)
        self.control_fd = os.open(control, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.lock_fd = os.open(
            os.path.join(self.supervise, "lock"),
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
            0o644,
        )
        try:
            os.lockf(self.lock_fd, os.F_TLOCK, 0)  # a POSIX record lock, as s6-svok tests
        except OSError as exc:
            log.warn(f"{self.supervise}/lock: cannot lock it ({exc.strerror}); s6-svok says no")
        self.loop.add_reader(self.control_fd, self._on_control)
        st = os.stat(self.supervise)
        self._identity = (st.st_dev, st.st_ino)

    def close(self, announce: bool = True) -> None:
        """Let go of both fds (overlayd exiting, or the directory replaced); `x` to listeners."""
        if self.control_fd is not None:
            self.loop.remove_reader(self.control_fd)
            os.close(self.control_fd)
            self.control_fd = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        if announce:
            notify_fifodir(self.event_dir, "x")

    def _intact(self) -> bool:
        """Is supervise/ still the directory we made, with our control FIFO in it?"""
        try:
            st = os.stat(self.supervise)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity and _is_fifo(
            os.path.join(self.supervise, "control")
        )

    def _ensure(self) -> None:
        if self.control_fd is not None and self._intact():
            return
        log.warn(f"{self.supervise} was removed or replaced; making it again")
        self.close(announce=False)
        self._make()

    # --- status and events -----------------------------------------------------------------
    def _snapshot(self) -> tuple[int | None, bool, bool, bool]:
        s = self.service
        ready_up = s.pid is not None and s.ready and s.definition.notification_fd is not None
        return s.pid, s.state == "finishing", ready_up, s.state == "failed"

    def changed(self) -> None:
        """The service changed state: events to listeners, then the new status."""
        try:
            self._ensure()
        except OSError as exc:
            log.warn(f"{self.supervise}: cannot make it again: {exc.strerror}")
            return
        old_pid, old_finishing, old_ready, old_failed = self._last
        self._last = pid, finishing, ready, failed = self._snapshot()
        now = time.time()
        events = ""
        if old_pid is not None and pid != old_pid:
            events += "d"
            self.stamp = now
            self.paused = False
        was_dying = old_finishing or (old_pid is not None and pid != old_pid)
        if was_dying and not finishing:
            if failed and not old_failed:
                events += "O"
            events += "D"
            self.readystamp = now
        if pid is not None and pid != old_pid:
            events += "u"
            self.stamp = now
        if ready and not old_ready:
            events += "U"
            self.readystamp = now
        self.write_status()
        if events:
            notify_fifodir(self.event_dir, events)

    def status_bytes(self) -> bytes:
        s = self.service
        pid, finishing, ready_up, _ = self._last
        running = pid is not None
        ready = ready_up if running else not finishing
        flags = (
            (1 if self.paused and running else 0)
            | (2 if finishing else 0)
            | (4 if s.want == "up" else 0)
            | (8 if ready else 0)
        )
        return pack_status(self.stamp, self.readystamp, pid or 0, wait_status(s.last_exit), flags)

    def write_status(self) -> None:
        """Write status.new, then rename it over status: a reader sees old or new, never torn."""
        target = os.path.join(self.supervise, "status")
        temporary = target + ".new"
        try:
            fd = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o644,
            )
            try:
                os.write(fd, self.status_bytes())
            finally:
                os.close(fd)
            os.rename(temporary, target)
        except OSError as exc:
            log.warn(f"{target}: cannot write it: {exc.strerror}")

    # --- control ---------------------------------------------------------------------------
    def _on_control(self) -> None:
        fd = self.control_fd
        if fd is None:
            return
        try:
            data = os.read(fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        unknown = 0
        for byte in data:
            if not self.command(byte):
                unknown += 1
        if unknown:
            self.ignored_bytes += unknown
            log.warn(
                f"service {self.service.name}: ignored {unknown} unknown byte(s) written to "
                f"supervise/control ({self.ignored_bytes} so far)"
            )
        self.changed()  # the paused flag or the down file may have changed without a state

    def command(self, byte: int) -> bool:
        """Act on one s6-svc byte; False when it is not one."""
        s = self.service
        if byte in PROCESS_SIGNALS:
            if s.pid is not None and s.state != "finishing":
                s.send_signal(PROCESS_SIGNALS[byte])
                if byte == ord("p"):
                    self.paused = True
                elif byte == ord("c"):
                    self.paused = False
        elif byte in GROUP_SIGNALS:
            if s.pid is not None and s.pgid is not None:
                try:
                    os.killpg(s.pgid, GROUP_SIGNALS[byte])
                except OSError:
                    pass
        elif byte in (ord("u"), ord("U")):
            if byte == ord("U"):
                _unlink(os.path.join(self.live_dir, "down"))
            s.start()
        elif byte in (ord("d"), ord("D")):
            if byte == ord("D"):
                self._mark_down()
            s.stop()
        elif byte == ord("o"):
            s.once()
        elif byte in (ord("O"), ord("Q")):
            if byte == ord("Q"):
                self._mark_down()
            if s.state not in ("down", "failed"):
                s.once()  # running: not restarted after it exits; down: stays down
        elif byte == ord("r"):
            if s.pid is not None and s.state != "stopping":
                s.restart()
        elif byte == ord("x"):
            pass  # s6-supervise would exit once down; PID 1 keeps supervising
        else:
            return False
        return True

    def _mark_down(self) -> None:
        path = os.path.join(self.live_dir, "down")
        if not os.path.lexists(path):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            except OSError as exc:
                log.warn(f"{path}: cannot create it: {exc.strerror}")


def _is_fifo(path: str) -> bool:
    try:
        return stat.S_ISFIFO(os.lstat(path).st_mode)
    except OSError:
        return False
