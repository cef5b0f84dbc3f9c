"""Where a service's output goes, for `overlayctl logs` and `status --details`.

In order: the logdir its logger's running `s6-log` writes (read from that process's command
line: its last logdir argument, resolved against its cwd); the ring of recent prefixed lines
(`OVERLAY_LOG_PREFIX=1`); the catch-all's logdir (mixed with everything else); or the
container's output. Only the ring is answered with lines: a logdir is read by the client.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from .core import Core as Container
    from .service import Service

S6_LOG = "s6-log"
MAX_TREE = 64  # processes looked at below a logger when finding its s6-log


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1]]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def logdir_of_s6_log(argv: list[str], cwd: str | None = None) -> str | None:
    """The last logdir in an s6-log command line (an argument starting with `/` or `.`)."""
    if not argv or os.path.basename(argv[0]) != S6_LOG:
        return None
    words = argv[1:]
    index = 0
    while index < len(words) and words[index].startswith("-") and words[index] != "--":
        option = words[index]
        index += 2 if option in ("-l", "-d", "-t") else 1  # options that take a value apart
    if index < len(words) and words[index] == "--":
        index += 1
    logdir = None
    for word in words[index:]:
        if word.startswith(("/", ".")):
            logdir = word
    if logdir is not None and not logdir.startswith("/") and cwd:
        logdir = os.path.normpath(os.path.join(cwd, logdir))
    return logdir


def find_s6_log_logdir(pid: int) -> str | None:
    """The logdir of the s6-log that is `pid` or runs below it, or None."""
    pending, seen = [pid], 0
    while pending and seen < MAX_TREE:
        current = pending.pop(0)
        seen += 1
        argv = _cmdline(current)
        if argv:
            try:
                cwd = os.readlink(f"/proc/{current}/cwd")
            except OSError:
                cwd = None
            found = logdir_of_s6_log(argv, cwd)
            if found:
                return found
        pending.extend(_children(current))
    return None


def describe(container: Container, service: Service) -> dict[str, object]:
    """{'source', 'logdir', 'where'}: where `service`'s output can be read back."""
    logger = container.supervisor.get(f"{service.name}/log")  # its log/ service, if any
    if logger is not None:
        logdir = find_s6_log_logdir(logger.pid) if logger.pid is not None else None
        if logdir is not None:
            return {"source": "logdir", "logdir": logdir, "where": f"{logdir}/current"}
        why = "is not running" if logger.pid is None else "is not s6-log"
        return {
            "source": "logger",
            "logdir": None,
            "where": f"its stdout goes to its logger {logger.name}, which {why}",
        }
    outputs = getattr(container.supervisor, "outputs", None)  # None in a test's fake
    mux = outputs.linemux if outputs is not None else None
    if mux is not None and mux.ring(service.name) is not None:
        return {"source": "ring", "logdir": None, "where": "the container's output, prefixed"}
    catchall = outputs.catchall if outputs is not None else None
    if catchall is not None and catchall.active:
        directory = catchall.settings.uncaught_dir
        return {
            "source": "catchall",
            "logdir": directory,
            "where": f"the catch-all logger, {directory}/current, mixed with other output",
        }
    return {
        "source": "console",
        "logdir": None,
        "where": "the container's output (docker logs); OVERLAY_LOG_PREFIX=1 keeps its recent "
        "lines for overlayctl logs",
    }


def read_back(
    container: Container, service: Service, lines: int, after: int | None
) -> dict[str, object]:
    """The `logs` RPC result: the description, plus the ring's lines and cursor when ringed."""
    result: dict[str, object] = {"name": service.name, **describe(container, service)}
    result["lines"] = None
    result["cursor"] = None
    if result["source"] == "ring":
        ring = container.supervisor.outputs.linemux.ring(service.name)  # type: ignore[union-attr]
        result["lines"], result["cursor"] = ring.tail(lines, after)
    return result
