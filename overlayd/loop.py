"""The event loop: fds through epoll, signals through a wakeup fd, timers on a heap.

The path from a signal to its handler is kept short (it runs once per SIGCHLD, so an orphan
storm is paid for here): epoll is used directly rather than through `selectors`, the wakeup
pipe is read once per wake, and a batch of signal bytes costs one guarded call per kind.

There is no polling: `select` sleeps until an fd is ready, a signal arrives or the nearest timer
is due, and with no timers it sleeps without a timeout. Every callback runs inside a guard: an
exception is logged with its traceback and the loop goes on (PID 1 must never die of a bug).

Sequential steps (the boot and shutdown stages) are written as `async def` coroutines driven by
`Task` over `Future`s, so they read top to bottom without importing asyncio (40 ms of imports).
"""

from __future__ import annotations

import _signal
import os
import select
import time
from _collections import deque
from _heapq import heapify, heappop, heappush

from . import log

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator
    from typing import Any

    Callback = Callable[[], None]
#: Timers in the heap before the first sweep of cancelled ones (see call_later).
MIN_COMPACT = 256


class Timer:
    """A pending call_later; cancel() makes it a no-op."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Never call back; the callback (and whatever it holds) is released at once."""
        self.cancelled = True
        self.callback = _nothing

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


def _nothing() -> None:
    """What a cancelled Timer calls: nothing."""


class Future:
    """A value that arrives later; `await`able inside a Task."""

    __slots__ = ("_callbacks", "done", "result")

    def __init__(self) -> None:
        self.done = False
        self.result: Any = None
        self._callbacks: list[Callable[[Future], None]] = []

    def set_result(self, value: Any = None) -> None:
        """Resolve once; later calls are ignored (first event wins)."""
        if self.done:
            return
        self.done = True
        self.result = value
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._call(callback)

    def add_done_callback(self, callback: Callable[[Future], None]) -> None:
        if self.done:
            self._call(callback)
        else:
            self._callbacks.append(callback)

    def _call(self, callback: Callable[[Future], None]) -> None:
        """One failing waiter must not starve the others (a Task would hang forever)."""
        try:
            callback(self)
        except Exception:
            log.exception("a future's done-callback failed; carrying on")

    def __await__(self) -> Generator[Future, None, Any]:
        if not self.done:
            yield self
        return self.result


class Cancelled(Exception):
    """Thrown into a Task's coroutine at its current `await` by Task.cancel()."""


#: A cancelled Task's `finished` result.
CANCELLED = object()


class Task:
    """Drives a coroutine that awaits Futures. Exceptions are logged, never raised into the loop.

    `cancel()` throws Cancelled into the coroutine where it waits (its `finally` blocks run);
    called from inside the coroutine itself, it takes effect at its next `await`. The Future
    it was waiting on is abandoned: a later result is ignored.
    """

    __slots__ = ("_cancel", "_coro", "_running", "_turn", "finished", "name")

    def __init__(self, coro: Coroutine[Future, None, Any], name: str) -> None:
        self._coro = coro
        self.name = name
        self.finished = Future()
        self._turn = 0
        self._running = False
        self._cancel = False
        self._step(None)

    def cancel(self) -> None:
        if self.finished.done:
            return
        self._cancel = True
        if not self._running:
            self._step(None)

    def _step(self, value: Any) -> None:
        self._turn += 1
        turn = self._turn
        self._running = True
        try:
            while True:
                try:
                    if self._cancel:
                        self._cancel = False
                        awaited = self._coro.throw(Cancelled())
                    else:
                        awaited = self._coro.send(value)
                except StopIteration as stop:
                    self.finished.set_result(stop.value)
                    return
                except Cancelled:
                    self.finished.set_result(CANCELLED)
                    return
                except Exception:
                    log.exception(f"task {self.name} failed")
                    self.finished.set_result(None)
                    return
                if not self._cancel:
                    break
        finally:
            self._running = False
        awaited.add_done_callback(lambda fut: self._resume(turn, fut))

    def _resume(self, turn: int, future: Future) -> None:
        if turn == self._turn and not self.finished.done:
            self._step(future.result)


TIMED_OUT = object()


class Loop:
    """A single-threaded reactor; the only place overlayd waits."""

    def __init__(self) -> None:
        self._selector = select.epoll()  # close()d by tests; the name is historical
        self._timers: list[Timer] = []
        self._soon: deque[Callback] = deque()
        self._signal_handlers: dict[int, Callable[[int], None]] = {}
        self._coalesced: set[int] = set()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._stopped = False
        self._compact_at = MIN_COMPACT  # heap size at which cancelled timers are swept out
        self.add_reader(self._wakeup_r, self._drain_signals)
        # Installed now, not in run(): a child may exit before the loop first waits.
        _signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)

    # --- fds -------------------------------------------------------------------------------
    def _events(self, fd: int) -> int:
        return (_READ if fd in self._readers else 0) | (_WRITE if fd in self._writers else 0)

    def _sync(self, fd: int, had: int) -> None:
        now = self._events(fd)
        epoll = self._selector
        if had and now:
            epoll.modify(fd, now)
        elif now:
            try:
                epoll.register(fd, now)
            except FileExistsError:  # a reused fd number whose old registration lingers
                epoll.modify(fd, now)
        elif had:
            try:
                epoll.unregister(fd)
            except OSError:
                pass  # closed already: the kernel dropped it from the epoll set

    def add_reader(self, fd: int, callback: Callback) -> None:
        had = self._events(fd)
        self._readers[fd] = callback
        self._sync(fd, had)

    def remove_reader(self, fd: int) -> None:
        had = self._events(fd)
        if self._readers.pop(fd, None) is not None:
            self._sync(fd, had)

    def add_writer(self, fd: int, callback: Callback) -> None:
        had = self._events(fd)
        self._writers[fd] = callback
        self._sync(fd, had)

    def remove_writer(self, fd: int) -> None:
        had = self._events(fd)
        if self._writers.pop(fd, None) is not None:
            self._sync(fd, had)

    # --- time ------------------------------------------------------------------------------
    @staticmethod
    def time() -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callback) -> Timer:
        timer = Timer(self.time() + max(0.0, delay), callback)
        timers = self._timers
        heappush(timers, timer)
        if len(timers) >= self._compact_at:
            # Cancelled timers leave the heap only when due; a stream of short-lived users
            # (connections with an idle timer) would grow it without bound meanwhile. Sweep
            # them whenever the heap doubles: amortised O(1) per timer.
            timers[:] = [t for t in timers if not t.cancelled]
            heapify(timers)
            self._compact_at = max(MIN_COMPACT, 2 * len(timers))
        return timer

    def call_soon(self, callback: Callback) -> None:
        self._soon.append(callback)

    def sleep(self, seconds: float) -> Future:
        future = Future()
        self.call_later(seconds, future.set_result)
        return future

    def with_timeout(self, future: Future, seconds: float | None) -> Future:
        """A future that resolves with `future`'s result, or with TIMED_OUT after `seconds`."""
        if seconds is None or future.done:
            return future
        out = Future()
        timer = self.call_later(seconds, lambda: out.set_result(TIMED_OUT))

        def resolved(inner: Future) -> None:
            timer.cancel()
            out.set_result(inner.result)

        future.add_done_callback(resolved)
        return out

    # --- signals ---------------------------------------------------------------------------
    def add_signal_handler(
        self, signum: int, handler: Callable[[int], None], coalesce: bool = False
    ) -> None:
        """Route `signum` through the wakeup fd to `handler`, run inside the loop.

        With `coalesce`, several deliveries read in one batch make a single call.
        """
        self._signal_handlers[signum] = handler
        if coalesce:
            self._coalesced.add(signum)
        _signal.signal(signum, _note_signal)

    def _drain_signals(self) -> None:
        try:
            data = os.read(self._wakeup_r, 4096)
        except BlockingIOError:
            return
        # A signal's byte is written before it is read here, so one call per kind of signal
        # covers every byte of a batch (a flood of SIGCHLD costs one reap pass); repeated
        # TERMs still count twice, as the second one means "skip to the kill". Bytes left in
        # the pipe (more than 4096) make it readable again: the next turn takes them.
        handlers = self._signal_handlers
        if len(data) == 1:
            handler = handlers.get(data[0])
            if handler is not None:
                self._guard_signal(handler, data[0])
            return
        handled: set[int] = set()
        for signum in data:
            handler = handlers.get(signum)
            if handler is None or (signum in handled and signum in self._coalesced):
                continue
            handled.add(signum)
            self._guard_signal(handler, signum)

    @staticmethod
    def _guard_signal(handler: Callable[[int], None], signum: int) -> None:
        try:
            handler(signum)
        except Exception:
            log.exception("event handler failed; carrying on")

    # --- running ---------------------------------------------------------------------------
    @staticmethod
    def _guard(callback: Callback) -> None:
        try:
            callback()
        except Exception:
            log.exception("event handler failed; carrying on")

    def stop(self) -> None:
        """Make run() return after the current turn (or at once, if called before run())."""
        self._stopped = True

    def run(self) -> None:
        """Serve events until stop()."""
        while not self._stopped:
            self._run_once()

    def _next_timeout(self) -> float:
        """Seconds until the nearest timer (-1: none, sleep until an event)."""
        if self._soon:
            return 0
        timers = self._timers
        while timers and timers[0].cancelled:
            heappop(timers)
        if not timers:
            return -1
        return max(0.0, timers[0].when - time.monotonic())

    def _run_once(self) -> None:
        readers, writers, guard = self._readers, self._writers, self._guard
        for fd, mask in self._selector.poll(self._next_timeout()):
            if mask & _READ_OR_HUP and fd in readers:
                guard(readers[fd])
            if mask & _WRITE_OR_ERR and fd in writers:
                guard(writers[fd])
        timers = self._timers
        if timers:
            now = time.monotonic()
            while timers and (timers[0].cancelled or timers[0].when <= now):
                timer = heappop(timers)
                if not timer.cancelled:
                    guard(timer.callback)
        soon = self._soon
        for _ in range(len(soon)):
            guard(soon.popleft())


_READ = select.EPOLLIN
_WRITE = select.EPOLLOUT
# As selectors does: a hang-up or an error wakes both the reader and the writer of an fd.
_READ_OR_HUP = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_WRITE_OR_ERR = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR


def _note_signal(signum: int, frame: object) -> None:
    """The Python-level handler: nothing. CPython's C handler already wrote to the wakeup fd."""


def first_of(*futures: Future) -> Future:
    """A Future resolved with the result of whichever of `futures` resolves first."""
    out = Future()
    for future in futures:
        future.add_done_callback(lambda f: out.set_result(f.result))
    return out
