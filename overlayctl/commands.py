"""What each overlayctl command does, whichever front end parsed its arguments.

One function per command: it opens a client, makes the request, prints through `render` and
returns the exit code. `fast.py` and `cli.py` only parse arguments and call these, so the two
paths cannot drift apart. No typer/click/rich/tabulate here (the fast path imports this module).

Tests replace the connection with a stub: every command takes an `Invocation` whose
`factory(socket_path, timeout)` returns the client object to use.
"""

from __future__ import annotations

import os
import sys

from overlayctl import render

# typing, dataclasses and collections.abc cost ~25 ms together; this module is on the
# health-check path, so annotations are strings (PEP 563) and the names are for checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any

    ClientFactory = Callable[[str | None, float | None], Any]

# Bounds connecting and each ordinary call. `wait` and `events` need no special value: the
# client stretches the socket timeout past `wait --timeout S` itself (so overlayd's own
# "timeout" answer, exit 1, arrives first), and reads `subscribe` notifications unbounded.
DEFAULT_TIMEOUT = 10.0


class Invocation:
    """Options every command shares: where overlayd is, and whether to print JSON.

    `factory(socket_path, timeout)` makes the client; None means the real one.
    """

    __slots__ = ("factory", "json", "socket")

    def __init__(
        self,
        socket: str | None = None,
        json: bool = False,
        factory: ClientFactory | None = None,
    ) -> None:
        self.socket = socket
        self.json = json
        self.factory = factory

    def __repr__(self) -> str:
        return f"Invocation(socket={self.socket!r}, json={self.json!r})"


def resolve_socket(option: str | None) -> str | None:
    """`--socket`, else $OVERLAY_SOCKET, else None (the client's default)."""
    return option or os.environ.get("OVERLAY_SOCKET") or None


def connect(socket_path: str | None, timeout: float | None) -> Any:
    """Open the real client (imported here so usage errors never pay for it)."""
    from overlayctl.client import Client

    return Client(socket_path=socket_path, timeout=timeout)


def _shown_path(socket_path: str | None) -> str:
    if socket_path:
        return socket_path
    from overlayctl.client import default_socket_path

    return str(default_socket_path())


def out(text: str, flush: bool = False) -> None:
    """Print a line on stdout."""
    print(text, file=sys.stdout, flush=flush)


def err(text: str) -> None:
    """Print a line on stderr."""
    print(text, file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    # The reader went away (`overlayctl events | head`). Point stdout at /dev/null so the
    # interpreter's final flush does not raise a second BrokenPipeError at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def execute(
    inv: Invocation,
    body: Callable[[Any], int],
    timeout: float | None = DEFAULT_TIMEOUT,
    on_interrupt: int = render.EXIT_INTERRUPTED,
) -> int:
    """Connect, run `body(client)`, close; turn every failure into one stderr line + code."""
    path = resolve_socket(inv.socket)
    client = None
    try:
        client = (inv.factory or connect)(path, timeout)
        return body(client)
    except KeyboardInterrupt:
        return on_interrupt
    except BrokenPipeError:
        _silence_stdout()
        return render.EXIT_OK
    except Exception as exc:
        code, message = render.failure(exc, _shown_path(path))
        err(render.error_line(message))
        return code
    finally:
        if client is not None:
            try:
                client.close()
            except Exception:  # closing must not mask the answer already printed
                pass


def status(inv: Invocation, names: Sequence[str] = (), details: bool = False) -> int:
    """Print the status table (or JSON list) of the named services, or of all."""

    def body(client: Any) -> int:
        records = client.status(names=list(names), details=details)
        if inv.json:
            out(render.to_json(records, pretty=True))
        else:
            out(render.status_table(records, details=details))
        return render.EXIT_OK

    return execute(inv, body)


def check(inv: Invocation) -> int:
    """Exit 0 when healthy; else 1, naming each culprit on stderr."""

    def body(client: Any) -> int:
        result = client.check()
        if inv.json:
            out(render.to_json(result, pretty=True))
        if result.get("healthy"):
            return render.EXIT_OK
        problems = result.get("problems") or []
        for problem in problems:
            err(render.problem_line(problem))
        if not problems:
            err(render.error_line("check: unhealthy"))
        return render.EXIT_NO

    return execute(inv, body)


def client_version() -> str:
    """This overlayctl's version (the package's), `unknown` if it cannot be found cheaply."""
    import overlayctl

    version = getattr(overlayctl, "__version__", None)
    if version is None:
        try:
            from overlayd import __version__ as version
        except ImportError:
            version = "unknown"
    return str(version)


def version(inv: Invocation) -> int:
    """Print the client version, then overlayd's version and protocol (exit 3 if unreachable)."""
    info: dict[str, Any] = {"client": client_version(), "server": None, "protocol": None}
    if not inv.json:
        out(f"overlayctl {info['client']}", flush=True)

    def body(client: Any) -> int:
        hello = client.hello()
        info["server"] = f"{hello.get('server', 'overlayd')} {hello.get('version', '?')}"
        info["protocol"] = hello.get("protocol")
        if not inv.json:
            out(f"{info['server']} (protocol {info['protocol']})")
        return render.EXIT_OK

    code = execute(inv, body)
    if inv.json:
        out(render.to_json(info, pretty=True))
    return code


def action(inv: Invocation, verb: str, names: Sequence[str]) -> int:
    """start / stop / restart / once: silent on success; `--json` prints overlayd's answer."""

    def body(client: Any) -> int:
        result = getattr(client, verb)(list(names))
        if inv.json and result is not None:
            out(render.to_json(result, pretty=True))
        elif isinstance(result, list):
            # Dependencies (start) or dependents (stop) that go along, first (DESIGN §10).
            also = [n for n in result if n not in names]
            if also:
                doing, why = ("starting", "needed by") if verb == "start" else (
                    "stopping", "they depend on")
                err(f"{verb}: also {doing} {', '.join(also)} ({why} {', '.join(names)})")
        return render.EXIT_OK

    return execute(inv, body)


def send_signal(inv: Invocation, sig: str | int, names: Sequence[str]) -> int:
    """Send `sig` (already validated by `signals.parse_signal`) to the named services."""

    def body(client: Any) -> int:
        result = client.signal(sig, list(names))
        if inv.json and result is not None:
            out(render.to_json(result, pretty=True))
        return render.EXIT_OK

    return execute(inv, body)


def wait(
    inv: Invocation, condition: str, names: Sequence[str], timeout: float | None = None
) -> int:
    """Block until every named service is `condition` (up/ready/down); exit 1 on timeout."""

    def body(client: Any) -> int:
        client.wait(condition, list(names), timeout=timeout)
        return render.EXIT_OK

    return execute(inv, body)


def reduce_exit_code(code: int) -> int:
    """Container exit codes are taken modulo 256, as the kernel would: -1 → 255, 257 → 1."""
    return code % 256


def shutdown(inv: Invocation, exit_code: int | None = None) -> int:
    """Ask overlayd to stop the container, optionally overriding its exit code."""
    code = None if exit_code is None else reduce_exit_code(exit_code)

    def body(client: Any) -> int:
        client.shutdown(exit_code=code)
        return render.EXIT_OK

    return execute(inv, body)


def _records(params: Any) -> Iterable[Any]:
    # Each notification's params is `[record]`; accept a bare record too.
    return params if isinstance(params, list) else [params]


def events(inv: Invocation) -> int:
    """Print one line per state change as it happens, until ^C (which exits 0)."""

    def body(client: Any) -> int:
        for params in client.subscribe():
            for record in _records(params):
                line = render.to_json(record) if inv.json else render.format_event(record)
                out(line, flush=True)
        return render.EXIT_OK

    return execute(inv, body, on_interrupt=render.EXIT_OK)
