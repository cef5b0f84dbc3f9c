"""Error codes of the control protocol and the exception that carries them.

The codes are stable strings (DESIGN §5): clients branch on them, so a code is never renamed or
removed. Use the constants rather than string literals so a typo is a NameError, not a new code.
"""

from __future__ import annotations

BAD_REQUEST = "bad_request"
NO_SUCH_METHOD = "no_such_method"
NO_SUCH_SERVICE = "no_such_service"
PERMISSION_DENIED = "permission_denied"
INVALID_STATE = "invalid_state"
TIMEOUT = "timeout"
SHUTTING_DOWN = "shutting_down"
INTERNAL = "internal"

#: Every code this version of the protocol defines, in documentation order.
ERROR_CODES: tuple[str, ...] = (
    BAD_REQUEST,
    NO_SUCH_METHOD,
    NO_SUCH_SERVICE,
    PERMISSION_DENIED,
    INVALID_STATE,
    TIMEOUT,
    SHUTTING_DOWN,
    INTERNAL,
)


class ProtocolError(Exception):
    """A protocol-level failure with a stable ``code``, a human ``message`` and optional ``data``.

    Raised by the decoder and validators (always ``bad_request`` or ``no_such_method``), and by
    server handlers to answer a request with an error. ``str()`` is the message alone.

    The code is not checked against ``ERROR_CODES``: a newer peer may send a code this version
    does not know, and ``from_wire`` must still represent it.
    """

    def __init__(self, code: str, message: str, data: object = None) -> None:
        super().__init__(code, message, data)
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> dict[str, object]:
        """The error map sent in a response: ``{"code", "message", "data"}``."""
        return {"code": self.code, "message": self.message, "data": self.data}

    @classmethod
    def from_wire(cls, error: object) -> ProtocolError:
        """Rebuild the exception from an error map; ``bad_request`` if the map is malformed."""
        if type(error) is not dict:
            raise cls(BAD_REQUEST, f"error must be a map, got {type_name(error)}")
        code = error.get("code")
        message = error.get("message")
        if type(code) is not str:
            raise cls(BAD_REQUEST, f"error code must be a str, got {type_name(code)}")
        if type(message) is not str:
            raise cls(BAD_REQUEST, f"error message must be a str, got {type_name(message)}")
        return cls(code, message, error.get("data"))


_WIRE_NAMES = {
    type(None): "nil",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bin",
    list: "array",
    tuple: "array",
    dict: "map",
}


def type_name(value: object) -> str:
    """The msgpack name of ``value``'s type (``nil``, ``array``, ``map``...), for messages."""
    return _WIRE_NAMES.get(type(value)) or type(value).__name__


def describe(value: object, limit: int = 40) -> str:
    """A short rendering of a peer-supplied value for an error message, never a megabyte of it."""
    kind = type(value)
    if kind is list or kind is tuple or kind is dict:
        return f"{type_name(value)} of {len(value)} items"
    if kind is str or kind is bytes:
        text = repr(value[:limit])
    elif kind in _WIRE_NAMES:
        text = repr(value)
    else:
        return type_name(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
