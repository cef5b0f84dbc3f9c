"""Per-service line prefixes on the container's output (`OVERLAY_LOG_PREFIX=1`).

Each service gets two pipes that overlayd holds for the container's life (a restart of the
service loses nothing): its stdout and its stderr. overlayd reads them and writes whole lines
`NAME | text` to its own stdout and stderr respectively (`OVERLAY_LOG_TIMESTAMPS=1` puts an
ISO 8601 UTC time first: `2026-12-01T16:55:00.123Z NAME | text`). With the option off none of
this exists: children inherit the container's output directly, zero copies.

Guarantees, and the bound on each buffer PID 1 keeps:

- A line written out is never cut by another writer: every line, prefix and newline included,
  is at most LINE_MAX = 4096 bytes (PIPE_BUF), and every write is a run of whole lines of at
  most that size, so on a pipe each write is atomic (a longer line is split, each piece
  prefixed). The same holds against the CMD and anything else sharing the container's output.
- A partial line waits at most PARTIAL_DELAY (2 s) for its newline, then is written as a line.
  Per pipe at most LINE_MAX bytes of partial line are held.
- Output that cannot be written at once (the container's output is slow or stalled) is queued;
  when more than OUT_HIGH (256 KiB) waits on one output, every pipe feeding that output stops
  being read, so the services block on their own full pipes: nothing is dropped, nothing
  grows. One read may land above the mark: at most OUT_HIGH + READ_SIZE * (1 + prefix length).
- The last RING_BYTES (64 KiB) of each service's prefixed output are kept for
  `overlayctl logs`.

The writes go to a second open file description of the container's output opened
non-blocking (through /proc/self/fd), so PID 1 never sleeps on a stalled reader while the
children, which share the original description, keep their ordinary blocking writes.
"""

from __future__ import annotations

import os
import stat
import time
from _collections import deque

from . import log
from .loop import Future, Loop, Timer

LINE_MAX = 4096
PARTIAL_DELAY = 2.0
OUT_HIGH = 256 * 1024
READ_SIZE = 64 * 1024
RING_BYTES = 64 * 1024
DRAIN_SECONDS = 5.0  # at exit: how long queued output may take to be written out


def open_nonblocking_twin(fd: int) -> int:
    """A non-blocking, close-on-exec descriptor writing where `fd` writes.

    For a pipe or a terminal, a new open file description (so O_NONBLOCK does not leak into
    the children that share `fd`'s description). For anything else (a regular file,
    /dev/null), a plain duplicate: writes there do not wait for a reader.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | os.O_APPEND
        try:
            return os.open(f"/proc/self/fd/{fd}", flags)
        except OSError:
            pass  # a socket, or no /proc: fall back to a duplicate
    return os.dup(fd)


def _timestamp() -> bytes:
    now = time.time()
    whole = int(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)).encode() + b".%03dZ " % int(
        (now - whole) * 1000
    )


class Output:
    """One of the container's outputs (stdout or stderr), written without ever blocking."""

    def __init__(self, loop: Loop, fd: int) -> None:
        self.loop = loop
        self.fd = open_nonblocking_twin(fd)
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.feeds: list[Feed] = []
        self.paused = False
        self.broken = False
        self._drained: list[Future] = []

    def write(self, data: bytes) -> None:
        """Queue whole lines; written as soon as the output takes them."""
        if self.broken:
            return
        if not self.queue:
            data = self._write_now(data)
            if not data:
                return
            self.loop.add_writer(self.fd, self._on_writable)
        self.queue.append(data)
        self.queued += len(data)
        if self.queued >= OUT_HIGH and not self.paused:
            self.paused = True
            for feed in self.feeds:
                feed.pause()

    def _write_now(self, data: bytes) -> bytes:
        """Write whole lines, at most LINE_MAX bytes per call; return what is left."""
        view = memoryview(data)
        start, end = 0, len(data)
        while start < end:
            stop = end
            if end - start > LINE_MAX:
                stop = data.rfind(b"\n", start, start + LINE_MAX) + 1
                if stop <= start:  # not ours (we never make such lines): write what fits
                    stop = start + LINE_MAX
            try:
                written = os.write(self.fd, view[start:stop])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._break(exc)
                return b""
            start += written
            if start < stop:
                break  # a terminal or file took part of it: the rest waits for writability
        return data[start:] if start else data

    def _on_writable(self) -> None:
        while self.queue:
            chunk = self.queue.popleft()
            self.queued -= len(chunk)
            rest = self._write_now(chunk)
            if rest:
                self.queue.appendleft(rest)
                self.queued += len(rest)
                return
            if self.broken:
                return
        self.loop.remove_writer(self.fd)
        self._resume_feeds()
        waiters, self._drained = self._drained, []
        for future in waiters:
            future.set_result(True)

    def _resume_feeds(self) -> None:
        if self.paused:
            self.paused = False
            for feed in self.feeds:
                feed.resume()

    def _break(self, exc: OSError) -> None:
        """The output is gone (EPIPE, EBADF): say so once, keep the services running."""
        self.broken = True
        self.queue.clear()
        self.queued = 0
        try:
            self.loop.remove_writer(self.fd)
        except (KeyError, ValueError, OSError):
            pass
        log.warn(f"the container's output is gone ({exc.strerror}); service output is discarded")
        self._resume_feeds()
        waiters, self._drained = self._drained, []
        for future in waiters:
            future.set_result(False)

    def drained(self) -> Future:
        """A Future resolved once nothing is queued."""
        future = Future()
        if not self.queue:
            future.set_result(True)
        else:
            self._drained.append(future)
        return future


class Ring:
    """The last RING_BYTES of one service's prefixed output, and a count of every line."""

    __slots__ = ("chunks", "lines", "size")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.lines = 0  # lines ever added: the cursor `overlayctl logs -f` follows

    def add(self, data: bytes, count: int) -> None:
        """Keep `data` (`count` whole lines), dropping the oldest beyond RING_BYTES."""
        self.lines += count
        if len(data) > RING_BYTES:
            data = data[data.find(b"\n", len(data) - RING_BYTES) + 1 :]
            self.chunks.clear()
            self.size = 0
        self.chunks.append(data)
        self.size += len(data)
        while self.size > RING_BYTES:
            self.size -= len(self.chunks.popleft())

    def tail(self, limit: int, after: int | None = None) -> tuple[list[str], int]:
        """The last `limit` lines (only those past cursor `after`, if given); the new cursor."""
        lines = b"".join(self.chunks).split(b"\n")[:-1]
        if after is not None:
            new = self.lines - after
            lines = lines[len(lines) - min(max(new, 0), len(lines)) :]
        if limit >= 0:
            lines = lines[len(lines) - min(limit, len(lines)) :]
        return [line.decode("utf-8", "replace") for line in lines], self.lines


class Feed:
    """One pipe from a service (its stdout or its stderr) to one Output."""

    def __init__(self, mux: LineMux, name: str, output: Output, ring: Ring) -> None:
        self.mux = mux
        self.name = name.encode("utf-8", "backslashreplace")
        self.output = output
        self.ring = ring
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_end, False)
        self.partial = b""
        self.timer: Timer | None = None
        self.closed = False
        self.reading = False
        # The longest text a line may carry once the prefix and newline are added.
        self.text_max = max(16, LINE_MAX - len(self._prefix()) - 1)
        output.feeds.append(self)
        if not output.paused:
            self.resume()

    def _prefix(self) -> bytes:
        stamp = _timestamp() if self.mux.timestamps else b""
        return stamp + self.name + b" | "

    def pause(self) -> None:
        if self.reading:
            self.reading = False
            self.mux.loop.remove_reader(self.read_end)

    def resume(self) -> None:
        if not self.reading and not self.closed:
            self.reading = True
            self.mux.loop.add_reader(self.read_end, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.read_end, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # cannot happen on a pipe we made; never spin on it if it does
            log.error(f"reading {self.name.decode(errors='replace')}'s output: {exc.strerror}")
            data = b""
        if not data:
            self.pause()
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        if self.partial:
            data = self.partial + data
            self.partial = b""
        cut = data.rfind(b"\n")
        if cut >= 0:
            self._emit(data[:cut])
            data = data[cut + 1 :]
        while len(data) >= self.text_max:  # no newline in sight: split at the cap
            self._emit(data[: self.text_max])
            data = data[self.text_max :]
        self.partial = data
        if data and self.timer is None:
            self.timer = self.mux.loop.call_later(PARTIAL_DELAY, self._partial_due)
        elif not data and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _partial_due(self) -> None:
        self.timer = None
        if self.partial:
            text, self.partial = self.partial, b""
            self._emit(text)

    def _emit(self, text: bytes) -> None:
        """Write `text` (lines joined by newlines, no final newline) prefixed, line by line."""
        limit = self.text_max
        if len(text) > limit and _may_have_long_line(text, limit):
            text = b"\n".join(_split_long(text.split(b"\n"), limit))
        prefix = self._prefix()
        data = prefix + text.replace(b"\n", b"\n" + prefix) + b"\n"
        # Each line added one prefix and the text one newline fewer than lines: no count().
        self.ring.add(data, (len(data) - len(text) - 1) // len(prefix))
        self.output.write(data)

    def close(self) -> None:
        """Stop: close our write end, take what is still in the pipe, flush the partial line."""
        if self.closed:
            return
        if self.write_end >= 0:
            os.close(self.write_end)
            self.write_end = -1
        while True:
            try:
                data = os.read(self.read_end, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            self._take(data)
        if self.timer is not None:
            self.timer.cancel()
        self._partial_due()
        self.pause()
        self.closed = True
        os.close(self.read_end)
        self.output.feeds.remove(self)


def _may_have_long_line(text: bytes, limit: int) -> bool:
    """False when no line of `text` is longer than `limit`; True when one may be.

    A run of more than `limit` bytes without a newline covers a whole aligned window of
    (limit + 1) // 2 bytes, so a newline found in every window rules it out: a few find()
    calls per read instead of splitting it into lines.
    """
    window = (limit + 1) // 2
    return any(text.find(b"\n", start, start + window) < 0 for start in range(0, len(text), window))


def _split_long(lines: list[bytes], limit: int) -> list[bytes]:
    out = []
    for line in lines:
        while len(line) > limit:
            out.append(line[:limit])
            line = line[limit:]
        out.append(line)
    return out


class LineMux:
    """Every service's output, prefixed, onto the container's stdout and stderr."""

    def __init__(
        self, loop: Loop, timestamps: bool = False, stdout_fd: int = 1, stderr_fd: int = 2
    ) -> None:
        self.loop = loop
        self.timestamps = timestamps
        self.stdout = Output(loop, stdout_fd)
        self.stderr = Output(loop, stderr_fd)
        self.rings: dict[str, Ring] = {}
        self._feeds: dict[str, tuple[Feed, Feed]] = {}

    def attach(self, name: str) -> tuple[int, int]:
        """The (stdout, stderr) write ends for service `name`; made once, kept for its life."""
        feeds = self._feeds.get(name)
        if feeds is None:
            ring = self.rings.setdefault(name, Ring())
            feeds = (
                Feed(self, name, self.stdout, ring),
                Feed(self, name, self.stderr, ring),
            )
            self._feeds[name] = feeds
        return feeds[0].write_end, feeds[1].write_end

    def ring(self, name: str) -> Ring | None:
        return self.rings.get(name)

    def close(self) -> Future:
        """Close every pipe, write out what they held; a Future resolved once all is written."""
        for out, err in self._feeds.values():
            out.close()
            err.close()
        self._feeds.clear()
        done = Future()
        pending = [f for f in (self.stdout.drained(), self.stderr.drained()) if not f.done]
        left = [len(pending)]

        def one(_future: Future) -> None:
            left[0] -= 1
            if not left[0]:
                done.set_result(True)

        for future in pending:
            future.add_done_callback(one)
        if not pending:
            done.set_result(True)
        return done
