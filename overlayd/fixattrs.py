"""fix-attrs.d: set owner and mode of paths at boot (stage 2, step 1).

Each non-dot regular file in the directory is read in byte order; each line is
``PATH RECURSE ACCOUNT FMODE DMODE``, for example::

    /var/lib/mysql true mysql,999:999 0600 0700

Unlike s6-overlay v3, whose shell loop joined a directory listing into one bogus name,
recursion here walks the tree iteratively with ``os.scandir``: any width, any depth, one
open directory at a time.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Log = Callable[[str], None]

__all__ = [
    "Account",
    "Applied",
    "FixAttrsError",
    "Rule",
    "apply_rule",
    "parse_line",
    "resolve_account",
    "run_fixattrs",
]

#: Per rule, at most this many per-path error lines are logged; the rest are counted.
MAX_ERROR_LINES = 20

_ID_MAX = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown, so it is not a valid id
_GLOB_MAGIC = frozenset("*?[")


class FixAttrsError(Exception):
    """A bad fix-attrs line or an account that cannot be resolved."""


class _Record:
    """Small value object: equality and repr over ``__slots__``."""

    __slots__ = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({args})"


class Account(_Record):
    """``user[:group][,uid:gid]`` as written; names are resolved at apply time.

    ``user``/``group`` are an int when written numerically, else a name; ``group`` is
    None when omitted (meaning the user's primary group).
    """

    __slots__ = ("fallback_gid", "fallback_uid", "group", "text", "user")

    def __init__(
        self,
        text: str,
        user: str | int,
        group: str | int | None = None,
        fallback_uid: int | None = None,
        fallback_gid: int | None = None,
    ) -> None:
        self.text = text
        self.user = user
        self.group = group
        self.fallback_uid = fallback_uid
        self.fallback_gid = fallback_gid


class Rule(_Record):
    """One parsed line. ``fmode``/``dmode`` None means keep the mode."""

    __slots__ = ("account", "dmode", "fmode", "lineno", "path", "recurse", "source")

    def __init__(
        self,
        path: str,
        recurse: bool,
        account: Account,
        fmode: int | None,
        dmode: int | None,
        source: str = "<string>",
        lineno: int = 0,
    ) -> None:
        self.path = path
        self.recurse = recurse
        self.account = account
        self.fmode = fmode
        self.dmode = dmode
        self.source = source
        self.lineno = lineno

    @property
    def where(self) -> str:
        """``FILE line N``, the prefix of every message about this rule."""
        return f"{self.source} line {self.lineno}"


class Applied(int):
    """What :func:`apply_rule` returns: the number of paths changed (the int value).

    ``errors`` counts the paths that could not be fixed. An int subclass so callers
    that only want the count can treat it as one.
    """

    errors: int

    def __new__(cls, changed: int, errors: int = 0) -> Applied:
        self = super().__new__(cls, changed)
        self.errors = errors
        return self

    def __repr__(self) -> str:
        return f"Applied({int(self)}, errors={self.errors})"


# --------------------------------------------------------------------------- parsing


def _is_number(text: str) -> bool:
    # str.isdigit() accepts things like '²', which int() then rejects.
    return bool(text) and all("0" <= c <= "9" for c in text)


def _parse_id(text: str, what: str, fail: Callable[[str], FixAttrsError]) -> int:
    value = int(text)
    if value > _ID_MAX:
        raise fail(f"{what} {text!r} is out of range")
    return value


def _parse_account(text: str, fail: Callable[[str], FixAttrsError]) -> Account:
    names, comma, fallback = text.partition(",")
    fallback_uid = fallback_gid = None
    if comma:
        fb_user, colon, fb_group = fallback.partition(":")
        if not (colon and _is_number(fb_user) and _is_number(fb_group)):
            raise fail(f"account {text!r}: fallback {fallback!r} is not uid:gid")
        fallback_uid = _parse_id(fb_user, "fallback uid", fail)
        fallback_gid = _parse_id(fb_group, "fallback gid", fail)
    user_text, colon, group_text = names.partition(":")
    if not user_text:
        raise fail(f"account {text!r} has no user")
    if colon and not group_text:
        raise fail(f"account {text!r} has an empty group")
    if ":" in group_text:
        raise fail(f"account {text!r} has more than one ':'")
    user: str | int = user_text
    if _is_number(user_text):
        user = _parse_id(user_text, "uid", fail)
    group: str | int | None = group_text if colon else None
    if colon and _is_number(group_text):
        group = _parse_id(group_text, "gid", fail)
    return Account(text, user, group, fallback_uid, fallback_gid)


def _parse_mode(text: str, fail: Callable[[str], FixAttrsError]) -> int | None:
    if text == "-":
        return None
    if not text or any(c not in "01234567" for c in text):
        raise fail(f"mode {text!r} is not octal")
    value = int(text, 8)
    if value > 0o7777:
        raise fail(f"mode {text!r} is out of range (at most 7777)")
    return value


def parse_line(text: str, source: str, lineno: int) -> Rule | None:
    """Parse one fix-attrs line; None for a blank line or a ``#`` comment.

    A ``#`` field after the first starts a trailing comment. Raises FixAttrsError
    ``"SOURCE line N: what is wrong"`` for a bad line.
    """

    def fail(what: str) -> FixAttrsError:
        return FixAttrsError(f"{source} line {lineno}: {what}")

    fields = text.split()
    for i, field in enumerate(fields):
        if field.startswith("#"):
            del fields[i:]
            break
    if not fields:
        return None
    if len(fields) != 5:
        raise fail(f"expected 5 fields (PATH RECURSE ACCOUNT FMODE DMODE), got {len(fields)}")
    path, recurse_text, account_text, fmode_text, dmode_text = fields
    if not path.startswith("/"):
        # A relative path would depend on the cwd of PID 1 (the image's WORKDIR).
        raise fail(f"path {path!r} is not absolute")
    recurse_word = recurse_text.lower()
    if recurse_word not in ("true", "false"):
        raise fail(f"recurse {recurse_text!r} is not true or false")
    account = _parse_account(account_text, fail)
    fmode = _parse_mode(fmode_text, fail)
    dmode = _parse_mode(dmode_text, fail)
    return Rule(path, recurse_word == "true", account, fmode, dmode, source, lineno)


# ---------------------------------------------------------------------- resolution


def resolve_account(account: Account) -> tuple[int, int]:
    """Return ``(uid, gid)`` for ``account``; gid -1 means leave the group alone.

    Each name falls back separately to the ``,uid:gid`` part when it does not resolve;
    without a fallback an unknown name raises FixAttrsError naming the account. An
    omitted group is the user's primary group, else the fallback gid, else unchanged.
    """
    primary_gid: int | None = None
    if isinstance(account.user, int):
        uid = account.user
        try:
            primary_gid = pwd.getpwuid(uid).pw_gid
        except (KeyError, ValueError):
            primary_gid = account.fallback_gid
    else:
        try:
            entry = pwd.getpwnam(account.user)
        except (KeyError, ValueError):
            if account.fallback_uid is None:
                raise FixAttrsError(
                    f"account {account.text!r}: unknown user {account.user!r}"
                    " and no fallback uid:gid"
                ) from None
            uid, primary_gid = account.fallback_uid, account.fallback_gid
        else:
            uid, primary_gid = entry.pw_uid, entry.pw_gid

    if account.group is None:
        return uid, -1 if primary_gid is None else primary_gid
    if isinstance(account.group, int):
        return uid, account.group
    try:
        return uid, grp.getgrnam(account.group).gr_gid
    except (KeyError, ValueError):
        if account.fallback_gid is None:
            raise FixAttrsError(
                f"account {account.text!r}: unknown group {account.group!r} and no fallback uid:gid"
            ) from None
        return uid, account.fallback_gid


# -------------------------------------------------------------------------- applying


def _expand(pattern: str, hidden: bool) -> list[str]:
    """Paths matching ``pattern``, sorted; a plain path matches itself if it exists."""
    if _GLOB_MAGIC.isdisjoint(pattern):
        return [pattern] if os.path.lexists(pattern) else []
    import glob  # pulls in re; only paid for when a rule really is a glob

    return sorted(glob.glob(pattern, include_hidden=hidden))


class _Fixer:
    """Applies one rule's owner and modes to paths, counting changes and errors."""

    __slots__ = ("changed", "errors", "gid", "hidden", "log", "rule", "uid")

    def __init__(self, rule: Rule, uid: int, gid: int, hidden: bool, log: Log) -> None:
        self.rule = rule
        self.uid = uid
        self.gid = gid
        self.hidden = hidden
        self.log = log
        self.changed = 0
        self.errors = 0

    def _error(self, action: str, path: str, exc: OSError) -> None:
        self.errors += 1
        if self.errors <= MAX_ERROR_LINES:
            reason = exc.strerror or str(exc)
            self.log(f"fix-attrs: {self.rule.where}: cannot {action} {path}: {reason}")
        elif self.errors == MAX_ERROR_LINES + 1:
            self.log(f"fix-attrs: {self.rule.where}: more errors, not shown")

    def fix(self, path: str) -> bool:
        """Fix one path (never through a symlink); True when it is a directory."""
        try:
            st = os.lstat(path)
        except OSError as exc:
            self._error("stat", path, exc)
            return False
        if stat.S_ISLNK(st.st_mode):
            want = None  # chmod would follow the link; a link's own mode means nothing
        elif stat.S_ISDIR(st.st_mode):
            want = self.rule.dmode
        else:
            want = self.rule.fmode
        uid, gid = self.uid, self.gid
        changed = False
        action = "chown"
        try:
            if st.st_uid != uid or (gid != -1 and st.st_gid != gid):
                os.chown(path, uid, gid, follow_symlinks=False)
                changed = True
            # chown clears setuid/setgid bits, so after one the mode is set again.
            if want is not None and (changed or stat.S_IMODE(st.st_mode) != want):
                action = "chmod"
                os.chmod(path, want)
                changed = True
        except OSError as exc:
            self._error(action, path, exc)
        self.changed += changed
        return stat.S_ISDIR(st.st_mode)

    def walk(self, top: str) -> None:
        """Fix ``top`` and, when recursing, everything below it."""
        if not self.fix(top) or not self.rule.recurse:
            return
        pending = [top]
        while pending:
            directory = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if not self.hidden and entry.name.startswith("."):
                            continue
                        # fix() lstat()s, so a symlink to a directory is not descended.
                        if self.fix(entry.path):
                            pending.append(entry.path)
            except OSError as exc:
                self._error("list", directory, exc)


def apply_rule(rule: Rule, hidden: bool, log: Log) -> Applied:
    """Apply ``rule`` to every path its glob matches; return the number changed.

    Raises FixAttrsError when the account does not resolve. Per-path failures are
    logged and counted in the result's ``errors``; a glob matching nothing is a warning.
    """
    try:
        uid, gid = resolve_account(rule.account)
    except FixAttrsError as exc:
        raise FixAttrsError(f"{rule.where}: {exc}") from None
    matches = _expand(rule.path, hidden)
    if not matches:
        log(f"fix-attrs: {rule.where}: warning: nothing matches {rule.path}")
        return Applied(0)
    fixer = _Fixer(rule, uid, gid, hidden, log)
    for path in matches:
        fixer.walk(path)
    if fixer.errors > MAX_ERROR_LINES:
        log(f"fix-attrs: {rule.where}: {fixer.errors} paths could not be fixed")
    return Applied(fixer.changed, fixer.errors)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _read_rules(path: str, log: Log) -> tuple[list[Rule], bool]:
    """Parse one fix-attrs file; bad lines are logged and skipped. Returns (rules, ok)."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ENOENT and os.path.islink(path):
            reason = "dangling symbolic link"
        log(f"fix-attrs: {path}: cannot read: {reason}; skipped")
        return [], False
    rules: list[Rule] = []
    ok = True
    # fsdecode: paths in the file are bytes to the kernel, whatever their encoding.
    for lineno, line in enumerate(os.fsdecode(data).splitlines(), 1):
        try:
            rule = parse_line(line, path, lineno)
        except FixAttrsError as exc:
            log(f"fix-attrs: {exc}; line skipped")
            ok = False
            continue
        if rule is not None:
            rules.append(rule)
    return rules, ok


def run_fixattrs(directory: str | os.PathLike[str], hidden: bool, log: Log) -> bool:
    """Apply every fix-attrs file in ``directory``, in byte order, dotfiles skipped.

    Everything that can run does; returns False when any file, line, account or path
    failed (for S6_BEHAVIOUR_IF_STAGE2_FAILS). A missing directory is fine: True.
    """
    directory = os.fspath(directory)
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if not e.name.startswith(".")]
    except FileNotFoundError:
        return True
    except OSError as exc:
        log(f"fix-attrs: {directory}: cannot list: {exc.strerror or exc}")
        return False
    ok = True
    for name in sorted(names, key=os.fsencode):
        path = os.path.join(directory, name)
        rules, file_ok = _read_rules(path, log)
        ok = ok and file_ok
        changed = 0
        for rule in rules:
            try:
                applied = apply_rule(rule, hidden, log)
            except FixAttrsError as exc:
                log(f"fix-attrs: {exc}; line skipped")
                ok = False
                continue
            changed += applied
            ok = ok and not applied.errors
        if rules:
            summary = f"{_count(len(rules), 'rule')}, {_count(changed, 'path')} changed"
            log(f"fix-attrs: {path}: {summary}")
    return ok
