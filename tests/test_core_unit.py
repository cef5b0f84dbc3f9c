"""The narrow core in-process: Task.cancel, waits on named services, the reaper's storm batching,
and undoing Python's locale coercion. No PID namespace needed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overlayd import origenv
from overlayd.loop import CANCELLED, Future, Loop, Task
from overlayd.reaper import BATCH_WINDOW, Reaper
from overlayd.scan import read_service
from overlayd.supervisor import Supervisor

# --- Task.cancel ---------------------------------------------------------------------------------


def test_cancel_throws_into_the_await_runs_finally_and_ignores_a_late_result() -> None:
    gate = Future()
    seen: list[str] = []

    async def step() -> str:
        try:
            await gate
            seen.append("resumed")
            return "done"
        finally:
            seen.append("cleaned up")

    task = Task(step(), "t")
    task.cancel()
    assert task.finished.done and task.finished.result is CANCELLED
    assert seen == ["cleaned up"]
    gate.set_result(1)  # the abandoned await completes later: nothing happens
    assert seen == ["cleaned up"]


def test_cancel_from_inside_the_task_takes_effect_at_its_next_await() -> None:
    holder: dict[str, Task] = {}
    seen: list[str] = []
    later = Future()

    async def step() -> None:
        holder["task"].cancel()  # as stage 2 does when it asks for the shutdown itself
        seen.append("still running until the next await")
        await later
        seen.append("never")

    gate = Future()

    async def outer() -> None:
        await gate
        await step()

    holder["task"] = Task(outer(), "t")
    gate.set_result(None)
    assert holder["task"].finished.result is CANCELLED
    assert seen == ["still running until the next await"]


def test_cancel_after_the_end_changes_nothing() -> None:
    async def quick() -> int:
        return 7

    task = Task(quick(), "t")
    task.cancel()
    assert task.finished.result == 7


# --- waits on named services ---------------------------------------------------------------------


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run").write_text("#!/bin/sh\n")
    previous_fd = signal.set_wakeup_fd(-1)
    loop = Loop()
    try:
        sup = Supervisor(loop, None, dict, str(tmp_path))  # type: ignore[arg-type]
        sup.load()
        yield sup
    finally:
        signal.set_wakeup_fd(previous_fd)
        loop._selector.close()
        os.close(loop._wakeup_r)
        os.close(loop._wakeup_w)


def test_a_wait_is_evaluated_only_when_a_service_it_names_changes(supervisor: Supervisor) -> None:
    a, b = supervisor.get("a"), supervisor.get("b")
    assert a is not None and b is not None
    calls: list[int] = []
    flag = {"met": False}

    def predicate() -> bool:
        calls.append(1)
        return flag["met"]

    wait = supervisor.wait_for([a], predicate)
    assert len(calls) == 1 and supervisor.pending_waits() == 1
    flag["met"] = True
    supervisor.changed(b)  # another service: not evaluated
    assert len(calls) == 1 and not wait.future.done
    supervisor.changed(a)
    assert wait.future.done and supervisor.pending_waits() == 0


def test_a_cancelled_wait_is_gone_at_once(supervisor: Supervisor) -> None:
    a = supervisor.get("a")
    assert a is not None
    wait = supervisor.wait_for([a], lambda: False)
    wait.cancel()
    assert supervisor.pending_waits() == 0
    supervisor.changed(a)
    assert not wait.future.done


def test_recheck_resolves_a_wait_whose_caller_went_away(supervisor: Supervisor) -> None:
    a = supervisor.get("a")
    assert a is not None
    gone = {"closed": False}
    wait = supervisor.wait_for([a], lambda: gone["closed"])
    gone["closed"] = True
    supervisor.recheck()
    assert wait.future.done and supervisor.pending_waits() == 0


def test_a_redefined_service_keeps_its_running_definition_until_the_next_start(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    a = supervisor.get("a")
    assert a is not None
    a.state = "up"  # as if running
    (tmp_path / "a" / "down-signal").write_text("HUP\n")
    a.redefine(read_service("a", str(tmp_path / "a")))
    assert a.definition.down_signal == signal.SIGTERM
    assert a._next_definition is not None
    assert a._next_definition.down_signal == signal.SIGHUP


# --- the reaper in an exit storm -----------------------------------------------------------------


class FakeLoop:
    def __init__(self) -> None:
        self.clock = 50.0
        self.timers: list[tuple[float, Any]] = []

    def time(self) -> float:
        return self.clock

    def call_later(self, delay: float, callback: Any) -> None:
        self.timers.append((delay, callback))


def blocked() -> bool:
    return signal.SIGCHLD in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_an_isolated_sigchld_is_reaped_with_no_hold() -> None:
    loop = FakeLoop()
    reaper = Reaper(loop)  # type: ignore[arg-type]
    reaper.on_sigchld()
    loop.clock += 1.0
    reaper.on_sigchld()
    assert loop.timers == [] and not blocked()


def exited_child() -> int:
    """A child that has exited and is not reaped yet (a zombie): what a SIGCHLD announces."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # blocks until it exited; reaps nothing
    return pid


def test_sigchlds_in_an_orphan_storm_are_held_for_one_batch_window_then_released() -> None:
    loop = FakeLoop()
    reaper = Reaper(loop)  # type: ignore[arg-type]
    try:
        exited_child()  # nobody watches it: an orphan, as PID 1 gets them
        reaper.on_sigchld()
        loop.clock += 0.0005
        exited_child()
        reaper.on_sigchld()
        assert reaper.unknown_reaped == 2
        assert blocked()
        (delay, release), = loop.timers
        assert delay == BATCH_WINDOW
        reaper.on_sigchld()  # while held: no second window
        assert len(loop.timers) == 1
        release()
        assert not blocked()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])


def test_own_children_ending_together_are_reaped_at_once_with_no_hold() -> None:
    """A layer of parallel oneshots ends within a ms or two: each exit reaches its waiter on
    its own SIGCHLD, never a batch window later."""
    loop = FakeLoop()
    reaper = Reaper(loop)  # type: ignore[arg-type]
    try:
        seen: list[Future] = []
        for _ in range(2):
            pid = exited_child()
            seen.append(reaper.exit_future(pid))
            reaper.on_sigchld()
            loop.clock += 0.0005
        assert [f.done and f.result.code for f in seen] == [0, 0]
        assert loop.timers == [] and not blocked()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])


# --- Python's locale coercion ------------------------------------------------------------------


def test_coerced_lc_ctype_is_removed_when_the_original_environment_had_none() -> None:
    env = {"LC_CTYPE": "C.UTF-8", "LANG": "C"}
    assert origenv.undo_locale_coercion(env, {b"LANG": b"C"}) == ["LC_CTYPE"]
    assert env == {"LANG": "C"}


def test_an_lc_ctype_that_was_given_is_kept_or_put_back() -> None:
    kept = {"LC_CTYPE": "C.UTF-8"}
    assert origenv.undo_locale_coercion(kept, {b"LC_CTYPE": b"C.UTF-8"}) == []
    assert kept == {"LC_CTYPE": "C.UTF-8"}
    replaced = {"LC_CTYPE": "C.UTF-8"}
    assert origenv.undo_locale_coercion(replaced, {b"LC_CTYPE": b"C"}) == ["LC_CTYPE"]
    assert replaced == {"LC_CTYPE": "C"}


def test_without_proc_nothing_is_guessed(tmp_path: Path) -> None:
    assert origenv.original_environ(str(tmp_path / "missing")) is None
    other = {"LC_CTYPE": "en_US.UTF-8"}
    assert origenv.undo_locale_coercion(other, {}) == []  # not a value PEP 538 sets
