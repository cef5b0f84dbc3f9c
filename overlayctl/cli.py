"""The Typer app, built from the command declarations in spec.py (see `commands.py`).

Loaded only for what the cheap front end (`dispatch.py`) hands over: `--help`, shell
completion (`--install-completion`, `--show-completion`, and the completion requests the
installed script makes), and every command line with a usage error, which `run()` prints as
one line on stderr, exit 2. A command run from here calls the same function in commands.py
through the same `dispatch.Call` as the cheap path.

`--socket` and `--json` are accepted both before the command (root callback, kept in
`ctx.obj`) and after it (per-command options); after wins for `--socket`, either sets `--json`.
"""

import inspect
from typing import Annotated, Any

import typer

from overlayctl import commands, dispatch, render
from overlayctl.commands import Invocation
from overlayctl.spec import COMMANDS, GLOBAL_OPTS, JSON, KINDS, SOCKET, Arg, Command, Opt

#: The order `overlayctl --help` lists the commands in.
HELP_ORDER = (
    "status", "start", "stop", "restart", "once", "signal", "wait", "check", "pid", "events",
    "rescan", "shutdown", "version",
)  # fmt: skip
#: How long completion may spend asking overlayd for service names (then: no names).
COMPLETION_TIMEOUT = 0.5

ROOT_EPILOG = (
    "\b\nExamples:\n  overlayctl status\n  overlayctl restart web\n  overlayctl check"
    "\n  overlayctl --install-completion bash"
    "\n\n\b\nExit codes:\n  0 done\n  1 the answer is no (check unhealthy, wait timed out)"
    "\n  2 usage error\n  3 cannot reach overlayd\n  4 overlayd refused the request"
)
SHELLS = ("bash", "zsh", "fish")
COMPLETION_FLAGS = ("--install-completion", "--show-completion")


# --- completion ---------------------------------------------------------------------------------


def complete_service(ctx: typer.Context, incomplete: str) -> list[str]:
    """Live service names (and CMD) from overlayd; nothing, silently, if it cannot answer."""
    socket = None
    node: Any = ctx
    while node is not None and socket is None:
        socket = node.params.get("socket")
        node = node.parent
    try:
        from overlayctl.client import Client

        with Client(commands.resolve_socket(socket), timeout=COMPLETION_TIMEOUT) as client:
            names = [str(r.get("name")) for r in client.status()]
    except Exception:
        return []
    return [name for name in names if name.startswith(incomplete)]


def complete_signal(incomplete: str) -> list[str]:
    """Signal names, without the SIG prefix (HUP, TERM, ...)."""
    import signal

    names = sorted({s.name[3:] for s in signal.Signals if not s.name.startswith("SIG_")})
    return [name for name in names if name.startswith(incomplete.upper())]


COMPLETERS = {"service": complete_service, "signal": complete_signal}


def _completion(value: str | None, show: bool) -> None:
    """--show-completion [SHELL] / --install-completion [SHELL]: Typer's scripts, then exit."""
    if value is None:
        return
    from typer._completion_shared import _get_shell_name, get_completion_script, install

    shell = value or _get_shell_name() or ""
    if shell not in SHELLS:
        hint = "'--show-completion'" if show else "'--install-completion'"
        if value:
            problem = f"no completion for {shell!r}: choose bash, zsh or fish"
        else:
            problem = (
                f"the current shell is {shell or 'unknown'}, which overlayctl does not complete:"
                " name one after the option (bash, zsh or fish)"
            )
        raise typer.BadParameter(problem, param_hint=hint)
    if show:
        var = f"_{render.PROG.upper()}_COMPLETE"
        commands.out(get_completion_script(prog_name=render.PROG, complete_var=var, shell=shell))
    else:
        done, path = install(shell=shell, prog_name=render.PROG)
        commands.out(f"{done} completion installed in {path}; it works in new shells")
    raise typer.Exit(0)


def _completion_flag(flag: str, help: str) -> Any:
    """The annotation of `--show-completion` or `--install-completion` (eager: acts, exits)."""
    show = flag == "--show-completion"
    return Annotated[
        bool,
        typer.Option(
            flag,
            is_eager=True,
            expose_value=False,
            callback=lambda value: _completion("" if value else None, show=show),
            help=help + " (bash, zsh, fish).",
        ),
    ]


# --- building the app from the declarations -----------------------------------------------------


def _option(opt: Opt) -> tuple[Any, Any]:
    """(annotation, default) of one option as Typer reads them."""
    kind = KINDS[opt.kind]
    info = typer.Option(
        *(f for f in (opt.short, opt.flag) if f),
        help=opt.help,
        metavar=opt.metavar,
        min=opt.minimum,
        show_default=opt.kind != "flag" and opt.default is not None,
    )
    annotation = kind if opt.kind == "flag" or opt.default is not None else kind | None
    return Annotated[annotation, info], opt.default


def _argument(arg: Arg) -> tuple[Any, Any]:
    completer = COMPLETERS.get(arg.complete or "")
    info = typer.Argument(
        metavar=arg.metavar,
        help=arg.help,
        show_default=False,
        autocompletion=completer,
    )
    if arg.many:
        return Annotated[list[str] if arg.required else list[str] | None, info], (
            inspect.Parameter.empty if arg.required else None
        )
    return Annotated[str, info], inspect.Parameter.empty


def _parameters(command: Command) -> list[inspect.Parameter]:
    kind = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("ctx", kind, annotation=typer.Context)]
    for arg in command.args:
        annotation, default = _argument(arg)
        params.append(inspect.Parameter(arg.dest, kind, annotation=annotation, default=default))
    for opt in (*command.opts, *GLOBAL_OPTS):
        annotation, default = _option(opt)
        params.append(inspect.Parameter(opt.dest, kind, annotation=annotation, default=default))
    return params


def _callback(command: Command) -> Any:
    """The function Typer calls for `command`: check, then run it as the cheap path would."""

    def callback(ctx: typer.Context, **given: Any) -> None:
        outer = ctx.obj if isinstance(ctx.obj, Invocation) else Invocation()
        socket, json_output = given.pop(SOCKET.dest), given.pop(JSON.dest)
        values = command.defaults()
        for arg in command.args:
            value = given.pop(arg.dest)
            values[arg.dest] = tuple(value or ()) if arg.many else value
        values.update(given)
        problem = command.check(values) if command.check else None
        if problem:
            raise typer.BadParameter(problem)
        json_output = json_output or outer.json
        call = dispatch.Call(command.name, values, socket or outer.socket, json_output)
        code = dispatch.run(call, factory=outer.factory)
        if code:
            raise typer.Exit(code)

    params = _parameters(command)
    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__name__ = command.name
    callback.__doc__ = command.help
    return callback


def build() -> typer.Typer:
    """The Typer app for every declared command."""
    app = typer.Typer(
        name=render.PROG,
        epilog=ROOT_EPILOG,
        no_args_is_help=True,
        add_completion=False,  # our own options below; they also take a shell named after them
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain click output: predictable help, no rich import
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    shell_help = "shell completion for the current shell, or for the SHELL named next"

    @app.callback()
    def root(
        ctx: typer.Context,
        socket: Annotated[
            str | None, typer.Option(SOCKET.flag, metavar="PATH", help=SOCKET.help)
        ] = None,
        json_output: Annotated[bool, typer.Option(JSON.flag, help=JSON.help)] = False,
        install: _completion_flag("--install-completion", f"Install {shell_help}") = False,
        show: _completion_flag("--show-completion", f"Print {shell_help}") = False,
    ) -> None:  # fmt: skip
        """Control overlayd, the container init and process supervisor."""
        given = ctx.obj if isinstance(ctx.obj, Invocation) else Invocation()
        ctx.obj = Invocation(socket=socket, json=json_output, factory=given.factory)

    for name in sorted(COMMANDS, key=lambda n: (*HELP_ORDER, n).index(n)):
        command = COMMANDS[name]
        epilog = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in command.epilog)
        app.command(name, epilog=epilog)(_callback(command))
    return app



def _usage_line(exc: typer.TyperException) -> str:
    """A click usage error as one line, with a pointer to the right --help."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message = f"{message.rstrip()} (see '{ctx.command_path} --help')"
    return render.error_line(message)


def _plain_metavars(group: Any) -> None:
    """`NAME...` (`[NAME...]` when optional) in usage and help, where Typer writes `{NAME}`."""
    for command in group.commands.values():
        for param in command.params:
            if param.param_type_name == "argument" and param.metavar:
                shown = param.metavar + ("..." if param.nargs == -1 else "")
                shown = shown if param.required else f"[{shown}]"
                param.make_metavar = lambda *_a, _shown=shown, **_k: _shown


def get_command() -> Any:
    """The click command behind the Typer app, ready to run."""
    import os

    if os.environ.get(dispatch.COMPLETE_VAR):
        # Typer registers its bash/zsh/fish completion classes only with add_completion=True.
        from typer._completion_classes import completion_init

        completion_init()
    group = typer.main.get_command(build())
    _plain_metavars(group)
    return group


def run(args: list[str], factory: "commands.ClientFactory | None" = None) -> int:
    """Run the Typer app on `args` and return the exit code (never raises SystemExit)."""
    try:
        if args and args[0] in COMPLETION_FLAGS and len(args) <= 2:
            # `--show-completion bash`: a shell named after the flag (click has no option
            # with an optional value), for Dockerfiles, where the parent shell is `sh`.
            _completion(args[1] if len(args) == 2 else "", show=args[0] == "--show-completion")
        command = get_command()
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
