"""The control socket server: listening socket, connections, framing, auth, limits, dispatch.

Everything here runs inside PID 1's single-threaded loop, so every operation is non-blocking and
every resource a peer can make us hold is bounded:

- at most ``MAX_CLIENTS`` connections; the next one gets an ``error`` notification and is closed;
- one frame is at most ``MAX_FRAME`` bytes (the protocol Decoder enforces it);
- replies not yet read by the peer are held up to ``max_buffer`` bytes, then the peer is dropped;
- a connection without a complete request for ``idle_timeout`` seconds is closed, except while
  it is subscribed or has a ``wait`` in flight (at most ``MAX_PENDING`` of them);
- one idle Timer per connection, re-armed lazily (never one heap entry per request), and none
  at all when nobody is connected: an idle overlayd makes no wake-ups.

Authorisation uses SO_PEERCRED at accept: root and overlayd's own uid may call everything,
anyone else (a member of OVERLAY_SOCKET_GROUP) only the read-only methods.
"""

from __future__ import annotations

import math
import os
import select
import socket
import struct
from collections import deque

from protocol import (
    INTERNAL,
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

MAX_CLIENTS = 128
RECV_SIZE = 1 << 16
#: Requests served per connection per loop turn (fairness between clients, bounded stalls).
REQUESTS_PER_TURN = 32
#: Waits in flight on one connection; more are refused with bad_request.
MAX_PENDING = 64
#: Connections accepted per readiness event, so a flood cannot monopolise one loop turn.
ACCEPT_BATCH = 32
#: Seconds to stop accepting after running out of fds (epoll is level-triggered: no busy loop).
ACCEPT_PAUSE = 0.5
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_BUFFER = 4 << 20
IDLE_TIMEOUT_ENV = "OVERLAY_RPC_IDLE_TIMEOUT"
MAX_BUFFER_ENV = "OVERLAY_RPC_MAX_BUFFER"
#: Notification carrying an error that answers no request (bad stream, too many clients).
ERROR_NOTIFICATION = "error"
#: Handlers that may answer later (return a Future), counted against MAX_PENDING.
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


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def _hung_up(sock: socket.socket) -> bool:
    """Has the peer closed its end entirely (not just shut down writing)?

    A Unix stream socket reports POLLHUP only once both directions are shut, which a peer's
    close() does and its shutdown(SHUT_WR) does not.
    """
    poller = select.poll()
    poller.register(sock.fileno(), 0)  # POLLHUP and POLLERR are always reported
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


def _refuse(sock: socket.socket, exc: ProtocolError) -> None:
    """Tell a connection we cannot serve why, best effort, and close it."""
    try:
        sock.recv(RECV_SIZE)  # drained: closing with unread data would reset the peer
    except OSError:
        pass
    try:
        sock.send(error_frame(exc, None), socket.MSG_NOSIGNAL)
    except OSError:
        pass
    sock.close()


class ControlServer:
    """The control socket: accepts connections, authorises and dispatches their requests."""

    def __init__(self, container: Container, sock: socket.socket | None = None) -> None:
        """Serve on `sock` (from listener.open_listener), or open the configured path."""
        self.container = container
        self.loop = container.loop
        self.path = container.socket_path
        self.idle_timeout = env_number(IDLE_TIMEOUT_ENV, DEFAULT_IDLE_TIMEOUT)
        self.max_buffer = int(env_number(MAX_BUFFER_ENV, DEFAULT_MAX_BUFFER))
        self.clients: dict[int, Connection] = {}
        self.subscribers: dict[Connection, None] = {}  # ordered set
        self._uid = os.geteuid()
        self._listener = self._on_state  # one bound method, so remove_listener finds it
        if sock is None:
            sock = open_listener(self.path, container.socket_gid)
        self._sock = sock
        self._fd = self._sock.fileno()
        self._inode = os.stat(self.path).st_ino
        self._paused: Timer | None = None
        self._full = False  # refusing clients since the last time there was room
        self.loop.add_reader(self._fd, self._on_acceptable)
        log.debug(f"control socket listening at {self.path}")

    # --- accepting -----------------------------------------------------------------------
    def _on_acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _address = self._sock.accept()
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
            self._admit(sock)

    def _pause(self) -> None:
        if self._paused is not None:
            return
        self.loop.remove_reader(self._fd)
        self._paused = self.loop.call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if self._sock.fileno() >= 0:
            self.loop.add_reader(self._fd, self._on_acceptable)

    def _admit(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            pid, uid, _gid = _peer_credentials(sock)
        except OSError:
            sock.close()
            return
        if len(self.clients) >= MAX_CLIENTS:
            if not self._full:  # one line per saturation, not one per refused connection
                self._full = True
                log.warn(f"control socket: {MAX_CLIENTS} clients connected; refusing more")
            _refuse(
                sock,
                ProtocolError(
                    INTERNAL,
                    f"too many clients: overlayd serves at most {MAX_CLIENTS} at once; "
                    "try again later",
                    {"limit": MAX_CLIENTS},
                ),
            )
            return
        read_only = uid not in (0, self._uid)
        conn = Connection(self, sock, pid, uid, read_only)
        self.clients[conn.fd] = conn
        log.debug(f"control: client pid {pid} uid {uid} connected ({len(self.clients)} now)")

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
            if method in DEFERRED_METHODS and conn.pending >= MAX_PENDING:
                raise ProtocolError(
                    BAD_REQUEST, f"{method}: too many calls in flight (at most {MAX_PENDING})"
                )
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

    # --- subscriptions -------------------------------------------------------------------
    def subscribe(self, conn: Connection) -> None:
        """Add ``conn`` to the receivers of state notifications."""
        if not self.subscribers:
            self.container.supervisor.add_listener(self._listener)
        self.subscribers[conn] = None

    def _on_state(self, service: Service) -> None:
        frame = pack_notification(STATE_NOTIFICATION, [service.record()])
        for conn in list(self.subscribers):
            conn.write(frame)

    def forget(self, conn: Connection) -> None:
        """A connection closed: drop every reference to it."""
        if self.clients.get(conn.fd) is conn:
            del self.clients[conn.fd]
            self._full = False
        if conn in self.subscribers:
            del self.subscribers[conn]
            if not self.subscribers:
                self.container.supervisor.remove_listener(self._listener)

    # --- end -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close every connection and the socket, and remove the socket file if still ours."""
        for conn in list(self.clients.values()):
            conn.close()
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

    def __init__(
        self, server: ControlServer, sock: socket.socket, pid: int, uid: int, read_only: bool
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
        self._inbox: deque[object] = deque()  # decoded, not yet served (at most one recv's)
        self._scheduled = False  # a _work call is queued on the loop
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
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            self._fail(exc, None)
            return
        if messages:
            self._inbox.extend(messages)
            self._work()

    def _work(self) -> None:
        """Serve up to REQUESTS_PER_TURN queued messages; the rest on later loop turns.

        One recv can hold thousands of pipelined requests; serving them all at once would let
        one client stall PID 1 and every other client. While a backlog remains the socket is
        not read, so the backlog is bounded by one recv.
        """
        self._scheduled = False
        inbox = self._inbox
        for _ in range(REQUESTS_PER_TURN):
            if not inbox or self._closed or self._doomed:
                break
            obj = inbox.popleft()
            try:
                message = parse_message(obj)
            except ProtocolError as exc:
                self._fail(exc, request_msgid(obj))
                break
            if type(message) is Request:
                self._touch()
                self.server.dispatch(self, message)
            # A response or notification from a client means nothing here: ignored.
        if self._closed or self._doomed:
            inbox.clear()
        elif inbox:
            self._stop_reading()
            if not self._scheduled:
                self._scheduled = True
                self.loop.call_soon(self._work)
        elif not self._reading and not self._eof:
            self._reading = True
            self.loop.add_reader(self.fd, self._on_readable)

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
        self.write(error_frame(exc, msgid))
        self._maybe_finish()
        self._arm()  # a peer that will not read the error is closed at the idle timeout

    # --- replying ------------------------------------------------------------------------
    def respond(self, msgid: int, error: ProtocolError | None, result: object) -> None:
        """Send the response to ``msgid``."""
        try:
            frame = pack_response(msgid, None if error is None else error.to_wire(), result)
        except ProtocolError as exc:  # the result cannot be encoded or is over MAX_FRAME
            log.error(f"control: cannot send a reply: {exc.message}")
            frame = pack_response(msgid, ProtocolError(INTERNAL, exc.message).to_wire(), None)
        self.write(frame)

    def defer(self, msgid: int, method: str, future: Future) -> None:
        """Answer ``msgid`` when ``future`` resolves (with a result or a ProtocolError)."""
        self.pending += 1

        def done(resolved: Future) -> None:
            try:
                self.pending -= 1
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

    def write(self, frame: bytes) -> None:
        """Send now what the socket takes; buffer the rest up to the bound, else drop the peer."""
        if self._closed:
            return
        if self._out:
            if len(self._out) + len(frame) > self.server.max_buffer:
                self._overflow()
            else:
                self._out += frame
            return
        try:
            sent = self.sock.send(frame, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()  # EPIPE, ECONNRESET: the peer vanished; nothing to report
            return
        if sent == len(frame):
            return
        if len(frame) - sent > self.server.max_buffer:
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
            sent = self.sock.send(self._out, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self._out[:sent]
        self._touch()  # it reads: it is alive
        if not self._out:
            self.loop.remove_writer(self.fd)
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._closed or self._out:
            return
        if self._doomed or (self._eof and self.pending == 0):
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
        self._inbox.clear()
        self.server.forget(self)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.pending:
            # Its waits check `closed` in their predicates: one recheck drops them all.
            self.loop.call_soon(self.container.supervisor.recheck)
        log.debug(f"control: client pid {self.peer_pid} gone")
