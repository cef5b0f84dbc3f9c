"""Entry point of `overlayctl` and `python -m overlayctl`.

`main()` parses argv with the cheap front end (`dispatch.py`) first: a plain command line runs
without importing Typer. Everything else — `--help`, completion, a usage error — goes to the
Typer app in `cli.py`, built from the same declarations.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run overlayctl on `argv` (default: sys.argv[1:]) and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        from overlayctl import dispatch

        call = dispatch.parse(args)
        if call is not None:
            return dispatch.run(call)
        from overlayctl import cli

        return cli.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`overlayctl --help | head`): done
        from overlayctl.commands import silence_stdout

        silence_stdout()
        return 0
    except Exception as exc:  # last line of defence: one line, never a traceback
        print(f"overlayctl: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def run() -> None:
    """The `overlayctl` command: main(), then exit at once.

    The interpreter's own shutdown (tearing down every module, a last garbage collection) costs
    a health check ~3 ms, a tenth of its run, for nothing: output is flushed here and overlayctl
    holds nothing else that needs closing (the kernel closes the socket).
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the reader went away: nothing left to say
    os._exit(code)


if __name__ == "__main__":
    run()
