"""Bytes <-> msgpack values on a stream socket: a bounded streaming decoder and the encoders.

msgpack-RPC has no length prefix: a frame is one msgpack value. The decoder therefore bounds
every frame itself (``MAX_FRAME`` bytes, ``MAX_ITEMS`` per container, ``MAX_CONTAINERS`` arrays
and maps, ``MAX_DEPTH`` levels) so a hostile or broken peer costs a bounded amount of memory and
CPU (a few ms per frame) and gets ``bad_request``.
"""

from __future__ import annotations

import msgpack

from .errors import BAD_REQUEST, INTERNAL, ProtocolError
from .wire import MAX_CONTAINERS, MAX_DEPTH, MAX_FRAME, MAX_ITEMS, NOTIFICATION, REQUEST, RESPONSE

#: Bytes a decoder's buffer starts with (msgpack's default would be MAX_FRAME, 1 MiB each).
INITIAL_BUFFER = 4 << 10
#: Bytes given to the unpacker at a time while messages are small.
FEED_CHUNK = 4 << 10
#: A decoder whose buffer grew past this for one large message gets a fresh one afterwards.
SHRINK_ABOVE = 64 << 10

_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _reject_ext(code: int, data: bytes) -> object:
    raise ProtocolError(BAD_REQUEST, f"msgpack ext type {code} is not allowed")


def _check_value(root: object) -> None:
    """Reject values outside the plain data model (ext/timestamp) or nested deeper than allowed.

    Iterative on purpose: the value came from a peer and must not be able to exhaust the stack.
    Containers holding only scalars, the common case, are checked at C speed.
    """
    stack = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is list:
            items = value
        elif kind is dict:
            if not _SCALARS.issuperset(map(type, value)):
                raise ProtocolError(BAD_REQUEST, "map keys must be scalars")
            items = value.values()
        elif kind in _SCALARS:
            continue
        else:
            raise ProtocolError(BAD_REQUEST, f"value of type {kind.__name__} is not allowed")
        if depth > MAX_DEPTH:
            raise ProtocolError(BAD_REQUEST, f"message nested deeper than {MAX_DEPTH} levels")
        if _SCALARS.issuperset(map(type, items)):
            continue
        for item in items:
            if type(item) not in _SCALARS:
                stack.append((item, depth + 1))


class _ContainerBudget:
    """Counts arrays and maps of the message being decoded (``MAX_CONTAINERS``).

    The unpacker calls it as its list and object hook. It is its own small object, not a bound
    method of the Decoder: a hook bound to the Decoder would make Decoder and Unpacker a
    reference cycle, freed only by the cyclic GC, so every closed connection's buffers would
    linger until a collection.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, container: object) -> object:
        self.count += 1
        if self.count > MAX_CONTAINERS:
            raise ProtocolError(BAD_REQUEST, f"message has more than {MAX_CONTAINERS} containers")
        return container


def _new_unpacker(budget: _ContainerBudget) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        # read_size is the buffer allocated up front; its default is max_buffer_size (1 MiB
        # per connection). The buffer grows on demand up to MAX_FRAME.
        read_size=INITIAL_BUFFER,
        max_buffer_size=MAX_FRAME,
        raw=False,
        strict_map_key=False,
        max_str_len=MAX_FRAME,
        max_bin_len=MAX_FRAME,
        max_array_len=MAX_ITEMS,
        max_map_len=MAX_ITEMS,
        max_ext_len=MAX_FRAME,
        ext_hook=_reject_ext,
        list_hook=budget,
        object_hook=budget,
    )


#: Idle unpackers kept for reuse (see Decoder): each costs ~45 KiB, mostly its parse stack.
POOL_SIZE = 4
_pool: list[tuple[msgpack.Unpacker, _ContainerBudget]] = []


class Decoder:
    """Streaming decoder for one connection: ``feed`` bytes as they arrive, get whole messages.

    Anything wrong with the stream (a frame over ``MAX_FRAME``, bytes that are not msgpack,
    invalid UTF-8, containers too long or too deep, ext types) raises ``ProtocolError`` with code
    ``bad_request``, and nothing else ever escapes. msgpack has no resync point, so after an
    error the decoder is poisoned: every later ``feed`` raises too, and the connection should be
    closed. Messages decoded in the same ``feed`` call before the error are discarded with it.

    A server that wants to decode a few messages at a time (so pipelined requests cost no
    memory until served) uses ``push`` and ``pull(limit)`` instead of ``feed``.

    Memory: a msgpack Unpacker costs ~45 KiB even when empty (its parse stack is part of it),
    so a decoder holds one only while it has bytes to decode or a frame half received; between
    frames it gives it back to a small shared pool. Idle connections therefore cost no
    unpacker. An unpacker starts with an ``INITIAL_BUFFER`` buffer (msgpack's default would be
    MAX_FRAME) and grows it for a large frame; one that grew past ``SHRINK_ABOVE`` is dropped
    after that frame instead of pooled, so one big message does not pin a big buffer.
    """

    __slots__ = ("_budget", "_error", "_fed", "_frame_start", "_peak", "_pending", "_unpacker")

    def __init__(self) -> None:
        self._unpacker: msgpack.Unpacker | None = None  # held only while mid-stream
        self._budget: _ContainerBudget | None = None
        self._fed = 0  # unpacker offset: bytes given to it
        self._frame_start = 0  # unpacker offset where the message being decoded begins
        self._peak = 0  # most bytes the unpacker held since this decoder took it
        self._pending = b""  # pushed, not yet given to the unpacker
        self._error: ProtocolError | None = None

    @property
    def poisoned(self) -> bool:
        """True once the decoder has raised; it will never decode again."""
        return self._error is not None

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet decoded: pushed bytes and an incomplete message."""
        return self._fed - self._frame_start + len(self._pending)

    def feed(self, data: bytes) -> list[object]:
        """Add ``data`` (any bytes-like) and return every message it completes, in order."""
        self.push(data)
        return self.pull()

    def push(self, data: bytes) -> None:
        """Add ``data`` without decoding it yet (``pull`` does)."""
        self._check_usable()
        if type(data) is not bytes:
            try:
                data = bytes(memoryview(data).cast("B"))
            except (TypeError, ValueError) as exc:
                self._poison(ProtocolError(BAD_REQUEST, f"malformed message: {exc}"))
                raise self._copy_error() from exc
        self._pending = self._pending + data if self._pending else data

    def pull(self, limit: int | None = None) -> list[object]:
        """Decode and return up to ``limit`` (default: all) whole messages held, in order."""
        self._check_usable()
        try:
            return self._pull(limit)
        except Exception as exc:
            self._unpacker = self._budget = None  # its state is unknown: never pooled
            if isinstance(exc, ProtocolError):
                self._poison(exc)
                raise
            # msgpack raises many types; the contract is one type
            self._poison(ProtocolError(BAD_REQUEST, f"malformed message: {exc}"))
            raise self._copy_error() from exc

    def _poison(self, error: ProtocolError) -> None:
        """Remember ``error`` for later calls: a copy that is never raised, so it holds no
        traceback, whose frames would tie this decoder (and its owner) in a reference cycle."""
        self._error = ProtocolError(error.code, error.message, error.data)

    def _copy_error(self) -> ProtocolError:
        """A fresh copy of the stored error to raise (no local name keeps it: no cycle)."""
        error = self._error
        assert error is not None
        return ProtocolError(error.code, error.message, error.data)

    def _check_usable(self) -> None:
        if self._error is not None:
            raise ProtocolError(
                BAD_REQUEST, f"stream unusable after an earlier error: {self._error.message}"
            )

    def _take_unpacker(self) -> msgpack.Unpacker:
        if _pool:
            self._unpacker, self._budget = _pool.pop()
        else:
            self._budget = _ContainerBudget()
            self._unpacker = _new_unpacker(self._budget)
        self._fed = self._frame_start = self._unpacker.tell()
        self._peak = 0
        return self._unpacker

    def _pull(self, limit: int | None) -> list[object]:
        messages: list[object] = []
        unpacker = self._unpacker
        if unpacker is None:
            if not self._pending:
                return messages
            unpacker = self._take_unpacker()
        budget = self._budget
        while True:
            for message in unpacker:
                self._frame_start = unpacker.tell()
                budget.count = 0  # type: ignore[union-attr]
                _check_value(message)
                messages.append(message)
                if limit is not None and len(messages) >= limit:
                    self._hand_back(unpacker, at_boundary=True)
                    return messages
            if self._fed - self._frame_start >= MAX_FRAME:
                # MAX_FRAME bytes in and the message is still incomplete: it is over the cap.
                raise ProtocolError(BAD_REQUEST, f"message larger than {MAX_FRAME} bytes")
            if not self._pending:
                break
            # Feed no more than the current frame may still grow by: the unpacker's buffer then
            # never holds more than one frame, and many small pipelined messages never add up
            # to a false "buffer full".
            # Fed FEED_CHUNK at a time, so little is left undecoded when `limit` is reached.
            held = self._fed - self._frame_start
            size = min(MAX_FRAME - held, FEED_CHUNK if held < FEED_CHUNK else MAX_FRAME)
            view = memoryview(self._pending)
            chunk = view[:size]
            unpacker.feed(chunk)
            self._pending = bytes(view[size:]) if len(view) > size else b""
            self._fed += len(chunk)
            self._peak = max(self._peak, held + len(chunk))
        self._hand_back(unpacker)
        return messages

    def _hand_back(self, unpacker: msgpack.Unpacker, at_boundary: bool = False) -> None:
        """Return the unpacker to the pool when no message is half decoded in it.

        Right after a message (``at_boundary``) its parse state is clean, so bytes it was fed
        but has not decoded yet (pipelined requests beyond ``limit``) are read back out of it,
        in front of the pending ones. Otherwise only an unpacker that holds nothing is given
        back: a frame still incomplete lives in its parse state, and keeps it busy.
        """
        held = self._fed - self._frame_start
        if held and not at_boundary:
            return
        if held:
            self._pending = unpacker.read_bytes(held) + self._pending
        if self._peak <= SHRINK_ABOVE and len(_pool) < POOL_SIZE:
            _pool.append((unpacker, self._budget))  # type: ignore[arg-type]
        self._unpacker = self._budget = None
        self._fed = self._frame_start = 0


def _pack(message: list[object]) -> bytes:
    try:
        frame = msgpack.packb(message, use_bin_type=True, datetime=False)
    except Exception as exc:
        raise ProtocolError(INTERNAL, f"cannot encode message: {exc}") from exc
    if len(frame) > MAX_FRAME:
        raise ProtocolError(INTERNAL, f"message of {len(frame)} bytes exceeds {MAX_FRAME}")
    return frame


def pack_request(msgid: int, method: str, params: list[object]) -> bytes:
    """Encode ``[0, msgid, method, params]``; ``ProtocolError(internal)`` if it cannot be sent."""
    return _pack([REQUEST, msgid, method, params])


def pack_response(msgid: int, error: dict[str, object] | None, result: object) -> bytes:
    """Encode ``[1, msgid, error, result]``; ``error`` is None or ``ProtocolError.to_wire()``."""
    return _pack([RESPONSE, msgid, error, result])


def pack_notification(method: str, params: list[object]) -> bytes:
    """Encode ``[2, method, params]``."""
    return _pack([NOTIFICATION, method, params])
