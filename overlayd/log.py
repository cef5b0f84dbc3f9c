"""Log lines on overlayd's stderr, prefixed `[overlayd]`.

Writes go straight to fd 2 with os.write so that nothing is buffered inside PID 1 and no line is
lost when overlayd exits. S6_VERBOSITY picks how much is said: 0 nothing, 1 warnings and errors,
2 (default) the boot and shutdown steps, 3+ debug lines too.
"""

from __future__ import annotations

import os

PREFIX = "[overlayd] "
_verbosity = 2


def set_verbosity(level: int) -> None:
    """Set how much is logged (S6_VERBOSITY)."""
    global _verbosity
    _verbosity = level


def _write(text: str) -> None:
    data = text.encode("utf-8", "backslashreplace")
    while data:
        try:
            written = os.write(2, data)
        except InterruptedError:
            continue
        except OSError:
            return  # stderr gone (closed pipe, full disk): PID 1 must not die of it
        data = data[written:]


def info(message: str) -> None:
    """A step of the boot or shutdown sequence."""
    if _verbosity >= 2:
        _write(PREFIX + message + "\n")


def warn(message: str) -> None:
    """Something went wrong but overlayd carries on."""
    if _verbosity >= 1:
        _write(PREFIX + "warning: " + message + "\n")


def error(message: str) -> None:
    """Something failed; the caller decides what happens next."""
    if _verbosity >= 1:
        _write(PREFIX + "error: " + message + "\n")


def debug(message: str) -> None:
    """Detail that only S6_VERBOSITY>=3 wants."""
    if _verbosity >= 3:
        _write(PREFIX + "debug: " + message + "\n")


def fatal(message: str) -> None:
    """overlayd cannot go on; always printed, even at S6_VERBOSITY=0."""
    _write(PREFIX + "fatal: " + message + "\n")


def exception(message: str) -> None:
    """A bug caught at the loop's edge: the message and the traceback, then carry on."""
    import traceback

    _write(PREFIX + "error: " + message + "\n" + traceback.format_exc())


def reopen() -> None:
    """fd 2 now points elsewhere (the catch-all took it, or gave the console back).

    Lines are written to fd 2 itself, so there is nothing to do here; a writer that keeps a
    descriptor of its own must let it go here and open the new fd 2 on its next line.
    """
