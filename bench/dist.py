"""Figure 8, the archive (`make dist`): its size, and overlayd booted from it.

Recipe: the archive is extracted with busybox's tar into a busybox root (no libc, no Python),
and every run is `unshare --pid --fork --mount-proc sh -c ENTER … chroot ROOT PROGRAM` (see
tarball/rootfs.py): PROGRAM is PID 1, and nothing it maps is shared with another Python on the
machine, as in a real container. Events come through a fifo in the root's /tmp. The bare run
(`sh -c 'echo cmd >fifo'` in the same root, same namespaces) runs in every round and its
median is subtracted from the same round's overlayd run. s6 runs on the host as in figure 1,
against a bare run on the host.
s6-overlay's archive sizes are its published figures (they cannot be downloaded here).

The roots live on this machine's ext4, where making a new file or directory measured from
22 µs to ~300 µs depending on the hour (6 µs on tmpfs; os.mkdir/os.open(O_CREAT) in a loop):
a boot that makes many (a fresh /run) swings with it. Every row reuses the root's /run between
boots, as a restarted container does; the s6-paths row is the default configuration (made as
PID 1).
"""

from __future__ import annotations

import contextlib
import lzma
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.boot import once as boot_once
from bench.common import (
    REPO,
    Fifo,
    Namespace,
    Row,
    Samples,
    main_for,
    memory_kb,
    reps,
    run_script,
    running,
    scratch,
    supervisor_argv,
)
from tarball.build import version
from tarball.rootfs import ENV_PATH, boot_argv, busybox_root, install_archive

EVENTS = "/tmp/events"  # the fifo, as the root sees it
ENV = {"PATH": ENV_PATH, "S6_VERBOSITY": "0"}
# Empty is unset (the default): s6's paths are made as PID 1. Safe here: they are the root's own.
S6_PATHS_DEFAULT = {"OVERLAY_S6_PATHS": ""}
MEMORY_SIZES = (1, 50)


def archive() -> Path:
    """dist/overlayd-VERSION-x86_64.tar.gz, built first when missing."""
    path = REPO / "dist" / f"overlayd-{version()}-x86_64.tar.gz"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "tarball"], cwd=REPO, check=True,
                       capture_output=True)
    return path


@contextlib.contextmanager
def root_with_archive() -> Iterator[Path]:
    with scratch() as base:
        root = busybox_root(base)
        install_archive(root, archive())
        yield root


def _services(root: Path, count: int) -> None:
    services = root / "etc/services.d"
    subprocess.run(["rm", "-rf", str(services)], check=True)
    for i in range(count):
        run = services / f"svc{i:03d}" / "run"
        run.parent.mkdir(parents=True)
        run.write_text(f"#!/bin/sh\necho svc $$ >{EVENTS}\nexec sleep 1d\n")
        run.chmod(0o755)


def _in_root(root: Path, argv: list[str], want: int, until_exit: bool,
             env: dict[str, str] | None = None) -> dict[str, float]:
    """Boot `argv` in the root: ms to the first event line, to `want` lines, to the exit."""
    fifo = Fifo(root / EVENTS.lstrip("/"))
    ns = Namespace(boot_argv(root, *argv), {**ENV, **(env or {})}, log=root.parent / "init.log")
    try:
        t0 = ns.start()
        lines = fifo.take(want, 60 + want / 10)
        got = {"first": lines[0][0] - t0, "all": lines[-1][0] - t0}
        if until_exit:
            end = ns.wait(30)
            if end is None:
                raise TimeoutError(f"{argv[0]} did not exit; it said: {ns.log_tail()}")
            got["exit"] = end - t0
        return got
    finally:
        ns.close(grace=5)
        fifo.close()
        (root / EVENTS.lstrip("/")).unlink(missing_ok=True)


def _s6_first_service() -> dict[str, float]:
    with scratch() as base:
        fifo = Fifo(base / "events")
        argv, env = supervisor_argv("s6", base, {"svc": run_script(fifo.path, "svc")})
        ns = Namespace(argv, env, base / "init.log")
        try:
            t0 = ns.start()
            return {"first": fifo.next(30)[0] - t0}
        finally:
            ns.close(grace=5)
            fifo.close()


def _memory(root: Path, services: int) -> dict[str, float]:
    """kB of overlayd's RSS/PSS/USS (PID 1 is the whole tree) over idle services."""
    _services(root, services)
    fifo = Fifo(root / EVENTS.lstrip("/"))
    ns = Namespace(boot_argv(root, "/init"), ENV, log=root.parent / "init.log")
    try:
        ns.start()
        fifo.take(services, 60 + services / 10)
        time.sleep(1.0)
        tree = ns.supervision_tree()
        total = {"rss": 0, "pss": 0, "uss": 0}
        for pid in tree:
            for key, kb in memory_kb(pid).items():
                total[key] += kb
        return {f"{key}{services}": kb for key, kb in total.items()}
    finally:
        ns.close(grace=5)
        fifo.close()
        (root / EVENTS.lstrip("/")).unlink(missing_ok=True)


def _s6_memory(services: int) -> dict[str, float]:
    with running("s6", services) as (ns, _, _):
        time.sleep(1.0)
        total = {"rss": 0, "pss": 0, "uss": 0}
        for pid in ns.supervision_tree():
            for key, kb in memory_kb(pid).items():
                total[key] += kb
        return {f"{key}{services}": kb for key, kb in total.items()}


PYTHON_WITH_CONTENV = ["/package/overlayd/current/bin/python3.11", "-I", "-S", "-c",
                       "import _overlayd_boot as b; b.run('overlayd.contenv', "
                       "'with_contenv_main')", "with-contenv"]


def _with_contenv(root: Path) -> dict[str, float]:
    """CPU ms over `chroot ROOT /bin/true` of `with-contenv /bin/true`: the archive's (native) and
    overlayd's Python one (what a pip install runs), over the same saved environment."""
    store = root / "run/overlay/container_environment"
    store.mkdir(parents=True, exist_ok=True)
    (store / "PATH").write_text(ENV_PATH)

    def ms(*argv: str) -> float:  # CPU time (user + system): steadier than wall time here
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(["chroot", str(root), *argv], check=True, env=ENV)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000

    bare = ms("/bin/true")
    return {"wc-native": ms("/usr/bin/with-contenv", "/bin/true") - bare,
            "wc-python": ms(*PYTHON_WITH_CONTENV, "/bin/true") - bare}


def _crossover(s: Samples) -> float | None:
    """Services at which overlayd's PSS line falls below s6's (both linear in the count)."""
    lo, hi = MEMORY_SIZES
    points = {c: [s.median(f"pss{n}", c) for n in MEMORY_SIZES] for c in ("overlayd", "s6")}
    if any(v is None for vs in points.values() for v in vs):
        return None
    (o1, o2), (s1, s2) = points["overlayd"], points["s6"]  # type: ignore[misc]
    o_slope, s_slope = (o2 - o1) / (hi - lo), (s2 - s1) / (hi - lo)
    if s_slope <= o_slope:
        return None
    return max(1.0, lo + (o1 - s1) / (s_slope - o_slope))


def run() -> list[Row]:
    tarball = archive()
    s = Samples()
    gz = tarball.read_bytes()
    s.add("size-gz", "overlayd", len(gz) / 1e6)
    s.add("size-xz", "overlayd", len(lzma.compress(_gunzip(tarball), preset=9)) / 1e6)
    cmd = ["/bin/sh", "-c", f"echo cmd >{EVENTS}"]
    python = ["/package/overlayd/current/bin/python3.11", "-I", "-S", "-c",
              f"open('{EVENTS}', 'w').write('cmd\\n')"]
    with root_with_archive() as root:
        for _ in range(reps(21, 4)):
            _services(root, 0)
            bare = _in_root(root, cmd, 1, until_exit=True)
            s.add("bare", "overlayd", bare["first"])

            def overhead(argv: list[str], until_exit: bool, b=bare,
                         env: dict[str, str] | None = None) -> dict[str, float]:
                got = _in_root(root, argv, 1, until_exit, env)
                return {f"{k}-over": v - b[k] for k, v in got.items()}

            s.measure("overlayd", lambda: {
                f"init-{k}": v for k, v in overhead(["/init", *cmd], True).items()})
            s.measure("overlayd", lambda: {
                f"s6-{k}": v for k, v in overhead(["/init", *cmd], True,
                                                  env=S6_PATHS_DEFAULT).items()})
            s.measure("overlayd", lambda: {
                f"python-{k}": v for k, v in overhead(python, True).items()})
            _services(root, 1)
            s.measure("overlayd", lambda: {
                f"svc-{k}": v for k, v in overhead(["/init"], False).items()})
            host_bare = boot_once("bare", 0)["cmd"]  # s6 runs on the host: its own baseline
            s.measure("s6", lambda b=host_bare: {"svc-first-over": _s6_first_service()["first"]
                                                  - b})
        for _ in range(reps(21, 4)):
            s.measure("overlayd", lambda: _with_contenv(root))
        for _ in range(reps(3, 1)):
            for n in MEMORY_SIZES:
                s.measure("overlayd", lambda n=n: _memory(root, n))
                s.measure("s6", lambda n=n: _s6_memory(n))
    crossover = _crossover(s)

    def mb(kb: float) -> float:
        return kb / 1024

    both = ["overlayd", "s6"]
    rows = [
        s.row("Archive size, .tar.gz (what `make dist` ships)", "size-gz", ["overlayd"], "MB",
              None, "s6-overlay 3.x: ~0.65 MB .tar.xz x86_64 + noarch (published)"),
        s.row("Archive size, recompressed .tar.xz (as s6-overlay ships)", "size-xz",
              ["overlayd"], "MB", None, "s6-overlay: 5.7 MB of binaries extracted (published)"),
        s.row("From the archive: `python -I -S -c …` in the root (overhead)", "python-exit-over",
              ["overlayd"], "ms", None, "the interpreter's floor"),
        s.row("From the archive: boot to CMD, 0 services (overhead)", "init-first-over",
              ["overlayd"], "ms", None, ""),
        s.row("From the archive: `/init CMD` start to exit, 0 services (overhead)",
              "init-exit-over", ["overlayd"], "ms", None, "overlayd ≤ 15 ms"),
        s.row("same, with s6's paths (the default as PID 1; every other row: "
              "OVERLAY_S6_PATHS=0)", "s6-exit-over", ["overlayd"], "ms", None,
              "the root's /run kept between boots, as in every row"),
        s.row("From the archive: first service running, 1 service (overhead)", "svc-first-over",
              both, "ms", "s6", "s6 ~5 ms; overlayd ≤ 20 ms"),
        s.row("From the archive: `with-contenv` per script (CPU overhead, native)", "wc-native",
              ["overlayd"], "ms", None, "no interpreter per script"),
        s.row("`with-contenv` per script (CPU overhead), overlayd's Python one (pip install)",
              "wc-python", ["overlayd"], "ms", None, ""),
        s.row("From the archive: PID 1 RSS, 50 services", "rss50", ["overlayd"], "MB", None,
              "overlayd ≤ 9 MB", mb),
        s.row("From the archive: PSS of the supervision tree, 1 service", "pss1", both, "MB",
              "s6", "", mb),
        s.row("From the archive: PSS of the supervision tree, 50 services", "pss50", both, "MB",
              "s6", "", mb),
        Row("From the archive: services at which overlayd's PSS falls below s6's", "",
            {"overlayd": crossover}, None, "(linear between 1 and 50 services)"),
    ]
    rows[2].notes.insert(0, f"bare `sh -c 'echo cmd >fifo'` in the same busybox root and "
                            f"namespaces: median {s.median('bare', 'overlayd') or 0:.2f} ms, "
                            "subtracted round by round")
    return rows


def _gunzip(path: Path) -> bytes:
    import gzip

    return gzip.decompress(path.read_bytes())


if __name__ == "__main__":
    main_for(run)
