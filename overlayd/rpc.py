"""The control socket server: listening socket, connections, framing, auth, limits, dispatch.

Everything here runs inside PID 1's single-threaded loop, so every operation is non-blocking and
every resource a peer can make us hold is bounded (the README's "PID 1 under abuse" section
states the resulting worst case):

- connections: root and overlayd's own uid share ``MAX_CLIENTS`` slots; everyone else (members
  of OVERLAY_SOCKET_GROUP, read-only) shares ``READ_ONLY_CLIENTS`` slots of their own, so
  read-only clients can never lock root out. The next one gets an ``error`` notification;
- a connection costs a few KiB (a 4 KiB decoder buffer, no reference cycles, no timer holding
  it after close): closing it frees everything at once;
- input: one frame is at most ``MAX_FRAME`` bytes (the protocol Decoder enforces it); requests
  are decoded only when served, so pipelined bytes cost one ``RECV_SIZE`` read; a frame being
  received past ``INPUT_ALLOWANCE`` bytes needs one of ``LARGE_INPUTS`` shared slots;
- output: replies and notifications not yet read by the peer are held up to ``max_buffer``
  bytes (beyond what the kernel's socket buffer took), and while any are held that client's
  next requests wait (back-pressure); one reply larger than that needs one of
  ``LARGE_OUTPUTS`` shared slots, else its caller gets a ``internal`` "busy" error instead;
  a subscriber past the bound gets an ``overflow`` notification and is dropped;
- waits in flight: ``MAX_PENDING`` per connection, ``MAX_WAITS`` for root and overlayd's uid
  together, ``READ_ONLY_WAITS`` for read-only clients together;
- fairness: at most ``REQUESTS_PER_TURN`` requests of one connection and ``TURN_BUDGET`` in all
  are served per loop turn, round-robin, so a burst of clients delays a newcomer by a bounded
  number of turns (see README);
- a connection without a complete request for ``idle_timeout`` seconds is closed, except while
  it is subscribed or has a ``wait`` in flight;
- one idle Timer per connection, re-armed lazily (never one heap entry per request), and none
  at all when nobody is connected: an idle overlayd makes no wake-ups.

Authorisation uses SO_PEERCRED at accept: root and overlayd's own uid may call everything,
anyone else (a member of OVERLAY_SOCKET_GROUP) only the read-only methods.
"""

from __future__ import annotations

import _socket
import math
import os
import select
import struct
from collections import deque
from collections.abc import Callable

from protocol import (
    INTERNAL,
    MAX_FRAME,
    MAX_MSGID,
    METHODS,
    NO_SUCH_METHOD,
    PERMISSION_DENIED,
    READ_ONLY_METHODS,
    STATE_NOTIFICATION,
    Decoder,
    ProtocolError,
    Request,
    pack_notification,
    pack_response,
    parse_message,
    validate_request,
)
from protocol.errors import BAD_REQUEST, describe

from . import handlers, log
from .listener import open_listener
from .loop import Future, Timer

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from .core import Core as Container
    from .service import Service

#: Connections of root and overlayd's own uid at once.
MAX_CLIENTS = 128
#: Connections of read-only clients at once (their own quota: they never take root's slots).
READ_ONLY_CLIENTS = 32
#: Bytes read from a connection at a time; read again only once what it held is served.
RECV_SIZE = 8 << 10
#: Requests served per connection per loop turn (fairness between clients, bounded stalls).
REQUESTS_PER_TURN = 8
#: Requests served per loop turn over all connections, round-robin.
TURN_BUDGET = 128
#: Waits in flight on one connection; more are refused with bad_request.
MAX_PENDING = 64
#: Waits in flight for root and overlayd's uid together, and for read-only clients together.
MAX_WAITS = 512
READ_ONLY_WAITS = 128
#: Bytes of an incomplete frame a connection may hold without a large-input slot.
INPUT_ALLOWANCE = 16 << 10
#: Connections that may be receiving a frame larger than INPUT_ALLOWANCE at once.
LARGE_INPUTS = 1
#: Connections that may hold one reply larger than max_buffer at once.
LARGE_OUTPUTS = 1
#: Connections accepted per readiness event, so a flood cannot monopolise one loop turn.
ACCEPT_BATCH = 64
#: Seconds to stop accepting after running out of fds (epoll is level-triggered: no busy loop).
ACCEPT_PAUSE = 0.5
#: Seconds between two "refusing more" lines of one class of clients.
REFUSAL_LOG_INTERVAL = 10.0
#: Seconds a dropped subscriber has to read its overflow notification before it is closed.
OVERFLOW_GRACE = 2.0
DEFAULT_IDLE_TIMEOUT = 30.0
#: Unread output held per connection (DESIGN §5: a subscriber is dropped before 256 KiB).
DEFAULT_MAX_BUFFER = 16 << 10
IDLE_TIMEOUT_ENV = "OVERLAY_RPC_IDLE_TIMEOUT"
MAX_BUFFER_ENV = "OVERLAY_RPC_MAX_BUFFER"
#: Notification carrying an error that answers no request (bad stream, too many clients).
ERROR_NOTIFICATION = "error"
#: Notification sent to a subscriber that did not read its notifications, before it is dropped.
OVERFLOW_NOTIFICATION = "overflow"
#: Handlers that may answer later (return a Future), counted against MAX_PENDING (and so is
#: `status` with details, answered once its process walk is done).
DEFERRED_METHODS = frozenset({"wait"})
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_MAX_ERROR_TEXT = 300


def env_number(name: str, default: float) -> float:
    """A positive number from the environment; the default, with a warning, when it is bad."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        log.warn(f"{name}={text!r} is not a positive number; using {default:g}")
        return default
    return value


def request_msgid(obj: object) -> int | None:
    """The msgid of something shaped like a request, so even a bad one gets a response."""
    if type(obj) is list and len(obj) >= 2 and type(obj[0]) is int and obj[0] == 0:
        msgid = obj[1]
        if type(msgid) is int and 0 <= msgid <= MAX_MSGID:
            return msgid
    return None


def error_frame(exc: ProtocolError, msgid: int | None) -> bytes:
    """A response to ``msgid`` carrying ``exc``; an ``error`` notification when there is none."""
    if msgid is None:
        return pack_notification(ERROR_NOTIFICATION, [exc.to_wire()])
    return pack_response(msgid, exc.to_wire(), None)


def escape_text(value: object) -> object:
    """``value`` with every str made encodable: lone surrogates (bytes that were not UTF-8 in
    a file name) shown as ``\\xNN``. Used only when a message failed to encode."""
    kind = type(value)
    if kind is str:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if kind is list or kind is tuple:
        return [escape_text(item) for item in value]
    if kind is dict:
        return {escape_text(key): escape_text(item) for key, item in value.items()}
    return value


def _pack_escaped(pack: Callable[..., bytes], *args: object) -> bytes:
    """``pack(*args)``; if that fails, once more with every string escaped (see escape_text)."""
    try:
        return pack(*args)
    except ProtocolError:
        return pack(*(escape_text(arg) for arg in args))


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


def _peer_credentials(sock: _socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def _hung_up(sock: _socket.socket) -> bool:
    """Has the peer closed its end entirely (not just shut down writing)?

    A Unix stream socket reports POLLHUP only once both directions are shut, which a peer's
    close() does and its shutdown(SHUT_WR) does not.
    """
    poller = select.poll()
    poller.register(sock.fileno(), 0)  # POLLHUP and POLLERR are always reported
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _refuse(sock: _socket.socket, exc: ProtocolError) -> None:
    """Tell a connection we cannot serve why, best effort, and close it."""
    try:
        sock.recv(RECV_SIZE)  # drained: closing with unread data would reset the peer
    except OSError:
        pass
    try:
        sock.send(error_frame(exc, None), _socket.MSG_NOSIGNAL)
    except OSError:
        pass
    sock.close()


class ControlServer:
    """The control socket: accepts connections, authorises and dispatches their requests."""

    def __init__(self, container: Container, sock: _socket.socket | None = None) -> None:
        """Serve on `sock` (from listener.open_listener), or open the configured path."""
        self.container = container
        self.loop = container.loop
        self.path = container.socket_path
        self.idle_timeout = env_number(IDLE_TIMEOUT_ENV, DEFAULT_IDLE_TIMEOUT)
        self.max_buffer = int(env_number(MAX_BUFFER_ENV, DEFAULT_MAX_BUFFER))
        self.clients: dict[int, Connection] = {}
        self.subscribers: dict[Connection, None] = {}  # ordered set
        #: Connections per class and waits in flight per class (index: read_only).
        self.counts = [0, 0]
        self.waits = [0, 0]
        #: Connections holding a large-input or large-output slot.
        self.large_inputs: set[Connection] = set()
        self.large_outputs: set[Connection] = set()
        self._ready: deque[Connection] = deque()  # connections with requests to serve
        self._serving = False  # a _serve call is queued on the loop
        self._uid = os.geteuid()
        self._listener = self._on_state  # one bound method, so remove_listener finds it
        if sock is None:
            sock = open_listener(self.path, container.socket_gid)
        self._sock = sock
        self._fd = self._sock.fileno()
        self._inode = os.stat(self.path).st_ino
        self._paused: Timer | None = None
        self._refused = [0, 0]  # connections refused since the last line said so (per class)
        self._refusal_logged = [-math.inf, -math.inf]
        self.loop.add_reader(self._fd, self._on_acceptable)
        log.debug(f"control socket listening at {self.path}")

    # --- accepting -----------------------------------------------------------------------
    def _on_acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                fd, _address = self._sock._accept()  # accept4(SOCK_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS...: the pending connection stays queued, so stop
                # listening for a moment instead of being woken for it in a tight loop.
                log.warn(f"control socket: cannot accept: {exc.strerror}; pausing")
                self._pause()
                return
            self._admit(_socket.socket(fileno=fd))

    def _pause(self) -> None:
        if self._paused is not None:
            return
        self.loop.remove_reader(self._fd)
        self._paused = self.loop.call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._sock.fileno() >= 0:
            self.loop.add_reader(self._fd, self._on_acceptable)

    def _admit(self, sock: _socket.socket) -> None:
        try:
            sock.setblocking(False)
            pid, uid, _gid = _peer_credentials(sock)
        except OSError:
            sock.close()
            return
        read_only = uid not in (0, self._uid)
        limit = READ_ONLY_CLIENTS if read_only else MAX_CLIENTS
        if self.counts[read_only] >= limit:
            who = "read-only clients" if read_only else "clients"
            self._note_refusal(read_only, f"{limit} {who}")
            _refuse(
                sock,
                ProtocolError(
                    INTERNAL,
                    f"too many {who}: overlayd serves at most {limit} at once; "
                    "try again later",
                    {"limit": limit},
                ),
            )
            return
        conn = Connection(self, sock, pid, uid, read_only)
        self.clients[conn.fd] = conn
        self.counts[read_only] += 1
        log.debug(f"control: client pid {pid} uid {uid} connected ({len(self.clients)} now)")

    def _note_refusal(self, read_only: bool, what: str) -> None:
        """One line per REFUSAL_LOG_INTERVAL, not one per refused connection."""
        self._refused[read_only] += 1
        now = self.loop.time()
        if now - self._refusal_logged[read_only] >= REFUSAL_LOG_INTERVAL:
            count, self._refused[read_only] = self._refused[read_only], 0
            self._refusal_logged[read_only] = now
            log.warn(f"control socket: {what} connected; refusing more ({count} refused)")

    # --- fair service ----------------------------------------------------------------------
    def ready(self, conn: Connection) -> None:
        """``conn`` holds requests: serve them in turn with the others."""
        self._ready.append(conn)
        if not self._serving:
            self._serving = True
            self.loop.call_soon(self._serve)

    def _serve(self) -> None:
        """One round: up to REQUESTS_PER_TURN per connection, TURN_BUDGET in all."""
        self._serving = False
        ready = self._ready
        budget = TURN_BUDGET
        for _ in range(len(ready)):
            if budget <= 0:
                break
            conn = ready.popleft()
            budget -= conn.work(min(REQUESTS_PER_TURN, budget))
        if ready and not self._serving:
            self._serving = True
            self.loop.call_soon(self._serve)

    # --- requests ------------------------------------------------------------------------
    def dispatch(self, conn: Connection, request: Request) -> None:
        """Authorise, validate and run one request; its reply (or error) goes to ``conn``."""
        msgid, method = request.msgid, request.method
        try:
            if method not in METHODS:
                raise ProtocolError(NO_SUCH_METHOD, f"no such method: {describe(method)}")
            if conn.read_only and method not in READ_ONLY_METHODS:
                raise ProtocolError(
                    PERMISSION_DENIED,
                    f"{method}: permission denied: uid {conn.uid} may only call "
                    + ", ".join(sorted(READ_ONLY_METHODS)),
                )
            params = validate_request(request)
            if method in DEFERRED_METHODS or (method == "status" and params[1:2] == [True]):
                self._check_wait_quota(conn, method)
            result = handlers.HANDLERS[method](conn, *params)
        except ProtocolError as exc:
            conn.respond(msgid, exc, None)
            return
        except Exception as exc:
            log.exception(f"control: {method} failed")
            error = ProtocolError(INTERNAL, _shorten(f"{method}: {type(exc).__name__}: {exc}"))
            conn.respond(msgid, error, None)
            return
        if isinstance(result, Future):
            conn.defer(msgid, method, result)
        else:
            conn.respond(msgid, None, result)

    def _check_wait_quota(self, conn: Connection, method: str) -> None:
        if conn.pending >= MAX_PENDING:
            raise ProtocolError(
                BAD_REQUEST, f"{method}: too many calls in flight (at most {MAX_PENDING})"
            )
        limit = READ_ONLY_WAITS if conn.read_only else MAX_WAITS
        if self.waits[conn.read_only] >= limit:
            who = "read-only clients" if conn.read_only else "all clients"
            raise ProtocolError(
                BAD_REQUEST, f"{method}: too many calls in flight for {who} (at most {limit})"
            )

    # --- subscriptions -------------------------------------------------------------------
    def subscribe(self, conn: Connection) -> None:
        """Add ``conn`` to the receivers of state notifications."""
        if not self.subscribers:
            self.container.supervisor.add_listener(self._listener)
        self.subscribers[conn] = None

    def unsubscribe(self, conn: Connection) -> None:
        """Stop sending ``conn`` state notifications."""
        if conn in self.subscribers:
            del self.subscribers[conn]
            if not self.subscribers:
                self.container.supervisor.remove_listener(self._listener)

    def _on_state(self, service: Service) -> None:
        try:
            frame = _pack_escaped(pack_notification, STATE_NOTIFICATION, [service.record()])
        except ProtocolError as exc:
            log.error(f"control: cannot send a state notification: {exc.message}")
            return
        for conn in list(self.subscribers):
            conn.notify(frame)

    def forget(self, conn: Connection) -> None:
        """A connection closed: drop every reference to it."""
        if self.clients.get(conn.fd) is conn:
            del self.clients[conn.fd]
            self.counts[conn.read_only] -= 1
        self.unsubscribe(conn)
        self.large_inputs.discard(conn)
        self.large_outputs.discard(conn)
        # A closed connection left in _ready is skipped by work(); nothing else holds it.

    # --- end -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close every connection and the socket, and remove the socket file if still ours."""
        for conn in list(self.clients.values()):
            conn.close()
        self._ready.clear()
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        self.loop.remove_reader(self._fd)
        self._sock.close()
        try:
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass


class Connection:
    """One client: a decoder, a bounded output buffer, an idle timer, its identity."""

    __slots__ = (
        "_closed",
        "_decoder",
        "_doomed",
        "_eof",
        "_held_back",
        "_last_active",
        "_out",
        "_queued",
        "_reading",
        "_timer",
        "container",
        "fd",
        "loop",
        "peer_pid",
        "pending",
        "read_only",
        "server",
        "sock",
        "subscribed",
        "uid",
    )

    def __init__(
        self, server: ControlServer, sock: _socket.socket, pid: int, uid: int, read_only: bool
    ) -> None:
        self.server = server
        self.container = server.container
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.peer_pid = pid
        self.uid = uid
        self.read_only = read_only
        self.pending = 0
        self.subscribed = False
        self._decoder = Decoder()
        self._out = bytearray()
        self._closed = False
        self._eof = False  # the peer sent all it will: close once answered
        self._doomed = False  # we gave up on it: close once the error is flushed
        self._last_active = self.loop.time()
        self._timer: Timer | None = None
        self._queued = False  # in the server's ready queue
        self._held_back = False  # requests wait until the peer reads its replies
        self._reading = True
        self.loop.add_reader(self.fd, self._on_readable)
        self._arm()

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self._closed

    # --- idle timeout --------------------------------------------------------------------
    def _exempt(self) -> bool:
        if self._doomed or self._eof:
            return False
        return self.pending > 0 or self.subscribed

    def _arm(self) -> None:
        if self._timer is None and not self._closed:
            delay = self._last_active + self.server.idle_timeout - self.loop.time()
            self._timer = self.loop.call_later(max(delay, 0.0), self._on_idle)

    def _on_idle(self) -> None:
        self._timer = None
        if self._closed:
            return
        if self._eof and self.pending and not self._doomed:
            # Half-closed while a wait is in flight: a legitimate `send; shutdown(WR); read`
            # client. Nothing tells us when it goes away, so look again one timeout later.
            if _hung_up(self.sock):
                self.close()
            else:
                self._touch()
                self._arm()
            return
        if self._exempt():
            return  # re-armed when the exemption ends (a subscriber never idles out)
        if self._last_active + self.server.idle_timeout - self.loop.time() > 0.001:
            self._arm()  # there was activity since this timer was set
            return
        if self._out:  # stalled by back-pressure: it stopped reading its replies
            self._overflow()
            return
        log.debug(f"control: client pid {self.peer_pid} idle; closing")
        self.close()

    def _touch(self) -> None:
        self._last_active = self.loop.time()

    # --- reading -------------------------------------------------------------------------
    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()  # ECONNRESET and friends: the peer is gone
            return
        if not data:
            self._on_eof()
            return
        try:
            self._decoder.push(data)
        except ProtocolError as exc:
            self._fail(exc, None)
            return
        # Not read again until what it sent is served: the backlog is one recv.
        self._stop_reading()
        self._queue()

    def _queue(self) -> None:
        if not self._queued:
            self._queued = True
            self.server.ready(self)

    def work(self, limit: int) -> int:
        """Serve up to ``limit`` requests held; return how many were served.

        One recv can hold hundreds of pipelined requests; they are decoded one at a time as
        they are served, and the socket is read again once they are all served. While replies
        wait for the peer to read them, its requests wait too (back-pressure): a client that
        pipelines without reading stalls itself, holding at most ``max_buffer`` plus one
        reply, until it reads or its idle timeout closes it.
        """
        self._queued = False
        served = 0
        while served < limit:
            if self._closed or self._doomed:
                return served
            if self._out:
                self._held_back = True  # _on_writable queues it again once drained
                return served
            try:
                messages = self._decoder.pull(1)
            except ProtocolError as exc:
                self._fail(exc, None)
                return served + 1
            if not messages:
                break
            served += 1
            obj = messages[0]
            try:
                message = parse_message(obj)
            except ProtocolError as exc:
                self._fail(exc, request_msgid(obj))
                return served
            if type(message) is Request:
                self._touch()
                self.server.dispatch(self, message)
            # A response or notification from a client means nothing here: ignored.
        else:
            self._queue()  # more may be held: its next share comes in a later round
            return served
        if self._claim_input_room():
            if not self._reading and not self._eof:
                self._reading = True
                self.loop.add_reader(self.fd, self._on_readable)
            self._maybe_finish()
        return served

    def _claim_input_room(self) -> bool:
        """Is the frame being received small, or can it have a large-input slot?"""
        large = self.server.large_inputs
        if self._decoder.buffered <= INPUT_ALLOWANCE:
            large.discard(self)
            return True
        if self in large or len(large) < LARGE_INPUTS:
            large.add(self)
            return True
        self._fail(
            ProtocolError(
                INTERNAL,
                f"busy: {LARGE_INPUTS} messages over {INPUT_ALLOWANCE} bytes are already "
                "arriving; try again later",
            ),
            None,
        )
        return False

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self.fd)

    def _on_eof(self) -> None:
        self._eof = True
        self._stop_reading()  # an EOF stays readable: keep listening and we would spin
        if self.subscribed or _hung_up(self.sock):
            self.close()  # gone for good: nothing it asked for can reach it
            return
        self._maybe_finish()
        self._arm()

    def _fail(self, exc: ProtocolError, msgid: int | None) -> None:
        """A broken stream: say why if we can, then close once that is sent."""
        log.debug(f"control: client pid {self.peer_pid}: {exc.message}; closing")
        self._doomed = True
        self._stop_reading()
        self.server.large_inputs.discard(self)
        self.write(error_frame(exc, msgid))
        self._maybe_finish()
        self._arm()  # a peer that will not read the error is closed at the idle timeout

    # --- replying ------------------------------------------------------------------------
    def respond(self, msgid: int, error: ProtocolError | None, result: object) -> None:
        """Send the response to ``msgid``."""
        try:
            wire = None if error is None else error.to_wire()
            frame = _pack_escaped(pack_response, msgid, wire, result)
        except ProtocolError as exc:  # the result cannot be encoded or is over MAX_FRAME
            log.error(f"control: cannot send a reply: {exc.message}")
            frame = pack_response(msgid, ProtocolError(INTERNAL, exc.message).to_wire(), None)
        if len(frame) > self.server.max_buffer and not self._claim_output_room():
            busy = ProtocolError(
                INTERNAL,
                f"busy: a reply of {len(frame)} bytes cannot be held now ({LARGE_OUTPUTS} "
                "large replies are waiting for their readers); try again later",
            )
            frame = pack_response(msgid, busy.to_wire(), None)
        self.write(frame)

    def _claim_output_room(self) -> bool:
        large = self.server.large_outputs
        if self in large or len(large) < LARGE_OUTPUTS:
            large.add(self)
            return True
        return False

    def defer(self, msgid: int, method: str, future: Future) -> None:
        """Answer ``msgid`` when ``future`` resolves (with a result or a ProtocolError)."""
        self.pending += 1
        waits = self.server.waits
        waits[self.read_only] += 1

        def done(resolved: Future) -> None:
            try:
                self.pending -= 1
                waits[self.read_only] -= 1
                if self._closed:
                    return
                result = resolved.result
                if isinstance(result, ProtocolError):
                    self.respond(msgid, result, None)
                else:
                    self.respond(msgid, None, result)
                self._touch()
                self._arm()
                self._maybe_finish()
            except Exception:  # this runs inside whoever resolved the future: never raise
                log.exception(f"control: finishing {method} failed")

        future.add_done_callback(done)

    def subscribe(self) -> None:
        """Receive a state notification at every state change from now on."""
        if not self.subscribed:
            self.subscribed = True
            self.server.subscribe(self)

    def notify(self, frame: bytes) -> None:
        """Send a subscriber one notification; one that does not read is dropped."""
        if self._closed or self._doomed:
            return
        if len(self._out) + len(frame) <= self._limit():
            self.write(frame)
            return
        unread = len(self._out)
        log.warn(
            f"control: subscriber pid {self.peer_pid} left {unread} bytes of notifications "
            "unread; dropping it"
        )
        self.server.unsubscribe(self)
        self.subscribed = False
        self._doomed = True
        self._stop_reading()
        notice = {
            "code": INTERNAL,
            "message": f"subscriber too slow: {unread} bytes unread (at most "
            f"{self.server.max_buffer}); notifications stopped, connection closing",
            "data": {"unread": unread, "limit": self.server.max_buffer},
        }
        self._out += pack_notification(OVERFLOW_NOTIFICATION, [notice])
        if self._timer is not None:
            self._timer.cancel()
        grace = min(OVERFLOW_GRACE, self.server.idle_timeout)
        self._timer = self.loop.call_later(grace, self.close)

    def _limit(self) -> int:
        """Unread bytes this connection may hold."""
        if self in self.server.large_outputs:
            return self.server.max_buffer + MAX_FRAME
        return self.server.max_buffer

    def write(self, frame: bytes) -> None:
        """Send now what the socket takes; buffer the rest up to the bound, else drop the peer."""
        if self._closed:
            return
        if self._out:
            if len(self._out) + len(frame) > self._limit():
                self._overflow()
            else:
                self._out += frame
            return
        try:
            sent = self.sock.send(frame, _socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()  # EPIPE, ECONNRESET: the peer vanished; nothing to report
            return
        if sent == len(frame):
            self.server.large_outputs.discard(self)
            return
        if len(frame) - sent > self._limit():
            self._overflow()
            return
        self._out += memoryview(frame)[sent:]
        self.loop.add_writer(self.fd, self._on_writable)

    def _overflow(self) -> None:
        log.warn(
            f"control: client pid {self.peer_pid} left {len(self._out)} bytes of replies "
            "unread; disconnecting it"
        )
        self.close()

    def _on_writable(self) -> None:
        try:
            sent = self.sock.send(self._out, _socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self._out[:sent]
        self._touch()  # it reads: it is alive
        if len(self._out) <= self.server.max_buffer:
            self.server.large_outputs.discard(self)
        if not self._out:
            self._out = bytearray()  # a grown buffer keeps its capacity: let it go
            self.loop.remove_writer(self.fd)
            if self._held_back:
                self._held_back = False
                self._queue()
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._closed or self._out:
            return
        if self._doomed or (
            self._eof and self.pending == 0 and not self._queued and not self._held_back
        ):
            self.close()

    # --- closing -------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the connection now: unregister, forget, close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reading = False
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self._out = bytearray()
        self._decoder = _CLOSED_DECODER
        self.server.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.pending:
            # Its waits check `closed` in their predicates: one recheck drops them all.
            self.loop.call_soon(self.container.supervisor.recheck)
        log.debug(f"control: client pid {self.peer_pid} gone")


#: What a closed connection's decoder becomes: its buffers go at close, not with the object.
_CLOSED_DECODER = Decoder()
