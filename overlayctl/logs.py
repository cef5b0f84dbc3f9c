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
    from typing import Any

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


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def last_lines(logdir: str, count: int) -> list[bytes]:
    """The last `count` lines across `current` and the newest archives (-1: all of them)."""
    collected: list[bytes] = []
    for path in [os.path.join(logdir, "current"), *reversed(archives(logdir))]:
        data = _read(path)
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        collected = lines + collected
        if 0 <= count <= len(collected):
            break
    return collected if count < 0 else collected[len(collected) - min(count, len(collected)) :]


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def follow_logdir(logdir: str) -> None:
    """Print what is appended to `current`, following it when s6-log rotates it; until ^C."""
    path = os.path.join(logdir, "current")
    handle = open(path, "rb")  # noqa: SIM115 (re-opened at each rotation)
    handle.seek(0, os.SEEK_END)
    try:
        while True:
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
                handle = open(path, "rb")  # noqa: SIM115
                continue
            time.sleep(FOLLOW_INTERVAL)
    finally:
        handle.close()


def logs(inv: Invocation, name: str, lines: int = 10, follow: bool = False) -> int:
    """Print the last `lines` lines of `name`'s output; follow with `follow`."""

    def body(client: "Any") -> int:
        answer = client.call("logs", name, lines, None)
        source = answer.get("source")
        if source == "logdir":
            logdir = str(answer["logdir"])
            try:
                text = last_lines(logdir, lines)
            except OSError as exc:
                err(render.error_line(f"logs: cannot read {logdir}: {exc.strerror}"))
                return render.EXIT_NO
            if inv.json:
                shown = [line.decode("utf-8", "replace") for line in text]
                out(render.to_json({**answer, "lines": shown}, pretty=True))
            elif text:
                _write(b"\n".join(text) + b"\n")
            if follow:
                follow_logdir(logdir)
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


def register(app: "Any", inv_of: "Any", socket_opt: "Any", json_opt: "Any") -> None:
    """Add the `logs` command to the Typer app (called by cli.py)."""
    from typing import Annotated

    import typer

    def logs_command(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(metavar="NAME", help="The service.")],
        lines: Annotated[
            int, typer.Option("-n", "--lines", metavar="N", min=-1, help="Lines to show (-1: all).")
        ] = 10,
        follow: Annotated[
            bool, typer.Option("-f", "--follow", help="Keep printing new lines until ^C.")
        ] = False,
        socket: socket_opt = None,
        json_output: json_opt = False,
    ) -> None:
        """Show a service's recent output.

        From the logdir its s6-log writes (current and the newest archives), or, with
        OVERLAY_LOG_PREFIX=1, from the lines overlayd keeps. Exit 1 when neither exists,
        saying where the output goes.
        """
        code = logs(inv_of(ctx, socket, json_output), name, lines, follow)
        if code:
            raise typer.Exit(code)

    app.command(
        "logs",
        epilog="\b\nExamples:\n  overlayctl logs web\n  overlayctl logs -n 100 -f web",
    )(logs_command)
