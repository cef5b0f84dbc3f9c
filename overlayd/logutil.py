"""`logutil-service [-f FIFO] LOGDIR`: s6-overlay's logger for `log/run` and v3 consumers.

As s6-overlay's: reads stdin (or, with `-f`, the FIFO, opened without waiting for a writer
and held open so that writers may come and go),
drops to `nobody` (65534:65534 when there is no such user) when run as root, clears the
environment, and execs `s6-log -b -- $S6_LOGGING_SCRIPT LOGDIR` (default script
`n20 s1000000 T`). LOGDIR must be writable (or creatable) by nobody.
"""

from __future__ import annotations

import os
import sys

from .logsettings import PACKAGE_HINT, script_words

USAGE = "usage: logutil-service [-f FIFO] LOGDIR"
NOBODY = 65534


def _fail(message: str, code: int) -> int:
    print(f"logutil-service: {message}", file=sys.stderr, flush=True)
    return code


def parse(args: list[str]) -> tuple[str | None, str] | None:
    """(fifo, logdir), or None for a usage error."""
    fifo = None
    if args[:1] == ["-f"] and len(args) >= 2:
        fifo, args = args[1], args[2:]
    elif args[:1] and args[0].startswith("-f") and len(args[0]) > 2:
        fifo, args = args[0][2:], args[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if len(args) != 1 or not args[0]:
        return None
    return fifo, args[0]


def _drop_to_nobody() -> None:
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        uid = gid = NOBODY
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def _which(name: str) -> str | None:
    for directory in (os.environ.get("PATH") or os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _read_fifo(fifo: str) -> None:
    """The FIFO on stdin, without waiting for a writer; a write end of it is kept open too
    (an inherited fd), so writers may come and go without s6-log ever seeing EOF, as the
    fdholder of s6-overlay v2 ensured. s6-log then stops only on a signal."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    holder = os.open(fifo, os.O_WRONLY)  # cannot block: there is a reader
    os.set_inheritable(holder, True)
    os.set_blocking(fd, True)
    os.dup2(fd, 0)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parsed = parse(list(sys.argv[1:] if argv is None else argv))
    if parsed is None:
        return _fail(USAGE, 100)
    fifo, logdir = parsed
    s6_log = _which("s6-log")
    if s6_log is None:
        return _fail(f"s6-log is not in PATH: {PACKAGE_HINT}", 127)
    script = script_words(os.environ.get("S6_LOGGING_SCRIPT"))
    if fifo is not None:
        try:
            _read_fifo(fifo)
        except OSError as exc:
            return _fail(f"cannot open {fifo}: {exc.strerror}", 111)
    if os.geteuid() == 0:
        try:
            _drop_to_nobody()
        except OSError as exc:
            return _fail(f"cannot drop to nobody: {exc.strerror}", 111)
    try:
        os.execve(s6_log, [s6_log, "-b", "--", *script, logdir], {})
    except OSError as exc:
        return _fail(f"cannot run {s6_log}: {exc.strerror}", 126)
    return 126


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
