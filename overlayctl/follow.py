"""start/stop/restart/once, synchronously: ask, then follow the state changes until done.

Order matters and makes it race-free: subscribe and read the records (the "before" of each
service) in one round trip, the notifications that came before the records dropped (the
records show them); then send the request and read each change as overlayd reports it. Two
round trips in all, the handshake included (client.py pipelines it with the first). One line
per service on stdout as each finishes; a timeout prints what each unfinished one reached, on
stderr, and exits 1.

`stop --kill-after S` escalates from here, through the `signal` method with its `group` flag:
SIGKILL to the process group of every service still not down after S seconds. Done by the
client because it bounds the client's own wait (like supervisorctl's stopwaitsecs, but per
call); when the client is gone (^C) nothing is escalated behind the operator's back. A
service's own `timeout-kill` file is the server-side, always-on equivalent.
"""

from __future__ import annotations

import time

from overlayctl import render
from overlayctl.progress import Progress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from overlayctl.commands import Invocation


def _say(text: str) -> None:
    from overlayctl.commands import err

    err(render.error_line(text))


def _kill_groups(client: Any, pending: list[Progress]) -> None:
    """SIGKILL to the process group of each service still stopping."""
    from overlayctl.client import RemoteError

    for progress in pending:
        name = progress.record.get("name")
        try:
            client.signal("SIGKILL", [name], group=True)
        except RemoteError as exc:  # it stopped meanwhile, or overlayd does not know `group`
            _say(f"{name}: SIGKILL not sent: {exc}")
            continue
        _say(f"{name}: not down after --kill-after; sent SIGKILL to its process group")


def follow(
    client: Any,
    inv: Invocation,
    verb: str,
    names: list[str],
    timeout: float | None,
    kill_after: float | None,
) -> int:
    """Run `verb` on `names` and wait until each is done; return the exit code."""
    from overlayctl.commands import out

    progress = {r["name"]: Progress(verb, r) for r in client.watch_status(names)}
    result = getattr(client, verb)(names)
    also = [n for n in result if n not in names] if isinstance(result, list) else []
    if also:  # dependencies (start) or dependents (stop) that go along first (DESIGN §10)
        doing, why = (
            ("starting", "needed by") if verb == "start" else ("stopping", "they depend on")
        )
        _say(f"{verb}: also {doing} {', '.join(also)} ({why} {', '.join(names)})")
    for item in progress.values():
        notice = item.notice()
        if notice:
            _say(notice)
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    kill_at = None if kill_after is None or verb != "stop" else start + kill_after
    reported: set[str] = set()

    def report() -> None:
        for name, item in progress.items():
            if item.done and name not in reported:
                reported.add(name)
                if item.failed:
                    _say(item.line())
                elif not inv.json:
                    out(item.line(), flush=True)

    report()
    while len(reported) < len(progress):
        now = time.monotonic()
        if kill_at is not None and now >= kill_at:
            kill_at = None
            _kill_groups(client, [p for p in progress.values() if not p.done])
        ends = [t for t in (deadline, kill_at) if t is not None]
        if deadline is not None and now >= deadline:
            break
        record = client.next_state(max(min(ends) - now, 0) if ends else None)
        if record is not None and record.get("name") in progress:
            progress[record["name"]].update(record)
        report()
    late = [p for p in progress.values() if not p.done]
    if inv.json:
        out(render.to_json([_summary(p) for p in progress.values()], pretty=True))
    for item in late:
        _say(f"{verb}: timed out after {timeout:g} s: {item.line()}")
    failed = any(p.failed for p in progress.values())
    return render.EXIT_NO if late or failed else render.EXIT_OK


def _summary(progress: Progress) -> dict[str, object]:
    record = progress.record
    return {
        "name": record.get("name"),
        "done": progress.done and not progress.failed,
        "state": record.get("state"),
        "pid": record.get("pid"),
        "previous_pid": progress.before.get("pid"),
        "message": progress.line(),
    }
