"""overlayctl.client against a small in-test server speaking the protocol on a real Unix socket."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from overlayctl.client import (
    MAX_QUEUED_NOTIFICATIONS,
    Client,
    ClientError,
    ConnectError,
    ProtocolMismatch,
    RemoteError,
    default_socket_path,
)
from protocol import (
    METHODS,
    PROTOCOL_VERSION,
    Decoder,
    ProtocolError,
    pack_notification,
    pack_response,
    parse_message,
    validate_request,
)
from tests.harness import wait_until

NO_REPLY = object()
RECORD = {"name": "web", "state": "up", "want": "up", "pid": 42, "pgid": 42, "since": 1.0,
          "restarts": 0, "last_exit": None, "ready": True, "normally_up": True}  # fmt: skip

Handler = Callable[[socket.socket, int, list[object]], object]


def hello(conn: socket.socket, msgid: int, params: list[object]) -> object:
    return {"server": "overlayd", "version": "0.1.0", "protocol": PROTOCOL_VERSION,
            "methods": list(METHODS)}  # fmt: skip


class FakeServer:
    """Accepts connections on ``path``; answers each request with ``handlers[method]``.

    A handler gets (connection, msgid, validated params) and returns the result, raises
    ProtocolError for an error reply, or returns NO_REPLY when it answered (or not) itself.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.handlers: dict[str, Handler] = {
            "hello": hello,
            "status": lambda conn, msgid, params: [RECORD],
            "check": lambda conn, msgid, params: {"healthy": True, "problems": []},
            "subscribe": lambda conn, msgid, params: True,
        }
        for name in ("start", "stop", "restart", "once"):
            self.handlers[name] = lambda conn, msgid, params: params[0]
        self.handlers["signal"] = lambda conn, msgid, params: params[1]
        self.handlers["wait"] = lambda conn, msgid, params: True
        self.handlers["shutdown"] = lambda conn, msgid, params: True
        self.calls: list[tuple[int, str, list[object]]] = []
        #: The methods of each read that held requests: what the client sent in one write.
        self.batches: list[list[str]] = []
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def methods(self) -> list[str]:
        return [method for _, method, _ in self.calls]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        decoder = Decoder()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                batch: list[str] = []
                self.batches.append(batch)
                for obj in decoder.feed(data):
                    request = parse_message(obj)
                    self.calls.append((request.msgid, request.method, request.params))
                    batch.append(request.method)
                    try:
                        params = validate_request(request)
                        result = self.handlers[request.method](conn, request.msgid, params)
                    except ProtocolError as exc:
                        conn.sendall(pack_response(request.msgid, exc.to_wire(), None))
                        continue
                    except OSError:
                        return
                    if result is not NO_REPLY:
                        try:
                            conn.sendall(pack_response(request.msgid, None, result))
                        except OSError:  # a handler hung up (a refusal): as overlayd, stop
                            return


@pytest.fixture
def sockdir() -> Iterator[str]:
    # Short on purpose: a Unix socket path must fit in 108 bytes, pytest's tmp_path may not.
    path = tempfile.mkdtemp(prefix="ovc-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(sockdir: str) -> Iterator[FakeServer]:
    fake = FakeServer(os.path.join(sockdir, "control.sock"))
    yield fake
    fake.close()


@pytest.fixture
def client(server: FakeServer) -> Iterator[Client]:
    with Client(server.path, timeout=5) as overlay:
        yield overlay


# -- results and errors --------------------------------------------------------------------


def test_result_is_returned(client: Client, server: FakeServer) -> None:
    assert client.status(["web"]) == [RECORD]
    assert client.check() == {"healthy": True, "problems": []}
    assert server.methods() == ["hello", "status", "check"]
    assert server.calls[1][2] == [["web"], False]


@pytest.mark.parametrize(
    ("call", "method", "params"),
    [
        (lambda c: c.status(), "status", [[], False]),
        (lambda c: c.status(("a", "b"), details=True), "status", [["a", "b"], True]),
        (lambda c: c.start(["web"]), "start", [["web"]]),
        (lambda c: c.start("web"), "start", [["web"]]),
        (lambda c: c.stop(["web", "db"]), "stop", [["web", "db"]]),
        (lambda c: c.restart(iter(["web"])), "restart", [["web"]]),
        (lambda c: c.once(["web"]), "once", [["web"]]),
        (lambda c: c.signal("HUP", ["web"]), "signal", ["HUP", ["web"]]),
        (lambda c: c.signal(9, "web"), "signal", [9, ["web"]]),
        (lambda c: c.wait("ready", ["web"]), "wait", ["ready", ["web"], None]),
        (lambda c: c.wait("up", ["web"], timeout=2), "wait", ["up", ["web"], 2]),
        (lambda c: c.check(), "check", []),
        (lambda c: c.shutdown(), "shutdown", [None]),
        (lambda c: c.shutdown(3), "shutdown", [3]),
        (lambda c: c.call("status", ["x"]), "status", [["x"]]),
    ],
)
def test_methods_send_their_params(
    client: Client, server: FakeServer, call: Callable[[Client], object], method: str,
    params: list[object],
) -> None:  # fmt: skip
    call(client)
    assert server.calls[-1][1:] == (method, params)


def test_remote_error_carries_code_message_and_data(client: Client, server: FakeServer) -> None:
    def start(conn: socket.socket, msgid: int, params: list[object]) -> object:
        raise ProtocolError("no_such_service", "no service named 'nope'", {"names": ["nope"]})

    server.handlers["start"] = start
    with pytest.raises(RemoteError) as excinfo:
        client.start(["nope"])
    exc = excinfo.value
    assert (exc.code, exc.message, exc.data) == (
        "no_such_service", "no service named 'nope'", {"names": ["nope"]},
    )  # fmt: skip
    assert str(exc) == "no service named 'nope'"
    assert isinstance(exc, ClientError)
    assert client.check()["healthy"], "the connection stays usable after a remote error"
    assert server.connections == 1


def test_server_side_validation_errors_are_remote_errors(client: Client) -> None:
    with pytest.raises(RemoteError) as excinfo:
        client.call("start")
    assert excinfo.value.code == "bad_request"
    with pytest.raises(RemoteError) as excinfo:
        client.call("reboot")
    assert excinfo.value.code == "no_such_method"
    assert "reboot" in str(excinfo.value)


def test_wait_timeout_is_a_remote_timeout_error(client: Client, server: FakeServer) -> None:
    def wait(conn: socket.socket, msgid: int, params: list[object]) -> object:
        raise ProtocolError("timeout", "web is not ready after 1 s")

    server.handlers["wait"] = wait
    with pytest.raises(RemoteError) as excinfo:
        client.wait("ready", ["web"], timeout=1)
    assert excinfo.value.code == "timeout"


# -- reaching overlayd ---------------------------------------------------------------------


def test_connect_error_names_the_socket_path(sockdir: str) -> None:
    path = os.path.join(sockdir, "missing.sock")
    with pytest.raises(ConnectError) as excinfo:
        Client(path).check()
    assert str(excinfo.value) == f"cannot reach overlayd at {path}: No such file or directory"
    assert excinfo.value.path == path
    assert isinstance(excinfo.value, ClientError)


def test_connect_error_when_nothing_listens(sockdir: str) -> None:
    path = os.path.join(sockdir, "dead.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a socket file left behind by an overlayd that is gone
    stale.close()
    with pytest.raises(ConnectError) as excinfo:
        Client(path).status()
    assert path in str(excinfo.value)
    assert "Connection refused" in str(excinfo.value)


def test_default_socket_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OVERLAY_SOCKET", raising=False)
    monkeypatch.delenv("OVERLAY_RUN_DIR", raising=False)
    assert default_socket_path() == "/run/overlay/control.sock"
    monkeypatch.setenv("OVERLAY_RUN_DIR", "/tmp/run")
    assert default_socket_path() == "/tmp/run/control.sock"
    monkeypatch.setenv("OVERLAY_SOCKET", "/x/ctl.sock")
    assert default_socket_path() == "/x/ctl.sock"
    assert Client().socket_path == "/x/ctl.sock"
    assert Client("/given.sock").socket_path == "/given.sock"


def test_connects_lazily_once_and_again_after_close(server: FakeServer) -> None:
    overlay = Client(server.path)
    assert server.connections == 0
    with overlay:
        overlay.check()
        overlay.status()
    assert server.connections == 1
    overlay.close()  # twice is fine
    overlay.check()
    assert server.connections == 2
    assert server.methods() == ["hello", "check", "status", "hello", "check"]
    overlay.close()


def test_silent_server_times_out_and_next_call_reconnects(server: FakeServer) -> None:
    server.handlers["check"] = lambda conn, msgid, params: NO_REPLY
    overlay = Client(server.path, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ConnectError) as excinfo:
        overlay.check()
    assert time.monotonic() - started < 2
    assert "timed out" in str(excinfo.value)
    assert overlay.status() == [RECORD]
    assert server.connections == 2
    overlay.close()


def test_wait_socket_timeout_covers_the_wait(server: FakeServer) -> None:
    def slow_wait(conn: socket.socket, msgid: int, params: list[object]) -> object:
        time.sleep(0.6)
        return True

    server.handlers["wait"] = slow_wait
    with Client(server.path, timeout=0.2) as overlay:
        assert overlay.wait("up", ["web"], timeout=0.4) is True


def test_server_closing_the_connection_is_a_connect_error(
    client: Client, server: FakeServer
) -> None:
    def close(conn: socket.socket, msgid: int, params: list[object]) -> object:
        conn.shutdown(socket.SHUT_RDWR)
        return NO_REPLY

    server.handlers["check"] = close
    with pytest.raises(ConnectError) as excinfo:
        client.check()
    assert "closed" in str(excinfo.value)


TOO_MANY = {
    "code": "internal",
    "message": "too many clients: overlayd serves at most 128 at once; try again later",
    "data": {"limit": 128},
}


def _refuse(conn: socket.socket) -> None:
    """What overlayd does to a connection it will not serve: say why, then hang up."""
    conn.sendall(pack_notification("error", [TOO_MANY]))
    conn.shutdown(socket.SHUT_RDWR)


def test_refusal_notification_is_a_remote_error_with_its_message(server: FakeServer) -> None:
    def hello_refused(conn: socket.socket, msgid: int, params: list[object]) -> object:
        _refuse(conn)
        return NO_REPLY

    server.handlers["hello"] = hello_refused
    with pytest.raises(RemoteError) as excinfo:
        Client(server.path, timeout=5).status()
    exc = excinfo.value
    assert (exc.code, exc.message, exc.data) == (
        "internal", TOO_MANY["message"], {"limit": 128},
    )  # fmt: skip
    assert str(exc) == TOO_MANY["message"]
    assert "closed the connection" not in str(exc)
    # Also a ConnectError: "could I reach overlayd?" callers keep their answer.
    assert isinstance(exc, ConnectError) and exc.path == server.path


def test_refusal_sent_before_our_request_is_read_after_the_broken_pipe(
    server: FakeServer,
) -> None:
    served: list[socket.socket] = []

    def status(conn: socket.socket, msgid: int, params: list[object]) -> object:
        served.append(conn)
        return [RECORD]

    server.handlers["status"] = status
    with Client(server.path, timeout=5) as overlay:
        assert overlay.status() == [RECORD]
        _refuse(served[0])  # overlayd gives up on us between two calls
        with pytest.raises(RemoteError) as excinfo:
            overlay.check()  # the send hits EPIPE; the reason is still in our socket
        assert excinfo.value.message == TOO_MANY["message"]
        assert overlay.status() == [RECORD], "the next call connects afresh"


def test_overlayctl_prints_the_refusal_and_exits_4(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from overlayctl import commands

    def hello_refused(conn: socket.socket, msgid: int, params: list[object]) -> object:
        _refuse(conn)
        return NO_REPLY

    server.handlers["hello"] = hello_refused
    assert commands.status(commands.Invocation(socket=server.path)) == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"overlayctl: {TOO_MANY['message']}\n"


def test_garbage_from_the_server_is_a_client_error(client: Client, server: FakeServer) -> None:
    def garbage(conn: socket.socket, msgid: int, params: list[object]) -> object:
        conn.sendall(b"\xc1")
        return NO_REPLY

    server.handlers["check"] = garbage
    with pytest.raises(ClientError) as excinfo:
        client.check()
    assert type(excinfo.value) is ClientError
    assert "bad reply" in str(excinfo.value)
    assert client.status() == [RECORD], "a new connection replaces the broken one"


def test_client_with_msgpacks_decoder_answers_and_refuses_garbage_alike(
    server: FakeServer,
) -> None:
    """A long-lived caller may decode with msgpack's C decoder: same results, same errors."""
    from protocol.framing import Decoder

    def garbage(conn: socket.socket, msgid: int, params: list[object]) -> object:
        conn.sendall(b"\xc1")
        return NO_REPLY

    with Client(server.path, timeout=5, decoder=Decoder) as overlay:
        assert overlay.status(["web"]) == [RECORD]
        server.handlers["check"] = garbage
        with pytest.raises(ClientError, match="bad reply"):
            overlay.check()
        assert overlay.status() == [RECORD]


# -- the handshake -------------------------------------------------------------------------


def test_hello_is_checked_once_per_connection(client: Client, server: FakeServer) -> None:
    info = client.hello()
    assert info["protocol"] == PROTOCOL_VERSION and "status" in info["methods"]
    assert client.server_info == info
    client.hello()  # an explicit hello on an open connection asks again
    assert server.methods() == ["hello", "hello"]


def test_older_server_protocol_is_a_clear_mismatch(server: FakeServer) -> None:
    server.handlers["hello"] = lambda conn, msgid, params: {"server": "overlayd", "protocol": 0}
    with pytest.raises(ProtocolMismatch) as excinfo:
        Client(server.path).stop(["web"])
    message = str(excinfo.value)
    assert "protocol 0" in message and f"needs protocol {PROTOCOL_VERSION}" in message
    assert server.path in message
    assert excinfo.value.server_protocol == 0
    assert server.methods() == ["hello"], "nothing that changes state goes after a failed hello"
    # A read-only first call travels with the hello (one round trip); the mismatch still wins.
    with pytest.raises(ProtocolMismatch):
        Client(server.path).status()
    # The server thread may read the pipelined `status` after the client has already given up.
    wait_until(lambda: len(server.methods()) == 3, timeout=5, what="the pipelined status")
    assert server.methods() == ["hello", "hello", "status"]


def test_a_read_only_first_call_goes_with_the_hello(server: FakeServer) -> None:
    with Client(server.path) as overlay:
        assert overlay.status() == [RECORD]
        assert overlay.server_info is not None
        assert overlay.server_info["protocol"] == PROTOCOL_VERSION
        assert overlay.check()["healthy"]
    assert server.methods() == ["hello", "status", "check"]


def test_newer_server_protocol_is_fine(server: FakeServer) -> None:
    server.handlers["hello"] = lambda conn, msgid, params: {"protocol": PROTOCOL_VERSION + 1}
    with Client(server.path) as overlay:
        assert overlay.check()["healthy"]


def test_hello_without_a_protocol_is_a_mismatch(server: FakeServer) -> None:
    server.handlers["hello"] = lambda conn, msgid, params: "hi"
    with pytest.raises(ProtocolMismatch):
        Client(server.path).check()


def test_handshake_can_be_skipped(server: FakeServer) -> None:
    with Client(server.path, handshake=False) as overlay:
        overlay.check()
    assert server.methods() == ["check"]


# -- msgid matching and notifications ------------------------------------------------------


def test_msgids_are_distinct_and_responses_matched_by_msgid(
    client: Client, server: FakeServer
) -> None:
    def check(conn: socket.socket, msgid: int, params: list[object]) -> object:
        # A stale answer to some other call first, then ours trickling in byte by byte.
        conn.sendall(pack_response((msgid + 1000) % 2**32, None, "stale"))
        conn.sendall(pack_response((msgid - 1) % 2**32, {"code": "timeout", "message": "m"}, 0))
        for byte in pack_response(msgid, None, {"healthy": False, "problems": []}):
            conn.sendall(bytes([byte]))
        return NO_REPLY

    server.handlers["check"] = check
    assert client.check() == {"healthy": False, "problems": []}
    assert client.status() == [RECORD]
    msgids = [msgid for msgid, _, _ in server.calls]
    assert len(set(msgids)) == len(msgids) == 3


def test_subscribe_yields_state_notifications_until_the_server_closes(
    client: Client, server: FakeServer
) -> None:
    def subscribe(conn: socket.socket, msgid: int, params: list[object]) -> object:
        conn.sendall(pack_response(msgid, None, True))
        conn.sendall(pack_notification("state", [RECORD]))
        conn.sendall(pack_notification("other", ["ignored"]))
        conn.sendall(pack_notification("state", [{**RECORD, "state": "down"}]))
        conn.shutdown(socket.SHUT_RDWR)
        return NO_REPLY

    server.handlers["subscribe"] = subscribe
    events = client.subscribe()
    assert server.methods() == ["hello", "subscribe"]
    assert [params[0]["state"] for params in events] == ["up", "down"]


def test_notifications_arriving_before_a_response_are_kept_for_subscribe(
    client: Client, server: FakeServer
) -> None:
    def status(conn: socket.socket, msgid: int, params: list[object]) -> object:
        conn.sendall(pack_notification("state", [{**RECORD, "state": "starting"}]))
        return [RECORD]

    def subscribe(conn: socket.socket, msgid: int, params: list[object]) -> object:
        conn.sendall(pack_response(msgid, None, True))
        conn.sendall(pack_notification("state", [RECORD]))
        return NO_REPLY

    server.handlers["status"] = status
    server.handlers["subscribe"] = subscribe
    assert client.status() == [RECORD]
    events = client.subscribe()
    assert next(events) == [{**RECORD, "state": "starting"}]
    assert next(events) == [RECORD]


def test_subscribe_blocks_without_the_call_timeout(server: FakeServer) -> None:
    def subscribe(conn: socket.socket, msgid: int, params: list[object]) -> object:
        conn.sendall(pack_response(msgid, None, True))
        time.sleep(0.5)  # longer than the client's timeout
        conn.sendall(pack_notification("state", [RECORD]))
        return NO_REPLY

    server.handlers["subscribe"] = subscribe
    with Client(server.path, timeout=0.2) as overlay:
        assert next(overlay.subscribe()) == [RECORD]


def test_watch_status_is_one_write_with_the_hello_and_keeps_only_the_later_changes(
    server: FakeServer,
) -> None:
    def status(conn: socket.socket, msgid: int, params: list[object]) -> object:
        # One write: a change the records already show, the records, a change after them.
        conn.sendall(
            pack_notification("state", [{**RECORD, "state": "starting"}])
            + pack_response(msgid, None, [RECORD])
            + pack_notification("state", [{**RECORD, "state": "down"}])
        )
        return NO_REPLY

    server.handlers["status"] = status
    with Client(server.path) as overlay:
        assert overlay.watch_status(["web"]) == [RECORD]
        assert overlay.next_state(5) == {**RECORD, "state": "down"}
        assert overlay.next_state(0.05) is None
        assert overlay.restart(["web"]) == ["web"]
    assert server.batches == [["hello", "subscribe", "status"], ["restart"]]
    assert server.calls[2][2] == [["web"], False]


def test_unread_notifications_beyond_the_bound_drop_the_oldest(server: FakeServer) -> None:
    count = MAX_QUEUED_NOTIFICATIONS + 5

    def status(conn: socket.socket, msgid: int, params: list[object]) -> object:
        # All of them arrive while the client waits for this answer, reading none.
        conn.sendall(b"".join(pack_notification("state", [{"n": n}]) for n in range(count)))
        return [RECORD]

    server.handlers["status"] = status
    with Client(server.path) as overlay:
        overlay.watch()
        assert overlay.status() == [RECORD]
        seen = []
        while (record := overlay.next_state(0.2)) is not None:
            seen.append(record["n"])
    assert seen == list(range(5, count))
