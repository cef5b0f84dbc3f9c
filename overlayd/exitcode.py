"""Reading an exit code from a file someone else wrote (`$OVERLAY_RUN_DIR/exitcode` and kin).

The file may have been planted: a symlink to /dev/zero, a FIFO nobody writes, a device, a
gigabyte of digits. So it is read only when it is a regular file, never through a symlink
(O_NOFOLLOW), opened with O_NONBLOCK (a FIFO swapped in after the check still cannot hang PID
1), and at most ``MAX_BYTES``. Its first line is the number, with an optional sign; it is
reduced modulo 256 however many digits it has, as a shell would truncate it. Anything else is
ignored with one warning line of bounded length.
"""

from __future__ import annotations

import os
import stat

from . import log

#: Largest exitcode file read; a larger one is ignored.
MAX_BYTES = 64 << 10
#: Characters of a bad file's content quoted in the warning.
QUOTED = 40
#: 10**8 is a multiple of 256, so a decimal number's last 8 digits decide it modulo 256.
_DIGITS_THAT_MATTER = 8


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _quote(text: str) -> str:
    return repr(text if len(text) <= QUOTED else text[:QUOTED] + "...")


def parse_exit_code(text: str) -> int | None:
    """``[+-]DIGITS`` modulo 256, or None when ``text`` is not that."""
    sign = -1 if text[:1] == "-" else 1
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or not (digits.isascii() and digits.isdigit()):
        return None
    return sign * int(digits[-_DIGITS_THAT_MATTER:]) % 256


def read_exitcode_file(path: str) -> int | None:
    """The exit code written in ``path``, or None when absent or unusable (with a warning)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warn(f"cannot read {path}: {exc.strerror}; ignored")
        return None
    if not stat.S_ISREG(info.st_mode):
        log.warn(f"{path} is {_kind(info.st_mode)}, not a regular file; ignored")
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warn(f"cannot read {path}: {exc.strerror}; ignored")
        return None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):  # swapped between lstat and open
            log.warn(f"{path} is {_kind(opened.st_mode)}, not a regular file; ignored")
            return None
        chunks = []
        size = 0
        while size <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        log.warn(f"cannot read {path}: {exc.strerror}; ignored")
        return None
    finally:
        os.close(fd)
    if size > MAX_BYTES:
        log.warn(f"{path} holds more than {MAX_BYTES} bytes; ignored")
        return None
    text = b"".join(chunks).decode("ascii", "replace").strip().split("\n", 1)[0].strip()
    if not text:
        return None
    code = parse_exit_code(text)
    if code is None:
        log.warn(f"{path} holds {_quote(text)}, not a number; ignored")
    return code
