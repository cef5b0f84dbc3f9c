"""Starting a child without fork: the C library's posix_spawn.

Why not fork: a fork makes every page of PID 1 copy-on-write, and since reference counts
touch nearly every page, Python pays a fault for each page it uses afterwards: ~1,400 faults
(5-10 ms of CPU here) per spawn at 10 MB. glibc's and musl's posix_spawn clone the process
sharing its memory until the exec (as vfork), so nothing is copied.

Why not `os.posix_spawn`: it builds its signal sets with sigaddset, which refuses the C
library's internal signals (32 and 33 on glibc), and the C library then leaves those two
*ignored* in the child. Children must start with the dispositions overlayd was given, so the
default set is built here as raw bits, every signal that was not originally ignored included.
`os.posix_spawn` also has no way to set the child's directory or hand it the terminal; the C
library has both (`…_addchdir_np`, glibc ≥ 2.29 / musl; `…_addtcsetpgrp_np`, glibc ≥ 2.35).

Two ways to reach the C library, making the same calls in the same order:
- in the archive, its own C module `_overlayd_spawn` (tarball/spawnmodule.c): ~17 KB that
  needs only the C library;
- elsewhere (a pip install), clib.py (`_ctypes`, not `ctypes`): ~1 ms more at PID 1's first
  spawn (loading _ctypes and libffi, declaring the C types) and ~0.25 MB more of PID 1.
When a function is missing, `spawner()` is None and spawn.py forks.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from .clib import Function

# <spawn.h> flags: the same values in glibc and musl.
SETPGROUP = 0x02
SETSIGDEF = 0x04
SETSIGMASK = 0x08
SETSID = 0x80
# The opaque structs are 336 (attributes) and 80 (file actions) bytes in glibc and musl on
# x86_64; the buffers are larger so that no C library's layout can overrun them.
STRUCT_BYTES = 1024
SIGSET_BYTES = 128  # sigset_t: 1024 bits in glibc (musl's is the same size)


def sigset(signals: Iterable[int]) -> bytes:
    """A sigset_t with exactly these signals' bits (no sigaddset: it refuses 32 and 33)."""
    bits = 0
    for signum in signals:
        bits |= 1 << (signum - 1)
    return bits.to_bytes(SIGSET_BYTES, "little")


def _flags(new_session: bool, new_group: bool) -> int:
    flags = SETSIGMASK | SETSIGDEF
    if new_session:
        flags |= SETSID
    elif new_group:
        flags |= SETPGROUP
    return flags


class _Spawner:
    """posix_spawn with the attributes overlayd's children need (see spawn.py); `_spawn` is
    how one way reaches the C library."""

    def spawn(
        self,
        program: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        mask: bytes,
        defaults: bytes,
        cwd: str | None,
        new_session: bool,
        new_group: bool,
        terminal: int | None,
        fds: Mapping[int, int],
    ) -> int:
        """The child's pid; OSError with the C library's error (clone, a file action, exec)."""
        return self._spawn(program, argv, env, _flags(new_session, new_group), mask, defaults,
                           cwd, terminal, fds)

    def _spawn(self, program: str, argv: Sequence[str], env: Mapping[str, str], flags: int,
               mask: bytes, defaults: bytes, cwd: str | None, terminal: int | None,
               fds: Mapping[int, int]) -> int:
        raise NotImplementedError


class NativeSpawner(_Spawner):
    """Through the archive's C module `_overlayd_spawn`."""

    def __init__(self, module: object) -> None:
        self.module = module

    def _spawn(self, program: str, argv: Sequence[str], env: Mapping[str, str], flags: int,
               mask: bytes, defaults: bytes, cwd: str | None, terminal: int | None,
               fds: Mapping[int, int]) -> int:
        return self.module.spawn(  # type: ignore[attr-defined]
            os.fsencode(program), [os.fsencode(arg) for arg in argv],
            [os.fsencode(f"{key}={value}") for key, value in env.items()],
            flags, mask, defaults, -1 if terminal is None else terminal, list(fds.items()),
            None if cwd is None else os.fsencode(cwd),
        )


class Spawner(_Spawner):
    """Through `_ctypes` (clib.py)."""

    NAMES = (
        "posix_spawn", "posix_spawnattr_init", "posix_spawnattr_destroy",
        "posix_spawnattr_setflags", "posix_spawnattr_setpgroup", "posix_spawnattr_setsigmask",
        "posix_spawnattr_setsigdefault", "posix_spawn_file_actions_init",
        "posix_spawn_file_actions_destroy", "posix_spawn_file_actions_adddup2",
        "posix_spawn_file_actions_addchdir_np",
    )

    def __init__(self, functions: dict[str, Function], tcsetpgrp: Function | None) -> None:
        self.f = functions
        self.tcsetpgrp = tcsetpgrp  # None before glibc 2.35 (and on musl)

    def _spawn(self, program: str, argv: Sequence[str], env: Mapping[str, str], flags: int,
               mask: bytes, defaults: bytes, cwd: str | None, terminal: int | None,
               fds: Mapping[int, int]) -> int:
        from .clib import Char, CharP, Int, byref

        f = self.f
        attr = (Char * STRUCT_BYTES)()
        actions = (Char * STRUCT_BYTES)()
        sigset_type = Char * SIGSET_BYTES
        _check(f["posix_spawnattr_init"](attr))
        _check(f["posix_spawn_file_actions_init"](actions))
        try:
            if flags & SETPGROUP:
                _check(f["posix_spawnattr_setpgroup"](attr, 0))
            _check(f["posix_spawnattr_setflags"](attr, flags))
            _check(f["posix_spawnattr_setsigmask"](attr, sigset_type.from_buffer_copy(mask)))
            _check(f["posix_spawnattr_setsigdefault"](
                attr, sigset_type.from_buffer_copy(defaults)))
            if terminal is not None:
                if self.tcsetpgrp is None:
                    raise OSError(0, "this C library cannot hand a spawned child the terminal")
                _check(self.tcsetpgrp(actions, terminal))
            for target, source in fds.items():
                _check(f["posix_spawn_file_actions_adddup2"](actions, source, target))
            if cwd is not None:
                _check(f["posix_spawn_file_actions_addchdir_np"](actions, os.fsencode(cwd)))
            pid = Int()
            _check(f["posix_spawn"](
                byref(pid), os.fsencode(program), actions, attr, _strings(CharP, argv),
                _strings(CharP, (f"{key}={value}" for key, value in env.items())),
            ))
            return pid.value
        finally:
            f["posix_spawn_file_actions_destroy"](actions)
            f["posix_spawnattr_destroy"](attr)


def _check(error: int) -> None:
    """posix_spawn* return the error number itself (0: success)."""
    if error:
        raise OSError(error, os.strerror(error))


def _strings(char_p: type, items: Iterable[str]) -> object:
    encoded = [os.fsencode(item) for item in items]
    return (char_p * (len(encoded) + 1))(*encoded, None)  # type: ignore[operator]


_spawner: NativeSpawner | Spawner | bool | None = False  # False: not looked up yet


def spawner() -> NativeSpawner | Spawner | None:
    """The C library's posix_spawn, or None when a function it needs is missing."""
    global _spawner
    if _spawner is False and "_overlayd_boot" in sys.modules:  # started by the archive's launcher
        try:
            import _overlayd_spawn  # type: ignore[import-not-found]
        except ImportError:
            pass  # (a damaged extraction: the launcher's check names it at the next start)
        else:
            _spawner = NativeSpawner(_overlayd_spawn)
    if _spawner is False:
        from .clib import function

        functions = {name: function(name) for name in Spawner.NAMES}
        present = {name: fn for name, fn in functions.items() if fn is not None}
        _spawner = (
            Spawner(present, function("posix_spawn_file_actions_addtcsetpgrp_np"))
            if len(present) == len(functions) else None
        )
    return _spawner  # type: ignore[return-value]
