"""The cheap front end: run a plain, well-formed command line straight from spec.py's table.

Every command is something scripts, probes and hooks run every few seconds, and importing
Typer (click, rich, ...) costs several times a bare interpreter start. `parse()` reads the
command lines whose meaning is beyond doubt — known command, known options with values of
the plain form, the right number of arguments — from the same declarations the Typer app is
built from. Anything else (`--help`, completion, an unknown or malformed option, a value
Typer might read differently, a missing argument) returns None and `__main__` hands the
untouched argv to the Typer app, which owns every help text and error message. So this path
never words an error: it only runs command lines Typer would run the same way, which
tests/test_overlayctl_unit.py checks against Typer's own parse.
"""

from __future__ import annotations

import os

from overlayctl import commands
from overlayctl.spec import COMMANDS, GLOBAL_OPTS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from overlayctl.commands import ClientFactory
    from overlayctl.spec import Command, Opt

#: Set by the shell completion scripts: such a run is for Typer.
COMPLETE_VAR = "_OVERLAYCTL_COMPLETE"
_GLOBAL = {o.flag: o for o in GLOBAL_OPTS}


class Call:
    """A parsed command line: the command, its parameter values, --socket and --json."""

    __slots__ = ("command", "json", "socket", "values")

    def __init__(
        self, command: str, values: dict[str, object], socket: str | None, json: bool
    ) -> None:
        self.command = command
        self.values = values
        self.socket = socket
        self.json = json

    def _key(self) -> tuple[object, ...]:
        return (self.command, sorted(self.values.items()), self.socket, self.json)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Call) and self._key() == other._key()

    def __repr__(self) -> str:
        return f"Call({self.command!r}, {self.values!r}, socket={self.socket!r}, json={self.json})"


def _plain_int(text: str) -> bool:
    digits = text[1:] if text[:1] == "-" else text
    return digits.isascii() and digits.isdigit()


def _plain_float(text: str) -> bool:
    whole, _, fraction = text.partition(".")
    return (
        _plain_int(whole or "0")
        and (not fraction or (fraction.isascii() and fraction.isdigit()))
        and bool(whole.lstrip("-") or fraction)
    )


def convert(opt: Opt, text: str) -> object:
    """`text` as `opt`'s value; None when it is not in the plain form (Typer judges it)."""
    if opt.kind == "str":
        return text if text and not text.startswith("-") else None
    if opt.kind == "int":
        return int(text) if _plain_int(text) else None
    if not _plain_float(text):
        return None
    value = float(text)
    if opt.minimum is not None and value < opt.minimum:
        return None
    return value


def _bind(command: Command, positional: list[str], values: dict[str, object]) -> bool:
    """Assign positional words to the command's arguments; False when they do not fit."""
    rest = list(positional)
    for arg in command.args:
        if arg.many:
            if arg.required and not rest:
                return False
            values[arg.dest] = tuple(rest)
            rest = []
        elif rest:
            values[arg.dest] = rest.pop(0)
        elif arg.required:
            return False
    return not rest


def parse(argv: Sequence[str]) -> Call | None:
    """The Call for a plain command line; None means "ask Typer"."""
    if os.environ.get(COMPLETE_VAR):
        return None
    command: Command | None = None
    options = _GLOBAL
    values: dict[str, object] = {}
    given: dict[str, object] = {"socket": None, "json": False}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word.startswith("-") and word != "-":
            flag, has_value, text = word.partition("=")
            opt = options.get(flag)
            if opt is None:
                return None  # --help, -h, --, an unknown option, a negative number
            if opt.kind == "flag":
                if has_value:
                    return None
                value: object = True
            else:
                if not has_value:
                    if i >= len(argv):
                        return None
                    text = argv[i]
                    i += 1
                value = convert(opt, text)
                if value is None:
                    return None
            (given if opt in GLOBAL_OPTS else values)[opt.dest] = value
        elif command is None:
            command = COMMANDS.get(word)
            if command is None:
                return None
            values = command.defaults()
            options = {**_GLOBAL, **{f: o for o in command.opts for f in (o.flag, o.short) if f}}
        elif word:
            positional.append(word)
        else:
            return None  # an empty name: let the full parser have it
    if command is None or not _bind(command, positional, values):
        return None
    if command.check is not None and command.check(values) is not None:
        return None
    return Call(command.name, values, given["socket"], bool(given["json"]))


def run(call: Call, factory: ClientFactory | None = None) -> int:
    """Run a parsed command through its function in commands.py."""
    inv = commands.Invocation(socket=call.socket, json=call.json, factory=factory)
    return COMMANDS[call.command].run(inv, **call.values)
