"""When a start/stop/restart/once is done, and the one line that says so (pure: no I/O).

`Progress(verb, before)` is fed the service's record before the request and then every state
change overlayd reports; `done` tells when the transition finished, `line()` what to print.

    start, once  up (ready, when it has a notification-fd), in a process that is running
    stop         down or failed: `run` gone and `finish` done
    restart      a new process up (ready), whatever throttle came between
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

RUNNING = frozenset({"starting", "up", "ready", "stopping"})
SETTLED = frozenset({"down", "failed"})


def _exit_text(record: Mapping[str, Any]) -> str:
    from overlayctl.render import format_last_exit

    last = record.get("last_exit")
    if not last:
        return ""
    if last.get("signal"):
        return f"killed by {format_last_exit(last)}"
    return f"exit code {format_last_exit(last)}"


def _arrived(record: Mapping[str, Any]) -> bool:
    """Up, and ready where the service signals readiness."""
    state = record.get("state")
    if record.get("notification_fd") is not None:
        return state == "ready"
    return state in ("up", "ready")


class Progress:
    """One service's transition, from the record before the request to the goal."""

    __slots__ = ("before", "done", "failed", "new_pid", "record", "verb")

    def __init__(self, verb: str, before: Mapping[str, Any]) -> None:
        self.verb = verb
        self.before = before
        self.record = before
        self.done = False
        self.failed = False
        #: The process started after the request, once one is seen.
        self.new_pid: int | None = None
        if verb == "stop":
            self.done = before.get("state") in SETTLED
        elif verb != "restart":  # a restart always waits for a new process
            self.done = _arrived(before)

    def update(self, record: Mapping[str, Any]) -> None:
        """Take the next record overlayd reported; sets `done` (and `failed`) at the end."""
        if self.done:
            return
        self.record = record
        state, pid = record.get("state"), record.get("pid")
        if self.verb == "stop":
            self.done = state in SETTLED
            return
        if state == "failed":
            self.done = self.failed = True
            return
        if pid and pid != self.before.get("pid"):
            self.new_pid = pid
        if self.verb == "restart":
            self.done = _arrived(record) and pid is not None and pid == self.new_pid
        else:
            self.done = _arrived(record)
        if not self.done and self.new_pid is not None and pid is None:
            # The process started for us died before it was up (ready): say so, don't time out.
            self.done = self.failed = True
        elif not self.done and state == "down" and record.get("want") == "down":
            # Nothing will start it now (`once` on a service in backoff ends its wait there).
            self.done = self.failed = True

    def notice(self) -> str | None:
        """A line for stderr right after the request, when the wait will be longer than usual."""
        state = self.before.get("state")
        if self.verb in ("start", "restart") and state == "stopping":
            pid = self.before.get("pid")
            return (
                f"{self.before.get('name')}: still stopping (pid {pid}); it starts again"
                " once that process exits"
                f" (overlayctl signal KILL {self.before.get('name')} to hurry it)"
            )
        return None

    def line(self) -> str:
        """The one line to print once done (or when the wait gave up)."""
        name = self.record.get("name", self.before.get("name", "?"))
        record, before = self.record, self.before
        pid, old = record.get("pid"), before.get("pid")
        state = record.get("state")
        if not self.done:
            where = f"still {state}" + (f" (pid {pid})" if pid else "")
            return f"{name}: {where}"
        if self.failed:
            if state == "failed":
                return f"{name}: failed: {record.get('reason') or _exit_text(record) or '?'}"
            if self.new_pid is None:
                return f"{name}: left down by overlayd (it was {before.get('state')})"
            goal = "ready" if record.get("notification_fd") is not None else "up"
            died = _exit_text(record) or "no exit status"
            return f"{name}: died before it was {goal} ({died}); now {state}"
        if self.verb == "stop":
            if before.get("state") in SETTLED:
                return f"{name}: already {before.get('state')}"
            parts = [f"pid {old}", _exit_text(record)] if old else []
            shown = ", ".join(p for p in parts if p)
            return f"{name}: stopped" + (f" ({shown})" if shown else "")
        word = "ready" if state == "ready" else "up"
        if self.verb == "restart":
            if old:
                return f"{name}: restarted (pid {old} → {pid})"
            return f"{name}: started (pid {pid})"
        if self.new_pid is None:
            return f"{name}: {'already ' if _arrived(before) else ''}{word} (pid {pid})"
        what = "started once" if self.verb == "once" else "started"
        return f"{name}: {what}, {word} (pid {pid})"
