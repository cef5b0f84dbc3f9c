"""Entry point of `overlayctl` and `python -m overlayctl`.

`main()` parses argv with the cheap front end (`dispatch.py`) first: a plain command line runs
without importing Typer. Everything else — `--help`, completion, a usage error — goes to the
Typer app in `cli.py`, built from the same declarations.
"""

from __future__ import annotations

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
    except Exception as exc:  # last line of defence: one line, never a traceback
        print(f"overlayctl: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
