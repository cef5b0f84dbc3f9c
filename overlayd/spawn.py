"""Starting children: process group or session, terminal, fds, cwd, environment, signals.

Children must start with the signal mask and dispositions overlayd itself was given, never with
Python's changes (SIGPIPE and SIGXFSZ ignored, SIGINT handled) nor overlayd's own handlers. So
`capture_original_signals()` runs before overlayd installs anything, and the child puts those
back between fork and exec. All signals stay blocked across the fork so that no handler of
overlayd's can run in the child, where it would write into overlayd's wakeup pipe.
"""

from __future__ import annotations

import _signal
import errno
import os

from protocol.records import record

from . import log
from .smallfile import read_small

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126

# Python ignores these before any of our code runs, so their original state is unknowable:
# they are given back at their defaults, which is what a container runtime starts PID 1 with.
_PYTHON_IGNORED = {_signal.SIGPIPE, _signal.SIGXFSZ}

_original_mask: set[int] = set()
_original_ignored: set[int] = set()
_spawn_sets: tuple[bytes, bytes] | None = None  # (mask, defaults): sigset_t bits for vspawn
# The C library's own signals given ignored (None: unknown, and children are forked, which
# leaves them as they are); only the posix_spawn way needs to know.
_libc_ignored: set[int] | None = set()
_interpreted: set[str] = set()  # bounded by the number of script files in the trees
_RESETTABLE = sorted(set(_signal.valid_signals()) - {_signal.SIGKILL, _signal.SIGSTOP})


def capture_original_signals() -> None:
    """Remember the blocked mask and ignored signals overlayd was started with.

    The ignored ones come from the kernel (one read of SigIgn), which also knows the C
    library's own signals (glibc's 32 and 33, outside valid_signals: Python cannot ask about
    them; GNU make, for one, starts every recipe with both ignored). Without /proc, Python's
    view of the valid signals is asked one by one, and those two stay unknown.
    """
    global _original_mask, _spawn_sets, _libc_ignored
    _spawn_sets = None
    _original_mask = set(_signal.pthread_sigmask(_signal.SIG_BLOCK, []))
    valid = set(_signal.valid_signals())
    unknowable = {*_PYTHON_IGNORED, _signal.SIGKILL, _signal.SIGSTOP}
    ignored = _kernel_ignored()
    _original_ignored.clear()
    if ignored is None:
        _libc_ignored = None
        for signum in valid - unknowable:
            try:
                if _signal.getsignal(signum) == _signal.SIG_IGN:
                    _original_ignored.add(signum)
            except (OSError, ValueError):
                pass
        return
    _original_ignored.update(ignored & valid - unknowable)
    _libc_ignored = ignored - valid


def _kernel_ignored() -> set[int] | None:
    """The signals this process ignores, from /proc/self/status; None when it cannot say."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"SigIgn:"):
                    bits = int(line.split()[1], 16)
                    return {n for n in range(1, 65) if bits >> (n - 1) & 1}
    except (OSError, ValueError, IndexError):
        pass
    return None


def original_mask() -> set[int]:
    return set(_original_mask)


def original_ignored() -> set[int]:
    return set(_original_ignored)


def find_executable(name: str, env: Mapping[str, str]) -> str | None:
    """PATH lookup as execvp does it, using the child's PATH."""
    if "/" in name:
        return name
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def script_argv(path: str, args: Sequence[str] = ()) -> tuple[list[str], str | None]:
    """How to run a script file: directly, or through its `#!` interpreter when not executable.

    s6-overlay v2 ran cont-init files without their execute bit and most v2 trees ship them
    0644, so such a file is run through the interpreter its `#!` line names (`/bin/sh` without
    one); the second value is then a warning to log, given once per file (not at every
    restart of a service); `_interpreted` holds the files already warned about.
    """
    if os.access(path, os.X_OK):
        return [path, *args], None
    interpreter = ["/bin/sh"]
    try:
        head = read_small(path, 512)  # a FIFO reads as empty
    except OSError as exc:
        return [path, *args], f"{path}: cannot read: {exc.strerror}"
    if head is None:
        return [path, *args], f"{path}: cannot read: {os.strerror(errno.ENOENT)}"
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", "replace").split()
        if words:
            interpreter = words
    warning = None
    if path not in _interpreted:
        _interpreted.add(path)
        warning = f"{path} is not executable; running it with {' '.join(interpreter)}"
    return [*interpreter, path, *args], warning


_ALL_SIGNALS = frozenset(map(int, _signal.valid_signals()))
# The C function under _signal.pthread_sigmask: the same call without turning each of the ~65
# signals of the returned mask into an enum, twice per spawn (a third of a spawn's cost in PID 1).
_sigmask = _signal.pthread_sigmask

# What spawn() was asked for, handed whole to the posix_spawn way and to the fork way.
_Start = record(
    "_Start",
    "argv env cwd new_session new_group foreground_tty stdin stdout stderr extra_fds",
)


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: str | None = None,
    new_session: bool = False,
    new_group: bool = False,
    foreground_tty: int | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    extra_fds: Mapping[int, int] | None = None,
) -> int:
    """Fork and exec `argv`; return the child's pid.

    In the child, a failure to exec prints one line naming the program and exits 127 (not
    found) or 126 (cannot execute), as shells and tini do. `extra_fds` maps child fd → parent
    fd (the notification-fd). Raises OSError when fork itself fails.
    """
    start = _Start(
        argv, env, cwd, new_session, new_group, foreground_tty, stdin, stdout, stderr,
        extra_fds or {},
    )
    pid = _vfork_spawn(start)
    if pid is not None:
        return pid
    blocked = _sigmask(_signal.SIG_SETMASK, _ALL_SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        _sigmask(_signal.SIG_SETMASK, blocked)
        raise
    if pid == 0:
        code = EXIT_CANNOT_EXECUTE
        try:
            code = _child(start)
        except BaseException as exc:  # never let the child fall back into overlayd's code
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.error(f"cannot start {argv[0]!r}: {detail}")
        finally:
            os._exit(code)
    _sigmask(_signal.SIG_SETMASK, blocked)
    if new_group and not new_session:
        try:
            os.setpgid(pid, pid)  # also done in the child; whichever runs first wins the race
        except OSError:
            pass
    return pid


def _vfork_spawn(start: _Start) -> int | None:
    """The same child as `_child` makes, started by posix_spawn (vspawn.py: no fork, so no
    copy-on-write of PID 1's pages); None when the fork path must do it instead.

    The fork path takes over when posix_spawn cannot give the same start (an originally
    ignored signal that overlayd now handles must be ignored in the child; no /proc at start,
    so the C library's own signals are of unknown state; a NUL in a string)
    and on every failure to set the child up or exec it, so that the child reports it as the
    fork path does: one line naming the program, exit 127 or 126.
    """
    from .vspawn import sigset, spawner

    (argv, env, cwd, new_session, new_group, foreground_tty, stdin, stdout, stderr,
     extra_fds) = start
    global _spawn_sets
    posix_spawn = spawner()
    if posix_spawn is None or _libc_ignored is None:
        return None
    if any(_handled(signum) for signum in _original_ignored):
        return None
    program = find_executable(argv[0], env)
    if program is None or _has_nul(argv, env):
        return None
    if cwd is not None and not program.startswith("/"):
        return None  # found from here; the fork way looks it up from `cwd`, as exec would
    if _spawn_sets is None:
        _spawn_sets = sigset(_original_mask), sigset(_all_but_ignored())
    wanted = {0: stdin, 1: stdout, 2: stderr, **extra_fds}
    wanted = {target: source for target, source in wanted.items() if source is not None}
    # A source that is also a target number could be overwritten before its own dup2 (or,
    # as its own target, keep its close-on-exec flag): the child is handed a copy instead.
    copies = {source: os.dup(source) for source in wanted.values() if source in wanted}
    try:
        return posix_spawn.spawn(
            program, argv, env, mask=_spawn_sets[0], defaults=_spawn_sets[1], cwd=cwd,
            new_session=new_session, new_group=new_group, terminal=foreground_tty,
            fds={target: copies.get(source, source) for target, source in wanted.items()},
        )
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.ENOMEM):
            raise  # the clone itself failed: a fork would too
        return None
    finally:
        for copy in copies.values():
            os.close(copy)


def _all_but_ignored() -> list[int]:
    """Every signal (the C library's internal ones too) but those overlayd was given ignored
    (posix_spawn leaves a C library's signal that is not in this set ignored)."""
    kept = {*_original_ignored, *(_libc_ignored or ()), _signal.SIGKILL, _signal.SIGSTOP}
    return [signum for signum in range(1, _signal.NSIG) if signum not in kept]


def _handled(signum: int) -> bool:
    return _signal.getsignal(signum) not in (_signal.SIG_IGN, None)


def _has_nul(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    return any("\0" in word for word in argv) or any(
        "\0" in key or "\0" in value for key, value in env.items()
    )


def _child(start: _Start) -> int:
    """Runs in the forked child; returns an exit code only when exec failed."""
    (argv, env, cwd, new_session, new_group, foreground_tty, stdin, stdout, stderr,
     extra_fds) = start
    if new_session:
        os.setsid()
    elif new_group:
        os.setpgid(0, 0)
    if foreground_tty is not None:
        try:
            os.tcsetpgrp(foreground_tty, os.getpid())
        except OSError:
            pass
    _arrange_fds(stdin, stdout, stderr, extra_fds)
    if cwd is not None:
        os.chdir(cwd)
    _signal.set_wakeup_fd(-1)
    for signum in _RESETTABLE:
        try:
            ignored = signum in _original_ignored
            _signal.signal(signum, _signal.SIG_IGN if ignored else _signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # signals reserved by libc
    program = find_executable(argv[0], env)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, _original_mask)
    if program is None:
        return _exec_failed(argv[0], errno.ENOENT)
    try:
        os.execve(program, list(argv), dict(env))
    except OSError as exc:
        return _exec_failed(argv[0], exc.errno or errno.EACCES)
    return EXIT_CANNOT_EXECUTE


def _arrange_fds(
    stdin: int | None, stdout: int | None, stderr: int | None, extra: Mapping[int, int]
) -> None:
    """dup2 the requested fds into place; everything else of overlayd's is close-on-exec."""
    wanted = {0: stdin, 1: stdout, 2: stderr, **extra}
    # First move every source out of the way of the targets, then dup2 into place.
    moved = {target: os.dup(source) for target, source in wanted.items() if source is not None}
    for target, source in moved.items():
        os.dup2(source, target, inheritable=True)
        os.close(source)


def _exec_failed(name: str, err: int) -> int:
    code = EXIT_NOT_FOUND if err == errno.ENOENT else EXIT_CANNOT_EXECUTE
    log.error(f"cannot run {name!r}: {os.strerror(err)}")
    return code


_devnull: int | None = None


def devnull() -> int:
    """One close-on-exec /dev/null fd for every child's stdin, opened once, not per spawn."""
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    return _devnull
