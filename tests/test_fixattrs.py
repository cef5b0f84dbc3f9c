"""fix-attrs.d: line parsing, account resolution, and what lands on disk."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from overlayd import fixattrs
from overlayd.fixattrs import (
    Account,
    Applied,
    FixAttrsError,
    Rule,
    apply_rule,
    parse_line,
    resolve_account,
    run_fixattrs,
)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="chown to other ids needs root")
SRC = "/etc/fix-attrs.d/10-x"
# Lets the mode tests run unprivileged too: chown to ourselves is allowed.
ME = f"{os.geteuid()}:{os.getegid()}"


def _unknown_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return True
    return False


def _unknown_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return True
    return False


assert _unknown_user("nosuchuser") and _unknown_group("nosuchgroup")


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def owner(path: Path | str) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def rule(line: str) -> Rule:
    parsed = parse_line(line, SRC, 3)
    assert parsed is not None
    return parsed


class Log(list):
    """Collects log lines; callable like the real logger."""

    def __call__(self, message: str) -> None:
        assert isinstance(message, str) and "\n" not in message
        self.append(message)

    def text(self) -> str:
        return "\n".join(self)


@pytest.fixture
def log() -> Log:
    return Log()


def make_tree(top: Path) -> dict[str, Path]:
    """top/{f1, sub/{f2, subsub/f3}}, all with modes that no rule uses."""
    (top / "sub" / "subsub").mkdir(parents=True)
    paths = {
        "top": top,
        "f1": top / "f1",
        "sub": top / "sub",
        "f2": top / "sub" / "f2",
        "subsub": top / "sub" / "subsub",
        "f3": top / "sub" / "subsub" / "f3",
    }
    for name, p in paths.items():
        if name.startswith("f"):
            p.write_text(name)
            p.chmod(0o644)
        else:
            p.chmod(0o755)
    return paths


# ----------------------------------------------------------------------- parse table


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "/var/lib/mysql true mysql,999:999 0600 0700",
            Rule(
                "/var/lib/mysql",
                True,
                Account("mysql,999:999", "mysql", None, 999, 999),
                0o600,
                0o700,
                SRC,
                3,
            ),
        ),
        (
            "/srv/www false root:root 644 755",
            Rule("/srv/www", False, Account("root:root", "root", "root"), 0o644, 0o755, SRC, 3),
        ),
        (
            "\t/opt/app/*   TRUE  1000:1000  -  -  \n",
            Rule("/opt/app/*", True, Account("1000:1000", 1000, 1000), None, None, SRC, 3),
        ),
        (
            "/usr/bin/thing false daemon:unexisting,3:4 4755 0",
            Rule(
                "/usr/bin/thing",
                False,
                Account("daemon:unexisting,3:4", "daemon", "unexisting", 3, 4),
                0o4755,
                0,
                SRC,
                3,
            ),
        ),
        (
            "/x false nobody:0 07777 - # trailing comment",
            Rule("/x", False, Account("nobody:0", "nobody", 0), 0o7777, None, SRC, 3),
        ),
        ("", None),
        ("   \t  \n", None),
        ("# a comment", None),
        ("#/var/lib true root 0600 0700", None),
        ("    # indented comment", None),
    ],
)
def test_parse_valid(line: str, expected: Rule | None) -> None:
    assert parse_line(line, SRC, 3) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/x true root 0644", "expected 5 fields (PATH RECURSE ACCOUNT FMODE DMODE), got 4"),
        (
            "/x true root 0644 0755 extra",
            "expected 5 fields (PATH RECURSE ACCOUNT FMODE DMODE), got 6",
        ),
        ("/x true #root 0644 0755", "expected 5 fields (PATH RECURSE ACCOUNT FMODE DMODE), got 2"),
        ("var/lib true root 0644 0755", "path 'var/lib' is not absolute"),
        ("/x yes root 0644 0755", "recurse 'yes' is not true or false"),
        ("/x true root rwx 0755", "mode 'rwx' is not octal"),
        ("/x true root 0644 0899", "mode '0899' is not octal"),
        ("/x true root 0o644 0755", "mode '0o644' is not octal"),
        ("/x true root 17777 0755", "mode '17777' is out of range (at most 7777)"),
        ("/x true :root 0644 0755", "account ':root' has no user"),
        ("/x true root: 0644 0755", "account 'root:' has an empty group"),
        ("/x true a:b:c 0644 0755", "account 'a:b:c' has more than one ':'"),
        ("/x true mysql,999 0644 0755", "account 'mysql,999': fallback '999' is not uid:gid"),
        ("/x true u,a:b 0644 0755", "account 'u,a:b': fallback 'a:b' is not uid:gid"),
        ("/x true u,1:2:3 0644 0755", "account 'u,1:2:3': fallback '1:2:3' is not uid:gid"),
        ("/x true u,1:2,3:4 0644 0755", "account 'u,1:2,3:4': fallback '1:2,3:4' is not uid:gid"),
        ("/x true 4294967295 0644 0755", "uid '4294967295' is out of range"),
        ("/x true u:g,1:99999999999 0644 0755", "fallback gid '99999999999' is out of range"),
    ],
)
def test_parse_errors_name_file_and_line(line: str, message: str) -> None:
    with pytest.raises(FixAttrsError) as info:
        parse_line(line, SRC, 3)
    assert str(info.value) == f"{SRC} line 3: {message}"


# ------------------------------------------------------------------ account resolution


@pytest.mark.parametrize(
    ("account", "ids"),
    [
        ("root:root", (0, 0)),
        ("root", (0, 0)),  # group omitted: the user's primary group
        ("0:0", (0, 0)),
        ("nosuchuser:nosuchgroup,4242:4343", (4242, 4343)),
        ("nosuchuser,4242:4343", (4242, 4343)),
        ("root:nosuchgroup,4242:4343", (0, 4343)),  # each part falls back on its own
        ("nosuchuser:root,4242:4343", (4242, 0)),
        ("root,4242:4343", (0, 0)),  # resolves: fallback unused
        ("4242:4343", (4242, 4343)),  # numeric: used as is
        ("4242", (4242, -1)),  # no passwd entry, no fallback: group left alone
        ("4242,1:4343", (4242, 4343)),
    ],
)
def test_resolve_account(account: str, ids: tuple[int, int]) -> None:
    assert resolve_account(rule(f"/x false {account} - -").account) == ids


@pytest.mark.parametrize(
    ("account", "message"),
    [
        ("nosuchuser", "account 'nosuchuser': unknown user 'nosuchuser' and no fallback uid:gid"),
        (
            "root:nosuchgroup",
            "account 'root:nosuchgroup': unknown group 'nosuchgroup' and no fallback uid:gid",
        ),
    ],
)
def test_unresolvable_account_is_an_error_at_apply_time(
    tmp_path: Path, log: Log, account: str, message: str
) -> None:
    target = tmp_path / "f"
    target.write_text("")
    r = rule(f"{target} false {account} 0600 -")  # parsing is fine: names may come later
    with pytest.raises(FixAttrsError) as info:
        apply_rule(r, False, log)
    assert str(info.value) == f"{SRC} line 3: {message}"
    assert mode(target) != 0o600


# -------------------------------------------------------------------------- applying


def test_recursive_sets_file_and_dir_modes(tmp_path: Path, log: Log) -> None:
    t = make_tree(tmp_path / "data")
    changed = apply_rule(rule(f"{t['top']} true {ME} 0600 0700"), False, log)
    assert isinstance(changed, int) and isinstance(changed, Applied)
    assert (changed, changed.errors) == (6, 0)
    for name in ("top", "sub", "subsub"):
        assert mode(t[name]) == 0o700, name
    for name in ("f1", "f2", "f3"):
        assert mode(t[name]) == 0o600, name
    assert log == []
    # Nothing left to do the second time: unchanged paths are not touched.
    assert apply_rule(rule(f"{t['top']} true {ME} 0600 0700"), False, log) == 0


def test_without_recursion_only_the_path_itself(tmp_path: Path, log: Log) -> None:
    t = make_tree(tmp_path / "data")
    assert apply_rule(rule(f"{t['top']} false {ME} 0600 0700"), False, log) == 1
    assert mode(t["top"]) == 0o700
    assert mode(t["f1"]) == 0o644 and mode(t["sub"]) == 0o755


def test_file_gets_fmode_directory_gets_dmode(tmp_path: Path, log: Log) -> None:
    t = make_tree(tmp_path / "data")
    apply_rule(rule(f"{t['f1']} false {ME} 0640 0711"), False, log)
    apply_rule(rule(f"{t['sub']} false {ME} 0640 0711"), False, log)
    assert mode(t["f1"]) == 0o640 and mode(t["sub"]) == 0o711


def test_dash_keeps_the_mode(tmp_path: Path, log: Log) -> None:
    t = make_tree(tmp_path / "data")
    t["f2"].chmod(0o751)
    apply_rule(rule(f"{t['top']} true {ME} - 0750"), False, log)
    assert mode(t["f1"]) == 0o644 and mode(t["f2"]) == 0o751
    assert mode(t["sub"]) == 0o750
    t = make_tree(tmp_path / "other")
    apply_rule(rule(f"{t['top']} true {ME} 0600 -"), False, log)
    assert mode(t["f1"]) == 0o600 and mode(t["sub"]) == 0o755


def test_glob_matches_several_paths(tmp_path: Path, log: Log) -> None:
    for name in ("log-a", "log-b", "log-c", "other", ".log-hidden"):
        (tmp_path / name).write_text("")
        (tmp_path / name).chmod(0o644)
    (tmp_path / "log-dir").mkdir(mode=0o755)
    assert apply_rule(rule(f"{tmp_path}/log-* false {ME} 0600 0700"), False, log) == 4
    assert [mode(tmp_path / n) for n in ("log-a", "log-b", "log-c", "log-dir")] == [
        0o600,
        0o600,
        0o600,
        0o700,
    ]
    assert mode(tmp_path / "other") == 0o644
    assert mode(tmp_path / ".log-hidden") == 0o644
    # With S6_FIX_ATTRS_HIDDEN a wildcard matches dotfiles too.
    assert apply_rule(rule(f"{tmp_path}/*log-hidden false {ME} 0600 0700"), True, log) == 1
    assert mode(tmp_path / ".log-hidden") == 0o600


def test_nothing_matching_is_a_warning_not_an_error(tmp_path: Path, log: Log) -> None:
    assert apply_rule(rule(f"{tmp_path}/none-* true {ME} 0600 0700"), False, log) == 0
    assert apply_rule(rule(f"{tmp_path}/missing true {ME} 0600 0700"), False, log) == 0
    assert log == [
        f"fix-attrs: {SRC} line 3: warning: nothing matches {tmp_path}/none-*",
        f"fix-attrs: {SRC} line 3: warning: nothing matches {tmp_path}/missing",
    ]
    fa = tmp_path / "fix-attrs.d"
    fa.mkdir()
    (fa / "10-x").write_text(f"{tmp_path}/missing true {ME} 0600 0700\n")
    assert run_fixattrs(fa, False, log) is True


@needs_root
def test_fallback_ids_used_when_names_do_not_exist(tmp_path: Path, log: Log) -> None:
    t = make_tree(tmp_path / "data")
    r = rule(f"{t['top']} true nosuchuser:nosuchgroup,4242:4343 0600 0700")
    assert apply_rule(r, False, log) == 6
    for p in t.values():
        assert owner(p) == (4242, 4343), p


@needs_root
def test_root_by_name_is_0_0(tmp_path: Path, log: Log) -> None:
    t = make_tree(tmp_path / "data")
    for p in t.values():
        os.chown(p, 4242, 4343)
    assert apply_rule(rule(f"{t['top']} true root:root - -"), False, log) == 6
    for p in t.values():
        assert owner(p) == (0, 0), p
    assert mode(t["f1"]) == 0o644  # '-' on both


@needs_root
def test_user_without_group_gets_primary_group(tmp_path: Path, log: Log) -> None:
    target = tmp_path / "f"
    target.write_text("")
    os.chown(target, 4242, 4343)
    apply_rule(rule(f"{target} false root - -"), False, log)
    assert owner(target) == (0, pwd.getpwnam("root").pw_gid)


@needs_root
def test_setuid_bit_survives_the_chown(tmp_path: Path, log: Log) -> None:
    # The kernel clears setuid/setgid on chown, even for root; the mode must come after.
    target = tmp_path / "tool"
    target.write_text("#!/bin/sh\n")
    target.chmod(0o6755)
    apply_rule(rule(f"{target} false 4242:4343 6755 -"), False, log)
    assert owner(target) == (4242, 4343)
    assert mode(target) == 0o6755


def test_directory_with_12000_entries(tmp_path: Path, log: Log) -> None:
    """s6-overlay v3 handled a multi-entry listing as one bogus name; every entry counts."""
    big = tmp_path / "big"
    big.mkdir(mode=0o755)
    for i in range(12_000):
        fd = os.open(big / f"file-{i:05d}", os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)
    account = "4242:4343" if ROOT else ME
    changed = apply_rule(rule(f"{big} true {account} 0600 0700"), False, log)
    assert (changed, changed.errors) == (12_001, 0)
    assert log == []
    assert mode(big) == 0o700
    with os.scandir(big) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            assert stat.S_IMODE(st.st_mode) == 0o600, entry.path
            if ROOT:
                assert (st.st_uid, st.st_gid) == (4242, 4343), entry.path


def test_deep_tree_deeper_than_the_recursion_limit(tmp_path: Path, log: Log) -> None:
    depth = 1_200  # os.makedirs and shutil.rmtree recurse, so build and remove by hand
    top = str(tmp_path / "d")
    dirs = [top]
    for _ in range(depth):
        dirs.append(os.path.join(dirs[-1], "d"))
    for d in dirs:
        os.mkdir(d, 0o755)
    leaf = os.path.join(dirs[-1], "leaf")
    Path(leaf).write_text("")
    os.chmod(leaf, 0o644)
    try:
        assert apply_rule(rule(f"{top} true {ME} 0600 0700"), False, log) == depth + 2
        assert mode(leaf) == 0o600
        assert all(mode(d) == 0o700 for d in dirs)
    finally:
        os.unlink(leaf)
        for d in reversed(dirs):
            os.rmdir(d)


def test_dotfiles_skipped_unless_hidden(tmp_path: Path, log: Log) -> None:
    t = make_tree(tmp_path / "data")
    dotfile = t["sub"] / ".env"
    dotdir = t["top"] / ".cache"
    inner = dotdir / "inner"
    dotdir.mkdir(mode=0o755)
    for p in (dotfile, inner):
        p.write_text("")
        p.chmod(0o644)
    assert apply_rule(rule(f"{t['top']} true {ME} 0600 0700"), False, log) == 6
    assert mode(dotfile) == 0o644 and mode(dotdir) == 0o755 and mode(inner) == 0o644
    assert apply_rule(rule(f"{t['top']} true {ME} 0600 0700"), True, log) == 3
    assert mode(dotfile) == 0o600 and mode(dotdir) == 0o700 and mode(inner) == 0o600


def test_symlinked_directory_is_not_followed(tmp_path: Path, log: Log) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    secret = outside / "secret"
    secret.write_text("")
    secret.chmod(0o644)
    t = make_tree(tmp_path / "data")
    link = t["sub"] / "link"
    link.symlink_to(outside)
    filelink = t["sub"] / "filelink"
    filelink.symlink_to(secret)
    account = "4242:4343" if ROOT else ME
    before = owner(outside), owner(secret)
    changed = apply_rule(rule(f"{t['top']} true {account} 0600 0700"), False, log)
    assert changed.errors == 0 and log == []
    assert mode(outside) == 0o755 and mode(secret) == 0o644
    assert (owner(outside), owner(secret)) == before
    if ROOT:  # the links themselves are chowned (lchown)
        assert owner(link) == (4242, 4343) and owner(filelink) == (4242, 4343)
        assert changed == 8


def test_symlink_as_the_path_itself_is_not_followed(tmp_path: Path, log: Log) -> None:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / "f").write_text("")
    (outside / "f").chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(outside)
    apply_rule(rule(f"{link} true {ME} 0600 0700"), False, log)
    assert mode(outside) == 0o755 and mode(outside / "f") == 0o644
    # A trailing slash asks for the directory the link points at, as in the shell.
    apply_rule(rule(f"{link}/ true {ME} 0600 0700"), False, log)
    assert mode(outside) == 0o700 and mode(outside / "f") == 0o600


def test_error_on_one_path_is_logged_and_the_rest_still_fixed(
    tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = make_tree(tmp_path / "data")
    real_chmod = os.chmod

    def chmod(path: str, mode: int, **kwargs: object) -> None:
        if path == str(t["f2"]):
            raise PermissionError(1, "Operation not permitted", path)
        real_chmod(path, mode, **kwargs)

    monkeypatch.setattr(fixattrs.os, "chmod", chmod)
    changed = apply_rule(rule(f"{t['top']} true {ME} 0600 0700"), False, log)
    assert (changed, changed.errors) == (5, 1)
    assert log == [f"fix-attrs: {SRC} line 3: cannot chmod {t['f2']}: Operation not permitted"]
    assert mode(t["f1"]) == 0o600 and mode(t["f3"]) == 0o600 and mode(t["f2"]) == 0o644


def test_many_errors_are_counted_but_not_all_logged(
    tmp_path: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "many"
    top.mkdir(mode=0o700)
    for i in range(100):
        (top / str(i)).write_text("")
        (top / str(i)).chmod(0o644)

    def chmod(path: str, mode: int, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system", path)

    monkeypatch.setattr(fixattrs.os, "chmod", chmod)
    changed = apply_rule(rule(f"{top} true {ME} 0600 0700"), False, log)
    assert (changed, changed.errors) == (0, 100)
    assert len(log) == fixattrs.MAX_ERROR_LINES + 2
    assert log[-2] == f"fix-attrs: {SRC} line 3: more errors, not shown"
    assert log[-1] == f"fix-attrs: {SRC} line 3: 100 paths could not be fixed"


# ------------------------------------------------------------------ the whole directory


@pytest.fixture
def fadir(tmp_path: Path) -> Path:
    d = tmp_path / "etc" / "fix-attrs.d"
    d.mkdir(parents=True)
    return d


def test_missing_directory_is_fine(tmp_path: Path, log: Log) -> None:
    assert run_fixattrs(tmp_path / "nope", False, log) is True
    assert log == []


def test_files_run_in_byte_order(tmp_path: Path, fadir: Path, log: Log) -> None:
    target = tmp_path / "target"
    target.write_text("")
    files = {"9-a": 0o601, "10-b": 0o602, "a": 0o603, "B": 0o604, "_x": 0o605, "Z": 0o606}
    for name, m in files.items():
        (fadir / name).write_text(f"{target} false {ME} {m:o} -\n")
    (fadir / ".hidden").write_text(f"{target} false {ME} 0777 -\n")
    assert run_fixattrs(fadir, False, log) is True
    order = [line.split(": ")[1].rsplit("/", 1)[1] for line in log]
    assert order == ["10-b", "9-a", "B", "Z", "_x", "a"]
    assert mode(target) == 0o603  # 'a' ran last; '.hidden' never ran
    assert log[0] == f"fix-attrs: {fadir}/10-b: 1 rule, 1 path changed"


def test_unreadable_file_is_logged_and_the_next_still_runs(
    tmp_path: Path, fadir: Path, log: Log
) -> None:
    target = tmp_path / "target"
    target.write_text("")
    target.chmod(0o644)
    (fadir / "10-dir").mkdir()
    (fadir / "20-dangling").symlink_to(tmp_path / "does-not-exist")
    (fadir / "30-ok").write_text(f"{target} false {ME} 0600 -\n")
    assert run_fixattrs(fadir, False, log) is False
    assert mode(target) == 0o600
    assert log == [
        f"fix-attrs: {fadir}/10-dir: cannot read: Is a directory; skipped",
        f"fix-attrs: {fadir}/20-dangling: cannot read: dangling symbolic link; skipped",
        f"fix-attrs: {fadir}/30-ok: 1 rule, 1 path changed",
    ]


def test_symlink_to_a_file_is_read(tmp_path: Path, fadir: Path, log: Log) -> None:
    target = tmp_path / "target"
    target.write_text("")
    real = tmp_path / "real-rules"
    real.write_text(f"{target} false {ME} 0600 -\n")
    (fadir / "10-link").symlink_to(real)
    assert run_fixattrs(fadir, False, log) is True
    assert mode(target) == 0o600


def test_bad_line_is_skipped_and_the_rest_runs(tmp_path: Path, fadir: Path, log: Log) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for p in (a, b):
        p.write_text("")
        p.chmod(0o644)
    (fadir / "10-x").write_text(
        f"# comment\n{a} false {ME} 0600 -\n{b} false {ME} rwx -\n\n{b} false {ME} 0640 -\n"
    )
    assert run_fixattrs(fadir, False, log) is False
    assert mode(a) == 0o600 and mode(b) == 0o640
    assert log[0] == f"fix-attrs: {fadir}/10-x line 3: mode 'rwx' is not octal; line skipped"


def test_unknown_account_skips_that_line_only(tmp_path: Path, fadir: Path, log: Log) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for p in (a, b):
        p.write_text("")
        p.chmod(0o644)
    (fadir / "10-x").write_text(f"{a} false nosuchuser 0600 -\n{b} false {ME} 0600 -\n")
    assert run_fixattrs(fadir, False, log) is False
    assert mode(a) == 0o644 and mode(b) == 0o600
    assert log[0] == (
        f"fix-attrs: {fadir}/10-x line 1: account 'nosuchuser': unknown user 'nosuchuser'"
        " and no fallback uid:gid; line skipped"
    )


def test_path_error_makes_the_run_fail(
    tmp_path: Path, fadir: Path, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "target"
    target.write_text("")
    target.chmod(0o644)

    def chmod(path: str, mode: int, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system", path)

    monkeypatch.setattr(fixattrs.os, "chmod", chmod)
    (fadir / "10-x").write_text(f"{target} false {ME} 0600 -\n")
    assert run_fixattrs(fadir, False, log) is False
    assert log[0] == f"fix-attrs: {fadir}/10-x line 1: cannot chmod {target}: Read-only file system"


@needs_root
def test_mysql_example_end_to_end(tmp_path: Path, fadir: Path, log: Log) -> None:
    """The README example, with a name that does not exist: the fallback applies."""
    t = make_tree(tmp_path / "mysql")
    (fadir / "00-mysql").write_text(
        f"# mysql data dir\n{t['top']} true nosuchuser,999:999 0600 0700\n"
    )
    assert run_fixattrs(str(fadir), False, log) is True
    for name, p in t.items():
        assert owner(p) == (999, 999), name
        assert mode(p) == (0o600 if name.startswith("f") else 0o700), name
