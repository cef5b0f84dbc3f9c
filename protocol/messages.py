"""The three msgpack-RPC message shapes and ``parse_message``, which checks a decoded value.

``parse_message`` checks the envelope only (tag, msgid, method, params/error types); whether a
request's method exists and its params fit is ``methods.validate_request``'s job.
"""

from __future__ import annotations

from .errors import BAD_REQUEST, ProtocolError, describe, type_name
from .records import record
from .wire import NOTIFICATION, REQUEST, RESPONSE

MAX_MSGID = (1 << 32) - 1


# Tuples with named fields, as namedtuple makes them, without importing `collections` (~2 ms
# of every overlayctl run): see records.py.
Request = record(
    "Request", "msgid method params", module=__name__,
    doc="``[0, msgid, method, params]``: a call that expects one Response.",
)
Response = record(
    "Response", "msgid error result", module=__name__,
    doc="``[1, msgid, error, result]``: ``error`` is None or a map with code, message and data.",
)
Notification = record(
    "Notification", "method params", module=__name__,
    doc="``[2, method, params]``: a one-way message, no reply.",
)


def _fail(message: str) -> ProtocolError:
    return ProtocolError(BAD_REQUEST, message)


def _msgid(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_MSGID:
        raise _fail(f"msgid must be an unsigned 32-bit int, got {describe(value)}")
    return value


def _method(value: object) -> str:
    if type(value) is not str:
        raise _fail(f"method must be a str, got {type_name(value)}")
    return value


def _params(value: object) -> list[object]:
    if type(value) is not list:
        raise _fail(f"params must be an array, got {type_name(value)}")
    return value


def _error(value: object) -> dict[str, object] | None:
    if value is None:
        return None
    return ProtocolError.from_wire(value).to_wire()


def parse_message(obj: object) -> Request | Response | Notification:
    """Check a decoded value's envelope and return it as a Request, Response or Notification.

    Raises ``ProtocolError(bad_request)`` naming the first thing wrong. A response's error map is
    normalised to exactly the keys code, message and data.
    """
    if type(obj) is not list:
        raise _fail(f"message must be an array, got {type_name(obj)}")
    if not obj:
        raise _fail("message is an empty array")
    tag = obj[0] if type(obj[0]) is int else None  # bool and float are not type tags
    if tag == REQUEST:
        if len(obj) != 4:
            raise _fail(f"request must be [0, msgid, method, params], got {len(obj)} elements")
        return Request(_msgid(obj[1]), _method(obj[2]), _params(obj[3]))
    if tag == RESPONSE:
        if len(obj) != 4:
            raise _fail(f"response must be [1, msgid, error, result], got {len(obj)} elements")
        return Response(_msgid(obj[1]), _error(obj[2]), obj[3])
    if tag == NOTIFICATION:
        if len(obj) != 3:
            raise _fail(f"notification must be [2, method, params], got {len(obj)} elements")
        return Notification(_method(obj[1]), _params(obj[2]))
    raise _fail(f"message type must be 0, 1 or 2, got {describe(obj[0])}")
