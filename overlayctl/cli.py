"""The full overlayctl command line, built with Typer.

Every command here only declares its arguments and help, then calls the matching function in
`overlayctl.commands`, which does the work and picks the exit code; the fast path in `fast.py`
calls the same functions. Usage errors are printed by `run()` as one line on stderr, exit 2.

`--socket` and `--json` are accepted both before the command (root callback, kept in
`ctx.obj`) and after it (per-command options); after wins for `--socket`, either sets `--json`.
"""

from typing import Annotated

import typer

from overlayctl import commands, render
from overlayctl.commands import Invocation
from overlayctl.signals import parse_signal

SOCKET_HELP = (
    "Control socket. Default: $OVERLAY_SOCKET, else $OVERLAY_RUN_DIR/control.sock,"
    " else /run/overlay/control.sock."
)
JSON_HELP = "Print JSON instead of text."

SocketOpt = Annotated[
    str | None, typer.Option("--socket", metavar="PATH", help=SOCKET_HELP, show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
Names = Annotated[
    list[str], typer.Argument(metavar="NAME", help="Service names.", show_default=False)
]


def _examples(*lines: str) -> str:
    """An epilog block that click prints as written (the \\b stops it re-wrapping)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


ROOT_EPILOG = (
    _examples("overlayctl status", "overlayctl --json status web", "overlayctl check")
    + "\n\n\b\nExit codes:\n  0 done\n  1 the answer is no (check unhealthy, wait timed out)"
    "\n  2 usage error\n  3 cannot reach overlayd\n  4 overlayd refused the request"
)

app = typer.Typer(
    name=render.PROG,
    epilog=ROOT_EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click output: predictable help, no rich import
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(ctx: typer.Context, socket: SocketOpt = None, json_output: JsonOpt = False) -> None:
    """Control overlayd, the container init and process supervisor."""
    given = ctx.obj if isinstance(ctx.obj, Invocation) else Invocation()
    ctx.obj = Invocation(socket=socket, json=json_output, factory=given.factory)


def _inv(ctx: typer.Context, socket: str | None, json_output: bool) -> Invocation:
    """Merge the per-command --socket/--json with the ones given before the command."""
    outer = ctx.obj if isinstance(ctx.obj, Invocation) else Invocation()
    return Invocation(
        socket=socket or outer.socket, json=json_output or outer.json, factory=outer.factory
    )


def _done(code: int) -> None:
    if code:
        raise typer.Exit(code)


@app.command(epilog=_examples("overlayctl status", "overlayctl status --details web db"))
def status(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME", help="Services (default: all).", show_default=False),
    ] = None,
    details: Annotated[
        bool, typer.Option("--details", help="Add cpu, rss and process-count columns.")
    ] = False,
    socket: SocketOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show the state of services.

    A table of name, state, pid, uptime, restarts, last exit and ready; --details adds cpu,
    rss and process count. --json prints the list of service records instead.
    """
    _done(commands.status(_inv(ctx, socket, json_output), names or (), details=details))


def _action(verb: str, doc: str) -> None:
    """Register start/stop/restart/once: same arguments, one RPC each."""

    def command(
        ctx: typer.Context, names: Names, socket: SocketOpt = None, json_output: JsonOpt = False
    ) -> None:
        _done(commands.action(_inv(ctx, socket, json_output), verb, names))

    command.__doc__ = doc
    command.__name__ = verb
    app.command(verb, epilog=_examples(f"overlayctl {verb} web", f"overlayctl {verb} web db"))(
        command
    )


_action("start", "Start services and keep them up (restarted when they exit).")
_action("stop", "Stop services: send the down signal to each process group.")
_action("restart", "Stop, then start services again.")
_action("once", "Start services once, without restarting them when they exit.")


def _check_signal(value: str) -> str:
    try:
        parse_signal(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


@app.command("signal", epilog=_examples("overlayctl signal HUP nginx", "overlayctl signal 10 web"))
def signal_(
    ctx: typer.Context,
    sig: Annotated[
        str,
        typer.Argument(metavar="SIG", help="HUP, SIGHUP or a number.", callback=_check_signal),
    ],
    names: Names,
    socket: SocketOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Send a signal to services' main processes (the process `run` became).

    SIG is a name (HUP, SIGHUP, sighup) or a number.
    """
    _done(commands.send_signal(_inv(ctx, socket, json_output), parse_signal(sig), names))


@app.command(epilog=_examples("overlayctl wait web", "overlayctl wait --ready --timeout 30 db web"))
def wait(
    ctx: typer.Context,
    names: Names,
    up: Annotated[bool, typer.Option("--up", help="Wait until running (the default).")] = False,
    ready: Annotated[bool, typer.Option("--ready", help="Wait until ready.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Wait until stopped.")] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", metavar="S", min=0, help="Give up after S seconds (exit 1)."),
    ] = None,
    socket: SocketOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Wait for services to be up, ready or down.

    Exit 0 when every named service is there, 1 if --timeout runs out first.
    """
    chosen = [word for word, flag in (("up", up), ("ready", ready), ("down", down)) if flag]
    if len(chosen) > 1:
        raise typer.BadParameter("give only one of --up, --ready, --down")
    condition = chosen[0] if chosen else "up"
    _done(commands.wait(_inv(ctx, socket, json_output), condition, names, timeout=timeout))


@app.command(epilog=_examples("overlayctl check", "HEALTHCHECK CMD overlayctl check"))
def check(ctx: typer.Context, socket: SocketOpt = None, json_output: JsonOpt = False) -> None:
    """Health check: exit 0 if healthy, 1 if not.

    Healthy: every normally-up service is up, and ready when it has a notification-fd. When
    not, each culprit is named on stderr, one per line. A service stopped on request is fine.
    """
    _done(commands.check(_inv(ctx, socket, json_output)))


@app.command(epilog=_examples("overlayctl shutdown", "overlayctl shutdown --exit-code 3"))
def shutdown(
    ctx: typer.Context,
    exit_code: Annotated[
        int | None,
        typer.Option(
            "--exit-code", metavar="N", help="The container's exit code (taken modulo 256)."
        ),
    ] = None,
    socket: SocketOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Stop the container.

    Stops the CMD and every service, runs cont-finish.d and exits; --exit-code N sets the
    container's exit code (N modulo 256).
    """
    _done(commands.shutdown(_inv(ctx, socket, json_output), exit_code))


@app.command(epilog=_examples("overlayctl events", "overlayctl --json events | jq ."))
def events(ctx: typer.Context, socket: SocketOpt = None, json_output: JsonOpt = False) -> None:
    """Follow state changes as they happen, until ^C.

    One line per change (time, name, state, pid); --json prints one JSON record per line.
    """
    _done(commands.events(_inv(ctx, socket, json_output)))


@app.command(epilog=_examples("overlayctl version", "overlayctl --json version"))
def version(ctx: typer.Context, socket: SocketOpt = None, json_output: JsonOpt = False) -> None:
    """Show overlayctl's and overlayd's versions.

    The client version is always printed; exit 3 when overlayd cannot be reached.
    """
    _done(commands.version(_inv(ctx, socket, json_output)))


from overlayctl import logs as _logs  # noqa: E402  (the command lives in its own module)

_logs.register(app, _inv, SocketOpt, JsonOpt)


def _usage_line(exc: typer.TyperException) -> str:
    """A click usage error as one line, with a pointer to the right --help."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message = f"{message.rstrip()} (see '{ctx.command_path} --help')"
    return render.error_line(message)


def run(args: list[str], factory: "commands.ClientFactory | None" = None) -> int:
    """Run the Typer app on `args` and return the exit code (never raises SystemExit)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=list(args),
            prog_name=render.PROG,
            standalone_mode=False,
            obj=Invocation(factory=factory),
        )
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        commands.err(render.error_line("aborted"))
        return render.EXIT_INTERRUPTED
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            # `overlayctl` alone: the help is the message (on stderr), exit 2 as click does.
            exc.show()
            return render.EXIT_USAGE
        commands.err(_usage_line(exc))
        return int(getattr(exc, "exit_code", render.EXIT_USAGE))
    return result if isinstance(result, int) else render.EXIT_OK
