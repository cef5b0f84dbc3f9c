"""`overlayctl logs NAME [-n N] [-f]`: a service's recent output.

overlayd says where the output goes (RPC `logs`). A logdir (the service's s6-log) is read
here: `current`, then the newest `@….s` archives until N lines are found; `-f` then follows
`current` across rotations, as `tail -F` does. The ring of recent lines (OVERLAY_LOG_PREFIX=1)
comes with the answer; `-f` asks again for the lines past the cursor. Anything else (the
catch-all, the container's output): exit 1, saying where the output goes.

No `from __future__ import annotations` here: Typer reads the annotations of the command
defined inside `register`, and they name objects local to it.
"""

import os
import sys
import time

from overlayctl import render
from overlayctl.commands import Invocation, err, execute, out

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

FOLLOW_INTERVAL = 0.25  # s between looks at `current` or at the ring while following
READ_CHUNK = 1 << 16


def archives(logdir: str) -> list[str]:
    """The logdir's finished archives, oldest first (TAI64N names sort by time)."""
    try:
        names = os.listdir(logdir)
    except OSError:
        return []
    return [
        os.path.join(logdir, n)
        for n in sorted(n for n in names if n.startswith("@") and n.endswith(".s"))
    ]


def _lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _open(path: str) -> "BinaryIO | None":
    try:
        return open(path, "rb")  # handed to the follower, which closes it
    except FileNotFoundError:
        return None


def read_tail(logdir: str, count: int) -> "tuple[list[bytes], BinaryIO | None]":
    """The last `count` lines (-1: all) across `current` and the newest archives, and
    `current` left open just past them, for -f to go on from without a gap.

    `current` is opened first: if s6-log rotates it meanwhile, the archive it became is
    recognised by its inode and not read twice.
    """
    current = _open(os.path.join(logdir, "current"))
    data = current.read() if current is not None else b""
    whole = data.rfind(b"\n") + 1  # a line being written is left for the follower
    collected = _lines(data[:whole])
    inode = None
    if current is not None:
        current.seek(whole)
        inode = os.fstat(current.fileno()).st_ino
    for path in reversed(archives(logdir)):
        if 0 <= count <= len(collected):
            break
        try:
            with open(path, "rb") as handle:
                if os.fstat(handle.fileno()).st_ino == inode:
                    continue
                collected = _lines(handle.read()) + collected
        except FileNotFoundError:
            continue  # deleted by s6-log's rotation meanwhile
    if count >= 0:
        collected = collected[len(collected) - min(count, len(collected)) :]
    return collected, current


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def follow_logdir(logdir: str, handle: "BinaryIO | None") -> None:
    """Print what is appended to `current` from `handle` on, following it when s6-log
    rotates it (the rest of the old file first), as `tail -F` does; until ^C."""
    path = os.path.join(logdir, "current")
    try:
        while True:
            if handle is None:
                handle = _open(path)
                if handle is None:
                    time.sleep(FOLLOW_INTERVAL)
                    continue
            data = handle.read(READ_CHUNK)
            if data:
                _write(data)
                continue
            try:
                rotated = os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                rotated = False  # between the rename and the new `current`
            if rotated:
                _write(handle.read())  # the tail of the file that became an archive
                handle.close()
                handle = None
                continue
            time.sleep(FOLLOW_INTERVAL)
    finally:
        if handle is not None:
            handle.close()


def logs(inv: Invocation, name: str, lines: int = 10, follow: bool = False) -> int:
    """`overlayctl logs` (declared in commands.py): the last `lines` lines, then `follow`."""

    def body(client: "Any") -> int:
        answer = client.call("logs", name, lines, None)
        source = answer.get("source")
        if source == "logdir":
            logdir = str(answer["logdir"])
            try:
                text, current = read_tail(logdir, lines)
            except OSError as exc:
                err(render.error_line(f"logs: cannot read {logdir}: {exc.strerror}"))
                return render.EXIT_NO
            if inv.json:
                shown = [line.decode("utf-8", "replace") for line in text]
                out(render.to_json({**answer, "lines": shown}, pretty=True))
            elif text:
                _write(b"\n".join(text) + b"\n")
            if follow:
                follow_logdir(logdir, current)
            elif current is not None:
                current.close()
            return render.EXIT_OK
        if source == "ring":
            if inv.json:
                out(render.to_json(answer, pretty=True))
            for line in answer.get("lines") or ():
                out(line)
            cursor = answer.get("cursor")
            while follow:
                sys.stdout.flush()
                time.sleep(FOLLOW_INTERVAL)
                answer = client.call("logs", name, -1, cursor)
                for line in answer.get("lines") or ():
                    out(line)
                cursor = answer.get("cursor", cursor)
            return render.EXIT_OK
        if inv.json:
            out(render.to_json(answer, pretty=True))
        err(
            render.error_line(
                f"logs: {name}: no copy of its output is kept; it goes to {answer.get('where')}"
            )
        )
        return render.EXIT_NO

    return execute(inv, body, on_interrupt=render.EXIT_OK)
