"""The wire contract: framing, message shapes, the method table, error codes."""

from __future__ import annotations

import msgpack
import pytest

import protocol
from protocol import (
    ERROR_CODES,
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_FRAME,
    MAX_ITEMS,
    METHODS,
    PROTOCOL_VERSION,
    READ_ONLY_METHODS,
    REQUIRED,
    Decoder,
    Notification,
    ProtocolError,
    Request,
    Response,
    pack_notification,
    pack_request,
    pack_response,
    parse_message,
    validate_request,
)
from protocol.purepack import StreamDecoder


def decode_all(data: bytes) -> list[object]:
    return Decoder().feed(data)


def bad_request(excinfo: pytest.ExceptionInfo[ProtocolError]) -> str:
    assert excinfo.value.code == "bad_request"
    return str(excinfo.value)


# -- constants and errors ------------------------------------------------------------------


def test_constants() -> None:
    assert PROTOCOL_VERSION == 1
    assert MAX_FRAME == 1 << 20


def test_error_codes_are_the_documented_strings() -> None:
    assert ERROR_CODES == (
        "bad_request",
        "no_such_method",
        "no_such_service",
        "permission_denied",
        "invalid_state",
        "timeout",
        "shutting_down",
        "internal",
    )
    assert protocol.NO_SUCH_SERVICE == "no_such_service"


def test_protocol_error_wire_round_trip() -> None:
    exc = ProtocolError("no_such_service", "no service named 'web'", {"names": ["web"]})
    assert str(exc) == "no service named 'web'"
    wire = exc.to_wire()
    assert wire == {"code": "no_such_service", "message": "no service named 'web'",
                    "data": {"names": ["web"]}}  # fmt: skip
    back = ProtocolError.from_wire(wire)
    assert (back.code, back.message, back.data) == (exc.code, exc.message, exc.data)


def test_protocol_error_from_wire_tolerates_missing_data_and_unknown_codes() -> None:
    exc = ProtocolError.from_wire({"code": "from_the_future", "message": "m"})
    assert (exc.code, exc.message, exc.data) == ("from_the_future", "m", None)


@pytest.mark.parametrize(
    "error",
    [None, [], "oops", {"message": "m"}, {"code": 1, "message": "m"}, {"code": "x"}],
)
def test_protocol_error_from_wire_rejects_malformed_maps(error: object) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        ProtocolError.from_wire(error)
    bad_request(excinfo)


# -- encoding and round trips --------------------------------------------------------------


def test_request_round_trip() -> None:
    frame = pack_request(7, "status", [["web", "db"], True])
    assert msgpack.unpackb(frame) == [0, 7, "status", [["web", "db"], True]]
    [obj] = decode_all(frame)
    assert parse_message(obj) == Request(7, "status", [["web", "db"], True])


def test_response_round_trip_with_result_and_with_error() -> None:
    ok = parse_message(decode_all(pack_response(1, None, {"healthy": True, "problems": []}))[0])
    assert ok == Response(1, None, {"healthy": True, "problems": []})
    err = ProtocolError("timeout", "still starting: web").to_wire()
    failed = parse_message(decode_all(pack_response(2**32 - 1, err, None))[0])
    assert failed == Response(2**32 - 1, err, None)


def test_notification_round_trip() -> None:
    record = {"name": "web", "state": "up", "last_exit": None, "since": 1.5}
    [obj] = decode_all(pack_notification("state", [record]))
    assert parse_message(obj) == Notification("state", [record])


def test_bytes_stay_bytes_and_str_stays_str() -> None:
    [obj] = decode_all(pack_notification("state", [b"\x00\xff", "é"]))
    assert obj == [2, "state", [b"\x00\xff", "é"]]


def test_encoder_refuses_unencodable_values_with_internal() -> None:
    with pytest.raises(ProtocolError) as excinfo:
        pack_response(1, None, {1, 2})
    assert excinfo.value.code == "internal"


def test_encoder_refuses_frames_over_the_cap() -> None:
    with pytest.raises(ProtocolError) as excinfo:
        pack_response(1, None, b"x" * MAX_FRAME)
    assert excinfo.value.code == "internal"
    assert str(MAX_FRAME) in str(excinfo.value)


# -- the streaming decoders: msgpack's (overlayd) and the pure-Python one (overlayctl) ------


@pytest.fixture(params=[Decoder, StreamDecoder], ids=["msgpack", "purepack"])
def new_decoder(request: pytest.FixtureRequest) -> type[Decoder]:
    """Each bound and behaviour below holds for both decoders."""
    return request.param


def test_decoder_one_byte_at_a_time(new_decoder: type[Decoder]) -> None:
    frames = [
        pack_request(1, "hello", []),
        pack_notification("state", [{"name": "x" * 300, "pid": 2**40}]),
        pack_response(3, None, [1.5, None, b"bin" * 100]),
    ]
    stream = b"".join(frames)
    decoder = new_decoder()
    got: list[object] = []
    for index in range(len(stream)):
        got.extend(decoder.feed(stream[index : index + 1]))
    assert got == [msgpack.unpackb(f) for f in frames]
    assert decoder.buffered == 0


def test_decoder_many_messages_in_one_chunk_and_split_chunks(new_decoder: type[Decoder]) -> None:
    frames = [pack_request(i, "status", [[f"svc{i}"]]) for i in range(50)]
    stream = b"".join(frames)
    decoder = new_decoder()
    first = decoder.feed(stream[:333])
    rest = decoder.feed(stream[333:])
    assert [m[1] for m in first + rest] == list(range(50))


def test_decoder_accepts_many_small_messages_adding_up_to_more_than_the_cap(
    new_decoder: type[Decoder],
) -> None:
    frame = pack_request(1, "status", [["x" * 1000]])
    count = MAX_FRAME // len(frame) * 3
    assert len(new_decoder().feed(frame * count)) == count


def test_decoder_buffered_counts_a_partial_frame(new_decoder: type[Decoder]) -> None:
    frame = pack_request(1, "hello", [])
    decoder = new_decoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.buffered == len(frame) - 1
    assert len(decoder.feed(frame[-1:])) == 1
    assert decoder.buffered == 0


def framed_bin(total: int) -> bytes:
    """A request whose encoding is exactly ``total`` bytes (bin32 payload)."""
    overhead = len(msgpack.packb([0, 1, "m", [b"x" * 70000]])) - 70000
    frame = msgpack.packb([0, 1, "m", [b"x" * (total - overhead)]])
    assert len(frame) == total
    return frame


def test_frame_of_exactly_the_cap_is_accepted(new_decoder: type[Decoder]) -> None:
    frame = framed_bin(MAX_FRAME)
    decoder = new_decoder()
    got: list[object] = []
    for start in range(0, len(frame), 4096):
        got.extend(decoder.feed(frame[start : start + 4096]))
    assert len(got) == 1 and len(got[0][3][0]) == MAX_FRAME - 11


@pytest.mark.parametrize("chunk", [1 << 12, 1 << 20, 1 << 21])
def test_frame_over_the_cap_is_rejected(chunk: int, new_decoder: type[Decoder]) -> None:
    frame = framed_bin(MAX_FRAME + 1)
    decoder = new_decoder()
    with pytest.raises(ProtocolError) as excinfo:
        for start in range(0, len(frame), chunk):
            decoder.feed(frame[start : start + chunk])
    assert f"larger than {MAX_FRAME} bytes" in bad_request(excinfo)


def test_oversized_frame_of_many_small_items_is_rejected(new_decoder: type[Decoder]) -> None:
    # Arrays of small items never trip msgpack's own buffer limit: the decoder must count.
    inner = msgpack.packb(["y" * 100] * 1000)
    frame = b"\x94\x00\x01\xa1m" + b"\xdd" + (2000).to_bytes(4, "big") + inner * 2000
    decoder = new_decoder()
    with pytest.raises(ProtocolError):
        for start in range(0, len(frame), 65536):
            decoder.feed(frame[start : start + 65536])
    assert decoder.poisoned


def test_huge_length_header_costs_at_most_one_frame_of_buffering(
    new_decoder: type[Decoder],
) -> None:
    decoder = new_decoder()
    fed = 0
    with pytest.raises(ProtocolError) as excinfo:
        decoder.feed(b"\x94\x00\x01\xa1m\x91\xc6\xff\xff\xff\xff")  # bin32 of 4 GiB
        while fed < 2 * MAX_FRAME:
            decoder.feed(b"\0" * 65536)
            fed += 65536
    bad_request(excinfo)
    assert fed <= MAX_FRAME


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xc1", "reserved type byte"),
        (b"\xa2\xff\xfe", "invalid utf-8"),
        (msgpack.packb(msgpack.ExtType(5, b"ab")), "ext type"),
        (msgpack.packb(msgpack.Timestamp(1, 0)), "timestamp ext"),
        (b"\x81\x90\x01", "unhashable map key"),
        (b"\xdd" + (MAX_ITEMS + 1).to_bytes(4, "big") + b"\xc0" * (MAX_ITEMS + 1), "long array"),
        (b"\xdf" + (MAX_ITEMS + 1).to_bytes(4, "big"), "big map header"),
        (b"\x91" * (MAX_DEPTH + 1) + b"\xc0", "too deep"),
        (
            b"\xdd" + (MAX_CONTAINERS + 1).to_bytes(4, "big") + b"\x90" * (MAX_CONTAINERS + 1),
            "too many containers",
        ),
        (b"\x91" * 5000 + b"\xc0", "deeper than msgpack's own stack"),
    ],
)
def test_decoder_rejects_bad_streams_with_bad_request(
    data: bytes, why: str, new_decoder: type[Decoder]
) -> None:
    decoder = new_decoder()
    with pytest.raises(ProtocolError) as excinfo:
        decoder.feed(data)
    bad_request(excinfo)
    assert decoder.poisoned, why


def test_decoder_accepts_a_status_reply_about_thousands_of_services(
    new_decoder: type[Decoder],
) -> None:
    record = {"name": "svc", "state": "up", "last_exit": {"code": 0, "signal": None, "at": 1.0}}
    reply = pack_response(1, None, [dict(record, pid=i) for i in range(5000)])
    [obj] = new_decoder().feed(reply)
    assert len(obj[3]) == 5000


def test_container_budget_is_per_message(new_decoder: type[Decoder]) -> None:
    frame = pack_response(1, None, [[]] * (MAX_CONTAINERS - 10))
    assert len(new_decoder().feed(frame * 3)) == 3


def test_decoder_accepts_nesting_up_to_the_limit(new_decoder: type[Decoder]) -> None:
    [obj] = new_decoder().feed(b"\x91" * MAX_DEPTH + b"\xc0")
    for _ in range(MAX_DEPTH):
        obj = obj[0]
    assert obj is None


def test_decoder_rejects_non_bytes_input_with_protocol_error(new_decoder: type[Decoder]) -> None:
    with pytest.raises(ProtocolError):
        new_decoder().feed("not bytes")  # type: ignore[arg-type]


def test_decoder_is_poisoned_after_an_error(new_decoder: type[Decoder]) -> None:
    decoder = new_decoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\xc1")
    with pytest.raises(ProtocolError) as excinfo:
        decoder.feed(pack_request(1, "hello", []))
    assert "earlier error" in bad_request(excinfo)
    assert decoder.poisoned


def test_valid_messages_before_garbage_in_the_same_chunk_are_dropped_with_it(
    new_decoder: type[Decoder],
) -> None:
    decoder = new_decoder()
    with pytest.raises(ProtocolError):
        decoder.feed(pack_request(1, "hello", []) + b"\xc1")


# -- parse_message -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"a": 1}, "must be an array, got map"),
        ("hello", "must be an array, got str"),
        ([], "empty array"),
        ([3, 1, "m", []], "type must be 0, 1 or 2, got 3"),
        ([True, 1, "m", []], "type must be 0, 1 or 2, got True"),
        ([0.0, 1, "m", []], "type must be 0, 1 or 2"),
        (["0", 1, "m", []], "type must be 0, 1 or 2"),
        ([0, 1, "m"], "request must be [0, msgid, method, params], got 3"),
        ([0, 1, "m", [], None], "got 5 elements"),
        ([1, 1, None], "response must be [1, msgid, error, result], got 3"),
        ([2, "m", [], 1], "notification must be [2, method, params], got 4"),
        ([0, -1, "m", []], "msgid must be an unsigned 32-bit int, got -1"),
        ([0, 2**32, "m", []], "msgid must be an unsigned 32-bit int, got 4294967296"),
        ([0, True, "m", []], "msgid must be an unsigned 32-bit int, got True"),
        ([0, "1", "m", []], "msgid must be an unsigned 32-bit int, got '1'"),
        ([1, 1.0, None, None], "msgid must be an unsigned 32-bit int, got 1.0"),
        ([0, 1, b"m", []], "method must be a str, got bin"),
        ([2, 5, []], "method must be a str, got int"),
        ([0, 1, "m", {}], "params must be an array, got map"),
        ([2, "m", None], "params must be an array, got nil"),
        ([1, 1, "oops", None], "error must be a map, got str"),
        ([1, 1, {"message": "m"}, None], "error code must be a str, got nil"),
        ([1, 1, {"code": "x", "message": 5}, None], "error message must be a str, got int"),
    ],
)
def test_parse_message_rejects(obj: object, expected: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        parse_message(obj)
    assert expected in bad_request(excinfo)


def test_parse_message_shortens_huge_values_in_messages() -> None:
    with pytest.raises(ProtocolError) as excinfo:
        parse_message([0, "x" * 100000, "m", []])
    assert len(str(excinfo.value)) < 120


def test_parse_message_normalises_the_error_map() -> None:
    response = parse_message([1, 4, {"code": "timeout", "message": "m", "extra": 1}, None])
    assert response.error == {"code": "timeout", "message": "m", "data": None}


def test_message_shapes_unpack_like_tuples() -> None:
    msgid, method, params = parse_message([0, 9, "check", []])
    assert (msgid, method, params) == (9, "check", [])


# -- the method table ----------------------------------------------------------------------


def test_method_table_names_and_access() -> None:
    assert list(METHODS) == [
        "hello", "status", "start", "stop", "restart", "once", "signal", "wait", "check",
        "shutdown", "subscribe", "logs", "rescan",
    ]  # fmt: skip
    assert {"hello", "status", "wait", "check", "subscribe", "logs"} == READ_ONLY_METHODS
    for name, spec in METHODS.items():
        assert spec.name == name
        assert spec.doc and "\n" not in spec.doc
        assert all(isinstance(t, type) for p in spec.params for t in p.types)


def test_method_table_params() -> None:
    shape = {
        name: [(p.name, p.default is REQUIRED) for p in spec.params]
        for name, spec in METHODS.items()
    }
    assert shape == {
        "hello": [],
        "status": [("names", False), ("details", False)],
        "start": [("names", True)],
        "stop": [("names", True)],
        "restart": [("names", True)],
        "once": [("names", True)],
        "signal": [("sig", True), ("names", True), ("group", False)],
        "wait": [("condition", True), ("names", True), ("timeout", False)],
        "check": [],
        "shutdown": [("exit_code", False)],
        "subscribe": [],
        "logs": [("name", True), ("lines", False), ("after", False)],
        "rescan": [],
    }


ACCEPTED = [
    ("hello", [], []),
    ("status", [], [[], False]),
    ("status", [["web"]], [["web"], False]),
    ("status", [["web", "db"], True], [["web", "db"], True]),
    ("start", [["web"]], [["web"]]),
    ("stop", [["web", "db"]], [["web", "db"]]),
    ("restart", [["web"]], [["web"]]),
    ("once", [["web"]], [["web"]]),
    ("signal", ["HUP", ["web"]], ["HUP", ["web"], False]),
    ("signal", [9, ["web"]], [9, ["web"], False]),
    ("signal", ["KILL", ["web"], True], ["KILL", ["web"], True]),
    ("rescan", [], []),
    ("wait", ["up", ["web"]], ["up", ["web"], None]),
    ("wait", ["ready", ["web"], 2.5], ["ready", ["web"], 2.5]),
    ("wait", ["down", ["web"], 0], ["down", ["web"], 0]),
    ("wait", ["up", ["web"], None], ["up", ["web"], None]),
    ("check", [], []),
    ("shutdown", [], [None]),
    ("shutdown", [3], [3]),
    ("shutdown", [None], [None]),
    ("subscribe", [], []),
    ("logs", ["web"], ["web", 10, None]),
    ("logs", ["web", -1, 7], ["web", -1, 7]),
]


@pytest.mark.parametrize(("method", "params", "normalised"), ACCEPTED)
def test_validate_request_accepts_and_fills_defaults(
    method: str, params: list[object], normalised: list[object]
) -> None:
    assert validate_request(Request(1, method, params)) == normalised


def test_defaults_are_fresh_objects() -> None:
    first = validate_request(Request(1, "status", []))
    first[0].append("mutated")
    assert validate_request(Request(2, "status", []))[0] == []


def test_unknown_method_is_no_such_method_and_named() -> None:
    with pytest.raises(ProtocolError) as excinfo:
        validate_request(Request(1, "reboot", []))
    assert excinfo.value.code == "no_such_method"
    assert "reboot" in str(excinfo.value)


REJECTED = [
    ("hello", [1], "hello: takes at most 0 params (none), got 1"),
    ("status", [[], False, 1], "status: takes at most 2 params (names, details), got 3"),
    ("status", ["web"], "param 'names' must be an array of service names, got str"),
    ("status", [[1]], "param 'names' must be an array of service names, item 0 is int"),
    ("status", [["a", ""]], "item 1 is an empty str"),
    ("status", [[], 1], "param 'details' must be bool, got int"),
    ("status", [None], "param 'names' must be an array of service names, got nil"),
    ("start", [], "start: missing param 'names'"),
    ("start", [[]], "param 'names' must be a non-empty array of names, got an empty array"),
    ("stop", [[None]], "stop: param 'names'"),
    ("restart", [{}], "restart: param 'names'"),
    ("once", [[b"web"]], "once: param 'names'"),
    ("signal", ["HUP"], "signal: missing param 'names'"),
    ("signal", ["KILL", ["web"], 1], "param 'group' must be bool, got int"),
    ("rescan", [1], "rescan: takes at most 0 params (none), got 1"),
    ("signal", [1.0, ["web"]], "param 'sig' must be a signal name or number, got float"),
    ("signal", [True, ["web"]], "param 'sig' must be a signal name or number, got bool"),
    ("wait", [], "wait: missing param 'condition'"),
    ("wait", ["up"], "wait: missing param 'names'"),
    ("wait", ["sideways", ["web"]], "'condition' must be one of 'up', 'ready', 'down'"),
    ("wait", [1, ["web"]], "param 'condition' must be one of 'up', 'ready', 'down', got int"),
    ("wait", ["up", ["web"], -1], "param 'timeout' must be seconds (>= 0) or nil, got -1"),
    ("wait", ["up", ["web"], float("nan")], "param 'timeout'"),
    ("wait", ["up", ["web"], float("inf")], "param 'timeout'"),
    ("wait", ["up", ["web"], "5"], "param 'timeout' must be seconds (>= 0) or nil, got str"),
    ("wait", ["up", ["web"], True], "param 'timeout'"),
    ("shutdown", [True], "param 'exit_code' must be int or nil, got bool"),
    ("shutdown", [1.0], "param 'exit_code' must be int or nil, got float"),
    ("check", [None], "check: takes at most 0 params"),
    ("subscribe", [[]], "subscribe: takes at most 0 params"),
    ("logs", [], "logs: missing param 'name'"),
    ("logs", [""], "param 'name' must be a service name, got ''"),
    ("logs", ["web", -2], "param 'lines' must be a number of lines (-1: all kept), got -2"),
    ("logs", ["web", 5, 1.5], "param 'after' must be a cursor from a previous answer, or nil"),
]


@pytest.mark.parametrize(("method", "params", "expected"), REJECTED)
def test_validate_request_rejects_with_bad_request(
    method: str, params: list[object], expected: str
) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        validate_request(Request(1, method, params))
    assert expected in bad_request(excinfo)


def test_every_method_has_a_rejection_and_an_acceptance_above() -> None:
    # Guard against adding a method to the table without tests for it.
    assert {row[0] for row in ACCEPTED} == {row[0] for row in REJECTED} == set(METHODS)
