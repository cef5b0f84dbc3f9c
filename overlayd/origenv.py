"""The environment overlayd was given, without what Python added at start-up (DESIGN §2).

With `LANG` unset, `C`, or naming a locale that is not installed, CPython coerces the C locale
(PEP 538) and puts `LC_CTYPE=C.UTF-8` into its own environment before any of our code runs;
saved into container_environment and passed on, it would reach every child. The kernel keeps
the environment block exactly as exec gave it, readable at /proc/self/environ, so the value
we see is compared with that one: a variable the original did not have is removed, one it had
with another value is put back. Without /proc nothing is changed (no guess is better than a
wrong one: a user may set LC_CTYPE=C.UTF-8 on purpose).
"""

from __future__ import annotations

import os

#: The names PEP 538 may add, with the values it may add.
COERCED = {"LC_CTYPE": ("C.UTF-8", "C.utf8", "UTF-8")}


def original_environ(path: str = "/proc/self/environ") -> dict[bytes, bytes] | None:
    """The environment block as exec gave it, or None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    result: dict[bytes, bytes] = {}
    for entry in data.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep and name not in result:
            result[name] = value
    return result


def undo_locale_coercion(environ: os._Environ[str] | dict[str, str] = os.environ,
                         original: dict[bytes, bytes] | None = None) -> list[str]:
    """Undo what PEP 538 added to `environ`; returns the names it changed."""
    suspects = [n for n, values in COERCED.items() if environ.get(n) in values]
    if not suspects:
        return []
    if original is None:
        original = original_environ()
        if original is None:
            return []
    changed = []
    for name in suspects:
        before = original.get(os.fsencode(name))
        if before is None:
            del environ[name]
        elif os.fsdecode(before) != environ[name]:
            environ[name] = os.fsdecode(before)
        else:
            continue
        changed.append(name)
    return changed
