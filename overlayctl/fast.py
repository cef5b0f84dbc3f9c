"""The fast path: `status`, `check` and `version` without importing Typer.

Health checks run `overlayctl status` / `overlayctl check` every few seconds, and importing
typer (with click and rich) costs more than starting the interpreter. `parse()` recognises
the plain forms of those three commands with a tiny hand-rolled parser; anything else —
`--help`, an unknown option, an option missing its value, a name that looks like an option,
another command — returns None, and `__main__` hands the untouched argv to the Typer app,
which owns every error message and the help. So the fast path never has to reproduce a usage
error: it only ever runs command lines that the Typer app would run the same way.

Accepted (options anywhere after `overlayctl`, last `--socket` wins, as in the Typer app):

    overlayctl [--socket PATH | --socket=PATH] [--json] status [--details] [NAME...]
    overlayctl [--socket PATH | --socket=PATH] [--json] check
    overlayctl [--socket PATH | --socket=PATH] [--json] version
"""

from __future__ import annotations

from overlayctl import commands

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from overlayctl.commands import ClientFactory

FAST_COMMANDS = frozenset({"status", "check", "version"})


class FastArgs:
    """A command line the fast path will run."""

    __slots__ = ("command", "details", "json", "names", "socket")

    def __init__(
        self,
        command: str,
        socket: str | None = None,
        json: bool = False,
        details: bool = False,
        names: tuple[str, ...] = (),
    ) -> None:
        self.command = command
        self.socket = socket
        self.json = json
        self.details = details
        self.names = names

    def _key(self) -> tuple[object, ...]:
        return (self.command, self.socket, self.json, self.details, self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FastArgs) and self._key() == other._key()

    def __repr__(self) -> str:
        return "FastArgs(command={!r}, socket={!r}, json={!r}, details={!r}, names={!r})".format(
            *self._key()
        )


def _socket_value(value: str) -> str | None:
    # An empty value or one that looks like an option is for Typer to judge.
    return value if value and not value.startswith("-") else None


def parse(argv: Sequence[str]) -> FastArgs | None:
    """Recognise a simple status/check/version command line; None means "ask Typer"."""
    command: str | None = None
    socket: str | None = None
    json = details = False
    names: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--socket":
            if i >= len(argv) or _socket_value(argv[i]) is None:
                return None
            socket = argv[i]
            i += 1
        elif arg.startswith("--socket="):
            socket = _socket_value(arg.partition("=")[2])
            if socket is None:
                return None
        elif arg == "--json":
            json = True
        elif command is None:
            if arg not in FAST_COMMANDS:
                return None
            command = arg
        elif command == "status" and arg == "--details":
            details = True
        elif command == "status" and arg and not arg.startswith("-"):
            names.append(arg)
        else:
            return None
    if command is None:
        return None
    return FastArgs(command, socket, json, details, tuple(names))


def run(args: FastArgs, factory: ClientFactory | None = None) -> int:
    """Run a parsed fast-path command through the same code the Typer app uses."""
    inv = commands.Invocation(socket=args.socket, json=args.json, factory=factory)
    if args.command == "status":
        return commands.status(inv, args.names, details=args.details)
    if args.command == "check":
        return commands.check(inv)
    return commands.version(inv)
