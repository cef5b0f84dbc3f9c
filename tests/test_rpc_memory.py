"""Closed connections are freed at once (issue #8: 10,190 dead Connection objects in one run).

No reference cycle (decoder and unpacker through bound hooks) and no cancelled idle timer may
keep a closed connection alive until the cyclic GC happens to run: these tests switch the GC
off and count what is left.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlayd import rpc
from protocol import pack_request
from tests.test_rpc_unit import FakeService, Harness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "run" / "control.sock")
    yield harness
    harness.close()


def live(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


def test_closed_connections_are_freed_without_the_cyclic_gc(h: Harness) -> None:
    h.container.add(FakeService("never", "down", "down"))
    requests = [
        pack_request(1, "status", []),
        pack_request(1, "subscribe", []),
        b"".join(pack_request(i, "wait", ["up", ["never"], 3600]) for i in range(8)),
        pack_request(1, "status", [])[:-3],  # half a frame: it holds an unpacker
        b"\xc1garbage",
    ]
    gc.collect()
    gc.disable()
    try:
        for _round in range(40):
            socks = []
            for request in requests:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(h.path)
                sock.sendall(request)
                socks.append(sock)
            h.until(lambda: len(h.server.clients) == len(requests))
            for _ in range(5):
                h.turn()
            for sock in socks:
                sock.close()
            h.until(lambda: not h.server.clients)
        for _ in range(5):
            h.turn()
        assert live(rpc.Connection) == 0
        assert h.server.waits == [0, 0] and not h.server.subscribers
        # Cancelled idle timers hold nothing, and do not pile up in the heap.
        assert all(t.callback.__name__ == "_nothing" or t.callback == h.beat
                   for t in h.loop._timers if t.cancelled)
        assert len(h.loop._timers) < 400
    finally:
        gc.enable()
