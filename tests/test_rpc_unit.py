"""The control server and handlers in-process: a real Loop and Supervisor, fake services.

The loop runs in the test's main thread (it owns signals); blocking clients run in threads.
Everything a PID-1 test would take seconds to show is here in milliseconds: framing errors,
idle timeouts, buffer bounds, wait clean-up, the client limit, auth.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from overlayctl.client import Client, ConnectError, RemoteError
from overlayd import handlers, rpc
from overlayd.loop import Loop
from overlayd.supervisor import Supervisor
from protocol import METHODS, Decoder, pack_request
from protocol.states import is_ready

# --- fakes -----------------------------------------------------------------------------------


class FakeService:
    """Just what handlers read and call."""

    def __init__(
        self,
        name: str,
        state: str = "up",
        want: str = "up",
        *,
        pid: int | None = None,
        notification_fd: int | None = None,
        normally_up: bool = True,
        problem: str | None = None,
    ) -> None:
        self.name = name
        self.state = state
        self.want = want
        self.pid = (
            pid if pid is not None else (4242 if state in ("starting", "up", "ready") else None)
        )
        self.reason = problem
        self.checks = None  # no readiness/health checks (service_checks.ServiceChecks)
        self.last_exit: tuple[int | None, int | None, float] | None = None
        self.definition = SimpleNamespace(
            notification_fd=notification_fd, normally_up=normally_up, problem=problem
        )
        self.calls: list[object] = []

    @property
    def broken(self) -> bool:
        return self.definition.problem is not None

    @property
    def ready(self) -> bool:
        return is_ready(self.state, self.definition.notification_fd is not None)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "want": self.want, "pid": self.pid}

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def restart(self) -> None:
        self.calls.append("restart")

    def once(self) -> None:
        self.calls.append("once")

    def send_signal(self, signum: int) -> bool:
        self.calls.append(signum)
        return True


class FakeContainer:
    def __init__(self, socket_path: str, gid: int | None = None) -> None:
        self.socket_path = socket_path
        self.socket_gid = gid
        self.loop = Loop()
        self.supervisor = Supervisor(self.loop, None, dict, "/nonexistent")  # type: ignore[arg-type]
        self.stopping = False
        self.shutdowns: list[tuple[int | None, str]] = []

    def add(self, *services: FakeService) -> None:
        for service in services:
            self.supervisor.services[service.name] = service  # type: ignore[assignment]

    def change(self, service: FakeService, state: str) -> None:
        service.state = state
        self.supervisor.changed(service)  # type: ignore[arg-type]

    def info(self) -> dict[str, object]:
        return {"pid1": False, "orphans_reaped": 0, "cmd_pid": None}

    def cmd(self) -> tuple[list[str], None, None, None]:
        return [], None, None, None  # no CMD: no CMD row in status

    def rescan(self, origin: str) -> None:
        self.supervisor.rescan()

    def request_shutdown(self, exit_code: int | None = None, reason: str = "") -> bool:
        self.shutdowns.append((exit_code, reason))
        self.stopping = True
        return True


class Harness:
    """A ControlServer over a FakeContainer, and ways to drive its loop."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.container = FakeContainer(self.path)
        self.server = rpc.ControlServer(self.container)  # type: ignore[arg-type]
        self.loop = self.container.loop

    def beat(self) -> None:
        """The test's heartbeat timer callback: does nothing."""

    def turn(self) -> None:
        self.loop.call_later(0.01, self.beat)  # bound the select: no thread can wake it
        self.loop._run_once()

    def until(self, predicate: Callable[[], object], timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < end, "timed out driving the loop"
            self.turn()

    def in_thread(self, work: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run a blocking client in a thread while the loop serves it; return its result."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = work()
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.until(lambda: not thread.is_alive(), timeout)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def client(self, **kwargs: Any) -> Client:
        return Client(self.path, **kwargs)

    def raw(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        self.until(lambda: any(True for _ in self.server.clients.values()))
        return sock

    def read_all(self, sock: socket.socket, timeout: float = 5.0) -> list[object]:
        """Every message the server sends until it closes the connection."""
        sock.setblocking(False)
        decoder = Decoder()
        messages: list[object] = []
        end = time.monotonic() + timeout
        while True:
            assert time.monotonic() < end, "server never closed the connection"
            self.turn()
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return messages
            if not data:
                return messages
            messages.extend(decoder.feed(data))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "run" / "control.sock")
    yield harness
    harness.close()


def call(h: Harness, method: str, *params: object, **kwargs: Any) -> object:
    def work() -> object:
        with h.client(**kwargs) as client:
            return client.call(method, *params)

    return h.in_thread(work)


def remote_error(h: Harness, method: str, *params: object) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        call(h, method, *params)
    return info.value


# --- pure parts ------------------------------------------------------------------------------


def test_every_protocol_method_has_a_handler() -> None:
    assert set(handlers.HANDLERS) == set(METHODS)


def test_request_msgid_found_only_in_request_shapes() -> None:
    assert rpc.request_msgid([0, 7, 5, "x"]) == 7
    assert rpc.request_msgid([0, 7]) == 7
    assert rpc.request_msgid([1, 7, None, None]) is None
    assert rpc.request_msgid([0, -1, "m", []]) is None
    assert rpc.request_msgid([0, True, "m", []]) is None
    assert rpc.request_msgid({"a": 1}) is None


def test_env_number_falls_back_on_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_RPC_KNOB", "1.5")
    assert rpc.env_number("X_RPC_KNOB", 30.0) == 1.5
    for bad in ("soon", "0", "-3", "nan", "inf"):
        monkeypatch.setenv("X_RPC_KNOB", bad)
        assert rpc.env_number("X_RPC_KNOB", 30.0) == 30.0
    monkeypatch.delenv("X_RPC_KNOB")
    assert rpc.env_number("X_RPC_KNOB", 30.0) == 30.0


@pytest.mark.parametrize(
    ("sig", "number"), [("HUP", 1), ("SIGTERM", 15), ("usr1", signal.SIGUSR1), ("9", 9), (2, 2)]
)
def test_signal_number_accepts_names_and_numbers(sig: str | int, number: int) -> None:
    assert handlers.signal_number(sig) == number


@pytest.mark.parametrize("sig", ["FOO", "", "0", 0, -1, 4096, "SIG"])
def test_signal_number_rejects_bad_signals(sig: str | int) -> None:
    with pytest.raises(handlers.ProtocolError) as info:
        handlers.signal_number(sig)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize(
    ("state", "fd", "up", "ready", "down"),
    [
        ("down", None, False, False, True),
        ("failed", None, False, False, True),
        ("starting", 3, True, False, False),
        ("up", None, True, True, False),
        ("up", 3, True, False, False),
        ("ready", 3, True, True, False),
        ("stopping", None, False, False, False),
        ("finishing", None, False, False, False),
        ("backoff", None, False, False, False),
    ],
)
def test_wait_conditions(state: str, fd: int | None, up: bool, ready: bool, down: bool) -> None:
    service = FakeService("s", state, notification_fd=fd)
    assert handlers.is_up(service) is up  # type: ignore[arg-type]
    assert handlers.is_ready(service) is ready  # type: ignore[arg-type]
    assert handlers.is_down(service) is down  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        (FakeService("ok", "up"), None),
        (FakeService("ready", "ready", notification_fd=3), None),
        (FakeService("notready", "starting", notification_fd=3), "up but not ready"),
        (FakeService("stopped", "down", "down"), None),
        (FakeService("normally-down", "down", "down", normally_up=False), None),
        (FakeService("crash", "backoff"), "restarting after a pause"),
        (FakeService("perm", "failed", "down"), "failed"),
        (FakeService("broken", "failed", "down", problem="run is missing"), "run is missing"),
        (FakeService("gone", "down", "up"), "wanted up but down"),
    ],
)
def test_check_judges_each_service(service: FakeService, problem: str | None) -> None:
    found = handlers._problem(service)  # type: ignore[arg-type]
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


# --- the socket ------------------------------------------------------------------------------


def test_socket_is_0600_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "control.sock"
    path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on: a dead run's
    harness = Harness(path)
    try:
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert call(harness, "hello")["server"] == "overlayd"  # type: ignore[index]
    finally:
        harness.close()
    assert not path.exists()


def test_socket_with_group_is_0660(tmp_path: Path) -> None:
    container = FakeContainer(str(tmp_path / "c.sock"), gid=12345)
    server = rpc.ControlServer(container)  # type: ignore[arg-type]
    try:
        info = os.stat(tmp_path / "c.sock")
        assert stat.S_IMODE(info.st_mode) == 0o660
        if os.geteuid() == 0:
            assert info.st_gid == 12345
    finally:
        server.close()


def test_a_regular_file_is_not_clobbered(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        rpc.ControlServer(FakeContainer(str(path)))  # type: ignore[arg-type]
    assert path.read_text() == "precious"


def test_a_live_server_is_not_stolen_from(h: Harness) -> None:
    with pytest.raises(OSError) as info:
        rpc.ControlServer(FakeContainer(h.path))  # type: ignore[arg-type]
    assert "another server" in str(info.value)
    assert call(h, "hello")["protocol"] == 1  # type: ignore[index]


# --- methods ---------------------------------------------------------------------------------


def test_hello_reports_server_and_access(h: Harness) -> None:
    info = call(h, "hello")
    assert info["server"] == "overlayd"  # type: ignore[index]
    assert set(info["methods"]) == set(METHODS)  # type: ignore[index]
    assert info["pid1"] is False and info["read_only"] is False  # type: ignore[index]


def test_status_all_named_and_unknown(h: Harness) -> None:
    h.container.add(FakeService("a"), FakeService("b", "down", "down"))
    assert [r["name"] for r in call(h, "status")] == ["a", "b"]  # type: ignore[union-attr]
    assert [r["name"] for r in call(h, "status", ["b"])] == ["b"]  # type: ignore[union-attr]
    error = remote_error(h, "status", ["b", "zz", "yy"])
    assert error.code == "no_such_service"
    assert "zz" in error.message and "yy" in error.message


def test_status_details_adds_figures(h: Harness) -> None:
    h.container.add(FakeService("me", pid=os.getpid()), FakeService("off", "down", "down"))
    me, off = call(h, "status", [], True)  # type: ignore[misc]
    assert me["nprocs"] >= 1 and me["rss"] > 0 and me["cpu_percent"] >= 0
    assert off["nprocs"] is None and off["rss"] is None


def test_actions_validate_every_name_before_acting(h: Harness) -> None:
    a, b = FakeService("a"), FakeService("b")
    h.container.add(a, b)
    assert remote_error(h, "stop", ["a", "nope"]).code == "no_such_service"
    assert a.calls == [] and b.calls == []
    assert call(h, "restart", ["b", "a", "b"]) == ["b", "a"]
    assert a.calls == ["restart"] and b.calls == ["restart"]


def test_broken_service_cannot_start_but_can_stop(h: Harness) -> None:
    broken = FakeService("broken", "failed", "down", problem="run is missing")
    h.container.add(broken)
    error = remote_error(h, "start", ["broken"])
    assert error.code == "invalid_state" and "run is missing" in error.message
    assert call(h, "stop", ["broken"]) == ["broken"]


def test_actions_refused_during_shutdown(h: Harness) -> None:
    h.container.add(FakeService("a"))
    h.container.stopping = True
    assert remote_error(h, "start", ["a"]).code == "shutting_down"


def test_signal_needs_a_running_service(h: Harness) -> None:
    up, down = FakeService("up"), FakeService("down", "down", "down")
    h.container.add(up, down)
    assert call(h, "signal", "HUP", ["up"]) == ["up"]
    assert up.calls == [signal.SIGHUP]
    assert remote_error(h, "signal", "HUP", ["up", "down"]).code == "invalid_state"
    assert up.calls == [signal.SIGHUP]
    assert remote_error(h, "signal", "NOPE", ["up"]).code == "bad_request"


def test_check_reports_problems(h: Harness) -> None:
    h.container.add(FakeService("ok"), FakeService("crash", "backoff"))
    report = call(h, "check")
    assert report["healthy"] is False  # type: ignore[index]
    assert [p["name"] for p in report["problems"]] == ["crash"]  # type: ignore[index]


def test_shutdown_replies_before_stage_3(h: Harness) -> None:
    sock = h.raw()
    sock.sendall(pack_request(9, "shutdown", [3]))
    h.until(lambda: h.container.shutdowns)
    sock.setblocking(False)
    reply = msgpack.unpackb(sock.recv(1 << 16))  # the reply was already sent
    assert reply == [1, 9, None, True]
    assert h.container.shutdowns == [(3, "overlayctl shutdown")]
    sock.close()


def test_handler_bug_is_an_internal_error(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(session: object) -> object:
        raise ZeroDivisionError("oops")

    monkeypatch.setitem(handlers.HANDLERS, "check", broken)
    error = remote_error(h, "check")
    assert error.code == "internal" and "oops" in error.message
    assert call(h, "hello")["server"] == "overlayd"  # type: ignore[index]


def test_read_only_peer(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc, "_peer_credentials", lambda sock: (1, 65534, 65534))
    h.container.add(FakeService("a"))
    assert call(h, "hello")["read_only"] is True  # type: ignore[index]
    assert call(h, "status")[0]["name"] == "a"  # type: ignore[index]
    error = remote_error(h, "stop", ["a"])
    assert error.code == "permission_denied"
    assert remote_error(h, "nope").code == "no_such_method"


# --- wait and subscribe ----------------------------------------------------------------------


def test_wait_resolves_on_change_and_leaves_no_waiter(h: Harness) -> None:
    service = FakeService("s", "starting", notification_fd=3)
    h.container.add(service)
    results: list[object] = []

    def work() -> None:
        with h.client() as client:
            results.append(client.wait("ready", ["s"], 10))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    h.until(lambda: h.container.supervisor.pending_waits())
    h.container.change(service, "ready")
    h.until(lambda: not thread.is_alive())
    assert results == [True]
    assert h.container.supervisor.pending_waits() == 0


def test_wait_timeout_and_abandoned_waits_are_dropped(h: Harness) -> None:
    h.container.add(FakeService("s", "down", "down"))
    assert remote_error(h, "wait", "up", ["s"], 0.05).code == "timeout"
    h.turn()
    assert h.container.supervisor.pending_waits() == 0
    sock = h.raw()
    for msgid in range(5):
        sock.sendall(pack_request(msgid, "wait", ["up", ["s"], None]))
    h.until(lambda: h.container.supervisor.pending_waits() == 5)
    sock.close()
    h.until(lambda: not h.server.clients)
    h.until(lambda: not h.container.supervisor.pending_waits())


def test_pending_waits_are_bounded(h: Harness) -> None:
    h.container.add(FakeService("s", "down", "down"))
    sock = h.raw()
    for msgid in range(rpc.MAX_PENDING + 1):
        sock.sendall(pack_request(msgid, "wait", ["up", ["s"], None]))
    sock.shutdown(socket.SHUT_WR)
    h.until(lambda: h.container.supervisor.pending_waits() == rpc.MAX_PENDING)
    sock.setblocking(False)
    h.until(lambda: _readable(sock))
    reply = msgpack.unpackb(sock.recv(1 << 16))
    assert reply[1] == rpc.MAX_PENDING and reply[2]["code"] == "bad_request"
    sock.close()


def _readable(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False


def test_subscribe_notifies_and_unsubscribes_on_close(h: Harness) -> None:
    service = FakeService("s", "down", "down")
    h.container.add(service)
    sock = h.raw()
    sock.sendall(pack_request(1, "subscribe", []))
    h.until(lambda: h.server.subscribers)
    h.container.change(service, "up")
    messages: list[object] = []
    decoder = Decoder()
    sock.setblocking(False)

    def got_two() -> bool:
        try:
            messages.extend(decoder.feed(sock.recv(1 << 16)))
        except BlockingIOError:
            pass
        return len(messages) >= 2

    h.until(got_two)
    assert messages[0] == [1, 1, None, True]
    assert messages[1][:2] == [2, "state"]
    assert messages[1][2][0]["state"] == "up"
    sock.close()
    h.until(lambda: not h.server.clients)
    assert h.container.supervisor._listeners == []


# --- hostile and broken peers ----------------------------------------------------------------


def test_garbage_gets_an_error_then_close(h: Harness) -> None:
    sock = h.raw()
    sock.sendall(b"\xc1" * 10)  # 0xc1 is never valid msgpack
    messages = h.read_all(sock)
    assert messages[0][:2] == [2, "error"]
    assert messages[0][2][0]["code"] == "bad_request"
    h.until(lambda: not h.server.clients)


def test_bad_envelope_answers_its_msgid(h: Harness) -> None:
    sock = h.raw()
    sock.sendall(msgpack.packb([0, 5, "status"]))
    messages = h.read_all(sock)
    assert messages[0][:2] == [1, 5]
    assert messages[0][2]["code"] == "bad_request"


def test_oversized_frame_closed(h: Harness) -> None:
    sock = h.raw()
    header = b"\xdb" + (4 << 20).to_bytes(4, "big")  # str32 of 4 MiB
    sock.setblocking(False)
    sent = 0
    chunk = header + b"x" * (1 << 20)
    while sent < len(chunk):
        try:
            sent += sock.send(chunk[sent:])
        except BlockingIOError:
            h.turn()
        except (BrokenPipeError, ConnectionResetError):
            break
    h.until(lambda: not h.server.clients)
    sock.close()


def test_params_errors_keep_the_connection(h: Harness) -> None:
    def work() -> tuple[str, str, object]:
        with h.client() as client:
            codes = []
            for bad in (("status", "x"), ("wait", "sideways", ["a"]), ("nope",)):
                try:
                    client.call(*bad)
                except RemoteError as exc:
                    codes.append(exc.code)
            return codes[0], codes[2], client.call("hello")["server"]

    assert h.in_thread(work) == ("bad_request", "no_such_method", "overlayd")


def test_idle_client_closed_and_no_timer_left(h: Harness) -> None:
    h.server.idle_timeout = 0.1
    silent = h.raw()
    partial = socket.socket(socket.AF_UNIX)
    partial.connect(h.path)
    partial.sendall(pack_request(1, "status", [])[:-2])  # a truncated frame, then silence
    h.until(lambda: len(h.server.clients) == 2)
    start = time.monotonic()
    h.until(lambda: not h.server.clients)
    assert time.monotonic() - start >= 0.09
    # An idle overlayd sleeps without a timeout: no timer but the test's own heartbeats.
    assert all(t.cancelled or t.callback == h.beat for t in h.loop._timers)
    silent.close()
    partial.close()


def test_subscriber_and_waiter_are_not_idle(h: Harness) -> None:
    h.server.idle_timeout = 0.05
    h.container.add(FakeService("s", "down", "down"))
    sub, waiter = h.raw(), h.raw()
    sub.sendall(pack_request(1, "subscribe", []))
    waiter.sendall(pack_request(1, "wait", ["up", ["s"], None]))
    h.until(lambda: h.server.subscribers and h.container.supervisor.pending_waits())
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        h.turn()
    assert len(h.server.clients) == 2
    sub.close()
    waiter.close()
    h.until(lambda: not h.server.clients)


def test_client_that_never_reads_is_dropped(h: Harness) -> None:
    # Back-pressure stops serving it once its replies pile up; the idle timeout then drops it.
    h.server.max_buffer = 64 << 10
    h.server.idle_timeout = 0.3
    h.container.add(*(FakeService(f"service-{i}") for i in range(20)))
    sock = h.raw()
    sock.setblocking(False)
    request = pack_request(1, "status", []) * 100
    for _ in range(1000):
        try:
            sock.send(request)
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            break
        h.turn()
        if not h.server.clients:
            break
    assert not h.server.clients
    sock.close()


def test_client_vanishing_mid_reply(h: Harness) -> None:
    h.container.add(*(FakeService(f"service-{i}") for i in range(50)))
    sock = h.raw()
    sock.sendall(pack_request(1, "status", []) * 500)
    sock.close()
    h.until(lambda: not h.server.clients)
    assert call(h, "hello")["server"] == "overlayd"  # type: ignore[index]


def test_client_limit(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rpc, "MAX_CLIENTS", 3)
    held = [h.raw() for _ in range(3)]
    h.until(lambda: len(h.server.clients) == 3)
    extra = socket.socket(socket.AF_UNIX)
    extra.connect(h.path)
    messages = h.read_all(extra)
    assert messages[0][:2] == [2, "error"]
    assert "too many clients" in messages[0][2][0]["message"]
    with pytest.raises(ConnectError):
        call(h, "hello")
    held.pop().close()
    h.until(lambda: len(h.server.clients) == 2)
    assert call(h, "hello")["server"] == "overlayd"  # type: ignore[index]
    for sock in held:
        sock.close()


def test_half_closed_client_gets_its_answers(h: Harness) -> None:
    h.container.add(FakeService("s", "starting", notification_fd=3))
    sock = h.raw()
    sock.sendall(pack_request(1, "hello", []) + pack_request(2, "wait", ["ready", ["s"], None]))
    sock.shutdown(socket.SHUT_WR)
    h.until(lambda: h.container.supervisor.pending_waits())
    h.container.change(h.container.supervisor.services["s"], "ready")  # type: ignore[arg-type]
    messages = h.read_all(sock)
    assert [m[1] for m in messages] == [1, 2]
    assert messages[1][3] is True


def test_pipelined_burst_is_served_across_turns(h: Harness) -> None:
    sock = h.raw()
    sock.sendall(b"".join(pack_request(i, "hello", []) for i in range(200)))
    conn = next(iter(h.server.clients.values()))
    h.until(lambda: conn._decoder.buffered)
    h.turn()
    # Decoded only as served, a few per turn: most of the burst is still undecoded bytes.
    assert conn._decoder.buffered >= (200 - 2 * rpc.REQUESTS_PER_TURN) * len(
        pack_request(0, "hello", [])
    )
    sock.shutdown(socket.SHUT_WR)
    messages = h.read_all(sock)
    assert [m[1] for m in messages] == list(range(200))
