"""Oneshot `up`/`down` files: execline's lexer, and how to run what it yields.

s6-rc-compile lexes each oneshot script with execlineb's rules at compile time; s6-rc later
execs the words. We do the same: `lex()` turns the file into the argv execlineb would build
(words, "quoted strings" with their escapes, backslashes, `#` comments, `{ }` blocks encoded
as execline's argv syntax), so a plain command line runs with no execline installed. Only
when the words need execline's own programs (a block, `importas`, …) is `execlineb -P FILE`
used, or, without execlineb, one error naming the file.

A shebang line is a `#` comment to execlineb, so it is ignored; a file that is only comments
yields no words, which succeeds as a no-op (as `execlineb` exits 0 on an empty argv).
"""

from __future__ import annotations

import errno
import os

from .smallfile import read_small

MAX_SCRIPT_BYTES = 64 * 1024  # an up/down file is one command line; more is refused

WHITESPACE = b" \t\n\r"
# Bytes that make a line more than words split on WHITESPACE: quotes, escapes, comments,
# braces, and the two bytes bytes.split() would also take for whitespace.
NOT_PLAIN = (b'"', b"\\", b"#", b"{", b"}", b"\x0b", b"\x0c")
SIMPLE_ESCAPES = {ord("a"): 7, ord("b"): 8, ord("t"): 9, ord("n"): 10, ord("v"): 11,
                  ord("f"): 12, ord("r"): 13}

# execline programs that only make sense run by execline (never found outside its bin dir).
EXECLINE_PROGRAMS = frozenset((
    "background", "backtick", "case", "cd", "define", "dollarat", "elgetopt", "elgetpositionals",
    "elglob", "eltest", "emptyenv", "envfile", "exec", "execline-cd", "execline-umask", "exit",
    "export", "fdblock", "fdclose", "fdmove", "fdreserve", "fdswap", "forbacktickx", "foreground",
    "forstdin", "forx", "getcwd", "getpid", "heredoc", "homeof", "if", "ifelse", "ifte",
    "ifthenelse", "importas", "loopwhilex", "multidefine", "multisubstitute", "pipeline",
    "piperw", "redirfd", "runblock", "shift", "trap", "tryexec", "unexport", "wait", "withstdinas",
))


# Where images keep execlineb off PATH: s6-overlay's /command (also where our archive puts it).
EXECLINEB_ELSEWHERE = ("/command/execlineb",)


class ExeclineSyntaxError(ValueError):
    """The text is not valid execline; the message names the file and the problem."""


def _number(data: bytes, i: int, digits: bytes, base: int, most: int) -> tuple[int, int]:
    """Read up to `most` digits of `base` from data[i:]; returns (value, next index)."""
    value = 0
    count = 0
    while count < most and i < len(data) and data[i] in digits:
        value = value * base + int(chr(data[i]), base)
        i += 1
        count += 1
    return (value if count else -1), i


def _quoted_escape(data: bytes, i: int) -> tuple[bytes, int]:
    """An escape inside a quoted string; data[i] is the byte after the backslash."""
    c = data[i]
    if c == ord("\n"):
        return b"", i + 1  # a backslashed newline disappears
    if c in SIMPLE_ESCAPES:
        return bytes((SIMPLE_ESCAPES[c],)), i + 1
    if c == ord("0"):
        if data[i + 1 : i + 2] == b"x":
            value, j = _number(data, i + 2, b"0123456789abcdefABCDEF", 16, 2)
        else:
            value, j = _number(data, i + 1, b"01234567", 8, 3)
    elif ord("1") <= c <= ord("9"):
        value, j = _number(data, i, b"0123456789", 10, 3)
    else:
        return bytes((c,)), i + 1
    if value <= 0 or value > 255:
        raise ValueError("a numeric escape must give a byte from 1 to 255")
    return bytes((value,)), j


def lex_bytes(data: bytes) -> tuple[list[bytes], bool]:
    """Words as execlineb builds them, and whether a `{ }` block was seen.

    Raises ValueError (without the file name) on a syntax error.
    """
    if not any(byte in data for byte in NOT_PLAIN):  # the common `/path/to/script` line
        return data.split(), False
    return lex_in_full(data)


def lex_in_full(data: bytes) -> tuple[list[bytes], bool]:
    """lex_bytes byte by byte, for any text (lex_bytes's fast path gives the same words)."""
    words: list[bytes] = []
    level = 0
    has_block = False
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        if c in WHITESPACE:
            i += 1
            continue
        if c == ord("#"):  # a comment: only where a word would start
            end = data.find(b"\n", i)
            i = n if end < 0 else end + 1
            continue
        word = bytearray()
        plain = True  # no quote or escape: only a plain `{` or `}` is a brace
        while i < n and data[i] not in WHITESPACE:
            c = data[i]
            if c == ord('"'):
                plain = False
                i += 1
                while True:
                    if i >= n:
                        raise ValueError("a quoted string is not closed")
                    c = data[i]
                    if c == ord('"'):
                        i += 1
                        break
                    if c == ord("\\"):
                        if i + 1 >= n:
                            raise ValueError("a quoted string is not closed")
                        piece, i = _quoted_escape(data, i + 1)
                        word += piece
                        continue
                    word.append(c)
                    i += 1
            elif c == ord("\\"):
                if i + 1 >= n or data[i + 1] == ord("\n"):
                    i += 1  # a backslash ending a line (or the input) is ignored
                    continue
                plain = False
                word.append(data[i + 1])
                i += 2
            else:
                word.append(c)
                i += 1
        if plain and word == b"{":
            level += 1
            has_block = True
            continue
        if plain and word == b"}":
            level -= 1
            if level < 0:
                raise ValueError("unmatched }")
            word = bytearray()
        elif not word and plain:
            continue  # only ignored backslashes: no word
        words.append(b" " * level + bytes(word))
    if level:
        raise ValueError("unmatched {")
    return words, has_block


def lex_file(path: str) -> tuple[list[str], bool]:
    """Lex an up/down file; ExeclineSyntaxError names the file on any problem."""
    try:
        data = read_small(path, MAX_SCRIPT_BYTES + 1)  # a FIFO reads as empty
    except OSError as exc:
        raise ExeclineSyntaxError(f"{path}: cannot read: {exc.strerror}") from None
    if data is None:
        raise ExeclineSyntaxError(f"{path}: cannot read: {os.strerror(errno.ENOENT)}")
    if len(data) > MAX_SCRIPT_BYTES:
        raise ExeclineSyntaxError(f"{path}: longer than {MAX_SCRIPT_BYTES} bytes")
    if b"\0" in data:
        raise ExeclineSyntaxError(f"{path}: contains a NUL byte")
    try:
        words, has_block = lex_bytes(data)
    except ValueError as exc:
        raise ExeclineSyntaxError(f"{path}: execline syntax error: {exc}") from None
    return [os.fsdecode(w) for w in words], has_block


def _on_path(program: str, path_env: str) -> bool:
    if "/" in program:
        return os.access(program, os.X_OK)
    for directory in path_env.split(":"):
        if directory and os.access(os.path.join(directory, program), os.X_OK):
            return True
    return False


class NeedsExecline(Exception):
    """The command line needs execline, which is not installed; the message says why."""


def command_for(path: str, words: list[str], has_block: bool, path_env: str) -> list[str]:
    """The argv that runs a lexed oneshot script ([] = nothing to run, success).

    Plain words are exec'd as they are. Words that need execline (a block, or a first word
    that is an execline program not on PATH) go through `execlineb -P FILE`; without
    execlineb that is NeedsExecline naming the file.
    """
    if not words:
        return []
    program = words[0]
    needs = has_block or (program in EXECLINE_PROGRAMS and not _on_path(program, path_env))
    if not needs:
        return list(words)
    for candidate in ("execlineb", *EXECLINEB_ELSEWHERE):
        if _on_path(candidate, path_env):
            return [candidate, "-P", path]
    why = "a { } block" if has_block else f"the execline program {program!r}"
    raise NeedsExecline(f"{path} needs execline ({why}) and execlineb is not installed")
