"""s6-overlay's own commands, for trees written for s6-overlay (DESIGN §11).

    halt | poweroff | reboot     stop the container: overlayd decides the exit code (an explicit
                                 `overlayctl shutdown -c`, the exitcode files, then the CMD's);
                                 returns at once, as s6-overlay's do. A container cannot power
                                 off or reboot, so all three mean the same.
    printcontenv VAR             print VAR as the container environment holds it; 1 when unset
    with-retries [-n N] [-t MS] PROG...   run PROG until it exits 0, at most N+1 times (N=3),
                                 each attempt killed (SIGTERM, counted as 99) after MS ms (500)
    s6-rc [-u|-d|-D] change NAME...      start / stop services, waiting for the result
    s6-rc [-a|-da] list, s6-rc listall   names of active / inactive / all services

They speak to overlayd over the control socket (OVERLAY_SOCKET, else OVERLAY_RUN_DIR's); usage
errors exit 100 as skarnet's tools do, an unreachable overlayd 111.
"""

from __future__ import annotations

import os
import sys

EXIT_USAGE = 100
EXIT_SYSTEM = 111
ACTIVE_STATES = frozenset(("starting", "up", "ready", "stopping", "finishing", "backoff"))


def _die(prog: str, message: str, code: int) -> int:
    sys.stderr.write(f"{prog}: fatal: {message}\n")
    return code


def _client():  # imported here: printcontenv and with-retries never need msgpack
    from overlayctl.client import Client, default_socket_path

    return Client(default_socket_path())


def halt(prog: str = "halt") -> int:
    from overlayctl.client import ClientError

    try:
        with _client() as client:
            client.shutdown()
    except ClientError as exc:
        return _die(prog, str(exc), EXIT_SYSTEM)
    return 0


def printcontenv(args: list[str]) -> int:
    if len(args) != 1 or not args[0]:
        return _die("printcontenv", "usage: printcontenv VARIABLE", EXIT_USAGE)
    name = args[0]
    if os.environ.get("S6_KEEP_ENV", "0") not in ("", "0"):
        value = os.environ.get(name)
    else:
        from overlayd.contenv import DEFAULT_RUN_DIR, load

        run_dir = os.environ.get("OVERLAY_RUN_DIR")
        candidates = [os.path.join(run_dir, "container_environment")] if run_dir else []
        candidates += ["/run/s6/container_environment", DEFAULT_RUN_DIR + "/container_environment"]
        directory = next((d for d in candidates if os.path.isdir(d)), None)
        value = load(directory).get(name) if directory else None
    if value is None:
        return 1
    sys.stdout.write(value + "\n")
    return 0


def with_retries(args: list[str]) -> int:
    import getopt
    import signal
    import subprocess

    try:
        options, program = getopt.getopt(args, "n:t:")
        settings = {flag: int(value) for flag, value in options}
    except (getopt.GetoptError, ValueError):
        program, settings = [], {}
    if not program or any(v < 0 for v in settings.values()):
        return _die("with-retries", "usage: with-retries [-n N] [-t MS] PROG...", EXIT_USAGE)
    tries = settings.get("-n", 3) + 1
    limit = settings.get("-t", 500) / 1000 or None
    code = 0
    for _ in range(tries):
        try:
            child = subprocess.Popen(program)
        except OSError as exc:
            return _die("with-retries", f"cannot run {program[0]}: {exc.strerror}", 127)
        try:
            code = child.wait(limit)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGTERM)
            child.wait()
            code = 99  # as s6-maximumtime says it
        if code == 0:
            return 0
        if code < 0:
            code = 128 - code
    return code


def s6_rc(args: list[str]) -> int:
    import getopt

    from overlayctl.client import ClientError

    usage = "usage: s6-rc [-u|-d|-D] change NAME... | [-a|-da] list | listall"
    try:
        options, rest = getopt.getopt(args, "uaDdv:t:l:bnp")
    except getopt.GetoptError as exc:
        return _die("s6-rc", f"{exc}; {usage}", EXIT_USAGE)
    flags = {flag for flag, _ in options}
    timeout = next((int(v) / 1000 for f, v in options if f == "-t" and v.isdigit()), 0) or None
    if not rest:
        return _die("s6-rc", usage, EXIT_USAGE)
    verb, names = rest[0], rest[1:]
    if verb in ("start", "stop"):
        flags.add("-u" if verb == "start" else "-d")
        verb = "change"
    try:
        with _client() as client:
            if verb == "change" and names:
                if "-d" in flags or "-D" in flags:
                    client.stop(names)
                    client.wait("down", names, timeout)
                else:
                    client.start(names)
                    client.wait("up", names, timeout)
                return 0
            if verb in ("list", "listall"):
                records = client.status(names if verb == "listall" else ())
                if verb == "list" and "-a" in flags:
                    wanted = "-d" not in flags
                    records = [r for r in records if (r["state"] in ACTIVE_STATES) == wanted]
                for record in records:
                    sys.stdout.write(f"{record['name']}\n")
                return 0
    except ClientError as exc:
        return _die("s6-rc", str(exc), 1)
    return _die("s6-rc", usage, EXIT_USAGE)


def _run(command: str, args: list[str]) -> int:
    if command in ("halt", "poweroff", "reboot"):
        return halt(command)
    handlers = {"printcontenv": printcontenv, "with-retries": with_retries, "s6-rc": s6_rc}
    handler = handlers.get(command)
    if handler is None:
        return _die("s6cmds", f"unknown command {command!r}", EXIT_USAGE)
    return handler(args)


def _entry(command: str) -> None:
    sys.exit(_run(command, sys.argv[1:]))


def halt_main() -> None:
    _entry("halt")


def poweroff_main() -> None:
    _entry("poweroff")


def reboot_main() -> None:
    _entry("reboot")


def printcontenv_main() -> None:
    _entry("printcontenv")


def with_retries_main() -> None:
    _entry("with-retries")


def s6_rc_main() -> None:
    _entry("s6-rc")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(_die("s6cmds", "usage: python -m overlayctl.s6cmds COMMAND [ARG...]", 100))
    sys.exit(_run(sys.argv[1], sys.argv[2:]))
