"""Hard edges on the control socket of a real overlayd running as PID 1 (issue #3, item 6).

Each test does something a broken, hostile or careless client does, then checks what matters:
PID 1 is alive, its services were not touched (same pids), and `status` still answers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest

from overlayctl.client import Client, ConnectError, RemoteError
from protocol import Decoder, pack_request
from tests.conftest import needs_root
from tests.harness import PYTHON, REPO, Booted, Tree, wait_until

pytestmark = needs_root

SERVICES = ("alpha", "beta", "gamma")
IDLE = 1.0  # OVERLAY_RPC_IDLE_TIMEOUT for these tests, seconds
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
Snapshot = dict[str, tuple[str, int]]


# --- helpers ---------------------------------------------------------------------------------


def socket_of(booted: Booted) -> str:
    """The control socket overlayd was told to use (OVERLAY_SOCKET, else the tree's)."""
    return getattr(booted, "socket_path", str(booted.tree.socket))


def snapshot(booted: Booted) -> Snapshot:
    with Client(socket_of(booted)) as client:
        return {r["name"]: (r["state"], r["pid"]) for r in client.status()}


def assert_unharmed(booted: Booted, before: Snapshot) -> None:
    """PID 1 alive, every service as it was (same state, same pid), status answering."""
    assert booted.proc.poll() is None, booted.output
    assert snapshot(booted) == before
    assert "Traceback" not in booted.output, booted.output


def connect(path: str | Path, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    return sock


def send_until_refused(sock: socket.socket, data: bytes) -> None:
    """sendall, except that the server hanging up on us part-way is expected."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[list[object], float]:
    """Every message until the server closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(timeout)
    decoder = Decoder()
    messages: list[object] = []
    while True:
        try:
            data = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"still open after {timeout} s") from None
        if not data:
            break
        messages.extend(decoder.feed(data))
    return messages, time.monotonic() - start


@pytest.fixture
def overlay(tree: Tree, boot: Callable[..., Booted]) -> Callable[..., tuple[Booted, Snapshot]]:
    """overlay(**env) → a PID-1 overlayd with three sleeping services up, and their snapshot."""

    def start(**env: str) -> tuple[Booted, Snapshot]:
        for name in SERVICES:
            tree.service(name, "exec sleep 1000")
        booted = boot(env={"OVERLAY_RPC_IDLE_TIMEOUT": str(IDLE), **env})
        booted.socket_path = env.get("OVERLAY_SOCKET", str(tree.socket))  # type: ignore[attr-defined]
        wait_until(lambda: os.path.exists(socket_of(booted)), 10, "the control socket")
        with Client(socket_of(booted)) as client:
            client.wait("up", list(SERVICES), 10)
        before = snapshot(booted)
        assert all(pid for _, pid in before.values())
        return booted, before

    return start


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory everyone can traverse (pytest's tmp_path sits under a 0700 parent)."""
    path = Path(tempfile.mkdtemp(prefix="overlayd-sock-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- framing ---------------------------------------------------------------------------------


def test_two_mib_of_random_bytes_get_the_client_closed(overlay: Callable) -> None:
    booted, before = overlay()
    sock = connect(booted.tree.socket)
    send_until_refused(sock, random.Random(1234).randbytes(2 << 20))
    messages, _ = read_until_closed(sock)
    sock.close()
    if messages:  # usually an error notification naming the problem
        assert messages[0][:2] in ([2, "error"], [1, messages[0][1]])
    assert_unharmed(booted, before)


def test_frame_over_one_mib_is_refused_with_bad_request(overlay: Callable) -> None:
    booted, before = overlay()
    sock = connect(booted.tree.socket)
    header = b"\xdb" + (2 << 20).to_bytes(4, "big")  # a 2 MiB str32: over the 1 MiB cap
    send_until_refused(sock, header + b"x" * ((1 << 20) + 4096))
    messages, _ = read_until_closed(sock)
    sock.close()
    assert messages and messages[0][:2] == [2, "error"]
    error = messages[0][2][0]
    assert error["code"] == "bad_request" and "larger than" in error["message"]
    assert_unharmed(booted, before)


def test_truncated_frame_then_silence_is_closed_at_the_idle_timeout(overlay: Callable) -> None:
    booted, before = overlay()
    sock = connect(booted.tree.socket)
    sock.sendall(pack_request(1, "status", [[], False])[:-3])
    messages, waited = read_until_closed(sock)
    sock.close()
    assert messages == []
    assert IDLE * 0.8 <= waited < IDLE + 4
    assert_unharmed(booted, before)


def test_client_that_connects_and_never_sends_is_closed(overlay: Callable) -> None:
    booted, before = overlay()
    sock = connect(booted.tree.socket)
    messages, waited = read_until_closed(sock)
    sock.close()
    assert messages == [] and IDLE * 0.8 <= waited < IDLE + 4
    assert_unharmed(booted, before)


def test_subscriber_outlives_the_idle_timeout(overlay: Callable) -> None:
    booted, before = overlay()
    with booted.client() as watcher, booted.client() as actor:
        events = watcher.subscribe()
        time.sleep(IDLE * 2.5)
        actor.restart(["alpha"])
        record = next(events)[0]
        assert record["name"] == "alpha"
    before.pop("alpha")
    after = snapshot(booted)
    after.pop("alpha")
    assert after == before


# --- slow, vanished and many clients ---------------------------------------------------------


def test_client_that_never_reads_is_disconnected(overlay: Callable) -> None:
    booted, before = overlay()
    sock = connect(booted.tree.socket, timeout=0.2)
    batch = pack_request(1, "status", [[], False]) * 500
    deadline = time.monotonic() + 30
    disconnected = False
    while time.monotonic() < deadline:
        try:
            sock.send(batch)
        except TimeoutError:
            continue  # our send buffer is full: overlayd is still chewing
        except (BrokenPipeError, ConnectionResetError):
            disconnected = True
            break
    sock.close()
    assert disconnected, "overlayd kept buffering replies for a client that never reads"
    booted.wait_for(r"unread; disconnecting")
    assert_unharmed(booted, before)


def test_hundred_clients_twenty_status_calls_each(overlay: Callable) -> None:
    booted, before = overlay()
    barrier = threading.Barrier(100)
    answers: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with Client(str(booted.tree.socket), timeout=30) as ctl:
                ctl.hello()
                barrier.wait(30)
                for _ in range(20):
                    records = ctl.status()
                    assert [r["name"] for r in records] == list(SERVICES)
                    with lock:
                        answers.append(1)
        except BaseException as exc:
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    assert len(answers) == 2000
    assert_unharmed(booted, before)


def test_client_vanishing_mid_reply(overlay: Callable) -> None:
    booted, before = overlay()
    for details in (False, True):
        sock = connect(booted.tree.socket)
        sock.sendall(pack_request(1, "status", [[], details]) * 300)
        sock.recv(100)  # a reply has begun to arrive
        sock.close()  # ...and we are gone with the rest of it
    quitter = connect(booted.tree.socket)
    quitter.sendall(pack_request(1, "wait", ["down", ["alpha"], None]))
    quitter.close()  # a wait in flight, then gone
    assert_unharmed(booted, before)


def test_hundred_and_twenty_ninth_client_is_refused(overlay: Callable) -> None:
    booted, before = overlay(OVERLAY_RPC_IDLE_TIMEOUT="60")
    held = []
    for msgid in range(128):
        sock = connect(booted.tree.socket)
        sock.sendall(pack_request(msgid, "hello", []))
        held.append(sock)
    for sock in held:  # each was accepted and answered
        assert msgpack.unpackb(sock.recv(1 << 16))[0] == 1
    extra = connect(booted.tree.socket)
    messages, _ = read_until_closed(extra)
    extra.close()
    assert messages and messages[0][:2] == [2, "error"]
    assert "too many clients" in messages[0][2][0]["message"]
    with pytest.raises(ConnectError):
        Client(str(booted.tree.socket), timeout=5).hello()
    held.pop().close()
    wait_until(lambda: _hello_works(booted), 10, "a free slot after one client left")
    for sock in held:
        sock.close()
    assert_unharmed(booted, before)


def _hello_works(booted: Booted) -> bool:
    try:
        with Client(str(booted.tree.socket), timeout=5) as ctl:
            return ctl.hello()["server"] == "overlayd"
    except ConnectError:
        return False


# --- requests that make no sense -------------------------------------------------------------


def test_unknown_method_is_no_such_method(overlay: Callable) -> None:
    booted, before = overlay()
    with booted.client() as ctl:
        with pytest.raises(RemoteError) as info:
            ctl.call("frobnicate", 1, 2)
        assert info.value.code == "no_such_method"
        assert "frobnicate" in info.value.message
        assert ctl.hello()["server"] == "overlayd"  # same connection, still served
    assert_unharmed(booted, before)


@pytest.mark.parametrize(
    "request_",
    [
        ("status", "alpha"),
        ("status", [1, 2]),
        ("status", [], "yes"),
        ("start", []),
        ("stop", "alpha"),
        ("signal", ["HUP"], ["alpha"]),
        ("signal", "HUP"),
        ("wait", "sideways", ["alpha"]),
        ("wait", "up", ["alpha"], -1),
        ("shutdown", "now"),
        ("shutdown", True),
        ("hello", 1),
    ],
)
def test_wrong_parameter_types_are_bad_request(
    overlay: Callable, request_: tuple[object, ...]
) -> None:
    booted, before = overlay()
    with booted.client() as ctl:
        with pytest.raises(RemoteError) as info:
            ctl.call(*request_)
        assert info.value.code == "bad_request"
        assert ctl.status(["alpha"])[0]["name"] == "alpha"
    assert_unharmed(booted, before)


# --- who may do what -------------------------------------------------------------------------

_AS_NOBODY = """
import json, sys
from overlayctl.client import Client, ClientError, RemoteError
out = {}
try:
    with Client(sys.argv[1], timeout=10) as ctl:
        out["read_only"] = ctl.hello()["read_only"]
        out["status"] = [r["name"] for r in ctl.status()]
        out["check"] = sorted(ctl.check())
        for method, params in (("stop", [["alpha"]]), ("signal", ["KILL", ["alpha"]]),
                               ("shutdown", [0])):
            try:
                ctl.call(method, *params)
                out[method] = "allowed"
            except RemoteError as exc:
                out[method] = exc.code
except ClientError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def _as_nobody(socket_path: Path) -> dict[str, object]:
    done = subprocess.run(
        [*NOBODY, PYTHON, "-c", _AS_NOBODY, str(socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(REPO),
        env={"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_socket_group_member_may_read_but_not_stop(overlay: Callable, open_dir: Path) -> None:
    path = open_dir / "control.sock"
    booted, before = overlay(OVERLAY_SOCKET=str(path), OVERLAY_SOCKET_GROUP="65534")
    assert oct(path.stat().st_mode & 0o777) == oct(0o660)
    assert path.stat().st_gid == 65534
    result = _as_nobody(path)
    assert result == {
        "read_only": True,
        "status": list(SERVICES),
        "check": ["healthy", "problems"],
        "stop": "permission_denied",
        "signal": "permission_denied",
        "shutdown": "permission_denied",
    }
    assert_unharmed(booted, before)


def test_without_socket_group_others_cannot_connect(overlay: Callable, open_dir: Path) -> None:
    path = open_dir / "control.sock"
    booted, before = overlay(OVERLAY_SOCKET=str(path))
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    result = _as_nobody(path)
    assert "error" in result and "Permission denied" in str(result["error"])
    assert_unharmed(booted, before)
