"""A small blocking client for overlayd's control socket, for scripts and health checks.

    from overlayctl.client import Client, ClientError

    try:
        with Client() as overlay:
            report = overlay.check()
    except ClientError as exc:  # cannot reach overlayd, or it refused
        sys.exit(f"health check: {exc}")
    sys.exit(0 if report["healthy"] else 1)

One connection per ``Client``, opened on the first call (which first checks the server's
protocol with ``hello``) and reused until ``close()``. Every failure is a ``ClientError``:
``ConnectError`` (overlayd unreachable, gone, or silent past the timeout), ``RemoteError``
(overlayd answered with an error; ``.code`` is one of ``protocol.ERROR_CODES``) or
``ProtocolMismatch`` (overlayd is too old for this client). ``Refused`` is both a
``RemoteError`` and a ``ConnectError``: overlayd said why, then hung up (too many clients).
A ``Client`` is not thread-safe.

Only the standard library's ``os``, ``_socket``, ``_struct`` and ``time`` are imported, and
the protocol's light modules: messages go through protocol.purepack, msgpack in pure Python,
because importing the msgpack package would cost every run more than all its encoding and
decoding. So a health check starts fast.
"""

from __future__ import annotations

# _socket is the C core of the socket module: the same socket objects and exceptions, without
# the ~6 ms `socket` spends importing enum and selectors, which a health check pays every run.
import _socket
import os
import time
from _collections import deque  # the C deque: `collections` costs ~1.5 ms of every run

from protocol.errors import INTERNAL, ProtocolError
from protocol.messages import Notification, Response, parse_message
from protocol.purepack import StreamDecoder, pack_request
from protocol.wire import PROTOCOL_VERSION, STATE_NOTIFICATION

TYPE_CHECKING = False  # typing stays unimported at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

DEFAULT_SOCKET = "/run/overlay/control.sock"
#: Extra seconds a ``wait`` call's socket timeout allows beyond the wait's own timeout.
WAIT_MARGIN = 5.0
#: Notifications kept while nobody reads them; the oldest are dropped beyond this.
MAX_QUEUED_NOTIFICATIONS = 10_000
#: The notification overlayd sends, just before it hangs up, to a connection it will not
#: serve: ``[2, "error", [{code, message, data}]]`` (too many clients, a broken stream).
ERROR_NOTIFICATION = "error"
#: Methods whose first call on a connection is sent along with the handshake's hello. Only
#: read-only ones: a request that changes something must wait until the protocol is checked.
PIPELINED = frozenset({"status", "check", "wait", "subscribe"})
_RECV_SIZE = 1 << 16
_MSGID_MASK = (1 << 32) - 1


def fallback_socket_path(uid: int | None = None) -> str:
    """Where overlayd listens when it is not root and cannot make /run/overlay (DESIGN §2)."""
    return f"/tmp/overlay-{os.getuid() if uid is None else uid}/control.sock"


def socket_candidates() -> list[str]:
    """The sockets to try, in order (the search order the README documents).

    ``$OVERLAY_SOCKET``; else ``$OVERLAY_RUN_DIR/control.sock``; else the default
    ``/run/overlay/control.sock`` and then ``/tmp/overlay-UID/control.sock`` (UID: ours), the
    per-user directory a non-root overlayd falls back to.
    """
    path = os.environ.get("OVERLAY_SOCKET")
    if path:
        return [path]
    run_dir = os.environ.get("OVERLAY_RUN_DIR")
    if run_dir:
        return [os.path.join(run_dir, "control.sock")]
    return [DEFAULT_SOCKET, fallback_socket_path()]


def default_socket_path() -> str:
    """``$OVERLAY_SOCKET``, else ``$OVERLAY_RUN_DIR/control.sock``, else the built-in default."""
    return socket_candidates()[0]


class ClientError(Exception):
    """Base of every error this client raises."""


class ConnectError(ClientError):
    """overlayd cannot be reached at ``path``: not running, no permission, gone, or silent."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot reach overlayd at {path}: {reason}")
        self.path = path
        self.reason = reason


class RemoteError(ClientError):
    """overlayd answered with an error: ``code`` (a stable string), ``message``, ``data``."""

    def __init__(self, code: str, message: str, data: object = None) -> None:
        super().__init__(message or code)
        self.code = code
        self.message = message
        self.data = data


class Refused(RemoteError, ConnectError):
    """overlayd told this connection why it will not serve it, then hung up.

    A ``RemoteError`` (``code``, ``message``, ``data`` as overlayd sent them) and also a
    ``ConnectError`` (``path``, ``reason``): the connection is gone, and a caller that only
    asks "could I reach overlayd?" still gets its answer.
    """

    def __init__(self, path: str, code: str, message: str, data: object = None) -> None:
        ClientError.__init__(self, message or code)
        self.path = path
        self.reason = message or code
        self.code = code
        self.message = message
        self.data = data


class ProtocolMismatch(ClientError):
    """overlayd speaks an older protocol than this client needs (or is not overlayd at all)."""

    def __init__(self, message: str, server_protocol: object = None) -> None:
        super().__init__(message)
        self.server_protocol = server_protocol


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return exc.strerror or str(exc) or type(exc).__name__


def _name_list(names: Iterable[str] | str) -> list[str]:
    # A lone str is one name, not a sequence of one-letter names.
    return [names] if isinstance(names, str) else list(names)


class Client:
    """A connection to overlayd's control socket with one method per RPC method.

    ``socket_path`` defaults to ``default_socket_path()``. ``timeout`` (seconds, None for
    none) bounds connecting and each call; ``wait`` extends it to cover its own timeout and
    ``subscribe`` blocks without one. ``handshake=False`` skips the ``hello`` check on connect.
    ``decoder`` makes the decoder of each connection (see ``_new_decoder``).
    """

    def __init__(
        self,
        socket_path: str | None = None,
        timeout: float | None = 10.0,
        *,
        handshake: bool = True,
        decoder: Callable[[], StreamDecoder] | None = None,
    ) -> None:
        candidates = socket_candidates() if socket_path is None else [socket_path]
        self.socket_path = candidates[0]
        #: Where to look next when ``socket_path`` does not exist (the search order).
        self._fallbacks = candidates[1:]
        self.timeout = timeout
        self.handshake = handshake
        #: The ``hello`` reply of the current connection's handshake, once connected.
        self.server_info: dict[str, object] | None = None
        self._sock: _socket.socket | None = None
        #: Makes each connection's decoder: purepack's (nothing to import) unless a long-lived
        #: caller passes protocol.framing.Decoder (msgpack's C one, ~10x faster per reply).
        self._new_decoder = decoder or StreamDecoder
        self._decoder = self._new_decoder()
        self._msgid = 0
        self._notifications: deque[Notification] = deque(maxlen=MAX_QUEUED_NOTIFICATIONS)
        #: The msgid whose answer drops the notifications queued before it (``_calls``).
        self._snapshot_id: int | None = None
        #: The ``error`` notification of the current connection, if overlayd sent one.
        self._refusal: Refused | None = None

    # -- connection -------------------------------------------------------------------------

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the next call opens a new one). Safe to call twice."""
        sock, self._sock = self._sock, None
        self.server_info = None
        self._notifications.clear()
        self._snapshot_id = None
        self._refusal = None
        if sock is not None:
            sock.close()

    def _connect(self, handshake: bool = True) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            self._connect_any(sock)
        except OSError as exc:
            sock.close()
            reason = _reason(exc)
            if isinstance(exc, PermissionError):
                from overlayctl.diagnose import permission_hint

                reason = permission_hint(self.socket_path, reason)
            looked = " or ".join([self.socket_path, *self._fallbacks])
            raise ConnectError(looked, reason) from exc
        self._sock = sock
        self._decoder = self._new_decoder()
        if self.handshake and handshake:
            try:
                self._check_hello(self._call("hello", [], self.timeout))
            except ClientError:
                self.close()
                raise

    def _connect_any(self, sock: _socket.socket) -> None:
        """Connect to ``socket_path``, else to the first fallback that exists."""
        try:
            sock.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as first:
            for path in self._fallbacks:
                if os.path.exists(path):
                    self.socket_path, self._fallbacks = path, []
                    sock.connect(path)
                    return
            raise first

    def _check_hello(self, info: object) -> dict[str, object]:
        protocol = info.get("protocol") if type(info) is dict else None
        if type(protocol) is not int:
            raise ProtocolMismatch(
                f"the server at {self.socket_path} sent no protocol version in its hello reply; "
                "is it overlayd?"
            )
        if protocol < PROTOCOL_VERSION:
            raise ProtocolMismatch(
                f"overlayd at {self.socket_path} speaks protocol {protocol}, but this client "
                f"needs protocol {PROTOCOL_VERSION} or newer: upgrade overlayd in the image, "
                "or use the overlayctl that came with it",
                protocol,
            )
        self.server_info = info
        return info

    def _fail(self, reason: str, hung_up: bool = True) -> ConnectError:
        """Drop the connection (its state is unknown now) and describe why.

        When overlayd said why it hung up (an ``error`` notification, perhaps still unread in
        the socket: it may close before our request even went out), that is the answer.
        """
        refusal = self._refusal or (self._unread_refusal() if hung_up else None)
        self.close()
        return refusal or ConnectError(self.socket_path, reason)

    def _unread_refusal(self) -> Refused | None:
        """Read what the broken connection still holds, without blocking, for a refusal."""
        sock = self._sock
        if sock is None:
            return None
        try:
            sock.settimeout(0.0)  # with a timeout, recv would first poll for that long
            for _ in range(16):  # a refusal is one small frame: never read a flood
                data = sock.recv(_RECV_SIZE)
                if not data:
                    break
                self._parse(data)
                if self._refusal is not None:
                    break
        except (OSError, ClientError):
            pass
        return self._refusal

    def _note_refusal(self, params: list[object]) -> None:
        error = params[0] if params else None
        try:
            wire = ProtocolError.from_wire(error)
        except ProtocolError:
            wire = ProtocolError(INTERNAL, "overlayd refused the connection")
        self._refusal = Refused(self.socket_path, wire.code, wire.message, wire.data)

    # -- messages ---------------------------------------------------------------------------

    def _read(self, deadline: float | None) -> list[Response] | None:
        """One ``recv``: queue notifications, return responses; None at a clean end of stream."""
        sock = self._sock
        if sock is None:
            raise ConnectError(self.socket_path, "connection closed")
        try:
            if deadline is None:
                sock.settimeout(None)
            else:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = sock.recv(_RECV_SIZE)
        except TimeoutError:
            raise self._fail("timed out waiting for a reply", hung_up=False) from None
        except OSError as exc:
            raise self._fail(_reason(exc)) from exc
        if not data:
            if self._decoder.buffered or self._refusal is not None:
                raise self._fail("connection closed in the middle of a reply")
            self.close()
            return None
        return self._parse(data)

    def _parse(self, data: bytes) -> list[Response]:
        """Decode received bytes: queue notifications, note a refusal, return responses."""
        responses: list[Response] = []
        try:
            for obj in self._decoder.feed(data):
                message = parse_message(obj)
                if type(message) is Response:
                    responses.append(message)
                    if message.msgid == self._snapshot_id:  # what came before, it shows
                        self._snapshot_id = None
                        self._notifications.clear()
                elif type(message) is Notification:
                    if message.method == ERROR_NOTIFICATION:
                        self._note_refusal(message.params)
                    else:
                        self._notifications.append(message)
                # A request from the server has no meaning in this protocol: ignored.
        except ProtocolError as exc:
            self.close()
            raise ClientError(f"bad reply from overlayd at {self.socket_path}: {exc}") from exc
        return responses

    def _call(self, method: str, params: list[object], timeout: float | None) -> object:
        return self._calls([(method, params)], timeout)[0]

    def _calls(
        self,
        requests: list[tuple[str, list[object]]],
        timeout: float | None,
        snapshot: int | None = None,
    ) -> list[object]:
        """Send ``requests`` in one write, read every answer: their results, in order.

        One round trip whatever their number: overlayd answers a connection's requests in
        order. On a new connection the handshake's hello goes first in the same write when
        every request only reads (PIPELINED); otherwise the hello is a round trip of its own,
        checked before a request that changes something is sent. The first error answer (in
        request order) is raised once all are read. ``snapshot``: the index of a request
        whose answer drops the notifications received before it (a ``status`` that shows
        them).
        """
        hello_id = None
        frames: list[bytes] = []
        if self._sock is None:
            pipelined = self.handshake and all(method in PIPELINED for method, _ in requests)
            self._connect(handshake=not pipelined)
            if pipelined:
                self._msgid = hello_id = (self._msgid + 1) & _MSGID_MASK
                frames.append(pack_request(hello_id, "hello", []))
        ids: list[int] = []
        for method, params in requests:
            self._msgid = msgid = (self._msgid + 1) & _MSGID_MASK
            try:
                frames.append(pack_request(msgid, method, params))
            except ProtocolError as exc:
                raise ClientError(f"cannot send {method}: {exc}") from exc
            ids.append(msgid)
        self._snapshot_id = None if snapshot is None else ids[snapshot]
        deadline = None if timeout is None else time.monotonic() + timeout
        sock = self._sock
        try:
            sock.settimeout(timeout)
            sock.sendall(b"".join(frames))
        except TimeoutError:
            raise self._fail("timed out sending a request", hung_up=False) from None
        except OSError as exc:
            raise self._fail(_reason(exc)) from exc  # EPIPE: maybe refused before we spoke
        answers: dict[int, Response] = {}
        while len(answers) < len(ids) or hello_id is not None:
            responses = self._read(deadline)
            if responses is None:
                raise ConnectError(self.socket_path, "overlayd closed the connection")
            for response in responses:
                if response.msgid == hello_id:
                    hello_id = None
                    self._check_pipelined_hello(response)
                elif response.msgid in ids:
                    answers[response.msgid] = response
                # else: the late answer to an earlier call that timed out
        for msgid in ids:
            error = answers[msgid].error
            if error is not None:
                raise RemoteError(error["code"], error["message"], error["data"])
        return [answers[msgid].result for msgid in ids]

    def _check_pipelined_hello(self, response: Response) -> None:
        """The handshake's answer, read before the call's: a mismatch wins over the result."""
        try:
            if response.error is not None:
                error = response.error
                raise RemoteError(error["code"], error["message"], error["data"])
            self._check_hello(response.result)
        except ClientError:
            self.close()
            raise

    def call(self, method: str, *params: object) -> object:
        """Call any method with positional ``params``; return its result."""
        return self._call(method, list(params), self.timeout)

    # -- the methods ------------------------------------------------------------------------

    def hello(self) -> dict[str, object]:
        """Server name, version, protocol version and method names; checks the protocol."""
        if self._sock is None and self.handshake:
            self._connect()  # its handshake is a hello: no need to ask twice
            return dict(self.server_info)
        return dict(self._check_hello(self._call("hello", [], self.timeout)))

    def status(self, names: Iterable[str] = (), details: bool = False) -> list[dict[str, object]]:
        """Service records (DESIGN §6 keys), all or the named ones, in overlayd's order."""
        return self._call("status", [_name_list(names), details], self.timeout)

    def start(self, names: Iterable[str]) -> list[str]:
        """Want the services up and start them; returns the names acted on."""
        return self._call("start", [_name_list(names)], self.timeout)

    def stop(self, names: Iterable[str]) -> list[str]:
        """Want the services down and stop them; returns the names acted on."""
        return self._call("stop", [_name_list(names)], self.timeout)

    def restart(self, names: Iterable[str]) -> list[str]:
        """Restart the services; returns the names acted on."""
        return self._call("restart", [_name_list(names)], self.timeout)

    def once(self, names: Iterable[str]) -> list[str]:
        """Start the services without restarting them when they exit; returns the names."""
        return self._call("once", [_name_list(names)], self.timeout)

    def signal(self, sig: str | int, names: Iterable[str], group: bool = False) -> list[str]:
        """Signal each service's main process (``"HUP"``, ``"SIGHUP"`` or a number).

        ``group``: its whole process group instead (an overlayd that knows the param).
        """
        params: list[object] = [sig, _name_list(names)]
        if group:
            params.append(True)
        return self._call("signal", params, self.timeout)

    def rescan(self) -> dict[str, object]:
        """Re-read services.d: ``{"added": [names started], "stopped": [names stopped]}``."""
        return self._call("rescan", [], self.timeout)

    def wait(self, condition: str, names: Iterable[str], timeout: float | None = None) -> bool:
        """Block until every service is ``up``, ``ready`` or ``down``; True.

        Raises ``RemoteError`` with code ``timeout`` when ``timeout`` seconds pass first.
        """
        socket_timeout = None if timeout is None else timeout + WAIT_MARGIN
        return self._call("wait", [condition, _name_list(names), timeout], socket_timeout)

    def check(self) -> dict[str, object]:
        """Health: ``{"healthy": bool, "problems": [{"name", "state", "reason"}]}``."""
        return self._call("check", [], self.timeout)

    def shutdown(self, exit_code: int | None = None) -> bool:
        """Ask overlayd to stop the container, optionally with this exit code."""
        return self._call("shutdown", [exit_code], self.timeout)

    def subscribe(self) -> Iterator[list[object]]:
        """Subscribe now; return a generator of each ``state`` notification's params.

        The params are ``[record]`` (a service record, as in ``status``). The generator blocks
        without a timeout, and ends when overlayd closes the connection.
        """
        self._call("subscribe", [], self.timeout)
        return self._events()

    def watch(self) -> None:
        """Subscribe without reading: ``next_state`` then returns each change, in order."""
        self._call("subscribe", [], self.timeout)

    def watch_status(
        self, names: Iterable[str] = (), details: bool = False
    ) -> list[dict[str, object]]:
        """Subscribe and take the services' records, in one round trip; ``next_state`` then
        returns each change that came after the records, in order (none lost, none shown
        twice: a change overlayd reported before the records is in them)."""
        _, records = self._calls(
            [("subscribe", []), ("status", [_name_list(names), details])], self.timeout, 1
        )
        return records

    def next_state(self, timeout: float | None) -> dict[str, object] | None:
        """The next ``state`` notification's record after ``watch`` (or ``watch_status``); None
        after ``timeout`` s.

        A timeout leaves the connection usable. Raises ``ConnectError`` when overlayd hangs up.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        queue = self._notifications
        while True:
            while queue:
                notification = queue.popleft()
                if notification.method == STATE_NOTIFICATION and notification.params:
                    return notification.params[0]
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            sock = self._sock
            if sock is None:
                raise ConnectError(self.socket_path, "connection closed")
            try:
                sock.settimeout(left)
                data = sock.recv(_RECV_SIZE)
            except TimeoutError:
                return None
            except OSError as exc:
                raise self._fail(_reason(exc)) from exc
            if not data:
                raise self._fail("overlayd closed the connection")
            self._parse(data)

    def _events(self) -> Iterator[list[object]]:
        queue = self._notifications
        while True:
            while queue:
                notification = queue.popleft()
                if notification.method == STATE_NOTIFICATION:
                    yield notification.params
            if self._read(None) is None:
                return
