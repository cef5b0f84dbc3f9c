"""protocol.purepack, the client's msgpack in pure Python, against msgpack itself.

overlayctl encodes and decodes with purepack, overlayd with msgpack (protocol.framing): the
two must give the same bytes for every value and agree on every stream, valid or not, in any
chunking. The bounds both enforce are tested for both in tests/test_protocol.py.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import MAX_DEPTH, MAX_FRAME, Decoder, ProtocolError, pack_request
from protocol.purepack import StreamDecoder, packb
from protocol.purepack import pack_request as pure_pack_request
from tests.test_protocol_fuzz import FUZZ, chunked, depth, same, values


def outcome(decoder: Decoder | StreamDecoder, chunks: list[bytes]) -> tuple[list[object], str]:
    """The messages decoded, and why the stream was refused ("" if it was not)."""
    got: list[object] = []
    try:
        for chunk in chunks:
            got.extend(decoder.feed(chunk))
    except ProtocolError as exc:
        assert exc.code == "bad_request"
        assert decoder.poisoned
        return [], str(exc) or "refused"
    return got, ""


def agree(data: bytes, cuts: list[int]) -> None:
    """Both decoders take the same messages out of ``data``, or both refuse it.

    purepack may refuse a frame sooner, from its first bytes, while msgpack still waits for
    the rest (a key that is not a scalar, a length that cannot fit in MAX_FRAME): then msgpack
    must refuse that frame too once it is complete, whatever completes it (nils fill every
    open array and map and every pending string).
    """
    theirs_decoder = Decoder()
    theirs, their_refusal = outcome(theirs_decoder, chunked(data, cuts))
    ours, our_refusal = outcome(StreamDecoder(), chunked(data, cuts))
    if our_refusal and not their_refusal and theirs_decoder.buffered:
        filler = [b"\xc0" * 65536] * (2 * MAX_FRAME // 65536)
        _, their_refusal = outcome(theirs_decoder, filler)
        assert their_refusal, f"msgpack accepts a frame purepack refused: {our_refusal}"
        return
    assert bool(our_refusal) == bool(their_refusal), (our_refusal, their_refusal)
    assert all(same(a, b) for a, b in zip(ours, theirs, strict=True))


@FUZZ
@given(values)
def test_packb_gives_the_bytes_msgpack_gives(value: object) -> None:
    expected = msgpack.packb(value, use_bin_type=True)
    if depth(value) > MAX_DEPTH:
        with pytest.raises(ProtocolError):
            packb(value)
        return
    assert packb(value) == expected


@FUZZ
@given(values, st.lists(st.integers(0, 10_000), max_size=8))
def test_every_value_overlayd_sends_decodes_the_same_in_any_chunking(
    value: object, cuts: list[int]
) -> None:
    frame = msgpack.packb([1, 7, None, value], use_bin_type=True)
    agree(frame * 2, cuts)


@FUZZ
@given(st.binary(max_size=4096), st.lists(st.integers(0, 4096), max_size=20))
def test_arbitrary_bytes_are_refused_or_decoded_as_msgpack_does(
    data: bytes, cuts: list[int]
) -> None:
    agree(data, cuts)


@FUZZ
@given(values, st.data())
def test_corrupted_msgpack_is_refused_or_decoded_as_msgpack_does(
    value: object, data: st.DataObject
) -> None:
    encoded = bytearray(msgpack.packb([0, 1, "status", [value]], use_bin_type=True))
    for _ in range(data.draw(st.integers(0, 3))):
        encoded[data.draw(st.integers(0, len(encoded) - 1))] = data.draw(st.integers(0, 255))
    agree(bytes(encoded), data.draw(st.lists(st.integers(0, len(encoded)), max_size=10)))


def test_a_request_is_the_same_bytes_either_way() -> None:
    for params in ([], [["web", "db"], True], ["SIGKILL", ["x" * 300], True], [None, 2**40, -1.5]):
        assert pure_pack_request(4_000_000_000, "status", params) == pack_request(
            4_000_000_000, "status", params
        )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (object(), "cannot serialize"),
        (2**64, "int too big"),
        (-(2**63) - 1, "int too big"),
        ("\ud800", "surrogates not allowed"),
        ([b"x" * MAX_FRAME], "exceeds"),
    ],
)
def test_what_cannot_be_sent_is_one_internal_error(value: object, why: str) -> None:
    with pytest.raises(ProtocolError) as excinfo:
        packb(value)
    assert excinfo.value.code == "internal"
    assert why in str(excinfo.value)


def test_a_large_reply_read_in_small_pieces_is_decoded_once() -> None:
    """A status reply about thousands of services, fed as a socket might deliver it."""
    record = {"name": "svc", "state": "up", "pid": 41, "last_exit": {"code": 0, "signal": None}}
    frame = msgpack.packb([1, 1, None, [dict(record, pid=i) for i in range(5000)]])
    decoder = StreamDecoder()
    got: list[object] = []
    for start in range(0, len(frame), 1000):
        got.extend(decoder.feed(frame[start : start + 1000]))
        assert decoder.buffered == (0 if got else min(start + 1000, len(frame)))
    [(_, _, _, records)] = got
    assert [r["pid"] for r in records] == list(range(5000))
