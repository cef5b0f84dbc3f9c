"""The one definition of every overlayctl command: name, arguments, options, help, examples.

Each command function in `commands.py` is declared with `@command(...)`; two front ends read
the same table, so a command is written once:

* `dispatch.py` runs the plain, well-formed command lines without importing anything heavy
  (every command is a health check or a hook somebody runs every few seconds), and
* `cli.py` builds the Typer app from the table for everything else: `--help`, shell
  completion and every usage error, worded by Typer/click.

This module is on every command's start-up path: plain classes only, no typing, no enum.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

#: Kinds of value an option or argument takes, with the Python type each becomes.
KINDS = {"flag": bool, "str": str, "int": int, "float": float}


class Opt:
    """An option: `--name` (a flag) or `--name VALUE`; `dest` is the function's parameter."""

    __slots__ = ("default", "dest", "flag", "help", "kind", "metavar", "minimum", "short")

    def __init__(
        self,
        flag: str,
        dest: str,
        help: str,
        kind: str = "flag",
        metavar: str | None = None,
        default: object = None,
        minimum: float | None = None,
        short: str | None = None,
    ) -> None:
        self.flag = flag
        self.short = short  # a one-letter alias (`-n`), or None
        self.dest = dest
        self.help = help
        self.kind = kind
        self.metavar = metavar
        self.default = False if kind == "flag" else default
        self.minimum = minimum


class Arg:
    """A positional argument; `many` takes every remaining one (at least one if `required`).

    `complete` names what shell completion offers: "service" (live names from overlayd) or
    "signal".
    """

    __slots__ = ("complete", "dest", "help", "many", "metavar", "required")

    def __init__(
        self,
        dest: str,
        metavar: str,
        help: str,
        many: bool = False,
        required: bool = True,
        complete: str | None = None,
    ) -> None:
        self.dest = dest
        self.metavar = metavar
        self.help = help
        self.many = many
        self.required = required
        self.complete = complete

    @property
    def default(self) -> object:
        return () if self.many else None


class Command:
    """One command: the function that runs it and what it accepts.

    `run(inv, **values)` does the work and returns the exit code. `check(values)` returns a
    usage problem the options' types cannot express (None when fine).
    """

    __slots__ = ("args", "check", "epilog", "help", "name", "opts", "run")

    def __init__(
        self,
        name: str,
        run: Callable[..., int],
        args: tuple[Arg, ...],
        opts: tuple[Opt, ...],
        examples: tuple[str, ...],
        check: Callable[[dict[str, object]], str | None] | None,
    ) -> None:
        self.name = name
        self.run = run
        self.args = args
        self.opts = opts
        self.help = (run.__doc__ or "").strip()
        self.epilog = examples
        self.check = check

    def defaults(self) -> dict[str, object]:
        """Every parameter at its default value."""
        values: dict[str, object] = {o.dest: o.default for o in self.opts}
        values.update((a.dest, a.default) for a in self.args)
        return values


#: The options every command takes, before or after its name (after wins for --socket).
SOCKET = Opt(
    "--socket",
    "socket",
    "Control socket. Default: $OVERLAY_SOCKET, else $OVERLAY_RUN_DIR/control.sock, else"
    " /run/overlay/control.sock, then /tmp/overlay-UID/control.sock.",
    "str",
    "PATH",
)
JSON = Opt("--json", "json", "Print JSON instead of text.")
GLOBAL_OPTS = (SOCKET, JSON)

#: Every command, in the order `--help` lists them.
COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    *params: Arg | Opt,
    examples: tuple[str, ...] = (),
    check: Callable[[dict[str, object]], str | None] | None = None,
) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Declare the decorated function as the command `name` taking `params`."""

    def register(run: Callable[..., int]) -> Callable[..., int]:
        args = tuple(p for p in params if isinstance(p, Arg))
        opts = tuple(p for p in params if isinstance(p, Opt))
        COMMANDS[name] = Command(name, run, args, opts, examples, check)
        return run

    return register
