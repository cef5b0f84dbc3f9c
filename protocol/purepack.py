"""msgpack in pure Python, for the client: the same bytes and the same bounds as
protocol.framing, without importing the msgpack package.

overlayctl runs once per command, and `import msgpack` alone costs it about 40% of a bare
interpreter's start (its C extension, plus the datetime and collections modules it loads), more
than encoding a request and decoding a reply take in Python. So the client encodes and decodes
here, and overlayd (long-lived, many messages) keeps msgpack's C code in framing.py.

The data model is the protocol's (DESIGN §5): nil, bool, int (64-bit), float, str (UTF-8), bin,
array, map; an ext type is refused. ``packb`` gives the bytes ``msgpack.packb(value,
use_bin_type=True)`` gives (tests/test_purepack_unit.py checks both directions against msgpack).
``StreamDecoder`` decodes a byte stream incrementally, frame by frame, and refuses, as
``bad_request``, what framing.Decoder refuses: a frame over ``MAX_FRAME`` bytes, a container
over ``MAX_ITEMS`` items, more than ``MAX_CONTAINERS`` containers or ``MAX_DEPTH`` levels in
one message, invalid UTF-8, a map key that is not a scalar, bytes that are not msgpack.
"""

from __future__ import annotations

from _struct import pack as _pack_struct
from _struct import unpack_from as _unpack_from

from .errors import BAD_REQUEST, INTERNAL, ProtocolError
from .wire import MAX_CONTAINERS, MAX_DEPTH, MAX_FRAME, MAX_ITEMS, REQUEST

# -- encoding ---------------------------------------------------------------------------------


def _encode(value: object, out: list[bytes], depth: int) -> None:
    kind = type(value)
    if value is None:
        out.append(b"\xc0")
    elif kind is bool:
        out.append(b"\xc3" if value else b"\xc2")
    elif kind is int:
        out.append(_int(value))  # type: ignore[arg-type]
    elif kind is str:
        data = value.encode()  # type: ignore[union-attr]
        out.append(_header(len(data), 0xA0, 32, b"\xd9", b"\xda", b"\xdb"))
        out.append(data)
    elif kind is float:
        out.append(_pack_struct(">Bd", 0xCB, value))
    elif kind is bytes or kind is bytearray:
        out.append(_header(len(value), None, 0, b"\xc4", b"\xc5", b"\xc6"))  # type: ignore[arg-type]
        out.append(bytes(value))  # type: ignore[arg-type]
    elif kind is list or kind is tuple or kind is dict:
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if kind is dict:
            out.append(_header(len(value), 0x80, 16, None, b"\xde", b"\xdf"))  # type: ignore[arg-type]
            for key, item in value.items():  # type: ignore[union-attr]
                _encode(key, out, depth + 1)
                _encode(item, out, depth + 1)
        else:
            out.append(_header(len(value), 0x90, 16, None, b"\xdc", b"\xdd"))  # type: ignore[arg-type]
            for item in value:  # type: ignore[union-attr]
                _encode(item, out, depth + 1)
    else:
        raise TypeError(f"cannot serialize {kind.__name__!r} object")


def _header(
    size: int, fix: int | None, fix_limit: int, one: bytes | None, two: bytes, four: bytes
) -> bytes:
    """The type byte and length of a str, bin, array or map of ``size``: the shortest form."""
    if fix is not None and size < fix_limit:
        return bytes((fix | size,))
    if one is not None and size < 0x100:
        return one + bytes((size,))
    if size < 0x10000:
        return two + size.to_bytes(2, "big")
    if size < 0x100000000:
        return four + size.to_bytes(4, "big")
    raise ValueError(f"{size} items or bytes is too long for msgpack")


def _int(value: int) -> bytes:
    """The shortest encoding of ``value``, as msgpack's packer chooses it."""
    if value >= 0:
        if value < 0x80:
            return bytes((value,))
        for tag, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
            if value < 1 << (8 * size):
                return bytes((tag,)) + value.to_bytes(size, "big")
    else:
        if value >= -32:
            return bytes((value & 0xFF,))
        for tag, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
            if value >= -(1 << (8 * size - 1)):
                return bytes((tag,)) + value.to_bytes(size, "big", signed=True)
    raise OverflowError("int too big to convert")


def packb(value: object) -> bytes:
    """``value`` as msgpack; ``ProtocolError(internal)`` for what cannot be sent."""
    out: list[bytes] = []
    try:
        _encode(value, out, 1)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError) as exc:
        raise ProtocolError(INTERNAL, f"cannot encode message: {exc}") from None
    frame = b"".join(out)
    if len(frame) > MAX_FRAME:
        raise ProtocolError(INTERNAL, f"message of {len(frame)} bytes exceeds {MAX_FRAME}")
    return frame


def pack_request(msgid: int, method: str, params: list[object]) -> bytes:
    """Encode ``[0, msgid, method, params]``, as framing.pack_request does."""
    return packb([REQUEST, msgid, method, params])


# -- decoding ---------------------------------------------------------------------------------

#: Type bytes of fixed-size scalars: (struct format, bytes after the type byte).
_FIXED = {
    0xCA: (">f", 4), 0xCB: (">d", 8),
    0xCC: (">B", 1), 0xCD: (">H", 2), 0xCE: (">I", 4), 0xCF: (">Q", 8),
    0xD0: (">b", 1), 0xD1: (">h", 2), 0xD2: (">i", 4), 0xD3: (">q", 8),
}  # fmt: skip
#: Type bytes with a length: (what follows, bytes of the length).
_SIZED = {
    0xC4: ("bin", 1), 0xC5: ("bin", 2), 0xC6: ("bin", 4),
    0xD9: ("str", 1), 0xDA: ("str", 2), 0xDB: ("str", 4),
    0xDC: ("array", 2), 0xDD: ("array", 4), 0xDE: ("map", 2), 0xDF: ("map", 4),
}  # fmt: skip
_SCALARS = (type(None), bool, int, float, str, bytes)
_NO_KEY = object()


class _Short(Exception):
    """The buffer ends inside the next item: wait for more bytes."""


def _bad(message: str) -> ProtocolError:
    return ProtocolError(BAD_REQUEST, message)


class StreamDecoder:
    """Whole messages out of a byte stream, fed as it arrives (``feed``), each decoded once.

    A message split across reads is built as far as its bytes go and resumed by the next
    ``feed``, so a large reply read in many pieces costs one pass. After an error the decoder
    is poisoned, like framing.Decoder: msgpack has no resync point.
    """

    __slots__ = ("_buf", "_containers", "_error", "_frame_bytes", "_pos", "_stack")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        #: Open containers of the message being decoded: [container, items left, pending key].
        self._stack: list[list[object]] = []
        self._containers = 0
        self._frame_bytes = 0  # bytes of the current message consumed so far
        self._error: ProtocolError | None = None

    @property
    def poisoned(self) -> bool:
        """True once the decoder has raised; it will never decode again."""
        return self._error is not None

    @property
    def buffered(self) -> int:
        """Bytes of a message not yet complete: consumed into it so far, and held."""
        return self._frame_bytes + len(self._buf) - self._pos

    def feed(self, data: bytes) -> list[object]:
        """Add ``data`` and return every message it completes, in order."""
        if self._error is not None:
            raise _bad(f"stream unusable after an earlier error: {self._error.message}")
        try:
            if type(data) is not bytes:
                try:
                    data = bytes(memoryview(data).cast("B"))
                except (TypeError, ValueError) as exc:
                    raise _bad(f"malformed message: {exc}") from None
            held = self._buf[self._pos :]
            self._buf = held + data if held else data
            self._pos = 0
            messages = self._decode()
            if self.buffered >= MAX_FRAME:
                raise _bad(f"message larger than {MAX_FRAME} bytes")
        except ProtocolError as exc:
            self._error = exc
            self._buf, self._stack = b"", []
            raise ProtocolError(exc.code, exc.message, exc.data) from None
        return messages

    def _decode(self) -> list[object]:
        messages: list[object] = []
        buf, stack = self._buf, self._stack
        end = len(buf)
        while self._pos < end:
            start = self._pos
            try:
                value = self._item(buf, start, end)
            except _Short:
                break
            except UnicodeDecodeError as exc:
                raise _bad(f"malformed message: {exc}") from None
            self._frame_bytes += self._pos - start
            if self._frame_bytes > MAX_FRAME:
                raise _bad(f"message larger than {MAX_FRAME} bytes")
            while True:  # hand the value to its container; a container that fills is next
                if value is _OPEN:
                    break
                if not stack:
                    messages.append(value)
                    self._frame_bytes = self._containers = 0
                    break
                top = stack[-1]
                container = top[0]
                if type(container) is list:
                    container.append(value)
                elif top[2] is _NO_KEY:
                    if type(value) not in _SCALARS:
                        raise _bad("map keys must be scalars")
                    top[2] = value
                    break  # a key never completes its map
                else:
                    container[top[2]] = value  # type: ignore[index]
                    top[2] = _NO_KEY
                top[1] -= 1  # type: ignore[operator]
                if top[1]:
                    break
                stack.pop()
                value = container
        return messages

    def _item(self, buf: bytes, pos: int, end: int) -> object:
        """The item at ``pos``: a scalar, an empty container, or _OPEN after pushing one."""
        byte = buf[pos]
        if byte < 0x80:
            self._pos = pos + 1
            return byte
        if byte >= 0xE0:
            self._pos = pos + 1
            return byte - 0x100
        if 0xA0 <= byte <= 0xBF:
            return self._str(buf, pos + 1, byte & 0x1F, end)
        if byte <= 0x9F:
            self._pos = pos + 1
            return self._open(dict if byte < 0x90 else list, byte & 0x0F)
        if byte == 0xC0:
            self._pos = pos + 1
            return None
        if byte == 0xC2 or byte == 0xC3:
            self._pos = pos + 1
            return byte == 0xC3
        fixed = _FIXED.get(byte)
        if fixed is not None:
            fmt, size = fixed
            if pos + 1 + size > end:
                raise _Short
            self._pos = pos + 1 + size
            return _unpack_from(fmt, buf, pos + 1)[0]
        sized = _SIZED.get(byte)
        if sized is None:
            if 0xC7 <= byte <= 0xC9 or 0xD4 <= byte <= 0xD8:
                self._refuse_ext(buf, pos, end)
            raise _bad(f"malformed message: unknown type byte 0x{byte:02x}")
        kind, width = sized
        if pos + 1 + width > end:
            raise _Short
        size = int.from_bytes(buf[pos + 1 : pos + 1 + width], "big")
        if kind == "str":
            return self._str(buf, pos + 1 + width, size, end)
        if kind == "bin":
            if pos + 1 + width + size > end:
                self._check_size(1 + width + size)
                raise _Short
            self._pos = pos + 1 + width + size
            return buf[pos + 1 + width : self._pos]
        self._pos = pos + 1 + width
        return self._open(dict if kind == "map" else list, size)

    def _refuse_ext(self, buf: bytes, pos: int, end: int) -> None:
        """An ext type is refused once all of it is here, as msgpack's ext_hook refuses it."""
        byte = buf[pos]
        if byte >= 0xD4:  # fixext 1, 2, 4, 8, 16
            width, size = 0, 1 << (byte - 0xD4)
        else:  # ext 8, 16, 32
            width = 1 << (byte - 0xC7)
            if pos + 1 + width > end:
                raise _Short
            size = int.from_bytes(buf[pos + 1 : pos + 1 + width], "big")
        need = 2 + width + size  # type byte, length, ext code, data
        if pos + need > end:
            self._check_size(need)
            raise _Short
        code = int.from_bytes(buf[pos + 1 + width : pos + 2 + width], "big", signed=True)
        raise _bad(f"msgpack ext type {code} is not allowed")

    def _str(self, buf: bytes, at: int, size: int, end: int) -> str:
        if at + size > end:
            self._check_size(at - self._pos + size)
            raise _Short
        self._pos = at + size
        return buf[at : at + size].decode()

    def _check_size(self, size: int) -> None:
        """A str or bin (``size`` bytes with its header) that cannot fit in the frame is
        refused before its bytes arrive."""
        if self._frame_bytes + size > MAX_FRAME:
            raise _bad(f"message larger than {MAX_FRAME} bytes")

    def _open(self, kind: type, size: int) -> object:
        if size > MAX_ITEMS:
            raise _bad(f"container of {size} items is longer than {MAX_ITEMS}")
        self._containers += 1
        if self._containers > MAX_CONTAINERS:
            raise _bad(f"message has more than {MAX_CONTAINERS} containers")
        if len(self._stack) >= MAX_DEPTH:
            raise _bad(f"message nested deeper than {MAX_DEPTH} levels")
        container = kind()
        if not size:
            return container
        self._stack.append([container, size, _NO_KEY])
        return _OPEN


#: What ``_item`` returns after opening a container that has items to come.
_OPEN = object()
