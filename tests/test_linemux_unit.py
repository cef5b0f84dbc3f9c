"""The line prefixer on a real loop and real pipes: what reaches the output, and the bounds."""

from __future__ import annotations

import os
import threading
import time

from overlayd import linemux
from overlayd.linemux import LINE_MAX, OUT_HIGH, LineMux
from overlayd.loop import Loop


class Rig:
    """A LineMux whose stdout and stderr are pipes the test reads (or leaves unread)."""

    def __init__(self, timestamps: bool = False) -> None:
        self.loop = Loop()
        self.out_r, out_w = os.pipe()
        self.err_r, err_w = os.pipe()
        self.mux = LineMux(self.loop, timestamps=timestamps, stdout_fd=out_w, stderr_fd=err_w)
        os.close(out_w)
        os.close(err_w)
        for fd in (self.out_r, self.err_r):
            os.set_blocking(fd, False)

    def turn(self, seconds: float = 0.05) -> None:
        """Run the loop for a while (the events it serves are the pipes' own)."""
        self.loop.call_later(seconds, self.loop.stop)
        self.loop._stopped = False
        self.loop.run()

    def read(self, fd: int) -> bytes:
        chunks = []
        while True:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_stdout_and_stderr_lines_come_out_prefixed_on_their_own_stream() -> None:
    rig = Rig()
    out, err = rig.mux.attach("web")
    os.write(out, b"hello\nworld\n")
    os.write(err, b"oops\n")
    rig.turn()
    assert rig.read(rig.out_r) == b"web | hello\nweb | world\n"
    assert rig.read(rig.err_r) == b"web | oops\n"


def test_timestamps_come_first_in_iso_8601() -> None:
    rig = Rig(timestamps=True)
    out, _ = rig.mux.attach("db")
    os.write(out, b"x\n")
    rig.turn()
    line = rig.read(rig.out_r).decode()
    stamp, rest = line.split(" ", 1)
    assert rest == "db | x\n"
    time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    assert stamp.endswith("Z") and stamp[19] == "."


def test_a_partial_line_waits_for_its_newline_then_is_flushed_after_the_delay(
    monkeypatch,
) -> None:
    monkeypatch.setattr(linemux, "PARTIAL_DELAY", 0.2)
    rig = Rig()
    out, _ = rig.mux.attach("web")
    os.write(out, b"half")
    rig.turn(0.05)
    assert rig.read(rig.out_r) == b""
    os.write(out, b" and half\nprompt> ")
    rig.turn(0.05)
    assert rig.read(rig.out_r) == b"web | half and half\n"
    rig.turn(0.4)
    assert rig.read(rig.out_r) == b"web | prompt> \n"


def test_a_line_longer_than_the_cap_is_split_and_each_piece_prefixed() -> None:
    rig = Rig()
    out, _ = rig.mux.attach("web")
    threading.Thread(target=os.write, args=(out, b"a" * 10000 + b"\nshort\n")).start()
    rig.turn(0.2)
    lines = rig.read(rig.out_r).split(b"\n")[:-1]
    assert all(line.startswith(b"web | ") for line in lines)
    assert all(len(line) + 1 <= LINE_MAX for line in lines)
    assert b"".join(line[6:] for line in lines[:-1]) == b"a" * 10000
    assert lines[-1] == b"web | short"


def test_a_stalled_output_stops_reading_so_the_writer_blocks_and_memory_stays_bounded() -> None:
    rig = Rig()
    out, _ = rig.mux.attach("web")
    sent = [0]
    line = b"x" * 99 + b"\n"

    def produce() -> None:
        while sent[0] < 20_000:
            os.write(out, line)
            sent[0] += 1

    writer = threading.Thread(target=produce, daemon=True)
    writer.start()
    for _ in range(20):
        rig.turn(0.02)
    stalled_at = sent[0]
    assert stalled_at < 20_000, "the writer should block: nobody reads the output"
    assert rig.mux.stdout.paused
    assert rig.mux.stdout.queued <= OUT_HIGH + linemux.READ_SIZE * 8
    rig.turn(0.1)
    assert sent[0] == stalled_at  # still blocked: nothing was read, nothing was dropped
    received = []
    while writer.is_alive() or rig.mux.stdout.queue:
        received.append(rig.read(rig.out_r))
        rig.turn(0.01)
    rig.turn(0.05)
    received.append(rig.read(rig.out_r))
    lines = b"".join(received).split(b"\n")[:-1]
    assert len(lines) == 20_000
    assert set(lines) == {b"web | " + line[:-1]}


def test_the_ring_keeps_the_last_lines_and_a_cursor() -> None:
    rig = Rig()
    out, err = rig.mux.attach("web")
    os.write(err, b"from stderr\n")
    for i in range(5000):
        os.write(out, b"line %d\n" % i)
        if i % 500 == 0:
            rig.turn(0.001)
    rig.turn()
    rig.read(rig.out_r)
    rig.read(rig.err_r)
    ring = rig.mux.ring("web")
    lines, cursor = ring.tail(3)
    assert lines == ["web | line 4997", "web | line 4998", "web | line 4999"]
    assert cursor == 5001  # both streams count
    assert ring.size <= linemux.RING_BYTES
    os.write(err, b"new\n")
    rig.turn()
    assert ring.tail(100, after=cursor) == (["web | new"], 5002)


def test_close_writes_out_what_was_still_in_the_pipe() -> None:
    rig = Rig()
    out, _ = rig.mux.attach("web")
    os.write(out, b"one\ntwo")
    done = rig.mux.close()
    rig.turn()
    assert done.done
    assert rig.read(rig.out_r) == b"web | one\nweb | two\n"


def test_the_long_line_check_never_misses_a_long_line() -> None:
    import random

    from overlayd.linemux import _may_have_long_line

    rng = random.Random(12)
    for _ in range(3000):
        limit = rng.randint(16, 200)
        lines = [b"a" * rng.choice([0, 1, limit - 1, limit, limit + 1, rng.randint(0, 3 * limit)])
                 for _ in range(rng.randint(1, 6))]  # fmt: skip
        text = b"\n".join(lines)
        if max(map(len, lines)) > limit:
            assert _may_have_long_line(text, limit), (limit, [len(x) for x in lines])
