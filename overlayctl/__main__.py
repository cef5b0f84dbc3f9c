"""Entry point of `overlayctl` and `python -m overlayctl`.

`main()` looks at argv before importing anything heavy: a plain `status`, `check` or
`version` runs through `fast.py` without Typer (they are health checks, run every few
seconds); everything else, `--help` included, goes to the Typer app in `cli.py`.
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
        from overlayctl import fast

        parsed = fast.parse(args)
        if parsed is not None:
            return fast.run(parsed)
        from overlayctl import cli

        return cli.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last line of defence: one line, never a traceback
        print(f"overlayctl: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
