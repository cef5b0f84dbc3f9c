"""The event loop: fds through epoll, signals through a wakeup fd, timers on a heap.

There is no polling: `select` sleeps until an fd is ready, a signal arrives or the nearest timer
is due, and with no timers it sleeps without a timeout. Every callback runs inside a guard: an
exception is logged with its traceback and the loop goes on (PID 1 must never die of a bug).

Sequential steps (the boot and shutdown stages) are written as `async def` coroutines driven by
`Task` over `Future`s, so they read top to bottom without importing asyncio (40 ms of imports).
"""

from __future__ import annotations

import heapq
import os
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator

from . import log

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from typing import Any

Callback = Callable[[], None]


class Timer:
    """A pending call_later; cancel() makes it a no-op."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


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
        self._selector = selectors.DefaultSelector()
        self._timers: list[Timer] = []
        self._soon: deque[Callback] = deque()
        self._signal_handlers: dict[int, Callable[[int], None]] = {}
        self._coalesced: set[int] = set()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        self._stopped = False
        self.add_reader(self._wakeup_r, self._drain_signals)
        # Installed now, not in run(): a child may exit before the loop first waits.
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)

    # --- fds -------------------------------------------------------------------------------
    def _events(self, fd: int) -> int:
        return (selectors.EVENT_READ if fd in self._readers else 0) | (
            selectors.EVENT_WRITE if fd in self._writers else 0
        )

    def _sync(self, fd: int, had: int) -> None:
        now = self._events(fd)
        if had and now:
            self._selector.modify(fd, now)
        elif now:
            self._selector.register(fd, now)
        elif had:
            self._selector.unregister(fd)

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
        heapq.heappush(self._timers, timer)
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
        signal.signal(signum, _note_signal)

    def _drain_signals(self) -> None:
        while True:
            try:
                data = os.read(self._wakeup_r, 512)
            except BlockingIOError:
                return
            if not data:
                return
            # A signal's byte is written before it is read here, so one call per kind of
            # signal covers every byte of a batch (a flood of SIGCHLD costs one reap pass);
            # repeated TERMs still count twice, as the second one means "skip to the kill".
            handled: set[int] = set()
            for signum in data:
                handler = self._signal_handlers.get(signum)
                if handler is None or (signum in handled and signum in self._coalesced):
                    continue
                handled.add(signum)
                self._guard(lambda h=handler, s=signum: h(s))

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

    def _next_timeout(self) -> float | None:
        if self._soon:
            return 0
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0].when - self.time())

    def _run_once(self) -> None:
        for key, mask in self._selector.select(self._next_timeout()):
            fd = key.fd
            if mask & selectors.EVENT_READ and fd in self._readers:
                self._guard(self._readers[fd])
            if mask & selectors.EVENT_WRITE and fd in self._writers:
                self._guard(self._writers[fd])
        now = self.time()
        while self._timers and (self._timers[0].cancelled or self._timers[0].when <= now):
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._guard(timer.callback)
        for _ in range(len(self._soon)):
            self._guard(self._soon.popleft())


def _note_signal(signum: int, frame: object) -> None:
    """The Python-level handler: nothing. CPython's C handler already wrote to the wakeup fd."""


def first_of(*futures: Future) -> Future:
    """A Future resolved with the result of whichever of `futures` resolves first."""
    out = Future()
    for future in futures:
        future.add_done_callback(lambda f: out.set_result(f.result))
    return out
