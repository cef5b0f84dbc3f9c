"""overlayd.loop driven directly, without a namespace: timers, futures, tasks, and a loop that
survives an exception in any callback (PID 1 must never die of a bug).

The loop writes its error lines straight to fd 2, so `capfd` (fd-level capture) sees them.
Each test bounds the loop with a stop timer and asserts that it did not need it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest

from overlayd.loop import TIMED_OUT, Future, Loop, Task, first_of

SAFETY = 10.0  # seconds; a loop still running then is a failure, not a hang


@pytest.fixture
def loop() -> Iterator[Loop]:
    """A Loop, with the process's signal wakeup fd and handlers given back afterwards."""
    previous_fd = signal.set_wakeup_fd(-1)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2)}
    the_loop = Loop()
    try:
        yield the_loop
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        the_loop._selector.close()
        os.close(the_loop._wakeup_r)
        os.close(the_loop._wakeup_w)


def run_until(loop: Loop, done: Callable[[], bool]) -> None:
    """Run the loop; stop it as soon as done() holds (checked after every callback pass)."""
    hit_safety = []

    def check() -> None:
        if done():
            loop.stop()
        else:
            loop.call_later(0.005, check)

    def safety() -> None:
        hit_safety.append(True)
        loop.stop()

    loop.call_soon(check)
    guard = loop.call_later(SAFETY, safety)
    loop.run()
    guard.cancel()
    assert not hit_safety, "the loop did not reach the expected state in time"


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("[overlayd] error:")]


# --- timers -----------------------------------------------------------------------------------


def test_timers_fire_in_deadline_order_not_scheduling_order(loop: Loop) -> None:
    fired: list[str] = []
    for delay, name in [(0.06, "d"), (0.02, "b"), (0.0, "a"), (0.04, "c")]:
        loop.call_later(delay, lambda n=name: fired.append(n))
    run_until(loop, lambda: len(fired) == 4)
    assert fired == ["a", "b", "c", "d"]


def test_timers_due_together_all_fire_in_deadline_order(loop: Loop) -> None:
    """A loop that wakes late (every deadline already past) still runs them in order."""
    fired: list[int] = []
    # Every timer made at one instant: otherwise a slow turn between two call_later()s (load,
    # a GC pause) makes a later-made timer's deadline fall after the next one's.
    made_at = loop.time()
    loop.time = lambda: made_at  # type: ignore[method-assign]
    for i in reversed(range(50)):
        loop.call_later(i / 10000, lambda i=i: fired.append(i))
    del loop.time  # the class's clock again
    run_until(loop, lambda: len(fired) == 50)
    assert fired == list(range(50))


def test_cancelled_timer_never_fires(loop: Loop) -> None:
    fired: list[str] = []
    cancelled = loop.call_later(0.01, lambda: fired.append("cancelled"))
    loop.call_later(0.03, lambda: fired.append("kept"))
    cancelled.cancel()
    # A timer cancelled by an earlier timer, due (almost) at the same moment.
    victim: list = []
    loop.call_later(0.05, lambda: victim[0].cancel())
    victim.append(loop.call_later(0.05, lambda: fired.append("cancelled-by-neighbour")))
    loop.call_later(0.1, lambda: fired.append("end"))
    run_until(loop, lambda: "end" in fired)
    assert fired == ["kept", "end"]


def test_call_soon_runs_on_the_next_pass(loop: Loop) -> None:
    fired: list[str] = []
    loop.call_soon(lambda: fired.append("soon"))
    assert fired == []
    run_until(loop, lambda: fired == ["soon"])


def test_sleep_future_resolves_after_its_delay(loop: Loop) -> None:
    fut = loop.sleep(0.05)
    start = loop.time()
    fired_at: list[float] = []
    fut.add_done_callback(lambda _f: fired_at.append(loop.time()))
    run_until(loop, lambda: fut.done)
    assert fired_at[0] - start >= 0.05


# --- futures ----------------------------------------------------------------------------------


def test_with_timeout_gives_timed_out_when_the_future_is_late(loop: Loop) -> None:
    never = Future()
    out = loop.with_timeout(never, 0.02)
    run_until(loop, lambda: out.done)
    assert out.result is TIMED_OUT
    never.set_result("too late")  # resolving afterwards changes nothing
    assert out.result is TIMED_OUT


def test_with_timeout_gives_the_result_when_the_future_is_first(loop: Loop) -> None:
    fut = Future()
    out = loop.with_timeout(fut, 0.2)
    loop.call_later(0.01, lambda: fut.set_result("value"))
    end = loop.sleep(0.4)  # well past the timeout: the timer must have been cancelled
    run_until(loop, lambda: end.done)
    assert out.result == "value"


def test_with_timeout_none_or_done_is_the_future_itself(loop: Loop) -> None:
    fut = Future()
    assert loop.with_timeout(fut, None) is fut
    fut.set_result(3)
    assert loop.with_timeout(fut, 0.01) is fut


def test_future_resolves_once_first_value_wins() -> None:
    fut = Future()
    seen: list[object] = []
    fut.add_done_callback(lambda f: seen.append(f.result))
    fut.set_result(1)
    fut.set_result(2)
    assert fut.result == 1
    assert seen == [1]
    fut.add_done_callback(lambda f: seen.append(("late", f.result)))  # runs at once
    assert seen == [1, ("late", 1)]


def test_first_of_takes_whichever_resolves_first(loop: Loop) -> None:
    slow, fast, never = Future(), Future(), Future()
    out = first_of(slow, fast, never)
    loop.call_later(0.05, lambda: slow.set_result("slow"))
    loop.call_later(0.01, lambda: fast.set_result("fast"))
    run_until(loop, lambda: slow.done)
    assert out.result == "fast"
    assert not never.done


def test_first_of_with_an_already_resolved_future() -> None:
    done = Future()
    done.set_result("now")
    assert first_of(Future(), done).result == "now"


# --- tasks ------------------------------------------------------------------------------------


def test_task_reads_top_to_bottom_over_awaited_futures(loop: Loop) -> None:
    steps: list[str] = []

    async def sequence() -> str:
        steps.append("start")
        await loop.sleep(0.01)
        steps.append("slept")
        result = await loop.with_timeout(Future(), 0.01)
        steps.append("timed out" if result is TIMED_OUT else "??")
        done = Future()
        done.set_result("already")
        steps.append(await done)
        return "finished"

    task = Task(sequence(), "seq")
    assert steps == ["start"]  # the first step runs at once
    run_until(loop, lambda: task.finished.done)
    assert steps == ["start", "slept", "timed out", "already"]
    assert task.finished.result == "finished"


def test_task_that_raises_is_logged_and_the_loop_goes_on(loop: Loop, capfd) -> None:
    progress: list[str] = []

    async def doomed() -> None:
        await loop.sleep(0.01)
        raise ValueError("boom-in-task")

    async def healthy() -> None:
        await loop.sleep(0.05)
        progress.append("healthy done")

    bad = Task(doomed(), "doomed-task")
    good = Task(healthy(), "healthy-task")
    run_until(loop, lambda: good.finished.done)
    assert bad.finished.done and bad.finished.result is None
    assert progress == ["healthy done"]
    err = capfd.readouterr().err
    assert "[overlayd] error: task doomed-task failed" in err
    assert "Traceback (most recent call last)" in err
    assert "ValueError: boom-in-task" in err


def test_task_that_raises_before_its_first_await_is_logged(loop: Loop, capfd) -> None:
    async def instant() -> None:
        raise KeyError("boom-at-once")

    task = Task(instant(), "instant")
    assert task.finished.done
    err = capfd.readouterr().err
    assert "task instant failed" in err
    assert "KeyError: 'boom-at-once'" in err


# --- one failing callback does not stop the others --------------------------------------------


def test_timer_that_raises_is_logged_and_the_next_timer_still_runs(loop: Loop, capfd) -> None:
    fired: list[str] = []

    def explode() -> None:
        raise RuntimeError("boom-in-timer")

    # Both due in the same pass: the failure of the first must not skip the second.
    loop.call_later(0.0, explode)
    loop.call_later(0.0, lambda: fired.append("same pass"))
    loop.call_later(0.05, lambda: fired.append("later pass"))
    run_until(loop, lambda: "later pass" in fired)
    assert fired == ["same pass", "later pass"]
    err = capfd.readouterr().err
    assert error_lines(err) == ["[overlayd] error: event handler failed; carrying on"]
    assert "Traceback (most recent call last)" in err
    assert "RuntimeError: boom-in-timer" in err


def test_reader_that_raises_is_logged_and_other_readers_still_run(loop: Loop, capfd) -> None:
    bad_r, bad_w = os.pipe()
    good_r, good_w = os.pipe()
    got: list[bytes] = []
    try:

        def bad_reader() -> None:
            os.read(bad_r, 100)
            raise OSError(5, "boom-in-reader")

        def good_reader() -> None:
            got.append(os.read(good_r, 100))
            if len(got) == 1:
                # Round two: the failing reader is still registered and still served.
                os.write(bad_w, b"y")
                os.write(good_w, b"second")

        loop.add_reader(bad_r, bad_reader)
        loop.add_reader(good_r, good_reader)
        os.write(bad_w, b"x")
        os.write(good_w, b"first")
        run_until(loop, lambda: got == [b"first", b"second"])
    finally:
        loop.remove_reader(bad_r)
        loop.remove_reader(good_r)
        for fd in (bad_r, bad_w, good_r, good_w):
            os.close(fd)
    err = capfd.readouterr().err
    assert err.count("OSError: [Errno 5] boom-in-reader") == 2
    assert err.count("Traceback (most recent call last)") == 2


def test_writer_callback_runs_and_can_be_removed(loop: Loop) -> None:
    r, w = os.pipe()
    calls: list[str] = []
    try:

        def writable() -> None:
            calls.append("w")
            os.write(w, b"!")
            loop.remove_writer(w)

        loop.add_reader(r, lambda: calls.append(os.read(r, 10).decode()))
        loop.add_writer(w, writable)
        run_until(loop, lambda: calls == ["w", "!"])
    finally:
        loop.remove_reader(r)
        os.close(r)
        os.close(w)


def test_signal_handler_that_raises_is_logged_and_other_signals_still_handled(
    loop: Loop, capfd
) -> None:
    seen: list[int] = []

    def bad(signum: int) -> None:
        seen.append(signum)
        raise LookupError("boom-in-signal-handler")

    def good(signum: int) -> None:
        seen.append(signum)
        # The handler that raised is still installed: the next SIGUSR1 reaches it again.
        os.kill(os.getpid(), signal.SIGUSR1)

    loop.add_signal_handler(signal.SIGUSR1, bad)
    loop.add_signal_handler(signal.SIGUSR2, good)
    # Sent before run(): the wakeup fd holds them until the loop first waits.
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR2)
    run_until(loop, lambda: seen.count(signal.SIGUSR1) == 2)
    assert seen.count(signal.SIGUSR2) == 1
    err = capfd.readouterr().err
    assert err.count("LookupError: boom-in-signal-handler") == 2
    assert "[overlayd] error: event handler failed; carrying on" in err


def test_future_callback_that_raises_does_not_starve_the_others(loop: Loop, capfd) -> None:
    fut = Future()
    reached: list[str] = []

    def bad(_f: Future) -> None:
        raise RuntimeError("boom-in-done-callback")

    async def waiter() -> None:
        reached.append(await fut)

    fut.add_done_callback(bad)
    task = Task(waiter(), "waiter")
    loop.call_later(0.01, lambda: fut.set_result("value"))
    end = loop.sleep(0.2)
    run_until(loop, lambda: end.done)
    assert "RuntimeError: boom-in-done-callback" in capfd.readouterr().err
    assert reached == ["value"]
    assert task.finished.done


def test_coalesced_signal_makes_one_call_per_batch_others_one_per_delivery(loop: Loop) -> None:
    """SIGCHLD is coalesced (a flood costs one reap pass); a repeated TERM must count twice."""
    calls: list[int] = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, coalesce=True)
    loop.add_signal_handler(signal.SIGUSR2, calls.append)
    for _ in range(3):  # each kill delivers at once: three bytes in the wakeup fd
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
    run_until(loop, lambda: calls.count(signal.SIGUSR2) == 3)
    assert calls.count(signal.SIGUSR1) == 1


def test_stop_before_run_makes_run_return_at_once(loop: Loop) -> None:
    fired: list[str] = []
    loop.call_soon(lambda: fired.append("soon"))
    loop.stop()
    loop.run()
    assert fired == []
