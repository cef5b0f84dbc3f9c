"""Calling the C library from PID 1 through `_ctypes`, the C module under `ctypes`.

`import ctypes` costs ~4 ms and 140 page faults at every boot; the module itself costs
~0.3 ms. The handful of C types overlayd's calls need (int, char *, char) are declared here,
and functions are looked up in the process's own C library (`dlopen(NULL)`). Used by
vspawn.py (posix_spawn) and dirwatch.py (inotify).
"""

from __future__ import annotations

import _ctypes
import os


class Int(_ctypes._SimpleCData):
    _type_ = "i"


class CharP(_ctypes._SimpleCData):
    _type_ = "z"


class Char(_ctypes._SimpleCData):
    _type_ = "c"


class Function(_ctypes.CFuncPtr):
    """A C function returning int; errno is kept for `errno()` after each call."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = Int


class _Libc:
    """The handle CFuncPtr looks symbols up in (it reads `_handle`)."""

    def __init__(self) -> None:
        self._handle = _ctypes.dlopen(None, os.RTLD_NOW)


_libc: _Libc | None = None


def function(name: str) -> Function | None:
    """The C library's function `name`, or None when this C library has none."""
    global _libc
    if _libc is None:
        _libc = _Libc()
    try:
        return Function((name, _libc))
    except AttributeError:
        return None


def errno() -> int:
    """errno as the last Function call left it."""
    return _ctypes.get_errno()


byref = _ctypes.byref
