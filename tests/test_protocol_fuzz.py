"""Property tests: whatever a peer sends, the protocol layer answers with ProtocolError only."""

from __future__ import annotations

import math
from itertools import pairwise

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    MAX_DEPTH,
    METHODS,
    REQUIRED,
    WAIT_CONDITIONS,
    Decoder,
    ProtocolError,
    Request,
    pack_request,
    parse_message,
    validate_request,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
keys = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at the given offsets (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points)]


def feed_all(decoder: Decoder, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def assert_only_protocol_errors(decoder: Decoder, chunks: list[bytes]) -> None:
    try:
        feed_all(decoder, chunks)
    except ProtocolError as exc:
        assert exc.code == "bad_request"
        assert decoder.poisoned
        try:
            decoder.feed(b"\x90")
        except ProtocolError:
            return
        raise AssertionError("a poisoned decoder decoded again") from None


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(0, 4096), max_size=20))
def test_arbitrary_bytes_in_arbitrary_chunks(data: bytes, cuts: list[int]) -> None:
    assert_only_protocol_errors(Decoder(), chunked(data, cuts))


@FUZZ
@given(values, st.data())
def test_corrupted_msgpack_in_arbitrary_chunks(value: object, data: st.DataObject) -> None:
    # Valid msgpack with a few bytes overwritten reaches deeper into the unpacker than noise.
    encoded = bytearray(msgpack.packb([0, 1, "status", [value]], use_bin_type=True))
    for _ in range(data.draw(st.integers(0, 3))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    cuts = data.draw(st.lists(st.integers(0, len(encoded)), max_size=10))
    assert_only_protocol_errors(Decoder(), chunked(bytes(encoded), cuts))


def same(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to itself."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@FUZZ
@given(values, st.lists(st.integers(0, 10_000), max_size=8))
def test_every_plain_value_survives_the_decoder(value: object, cuts: list[int]) -> None:
    encoded = msgpack.packb(value, use_bin_type=True)
    if depth(value) > MAX_DEPTH:
        with pytest.raises(ProtocolError):
            feed_all(Decoder(), chunked(encoded, cuts))
        return
    [decoded] = feed_all(Decoder(), chunked(encoded, cuts))
    assert same(decoded, value)


def check_message(obj: object) -> None:
    try:
        message = parse_message(obj)
        if type(message) is Request:
            validate_request(message)
    except ProtocolError as exc:
        assert exc.code in {"bad_request", "no_such_method"}
        assert isinstance(str(exc), str)


@FUZZ
@given(values)
def test_arbitrary_values_as_messages(obj: object) -> None:
    check_message(obj)


method_names = st.sampled_from([*METHODS, "", "nope", "HELLO"])
msgids = st.integers(-1, 2**32) | values


@FUZZ
@given(
    st.sampled_from([0, 1, 2, 3, True, 0.0]),
    msgids,
    method_names | values,
    st.lists(values, max_size=4) | values,
    st.integers(2, 5),
)
def test_message_shaped_values(
    tag: object, msgid: object, method: object, params: object, length: int
) -> None:
    full = [tag, msgid, method, params, None]
    check_message(full[:length])
    check_message([2, method, params])


# -- valid requests ------------------------------------------------------------------------

names = st.lists(st.text(min_size=1, max_size=12), max_size=4)
PARAM_VALUES = {
    "names": names,
    "details": st.booleans(),
    "sig": st.text(min_size=1, max_size=8) | st.integers(0, 64),
    "condition": st.sampled_from(WAIT_CONDITIONS),
    "timeout": st.none() | st.integers(0, 10**6) | st.floats(0, 1e6),
    "exit_code": st.none() | st.integers(-(2**31), 2**31),
    "name": st.text(min_size=1, max_size=12),
    "lines": st.integers(-1, 10**6),
    "after": st.none() | st.integers(0, 2**40),
    "group": st.booleans(),
}


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[Request, list[object]]:
    spec = METHODS[draw(st.sampled_from(sorted(METHODS)))]
    params: list[object] = []
    for param in spec.params:
        value = draw(PARAM_VALUES[param.name])
        if param.name == "names" and param.default is REQUIRED and not value:
            value = ["svc"]
        params.append(value)
    # Omit some trailing params that have defaults; they come back filled in.
    keep = len(params)
    while keep and spec.params[keep - 1].default is not REQUIRED and draw(st.booleans()):
        keep -= 1
    expected = params[:keep] + [p.default for p in spec.params[keep:]]
    return Request(draw(st.integers(0, 2**32 - 1)), spec.name, params[:keep]), expected


@FUZZ
@given(valid_requests(), st.lists(st.integers(0, 500), max_size=6))
def test_valid_requests_round_trip_exactly(
    case: tuple[Request, list[object]], cuts: list[int]
) -> None:
    request, expected = case
    frame = pack_request(*request)
    [obj] = feed_all(Decoder(), chunked(frame, cuts))
    parsed = parse_message(obj)
    assert parsed == request
    assert validate_request(parsed) == expected
