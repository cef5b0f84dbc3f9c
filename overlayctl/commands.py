"""Every overlayctl command: its declaration (`@command`, see spec.py) and what it does.

One function per command: it opens a client, makes the request, prints through `render` and
returns the exit code. `dispatch.py` and `cli.py` only parse arguments (both from the same
declarations) and call these. No typer/click/rich/tabulate here: this is every command's
start-up path.

Tests replace the connection with a stub: every command takes an `Invocation` whose
`factory(socket_path, timeout)` returns the client object to use.
"""

from __future__ import annotations

import os
import sys

from overlayctl import render
from overlayctl.spec import Arg, Opt, command

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
#: How long start/stop/restart/once wait for the transition unless --timeout says otherwise.
ACTION_TIMEOUT = 60.0


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
    """`--socket`, else $OVERLAY_SOCKET, else None (the client's search order)."""
    return option or os.environ.get("OVERLAY_SOCKET") or None


def connect(socket_path: str | None, timeout: float | None) -> Any:
    """Open the real client (imported here so usage errors never pay for it)."""
    from overlayctl.client import Client

    return Client(socket_path=socket_path, timeout=timeout)


def _shown_path(socket_path: str | None) -> str:
    if socket_path:
        return socket_path
    from overlayctl.client import socket_candidates

    return " or ".join(socket_candidates())


def out(text: str, flush: bool = False) -> None:
    """Print a line on stdout."""
    print(text, file=sys.stdout, flush=flush)


def err(text: str) -> None:
    """Print a line on stderr."""
    print(text, file=sys.stderr, flush=True)


def silence_stdout() -> None:
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
        silence_stdout()
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



# --- arguments shared by several commands ------------------------------------------------------

NAMES = Arg("names", "NAME", "Service names.", many=True, complete="service")
TIMEOUT_HELP = "Give up after S seconds (exit 1, naming the state reached)."


def _action_opts(verb: str) -> tuple[Opt, ...]:
    return (
        Opt("--no-wait", "no_wait", f"Return at once, without waiting for the {verb} to finish."),
        Opt("--timeout", "timeout", TIMEOUT_HELP, "float", "S",
            ACTION_TIMEOUT, 0),
    )  # fmt: skip


def _examples(*names: str) -> tuple[str, ...]:
    return tuple(f"overlayctl {line}" for line in names)


# --- reading ------------------------------------------------------------------------------------


@command(
    "status",
    Arg("names", "NAME", "Services (default: all, and the CMD).", many=True, required=False,
        complete="service"),
    Opt("--details", "details", "Add cpu, rss and process-count columns."),
    examples=_examples("status", "status --details web db", "--json status web"),
)  # fmt: skip
def status(inv: Invocation, names: Sequence[str] = (), details: bool = False) -> int:
    """Show the state of services.

    A table of name, state, pid, uptime, restarts, last exit and ready (and why, for a
    service in backoff or failed); --details adds cpu, rss and process count. The CMD, when
    there is one, is the row named CMD. --json prints the list of service records instead.
    """

    def body(client: Any) -> int:
        records = client.status(names=list(names), details=details)
        if inv.json:
            out(render.to_json(records, pretty=True))
        else:
            out(render.status_table(records, details=details))
        return render.EXIT_OK

    return execute(inv, body)


@command("check", examples=_examples("check", "check --json"))
def check(inv: Invocation) -> int:
    """Health check: exit 0 if healthy, 1 if not.

    Healthy: every normally-up service is up, and ready when it has a notification-fd. When
    not, each culprit is named on stderr, one per line. A service stopped on request is fine.
    """

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


@command("pid", Arg("name", "NAME", "A service, or CMD.", complete="service"),
         examples=_examples("pid web", "kill -USR1 $(overlayctl pid web)"))  # fmt: skip
def pid(inv: Invocation, name: str) -> int:
    """Print the pid of a service's running process (or of the CMD).

    Exit 1, saying its state, when it has no process.
    """

    def body(client: Any) -> int:
        (record,) = client.status(names=[name])
        found = record.get("pid")
        if inv.json:
            out(render.to_json({"name": name, "pid": found, "state": record.get("state")}))
        elif found:
            out(str(found))
        if not found:
            err(render.error_line(f"{name} has no process (state {record.get('state')})"))
            return render.EXIT_NO
        return render.EXIT_OK

    return execute(inv, body)


@command(
    "events",
    Opt("--snapshot", "snapshot", "Print every service's current state first."),
    examples=_examples("events", "events --snapshot", "--json events | jq ."),
)
def events(inv: Invocation, snapshot: bool = False) -> int:
    """Follow state changes as they happen, until ^C.

    One line per change (time, name, state, pid); --json prints one JSON record per line.
    --snapshot prints the current states first, then the changes, with none lost between.
    """

    def show(record: Any) -> None:
        out(render.to_json(record) if inv.json else render.format_event(record), flush=True)

    def body(client: Any) -> int:
        if not snapshot:
            for params in client.subscribe():
                for record in _records(params):
                    show(record)
            return render.EXIT_OK
        for record in client.watch_status():  # one round trip, nothing lost between
            show(record)
        while True:
            show(client.next_state(None))

    return execute(inv, body, on_interrupt=render.EXIT_OK)


def _records(params: Any) -> Iterable[Any]:
    # Each notification's params is `[record]`; accept a bare record too.
    return params if isinstance(params, list) else [params]


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


@command("version", examples=_examples("version", "--json version"))
def version(inv: Invocation) -> int:
    """Show overlayctl's and overlayd's versions.

    The client version is always printed; exit 3 when overlayd cannot be reached.
    """
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


# --- acting -------------------------------------------------------------------------------------


def action(
    inv: Invocation,
    verb: str,
    names: Sequence[str],
    no_wait: bool = False,
    timeout: float | None = ACTION_TIMEOUT,
    kill_after: float | None = None,
) -> int:
    """start / stop / restart / once, then (unless `no_wait`) wait until done; see progress.py.

    Subscribes before asking, so no state change between the request and the wait is lost.
    """
    names = list(dict.fromkeys(names))

    def body(client: Any) -> int:
        if no_wait:
            result = getattr(client, verb)(names)
            if inv.json and result is not None:
                out(render.to_json(result, pretty=True))
            return render.EXIT_OK
        from overlayctl.follow import follow

        return follow(client, inv, verb, names, timeout, kill_after)

    return execute(inv, body, timeout=DEFAULT_TIMEOUT)


def _action_command(verb: str, doc: str, *extra: Opt) -> None:
    def run(inv: Invocation, names: Sequence[str], no_wait: bool = False,
            timeout: float | None = ACTION_TIMEOUT, kill_after: float | None = None) -> int:
        return action(inv, verb, names, no_wait, timeout, kill_after)  # fmt: skip

    run.__doc__ = doc
    run.__name__ = verb
    examples = _examples(f"{verb} web", f"{verb} --timeout 30 web db", f"{verb} --no-wait web")
    command(verb, NAMES, *_action_opts(verb), *extra, examples=examples)(run)


_action_command(
    "start",
    """Start services and keep them up (restarted when they exit).

    Waits until each is up (ready, when it has a notification-fd) and prints one line each.
    A service still stopping starts again once its process exits.
    """,
)
_action_command(
    "stop",
    """Stop services: the down signal to each process group, then wait until down.

    Down means its process exited and its finish script is done. --kill-after S sends SIGKILL
    to the process group of each service not down after S seconds.
    """,
    Opt("--kill-after", "kill_after", "SIGKILL the process group if not down after S seconds.",
        "float", "S", None, 0),
)  # fmt: skip
_action_command(
    "restart",
    """Stop, then start services again; waits for the new process (through the 1 s throttle).

    Prints one line each, like `web: restarted (pid 41 → 57)`.
    """,
)
_action_command(
    "once",
    """Start services once, without restarting them when they exit.

    Waits until each is up (ready, when it has a notification-fd).
    """,
)


def _signal_check(values: dict[str, object]) -> str | None:
    from overlayctl.signals import parse_signal

    try:
        parse_signal(str(values["sig"]))
    except ValueError as exc:
        return str(exc)
    return None


@command(
    "signal",
    Arg("sig", "SIG", "HUP, SIGHUP or a number.", complete="signal"),
    NAMES,
    examples=_examples("signal HUP nginx", "signal 10 web"),
    check=_signal_check,
)
def send_signal(inv: Invocation, sig: str | int, names: Sequence[str]) -> int:
    """Send a signal to services' main processes (the process `run` became).

    SIG is a name (HUP, SIGHUP, sighup) or a number.
    """
    from overlayctl.signals import parse_signal

    wire = parse_signal(sig) if isinstance(sig, str) else sig

    def body(client: Any) -> int:
        result = client.signal(wire, list(names))
        if inv.json and result is not None:
            out(render.to_json(result, pretty=True))
        return render.EXIT_OK

    return execute(inv, body)


def _one_condition(values: dict[str, object]) -> str | None:
    if sum(bool(values.get(word)) for word in ("up", "ready", "down")) > 1:
        return "give only one of --up, --ready, --down"
    return None


@command(
    "wait",
    NAMES,
    Opt("--up", "up", "Wait until running (the default)."),
    Opt("--ready", "ready", "Wait until ready."),
    Opt("--down", "down", "Wait until stopped."),
    Opt("--timeout", "timeout", "Give up after S seconds (exit 1).", "float", "S", None, 0),
    examples=_examples("wait web", "wait --ready --timeout 30 db web"),
    check=_one_condition,
)
def wait(inv: Invocation, names: Sequence[str], up: bool = False, ready: bool = False,
         down: bool = False, timeout: float | None = None) -> int:  # fmt: skip
    """Wait for services to be up, ready or down.

    Exit 0 when every named service is there, 1 if --timeout runs out first.
    """
    condition = "ready" if ready else "down" if down else "up"

    def body(client: Any) -> int:
        client.wait(condition, list(names), timeout=timeout)
        return render.EXIT_OK

    return execute(inv, body)


def reduce_exit_code(code: int) -> int:
    """Container exit codes are taken modulo 256, as the kernel would: -1 → 255, 257 → 1."""
    return code % 256


@command(
    "shutdown",
    Opt("--exit-code", "exit_code", "The container's exit code (taken modulo 256).", "int", "N"),
    examples=_examples("shutdown", "shutdown --exit-code 3"),
)
def shutdown(inv: Invocation, exit_code: int | None = None) -> int:
    """Stop the container.

    Stops the CMD and every service, runs cont-finish.d and exits; --exit-code N sets the
    container's exit code (N modulo 256).
    """
    code = None if exit_code is None else reduce_exit_code(exit_code)

    def body(client: Any) -> int:
        client.shutdown(exit_code=code)
        return render.EXIT_OK

    return execute(inv, body)


@command("rescan", examples=_examples("rescan"))
def rescan(inv: Invocation) -> int:
    """Re-read services.d: new directories start, removed ones stop.

    What SIGHUP to overlayd does when there is no CMD; this works with a CMD too.
    """

    def body(client: Any) -> int:
        result = client.rescan()
        if inv.json:
            out(render.to_json(result, pretty=True))
            return render.EXIT_OK
        added, stopped = result.get("added") or [], result.get("stopped") or []
        parts = [f"{word} {', '.join(names)}" for word, names in
                 (("added", added), ("stopped", stopped)) if names]  # fmt: skip
        out("rescan: " + ("; ".join(parts) if parts else "no change"))
        return render.EXIT_OK

    return execute(inv, body)



@command(
    "logs",
    Arg("name", "NAME", "The service.", complete="service"),
    Opt("--lines", "lines", "Lines to show (-1: all).", "int", "N", 10, -1, short="-n"),
    Opt("--follow", "follow", "Keep printing new lines until ^C.", short="-f"),
    examples=_examples("logs web", "logs -n 100 -f web"),
)
def logs(inv: Invocation, name: str, lines: int = 10, follow: bool = False) -> int:
    """Show a service's recent output.

    From the logdir its s6-log writes (current and the newest archives), or, with
    OVERLAY_LOG_PREFIX=1, from the lines overlayd keeps. Exit 1 when neither exists,
    saying where the output goes.
    """
    from overlayctl.logs import logs as show_logs  # log files and the ring: only for `logs`

    return show_logs(inv, name, lines, follow)
