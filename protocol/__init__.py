"""The overlayd control protocol: msgpack-RPC over a Unix stream socket (DESIGN §5).

Shared by the server (overlayd.rpc) and the client (overlayctl.client). Depends on msgpack and
the standard library only, and imports nothing heavy: it is on a health check's start-up path.

Names are loaded on first use (PEP 562), so `protocol.states` or `protocol.signals` can be
imported on PID 1's boot path without pulling in msgpack.
"""

_WHERE = {
    "BAD_REQUEST": "errors",
    "ERROR_CODES": "errors",
    "INTERNAL": "errors",
    "INVALID_STATE": "errors",
    "NO_SUCH_METHOD": "errors",
    "NO_SUCH_SERVICE": "errors",
    "PERMISSION_DENIED": "errors",
    "SHUTTING_DOWN": "errors",
    "TIMEOUT": "errors",
    "ProtocolError": "errors",
    "MAX_CONTAINERS": "wire",
    "MAX_DEPTH": "wire",
    "MAX_FRAME": "wire",
    "MAX_ITEMS": "wire",
    "NOTIFICATION": "wire",
    "REQUEST": "wire",
    "RESPONSE": "wire",
    "Decoder": "framing",
    "pack_notification": "framing",
    "pack_request": "framing",
    "pack_response": "framing",
    "MAX_MSGID": "messages",
    "Notification": "messages",
    "Request": "messages",
    "Response": "messages",
    "parse_message": "messages",
    "METHODS": "methods",
    "PROTOCOL_VERSION": "wire",
    "READ_ONLY_METHODS": "methods",
    "RECORD_KEYS": "states",
    "REQUIRED": "methods",
    "STATE_NOTIFICATION": "wire",
    "STATES": "states",
    "WAIT_CONDITIONS": "methods",
    "MethodSpec": "methods",
    "ParamSpec": "methods",
    "validate_request": "methods",
}

__all__ = [
    "BAD_REQUEST",
    "ERROR_CODES",
    "INTERNAL",
    "INVALID_STATE",
    "MAX_CONTAINERS",
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


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'protocol' has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
