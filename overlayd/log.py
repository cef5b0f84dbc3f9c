"""Log lines on overlayd's stderr, prefixed `[overlayd]`, never blocking PID 1.

S6_VERBOSITY picks how much is said: 0 nothing, 1 warnings and errors, 2 (default) the boot and
shutdown steps, 3+ debug lines too.

The container's log reader may stall (a full `docker logs` pipe, a stopped terminal): a
blocking write would then stop PID 1 — no reaping, no `docker stop`. So overlayd writes its own
lines through a non-blocking descriptor of its own: a pipe, FIFO or terminal on fd 2 is
reopened through /proc/self/fd/2 with O_NONBLOCK (a new open file description: the children
keep the blocking one they inherit). Anything else (a socket, or when reopening is refused) is
written only as far as poll() says it is writable, at most PIPE_BUF bytes at a time; a regular
file is written directly. What cannot go out now waits in a buffer of ``BUFFER_LIMIT`` bytes,
sent when the descriptor is writable again (the loop watches it once ``attach`` gave it one);
a line that does not fit is dropped and counted, and the count is reported as a line of its
own once the buffer has drained. At exit the buffer gets ``EXIT_DEADLINE`` seconds, no more.
"""

from __future__ import annotations

import atexit
import os
import select
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .loop import Loop

PREFIX = "[overlayd] "
#: Bytes of log lines held while stderr is not writable; lines beyond are dropped and counted.
BUFFER_LIMIT = 64 << 10
#: Seconds the buffer gets to drain when overlayd exits.
EXIT_DEADLINE = 1.0
_CHUNK = select.PIPE_BUF  # a polled write this small never blocks once POLLOUT is reported

_DIRECT, _NONBLOCKING, _POLLED = "direct", "non-blocking", "polled"

_verbosity = 2
_fd = -1  # where lines go; -1 until the first line
_mode = _DIRECT
_pending = bytearray()  # unsent bytes, whole lines (plus the rest of one half-sent line)
_dropped = 0  # lines dropped since the last report
_loop: Loop | None = None
_watching = False


def set_verbosity(level: int) -> None:
    """Set how much is logged (S6_VERBOSITY)."""
    global _verbosity
    _verbosity = level


def attach(loop: Loop) -> None:
    """Let the log flush its buffer from ``loop`` when stderr becomes writable again."""
    global _loop
    _loop = loop
    if _pending:
        _watch()


def _open() -> None:
    """Pick the descriptor and the way to write to it (see the module docstring)."""
    global _fd, _mode
    _fd, _mode = 2, _POLLED
    try:
        kind = os.fstat(2).st_mode
    except OSError:
        _mode = _DIRECT  # no stderr: every write fails at once, and is dropped
        return
    if stat.S_ISREG(kind) or stat.S_ISBLK(kind):
        _mode = _DIRECT
        return
    if stat.S_ISFIFO(kind) or stat.S_ISCHR(kind):
        try:
            _fd = os.open(
                "/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
            )
            _mode = _NONBLOCKING
        except OSError:
            pass  # no /proc, not ours to reopen, no reader: polled writes on fd 2


def _send(data: bytes | bytearray) -> int:
    """Write what can go out now without blocking; the number of bytes written.

    An error other than "would block" (reader gone, disk full) counts as written: the bytes
    are lost, and PID 1 must not die or stall over its own log.
    """
    done = 0
    view = memoryview(data)
    while done < len(view):
        try:
            if _mode == _POLLED:
                if not select.select([], [_fd], [], 0)[1]:
                    break
                done += os.write(_fd, view[done : done + _CHUNK])
            else:
                done += os.write(_fd, view[done:])
        except InterruptedError:
            continue
        except BlockingIOError:
            break
        except OSError:
            return len(view)
    return done


def _flush() -> None:
    """Send what the buffer holds; once empty, report the lines dropped meanwhile."""
    global _dropped
    while True:
        if _pending:
            del _pending[: _send(_pending)]
            if _pending:
                _watch()
                return
        if not _dropped:
            break
        count, _dropped = _dropped, 0
        _pending.extend(
            f"{PREFIX}warning: {count} log line(s) dropped: stderr was not being read\n".encode()
        )
    _unwatch()


def _watch() -> None:
    global _watching
    if _loop is None or _watching or _mode == _DIRECT:
        return
    try:
        _loop.add_writer(_fd, _flush)
        _watching = True
    except (OSError, ValueError):
        pass  # not pollable: the next line or exit flushes instead


def _unwatch() -> None:
    global _watching
    if _watching and _loop is not None:
        _watching = False
        _loop.remove_writer(_fd)


def _write(text: str) -> None:
    global _dropped
    data = text.encode("utf-8", "backslashreplace")
    if _fd < 0:
        _open()
    if _pending:
        _flush()
    if not _pending:
        sent = _send(data)
        if sent == len(data):
            return
        _pending.extend(memoryview(data)[sent:])  # the rest of a started line always fits
    elif len(_pending) + len(data) <= BUFFER_LIMIT:
        _pending.extend(data)
    else:
        _dropped += 1
    _watch()


def drain_at_exit() -> None:
    """Give the buffer ``EXIT_DEADLINE`` seconds to drain, then give up on it."""
    import time

    deadline = time.monotonic() + EXIT_DEADLINE
    while _pending or _dropped:
        _flush()
        left = deadline - time.monotonic()
        if not _pending or left <= 0:
            break
        try:
            select.select([], [_fd], [], left)
        except (OSError, ValueError):
            break


def _forget_in_child() -> None:
    """A forked child must not repeat overlayd's buffered lines, nor flush them at its exit."""
    global _dropped, _loop, _watching
    _pending.clear()
    _dropped = 0
    _loop = None
    _watching = False


atexit.register(drain_at_exit)
os.register_at_fork(after_in_child=_forget_in_child)


def info(message: str) -> None:
    """A step of the boot or shutdown sequence."""
    if _verbosity >= 2:
        _write(PREFIX + message + "\n")


def warn(message: str) -> None:
    """Something went wrong but overlayd carries on."""
    if _verbosity >= 1:
        _write(PREFIX + "warning: " + message + "\n")


def error(message: str) -> None:
    """Something failed; the caller decides what happens next."""
    if _verbosity >= 1:
        _write(PREFIX + "error: " + message + "\n")


def debug(message: str) -> None:
    """Detail that only S6_VERBOSITY>=3 wants."""
    if _verbosity >= 3:
        _write(PREFIX + "debug: " + message + "\n")


def fatal(message: str) -> None:
    """overlayd cannot go on; always printed, even at S6_VERBOSITY=0."""
    _write(PREFIX + "fatal: " + message + "\n")


def exception(message: str) -> None:
    """A bug caught at the loop's edge: the message and the traceback, then carry on."""
    import traceback

    _write(PREFIX + "error: " + message + "\n" + traceback.format_exc())


def reopen() -> None:
    """fd 2 now points elsewhere (the catch-all took it, or gave the console back).

    What can go out now goes to the old place; then our own non-blocking descriptor of it is
    let go (holding it would keep the catch-all's pipe open, so s6-log would never see EOF),
    and the next line picks a descriptor for the new fd 2. Lines still pending go there.
    """
    global _fd, _mode
    if _fd < 0:
        return
    if _pending:
        del _pending[: _send(_pending)]
    _unwatch()
    if _fd != 2:
        try:
            os.close(_fd)
        except OSError:
            pass
    _fd, _mode = -1, _DIRECT
    if _pending:
        _open()
        _flush()

