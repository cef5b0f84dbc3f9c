"""The method table: every RPC method, its positional params, and request validation.

Params are positional (msgpack-RPC). Types are checked exactly, so ``True`` is not an int and
``1`` is not a bool. Trailing params with defaults may be omitted; ``validate_request`` returns
the full, normalised params list the handler receives.
"""

from __future__ import annotations

import math

from .errors import BAD_REQUEST, NO_SUCH_METHOD, ProtocolError, describe, type_name
from .records import record
from .states import RECORD_KEYS as RECORD_KEYS
from .states import STATES as STATES
from .wire import PROTOCOL_VERSION as PROTOCOL_VERSION
from .wire import STATE_NOTIFICATION as STATE_NOTIFICATION

TYPE_CHECKING = False  # typing is not imported at run time: this is on a health check's path
if TYPE_CHECKING:
    from collections.abc import Callable

    from .messages import Request

#: Service states and record keys live in protocol/states.py; re-exported here.
#: Values of ``wait``'s ``condition`` param.
WAIT_CONDITIONS: tuple[str, ...] = ("up", "ready", "down")


class _Required:
    """Marker for a param without a default."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()

_NIL = type(None)


class ParamSpec(record("ParamSpec", ("name", "types", "default", "want", "check"))):
    """One positional param: exact accepted ``types``, ``default`` or REQUIRED, ``want`` (text
    for error messages) and ``check`` (value -> problem text or None) for finer constraints."""

    __slots__ = ()


class MethodSpec(record("MethodSpec", ("name", "params", "read_only", "doc"))):
    """One method: its ``params`` (tuple of ParamSpec, in order), whether it only reads state
    (group members may call it), and a one-line ``doc``."""

    __slots__ = ()

    def bind(self, params: list[object]) -> list[object]:
        """Check positional ``params`` and return them with omitted defaults filled in."""
        specs = self.params
        if len(params) > len(specs):
            names = ", ".join(p.name for p in specs) or "none"
            raise ProtocolError(
                BAD_REQUEST,
                f"{self.name}: takes at most {len(specs)} params ({names}), got {len(params)}",
            )
        bound: list[object] = []
        for index, spec in enumerate(specs):
            if index >= len(params):
                if spec.default is REQUIRED:
                    raise ProtocolError(
                        BAD_REQUEST, f"{self.name}: missing param '{spec.name}' ({spec.want})"
                    )
                default = spec.default
                bound.append(list(default) if type(default) is list else default)
                continue
            value = params[index]
            problem = None
            if type(value) not in spec.types:
                problem = f"got {type_name(value)}"
            elif spec.check is not None:
                problem = spec.check(value)
            if problem:
                raise ProtocolError(
                    BAD_REQUEST, f"{self.name}: param '{spec.name}' must be {spec.want}, {problem}"
                )
            bound.append(value)
        return bound


def _names(required: bool) -> Callable[[list[object]], str | None]:
    """A check for a list of service names: str items, non-empty ones, at least one if required."""

    def check(value: list[object]) -> str | None:
        if required and not value:
            return "got an empty array"
        for index, item in enumerate(value):
            if type(item) is not str:
                return f"item {index} is {type_name(item)}"
            if not item:
                return f"item {index} is an empty str"
        return None

    return check


def _condition(value: str) -> str | None:
    return None if value in WAIT_CONDITIONS else f"got {describe(value)}"


def _timeout(value: float | int | None) -> str | None:
    if value is None or (math.isfinite(value) and value >= 0):
        return None
    return f"got {describe(value)}"


def _at_least(value: int, low: int) -> str | None:
    return None if value >= low else f"got {value}"


def _param(
    name: str,
    types: tuple[type, ...],
    default: object = REQUIRED,
    want: str | None = None,
    check: Callable[[object], str | None] | None = None,
) -> ParamSpec:
    if want is None:
        want = " or ".join(type_name(t()) for t in types)  # t() is a sample value of type t
    return ParamSpec(name, tuple(types), default, want, check)


_NAMES = _param("names", (list,), [], "an array of service names", _names(False))
_NAMES_REQUIRED = _param("names", (list,), REQUIRED, "a non-empty array of names", _names(True))
_DETAILS = _param("details", (bool,), False)
_SIG = _param("sig", (str, int), want="a signal name or number")
_CONDITION = _param("condition", (str,), want="one of 'up', 'ready', 'down'", check=_condition)
_TIMEOUT = _param("timeout", (float, int, _NIL), None, "seconds (>= 0) or nil", _timeout)
_EXIT_CODE = _param("exit_code", (int, _NIL), None)
_NAME = _param("name", (str,), want="a service name", check=lambda v: None if v else "got ''")
_LINES = _param("lines", (int,), 10, "a number of lines (-1: all kept)", lambda v: _at_least(v, -1))
_AFTER = _param("after", (int, _NIL), None, "a cursor from a previous answer, or nil")
_GROUP = _param("group", (bool,), False)

_READ, _WRITE = True, False

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("hello", (), _READ, "Server name and version, protocol version, methods."),
        MethodSpec("status", (_NAMES, _DETAILS), _READ, "Service records, all or the named."),
        MethodSpec("start", (_NAMES_REQUIRED,), _WRITE, "Want up and start; names acted on."),
        MethodSpec("stop", (_NAMES_REQUIRED,), _WRITE, "Want down and stop; names acted on."),
        MethodSpec("restart", (_NAMES_REQUIRED,), _WRITE, "Stop then start; names acted on."),
        MethodSpec("once", (_NAMES_REQUIRED,), _WRITE, "Start, no restart after it exits."),
        MethodSpec(
            "signal",
            (_SIG, _NAMES_REQUIRED, _GROUP),
            _WRITE,
            "Signal each service's main process (its whole process group with group=true).",
        ),
        MethodSpec(
            "wait",
            (_CONDITION, _NAMES_REQUIRED, _TIMEOUT),
            _READ,
            "Block until every named service meets the condition; error 'timeout' if not.",
        ),
        MethodSpec("check", (), _READ, "Health: normally-up services up and ready; problems."),
        MethodSpec("shutdown", (_EXIT_CODE,), _WRITE, "Stop the container, maybe set exit code."),
        MethodSpec("subscribe", (), _READ, "Get a 'state' notification at each state change."),
        MethodSpec(
            "logs",
            (_NAME, _LINES, _AFTER),
            _READ,
            "Where a service's output goes; its recent lines when overlayd keeps them.",
        ),
        MethodSpec("rescan", (), _WRITE, "Re-read services.d: {added: [names], stopped: [names]}."),
    )
}

#: Methods a read-only peer (a member of OVERLAY_SOCKET_GROUP) may call.
READ_ONLY_METHODS: frozenset[str] = frozenset(n for n, s in METHODS.items() if s.read_only)


def validate_request(request: Request) -> list[object]:
    """Check a parsed Request against the method table; return its normalised params list.

    Raises ``ProtocolError`` with ``no_such_method`` (naming it) or ``bad_request`` (naming the
    param and what it must be).
    """
    method, params = request.method, request.params
    spec = METHODS.get(method) if type(method) is str else None
    if spec is None:
        raise ProtocolError(NO_SUCH_METHOD, f"no such method: {describe(method)}")
    if type(params) is not list:
        raise ProtocolError(BAD_REQUEST, f"params must be an array, got {type_name(params)}")
    return spec.bind(params)
