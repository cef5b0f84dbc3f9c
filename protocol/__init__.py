"""The overlayd control protocol: msgpack-RPC over a Unix stream socket (DESIGN §5).

Shared by the server (overlayd.rpc) and the client (overlayctl.client). Depends on msgpack and
the standard library only, and imports nothing heavy: it is on a health check's start-up path.
"""

from .errors import (
    BAD_REQUEST,
    ERROR_CODES,
    INTERNAL,
    INVALID_STATE,
    NO_SUCH_METHOD,
    NO_SUCH_SERVICE,
    PERMISSION_DENIED,
    SHUTTING_DOWN,
    TIMEOUT,
    ProtocolError,
)
from .framing import (
    MAX_DEPTH,
    MAX_FRAME,
    MAX_ITEMS,
    NOTIFICATION,
    REQUEST,
    RESPONSE,
    Decoder,
    pack_notification,
    pack_request,
    pack_response,
)
from .messages import MAX_MSGID, Notification, Request, Response, parse_message
from .methods import (
    METHODS,
    PROTOCOL_VERSION,
    READ_ONLY_METHODS,
    RECORD_KEYS,
    REQUIRED,
    STATE_NOTIFICATION,
    STATES,
    WAIT_CONDITIONS,
    MethodSpec,
    ParamSpec,
    validate_request,
)

__all__ = [
    "BAD_REQUEST",
    "ERROR_CODES",
    "INTERNAL",
    "INVALID_STATE",
    "MAX_DEPTH",
    "MAX_FRAME",
    "MAX_ITEMS",
    "MAX_MSGID",
    "METHODS",
    "NOTIFICATION",
    "NO_SUCH_METHOD",
    "NO_SUCH_SERVICE",
    "PERMISSION_DENIED",
    "PROTOCOL_VERSION",
    "READ_ONLY_METHODS",
    "RECORD_KEYS",
    "REQUEST",
    "REQUIRED",
    "RESPONSE",
    "SHUTTING_DOWN",
    "STATES",
    "STATE_NOTIFICATION",
    "TIMEOUT",
    "WAIT_CONDITIONS",
    "Decoder",
    "MethodSpec",
    "Notification",
    "ParamSpec",
    "ProtocolError",
    "Request",
    "Response",
    "pack_notification",
    "pack_request",
    "pack_response",
    "parse_message",
    "validate_request",
]
