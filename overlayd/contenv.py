"""The container environment: saved at boot into a directory, read back for every child.

`container_environment/` holds one file per variable, the value as its content. It may hold
secrets, so the directory is 0700 and each file 0600. Every process overlayd starts gets the
directory's content as it stands at that moment, so a cont-init script that writes a file there
reaches every later process. One trailing newline is dropped, so `echo v > X` works; an empty
file is an empty variable (s6-overlay drops those).

This module is also `with-contenv CMD…`, for shebangs written for s6-overlay.
"""

from __future__ import annotations

import os
import stat
import sys
import time

from . import log
from .smallfile import holds, write_new

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from .dirwatch import DirWatch

DEFAULT_RUN_DIR = "/run/overlay"


def env_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "container_environment")


def _valid_name(name: str) -> bool:
    return bool(name) and "/" not in name and "=" not in name and name not in (".", "..")


def _make_private_dir(directory: str) -> int:
    """``directory`` as a real directory of ours, mode 0700; an fd on it (O_NOFOLLOW).

    A symlink (or anything not a directory) planted in its place is removed and replaced,
    with a warning: following it would delete the target's files and write the environment,
    secrets included, wherever it points.
    """
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISDIR(info.st_mode):
        what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a directory"
        target = f" to {os.readlink(directory)!r}" if stat.S_ISLNK(info.st_mode) else ""
        log.warn(f"{directory} was {what}{target}; replaced by a directory (nothing followed)")
        os.unlink(directory)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def save(directory: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Write `environ` into `directory`, replacing whatever an earlier run left there.

    Returns what `load(directory)` would now give, without reading the files back: until a
    child runs, nothing else of the container can have changed them (stages.py gives it to
    the first child, the CMD of an image with nothing else to start).
    """
    dir_fd = _make_private_dir(directory)
    # Files are created anew under umask 077: born 0600, with no fchmod per variable. An
    # earlier run's file that already holds the value (a restart with /run kept) is kept: it
    # is then exactly what a new one would be, and checking it costs less than making it
    # (6 against 22 µs here, and making one measured ~300 µs on this machine's disk at a busy
    # hour). Everything else an earlier run left is removed first.
    old_umask = os.umask(0o077)
    try:
        with os.scandir(dir_fd) as entries:  # the entry types come with the listing
            left = {e.name for e in entries if not e.is_dir(follow_symlinks=False)}
        wanted = {name: value.encode("utf-8", "surrogateescape")
                  for name, value in environ.items() if _valid_name(name)}
        kept = {name for name in left & wanted.keys() if holds(name, wanted[name], 0o600, dir_fd)}
        for stale in left - kept:
            os.unlink(stale, dir_fd=dir_fd)
        stored = {name: environ[name] for name in kept}
        failed: dict[str, list[str]] = {}  # why → the variables it kept out
        for name, data in wanted.items():
            if name in kept:
                continue
            try:
                write_new(name, data, 0o600, dir_fd)
            except OSError as exc:  # a directory of that name was left there, a full /run
                failed.setdefault(exc.strerror or str(exc), []).append(name)
                continue
            stored[name] = environ[name]
    finally:
        os.umask(old_umask)
        os.close(dir_fd)
    for why, names in failed.items():  # one line per cause, however many variables
        shown = ", ".join(names[:NAMED_IN_A_WARNING])
        more = len(names) - NAMED_IN_A_WARNING
        log.warn(f"cannot save {shown}{f' and {more} more' if more > 0 else ''} in {directory}: "
                 f"{why}; left out of the container environment")
    stale = _cache.pop(directory, None)
    if stale is not None:
        stale.close()
    return _as_loaded(directory, stored)


def _as_loaded(directory: str, stored: dict[str, str]) -> dict[str, str]:
    """`stored` (name → the value written to its file) as `load` reads it back: one trailing
    newline dropped, a value too large to pass to a program left out (and said)."""
    environ: dict[str, str] = {}
    for name, written in stored.items():
        value = _value(written)
        if _too_large(name, value):  # (not from PID 1's own environment: it came by exec)
            size = len(written.encode("utf-8", "surrogateescape"))
            log.warn(_too_large_line(name, directory, size))
            continue
        environ[name] = value
    _check_total(directory, environ)
    return environ


def _read_value(path: str) -> str | None:
    """One variable's value, or None when unreadable, not a regular file, or holding a NUL.

    At most MAX_VARIABLE + 1 bytes are read: a longer value cannot be passed to a program.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        size = 0
        while size <= MAX_VARIABLE and (chunk := os.read(fd, MAX_VARIABLE + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if b"\0" in data:
        return None
    return _value(data.decode("utf-8", "surrogateescape"))


def _value(content: str) -> str:
    """A variable's value from its file's content: one trailing newline dropped (`echo v > X`)."""
    return content[:-1] if content.endswith("\n") else content


class _Store:
    """What one directory held at the last look: per file, its stat key and its value.

    A file is read again only when its (inode, size, mtime, ctime) changed, or when it changed
    so recently before the last look that a rewrite within the same timestamp tick could hide
    (file timestamps move in coarse ticks, a few ms: the "racy" case, as git's index has it).
    """

    __slots__ = ("environ", "files", "links", "looked", "watch", "watch_failed")

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, str | None]] = {}
        self.environ: dict[str, str] = {}
        self.looked = 0  # time.time_ns() of the last look
        self.links = False  # some entry is a symlink: its target can change unseen by inotify
        self.watch: DirWatch | None = None
        self.watch_failed = False

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None

    def refresh(self, directory: str) -> dict[str, str]:
        now = time.time_ns()
        racy_after = self.looked - RACY_NS
        racy_fine_after = self.looked - RACY_FINE_NS
        files: dict[str, tuple[int, str | None]] = {}
        changed = False
        links = False
        try:
            entries = os.scandir(directory)
        except OSError:
            entries = None
        if entries is not None:
            with entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or not _valid_name(name):
                        continue
                    try:
                        links = links or entry.is_symlink()
                        info = entry.stat()  # follows a link, as open() does
                    except OSError:
                        continue
                    # One int, not a tuple of four: 20,000 variables cost ~3 MB less.
                    key = hash((info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
                    old = self.files.get(name)
                    ctime = info.st_ctime_ns
                    fine = ctime % 1_000_000_000 != 0  # sub-second timestamps on its filesystem
                    if old is not None and old[0] == key and (
                        ctime < (racy_fine_after if fine else racy_after)
                    ):
                        files[name] = old
                        continue
                    value = _read_value(entry.path)
                    if old is None or old[1] != value:
                        changed = True
                    if value is not None and _too_large(name, value):
                        if old is None or old[0] != key:  # said once per change
                            log.warn(_too_large_line(name, directory, info.st_size))
                        value = None
                    files[name] = (key, value)
        if changed or files.keys() != self.files.keys():
            self.environ = {name: value for name, (_, value) in files.items() if value is not None}
            _check_total(directory, self.environ)
        self.files = files
        self.looked = now
        self.links = links
        return self.environ


def _too_large_line(name: str, directory: str, size: int) -> str:
    return (f"{name} in {directory} holds {size} bytes, more than the kernel passes to a "
            f"program ({MAX_VARIABLE} for NAME=VALUE); left out of the environment of every "
            "process")


def _too_large(name: str, value: str) -> bool:
    if 4 * len(value) + len(name) + 1 < MAX_VARIABLE:  # at most 4 bytes per character
        return False
    return len(value.encode("utf-8", "surrogateescape")) + len(name) + 1 >= MAX_VARIABLE


def _racy_fine_ns() -> int:
    """Two ticks of CLOCK_REALTIME_COARSE (the clock file timestamps are taken from) + 1 ms."""
    try:
        tick = time.clock_getres(5)  # CLOCK_REALTIME_COARSE (Linux); Python has no name for it
    except OSError:
        tick = 0.01
    return int(2 * min(max(tick, 0.001), 0.01) * 1e9) + 1_000_000


#: A file changed less than this before the last look is read again at the next one: a change
#: within the same timestamp tick keeps its stat. For a filesystem with 1 s timestamps:
RACY_NS = 1_000_000_000
#: ... and with sub-second ones (tmpfs, overlayfs, ext4, xfs, btrfs), whose timestamps come from
#: the kernel's coarse clock, behind the real time by at most one tick: two ticks and a
#: millisecond (9 ms at HZ=250, 21 ms at HZ=100). A boot's spawns then stop re-reading every
#: variable a few milliseconds after the environment was written, not a second after.
RACY_FINE_NS = _racy_fine_ns()
#: Longest NAME=VALUE the kernel passes to a program (MAX_ARG_STRLEN, 32 pages).
MAX_VARIABLE = 32 * 4096
#: Variables a "cannot save" warning names; the rest are counted.
NAMED_IN_A_WARNING = 8
#: Stores with at least this many files are watched with inotify (see load).
WATCH_ABOVE = 256
_cache: dict[str, _Store] = {}


def _check_total(directory: str, environ: dict[str, str]) -> None:
    """Warn, naming the largest variables, when the whole environment is too large to exec."""
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (OSError, ValueError):
        return
    # Each string costs its bytes, a NUL and a pointer; leave a quarter for argv.
    sizes = {name: len(name) + len(value) + 2 + 8 for name, value in environ.items()}
    if sum(sizes.values()) <= limit * 3 // 4:
        return
    largest = sorted(sizes, key=sizes.__getitem__, reverse=True)[:3]
    named = ", ".join(f"{name} ({sizes[name]} bytes)" for name in largest)
    log.warn(
        f"{directory}: the environment is {sum(sizes.values())} bytes, too large for the "
        f"kernel to pass to a program ({limit}); the largest: {named}"
    )


def load(directory: str) -> dict[str, str]:
    """The directory as a mapping (a fresh copy); unreadable entries are skipped.

    Cached: only files whose stat changed are read again. A store of WATCH_ABOVE files or
    more is also watched with inotify, so while nothing changes a spawn costs one read() of
    the watch, not a scan of thousands of files.
    """
    store = _cache.get(directory)
    if store is None:
        store = _cache[directory] = _Store()
    watch = store.watch
    if watch is not None and watch.alive and not watch.changed():
        return dict(store.environ)  # inotify saw nothing: no scan at all
    if (
        (watch is None or not watch.alive)
        and len(store.files) >= WATCH_ABOVE
        and not store.links
        and not store.watch_failed
    ):
        try:
            from .dirwatch import DirWatch  # loaded for a store that large only

            store.watch = DirWatch(directory)  # before the scan: nothing in between is missed
        except OSError:
            store.watch_failed = True  # no inotify here: stat every file at each look
    return dict(store.refresh(directory))


def child_environment(run_dir: str, keep_env: bool) -> dict[str, str]:
    """The environment a child of overlayd starts with."""
    if keep_env:
        return dict(os.environ)
    saved = load(env_dir(run_dir))
    return saved if saved else dict(os.environ)


def with_contenv_main() -> None:
    """`with-contenv CMD [ARG...]`: exec CMD with the saved container environment."""
    args = sys.argv[1:]
    if not args:
        sys.stderr.write("usage: with-contenv PROGRAM [ARG...]\n")
        raise SystemExit(100)
    run_dir = os.environ.get("OVERLAY_RUN_DIR") or DEFAULT_RUN_DIR
    keep = os.environ.get("S6_KEEP_ENV", "0") not in ("", "0")
    environ = child_environment(run_dir, keep)
    import signal

    for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignored these; give them back
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execvpe(args[0], args, environ)
    except OSError as exc:
        sys.stderr.write(f"with-contenv: cannot run {args[0]!r}: {exc.strerror}\n")
        raise SystemExit(127 if isinstance(exc, FileNotFoundError) else 126) from None
