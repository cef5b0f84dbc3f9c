"""Oneshot up/down files lexed with execline's rules, as s6-rc-compile lexes them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlayd.execline_lex import (
    NeedsExecline,
    command_for,
    lex_bytes,
    lex_file,
    lex_in_full,
)

# (script text, words execlineb builds, a block was seen)
CASES = [
    ("/etc/s6-overlay/s6-rc.d/init-adduser/run", ["/etc/s6-overlay/s6-rc.d/init-adduser/run"],
     False),
    ("# This file doesn't do anything, it's just the end of the init process\n", [], False),
    ("#!/command/execlineb -P\n/usr/bin/prog arg\n", ["/usr/bin/prog", "arg"], False),
    ("a#b c", ["a#b", "c"], False),
    ("a #b c\nd", ["a", "d"], False),
    ('a"b c"d e', ["ab cd", "e"], False),
    ('"x\\ty" \\q \\\\', ["x\ty", "q", "\\"], False),
    ('x "\\0x41\\101\\0101" y', ["x", "AeA", "y"], False),
    ("a \\{ b", ["a", "{", "b"], False),
    ('a "{" b "}"', ["a", "{", "b", "}"], False),
    ("a{ b}", ["a{", "b}"], False),
    ('"a\\\nb"', ["ab"], False),
    ("a \\\nb", ["a", "b"], False),
    ('a "" b', ["a", "", "b"], False),
    ('"#x" #y', ["#x"], False),
    ('"\\99" "\\012" "\\1a"', ["c", "\n", "\x01a"], False),
    ("a\tb\r\nc", ["a", "b", "c"], False),
    ("{ a } b", [" a", "", "b"], True),
    ("foreground { { a } } b", ["foreground", "  a", " ", "", "b"], True),
    ("", [], False),
]

ERRORS = [
    ('"abc', "not closed"),
    ("}", "unmatched }"),
    ("{ a", "unmatched {"),
    ('"\\0"', "numeric escape"),
    ('"\\256"', "numeric escape"),
    ('"\\09"', "numeric escape"),
    ('"\\400"', "numeric escape"),
]


@pytest.mark.parametrize(("text", "words", "block"), CASES)
def test_lexed_words_match_execlineb_rules(text: str, words: list[str], block: bool) -> None:
    got, has_block = lex_bytes(text.encode())
    assert [w.decode() for w in got] == words
    assert has_block is block


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_syntax_errors_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lex_bytes(text.encode())


@pytest.mark.skipif(shutil.which("execlineb") is None, reason="execline is not installed")
@pytest.mark.parametrize(("text", "words", "block"), CASES)
def test_same_words_as_the_real_execlineb(text: str, words: list[str], block: bool) -> None:
    """Differential: the argv the real execlineb execs is the one we build."""
    printer = f'{sys.executable} -c "import sys,json;print(json.dumps(sys.argv[1:]))"\n'
    # The printer must be the first words: strip our comment-only/shebang cases of nothing.
    proc = subprocess.run(
        ["execlineb", "-P", "-c", printer + text], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == words


def test_byte_escape_above_127_round_trips_to_the_same_byte(tmp_path: Path) -> None:
    script = tmp_path / "up"
    script.write_bytes(b'prog "\\0377"\n')
    words, _ = lex_file(str(script))
    assert words[1].encode("utf-8", "surrogateescape") == b"\xff"


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    script = tmp_path / "up"
    script.write_text('echo "unclosed\n')
    with pytest.raises(ValueError, match=rf"{script}: execline syntax error: .*not closed"):
        lex_file(str(script))


def test_plain_command_line_runs_as_words_without_execline() -> None:
    assert command_for("/x/up", ["/bin/echo", "hi"], False, "/bin") == ["/bin/echo", "hi"]
    assert command_for("/x/up", [], False, "/bin") == []


def test_block_without_execlineb_is_one_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("overlayd.execline_lex.EXECLINEB_ELSEWHERE", ())
    with pytest.raises(NeedsExecline, match=r"/x/up needs execline .*block.* not installed"):
        command_for("/x/up", ["foreground", " a", "", "b"], True, str(tmp_path))
    with pytest.raises(NeedsExecline, match=r"/x/up needs execline .*'importas'"):
        command_for("/x/up", ["importas", "X", "X", "b"], False, str(tmp_path))


def test_block_with_execlineb_runs_it_with_dash_p(tmp_path: Path) -> None:
    fake = tmp_path / "execlineb"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    argv = command_for("/x/up", ["foreground", " a", "", "b"], True, str(tmp_path))
    assert argv == ["execlineb", "-P", "/x/up"]



# Pieces of lines: plain words, execline's whitespace, bytes that are whitespace to some
# splitter but not to execline, and execline's special bytes.
PIECES = [b"/etc/s6-overlay/run", b"arg", b" ", b"\t", b"\n", b"\r", b"\xc3\xa9", b"\x1c",
          b"\x85", b"\xa0", b"\x0b", b"\x0c", b"$x", b"'q'", b"a=b", b"{", b"}", b"#", b'"',
          b"\\"]


@given(st.lists(st.sampled_from(PIECES), max_size=12))
def test_the_fast_path_for_plain_lines_gives_the_same_words_as_the_full_lexer(
    parts: list[bytes],
) -> None:
    data = b"".join(parts)
    try:
        expected = lex_in_full(data)
    except ValueError:
        with pytest.raises(ValueError):
            lex_bytes(data)
        return
    assert lex_bytes(data) == expected
