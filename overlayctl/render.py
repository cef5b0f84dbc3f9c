"""Everything overlayctl prints, and the exit code that goes with each outcome.

Both front ends (the cheap parser in `dispatch.py` and the Typer app in `cli.py`) print
through these functions, so their output is identical byte for byte. Nothing here imports
typer, click, rich or tabulate.

Tables: the status table uses the layout of tabulate's "simple" format (header row, a dashed
rule per column, two spaces between columns), drawn by `table()` below. tabulate 0.10 costs
~50 ms to import (it reads its own version through `importlib.metadata`), which is four times a
bare interpreter start; `overlayctl status` runs every few seconds in health checks, so it must
not pay that. tests/test_overlayctl_unit.py checks `table()` against tabulate's own output.
"""

from __future__ import annotations

import time

from protocol.states import READY, UP

# Annotations are strings (PEP 563); typing and collections.abc stay unimported at run time
# because this module is on the health-check path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

PROG = "overlayctl"

# Exit codes (DESIGN.md §6). An unexpected exception inside overlayctl itself is reported as
# one line `overlayctl: internal error: …` with EXIT_NO: it stays inside the documented set,
# and a health check or script reads it as the failure it is.
EXIT_OK = 0
EXIT_NO = 1  # the answer is "no": check unhealthy, wait timed out
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  # cannot reach (or cannot talk to) overlayd; the message names the socket
EXIT_REFUSED = 4  # overlayd answered with an error: no_such_service, permission_denied, …
EXIT_INTERRUPTED = 130  # ^C anywhere but `events`, where ^C is the normal way out (exit 0)

# States in which `since` may stand in for the start of the current run, for an overlayd that
# does not send `started` (a `ready` service's `since` is when it became ready: close enough).
RUNNING_STATES = frozenset({UP, READY})
# States an `events` line shows the last exit in: the process is gone (stopping, starting: the
# exit shown would be an older process's).
EXITED_STATES = frozenset({"down", "finishing", "backoff", "failed"})

STATUS_HEADERS = (
    "name", "state", "pid", "uptime", "restarts", "last exit", "ready", "health", "checked",
)
DETAIL_HEADERS = ("cpu", "rss", "procs", "log")
# Columns holding numbers are right-aligned, as tabulate does for numeric columns.
STATUS_RIGHT = frozenset({2, 3, 4, 8, 9, 10, 11})


def format_uptime(seconds: float) -> str:
    """Human uptime: `3s`, `4m12s`, `2h03m`, `5d02h` (two units at most, floored)."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    if total < 86400:
        return f"{total // 3600}h{total % 3600 // 60:02d}m"
    return f"{total // 86400}d{total % 86400 // 3600:02d}h"


def format_last_exit(last_exit: Mapping[str, Any] | None) -> str:
    """`0`, `1`, `SIGKILL`, or `-` when the service has not exited yet."""
    if not last_exit:
        return "-"
    sig = last_exit.get("signal")
    if sig:
        from overlayctl.signals import signal_name

        return signal_name(sig)
    code = last_exit.get("code")
    return "-" if code is None else str(code)


def format_bytes(size: float | None) -> str:
    """Resident memory, binary units: `512B`, `12.3M`, `1.5G`."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024:
            return f"{int(value)}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"


def format_cpu(percent: float | None) -> str:
    """CPU percentage with one decimal, `-` when unknown."""
    return "-" if percent is None else f"{float(percent):.1f}%"


def _or_dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def display_width(text: str) -> int:
    """Terminal columns `text` takes: wide (CJK) characters count two, combining marks zero."""
    if text.isascii():
        return len(text)
    import unicodedata

    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - display_width(text))
    return fill + text if right else text + fill


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Lay out string cells in tabulate's "simple" format; `right` lists right-aligned columns.

    As in tabulate, each column is at least its header plus two wide, and trailing blanks
    are stripped from every line.
    """
    body = [list(row) for row in rows]
    align = frozenset(right)
    widths = [display_width(h) + 2 for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], display_width(cell))

    def line(cells: Sequence[str]) -> str:
        padded = (_pad(c, widths[i], i in align) for i, c in enumerate(cells))
        return "  ".join(padded).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in body)
    return "\n".join(out)


def status_row(record: Mapping[str, Any], now: float, details: bool = False) -> list[str]:
    """One service record as table cells."""
    state = str(record.get("state", "?"))
    # Uptime is how long the running process has run: from `started`, whatever the state
    # (starting, stopping too), and not from `since`, which moves when it becomes ready.
    began = record.get("started") if record.get("pid") else None
    if began is None and state in RUNNING_STATES:
        began = record.get("since")
    checked = record.get("health_checked")
    row = [
        str(record.get("name", "?")),
        state,
        _or_dash(record.get("pid") or None),
        "-" if began is None else format_uptime(now - float(began)),
        _or_dash(record.get("restarts")),
        format_last_exit(record.get("last_exit")),
        "yes" if record.get("ready") else "no",
        _or_dash(record.get("health")),
        "-" if checked is None else format_uptime(now - float(checked)) + " ago",
    ]
    if details:
        row += [
            format_cpu(record.get("cpu_percent")),
            format_bytes(record.get("rss")),
            _or_dash(record.get("nprocs")),
            format_log(record.get("log")),
        ]
    return row


def format_log(log: Mapping[str, Any] | None) -> str:
    """Where a service's output goes, short (`status --details`; `logs NAME` reads it back)."""
    if not log:
        return "-"
    source, logdir = log.get("source"), log.get("logdir")
    if source == "logdir" and logdir:
        return str(logdir)
    if source == "catchall" and logdir:
        return f"catch-all {logdir}"
    if source == "ring":
        return "console, prefixed"
    if source == "console":
        return "console"
    return one_line(str(log.get("where") or source or "-"))


def reason_of(record: Mapping[str, Any]) -> str:
    """Why a service is in backoff or failed (overlayd's reason, else its last exit), or ``""``."""
    state = record.get("state")
    if state not in ("backoff", "failed"):
        return ""
    reason = record.get("reason")
    if reason:
        return one_line(str(reason))
    last = record.get("last_exit")
    if state == "backoff" and last:
        died = format_last_exit(last)
        how = f"killed by {died}" if last.get("signal") else f"exit code {died}"
        return f"{how} within 1 s of starting; restarting after a pause"
    return ""


def status_table(
    records: Iterable[Mapping[str, Any]], now: float | None = None, details: bool = False
) -> str:
    """The `overlayctl status` table; a `type` column when an s6-rc oneshot is listed, and a
    last `reason` column when a service is in trouble."""
    when = time.time() if now is None else now
    headers = STATUS_HEADERS + DETAIL_HEADERS if details else STATUS_HEADERS
    records = list(records)
    rows = [status_row(r, when, details) for r in records]
    if any(r.get("type") == "oneshot" for r in records):
        headers = (*headers, "type")
        rows = [[*row, _or_dash(r.get("type"))] for row, r in zip(rows, records, strict=True)]
    reasons = [reason_of(r) for r in records]
    if any(reasons):
        headers = (*headers, "reason")
        rows = [[*row, reason or ""] for row, reason in zip(rows, reasons, strict=True)]
    return table(headers, rows, STATUS_RIGHT)


def to_json(obj: Any, pretty: bool = False) -> str:
    """JSON for `--json`: indented for one-shot answers, one line per event for streams."""
    from overlayctl.jsonout import dumps

    return dumps(obj, indent=2 if pretty else None)


def format_timestamp(epoch: float) -> str:
    """Local time, ISO 8601 to the second: `2026-11-29T08:30:01`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def format_event(record: Mapping[str, Any]) -> str:
    """One `events` line: `2026-11-29T08:30:01 web up pid=123`."""
    since = record.get("since")
    stamp = format_timestamp(time.time() if since is None else float(since))
    state = str(record.get("state", "?"))
    parts = [stamp, str(record.get("name", "?")), state]
    if record.get("pid"):
        parts.append(f"pid={record['pid']}")
    if state in EXITED_STATES and record.get("last_exit"):
        parts.append(f"exit={format_last_exit(record['last_exit'])}")
    if record.get("health"):  # a health change is an event too (same state)
        parts.append(f"health={record['health']}")
    return " ".join(parts)


def one_line(message: str) -> str:
    """Fold a message onto one line, so stderr stays one line per error."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def error_line(message: str) -> str:
    """The single stderr line for an error: `overlayctl: <message>`."""
    return f"{PROG}: {one_line(message)}"


def problem_line(problem: Mapping[str, Any]) -> str:
    """One `check` culprit: `overlayctl: check: web is backoff (crashed 3 times)`."""
    text = f"check: {problem.get('name', '?')} is {problem.get('state', '?')}"
    reason = problem.get("reason")
    if reason:
        text += f" ({reason})"
    return error_line(text)


def _with_path(message: str, path: str | None) -> str:
    if path and path not in message:
        return f"{message} (socket {path})"
    return message


def failure(exc: BaseException, socket_path: str | None) -> tuple[int, str]:
    """Map an exception from talking to overlayd to (exit code, one-line message).

    `socket_path` is the path we tried, so every "cannot reach" message names it.
    """
    from overlayctl.client import ClientError, ConnectError, ProtocolMismatch, RemoteError

    if isinstance(exc, RemoteError):
        code = str(getattr(exc, "code", "") or "")
        message = str(getattr(exc, "message", "") or "") or str(exc) or code
        return (EXIT_NO if code == "timeout" else EXIT_REFUSED), one_line(message)
    if isinstance(exc, ConnectError):
        path = getattr(exc, "path", None) or socket_path
        reason = getattr(exc, "reason", None) or exc
        return EXIT_UNREACHABLE, one_line(f"cannot reach overlayd at {path}: {reason}")
    if isinstance(exc, (ProtocolMismatch, ClientError)):
        # Reached, but no usable answer: too old a protocol, or a garbled reply.
        return EXIT_UNREACHABLE, one_line(_with_path(str(exc) or type(exc).__name__, socket_path))
    if isinstance(exc, OSError):
        detail = str(exc) or type(exc).__name__
        return EXIT_UNREACHABLE, one_line(f"lost contact with overlayd at {socket_path}: {detail}")
    return EXIT_NO, one_line(f"internal error: {type(exc).__name__}: {exc}")
