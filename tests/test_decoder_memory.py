"""The protocol Decoder's memory: idle connections hold no unpacker, messages still arrive whole.

A msgpack Unpacker costs ~45 KiB even empty; PID 1 has up to 160 connections. These pin down
that a decoder between frames holds none, and that pulling a few messages at a time (how the
server serves pipelined requests) loses, reorders or duplicates nothing, however the bytes are
cut and whatever the limit.
"""

from __future__ import annotations

import gc
import random
import tracemalloc

import msgpack

from protocol import Decoder
from protocol.framing import FEED_CHUNK, MAX_FRAME


def frames(rng: random.Random, count: int) -> list[list[object]]:
    out = []
    for i in range(count):
        size = rng.choice([0, 1, 10, 200, FEED_CHUNK - 7, FEED_CHUNK + 3, 3 * FEED_CHUNK, 70_000])
        out.append([0, i, "status", [["x" * size], rng.random() < 0.5]])
    return out


def test_pipelined_messages_pulled_a_few_at_a_time_arrive_whole_and_in_order() -> None:
    for seed in range(30):
        rng = random.Random(seed)
        messages = frames(rng, 60)
        stream = b"".join(msgpack.packb(m) for m in messages)
        decoder = Decoder()
        got: list[object] = []
        pos = 0
        while pos < len(stream) or decoder.buffered:
            if pos < len(stream) and rng.random() < 0.6:
                step = rng.choice([1, 7, 500, 16 << 10, 100_000])
                decoder.push(stream[pos : pos + step])
                pos += step
            got.extend(decoder.pull(rng.choice([1, 2, 8, None])))
            if pos >= len(stream) and not decoder.buffered:
                break
        got.extend(decoder.pull())
        assert got == messages, seed
        assert decoder.buffered == 0


def test_idle_decoders_hold_no_unpacker() -> None:
    frame = msgpack.packb([0, 1, "hello", []])
    gc.collect()
    tracemalloc.start()
    try:
        decoders = [Decoder() for _ in range(200)]
        for decoder in decoders:
            assert decoder.feed(frame) == [[0, 1, "hello", []]]
        idle, _ = tracemalloc.get_traced_memory()
        halfway = [Decoder() for _ in range(20)]
        for decoder in halfway:
            assert decoder.feed(frame[:-1]) == []
        busy, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert idle < 200 * 2048  # ~45 KiB each if every decoder kept its own unpacker
    assert busy - idle > 20 * 30_000  # a half-received frame does keep one: it holds its state
    assert len(decoders) + len(halfway) == 220


def test_a_large_frame_does_not_pin_a_large_buffer() -> None:
    big = msgpack.packb([0, 1, "status", [["y" * (MAX_FRAME // 2)], False]])
    decoder = Decoder()
    gc.collect()
    tracemalloc.start()
    try:
        for start in range(0, len(big), 65536):
            decoder.push(big[start : start + 65536])
            decoder.pull()
        del start
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.buffered == 0
    assert after < 64 << 10
