"""Shared helpers for the benchmarks: peers, PID namespaces, fifos, /proc, trees, the table.

Every figure runs each supervisor as PID 1 of a fresh PID namespace
(`unshare --pid --fork --mount-proc`), signals progress through a named pipe the
benchmark reads, and reports medians over repeated, interleaved runs. Nothing
here asserts a time: this is measurement.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin" if (REPO / ".venv" / "bin").is_dir() else Path(sys.executable).parent
OVERLAYD = Path(os.environ.get("BENCH_OVERLAYD") or BIN / "overlayd")  # another build to compare
OVERLAYCTL = BIN / "overlayctl"
RESULTS = Path(__file__).resolve().parent / "results"

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
IS_ROOT = os.geteuid() == 0
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]
if not IS_ROOT:  # a user namespace gives an unprivileged user the same isolation
    UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]

# Processes that are services, not supervisors: excluded from "the supervision tree".
SERVICE_COMMS = frozenset({"sleep", "sh", "dash", "bash"})
CLK_TCK = os.sysconf("SC_CLK_TCK")


def reps(full: int, quick: int) -> int:
    """How many repetitions to run: `full`, or `quick` under BENCH_QUICK=1."""
    return quick if QUICK else full


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile (pct in 0..100), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def now_ms() -> float:
    """A monotonic clock in milliseconds (CLOCK_MONOTONIC is shared across PID namespaces)."""
    return time.perf_counter_ns() / 1e6


# --------------------------------------------------------------------------- peers


@dataclass(frozen=True)
class Peer:
    """A program overlayd is compared with, as Debian ships it."""

    name: str
    package: str
    binary: str


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("tini", "tini", "tini"),
        Peer("dumb-init", "dumb-init", "dumb-init"),
        Peer("catatonit", "catatonit", "catatonit"),
        Peer("s6", "s6", "s6-svscan"),
        Peer("supervisord", "supervisor", "supervisord"),
    )
}
COLUMNS = ["overlayd", *PEERS]
_missing: dict[str, str] | None = None


def ensure_peers() -> dict[str, str]:
    """Install missing peers with apt-get (as root); return {peer: why it is missing}."""
    global _missing
    if _missing is not None:
        return _missing
    absent = [p for p in PEERS.values() if not shutil.which(p.binary)]
    if absent and IS_ROOT and shutil.which("apt-get"):
        pkgs = [p.package for p in absent]
        print(f"[bench] installing peers: {' '.join(pkgs)}", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", *pkgs]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
    _missing = {}
    for p in PEERS.values():
        if not shutil.which(p.binary):
            why = "apt-get install failed for" if IS_ROOT else "not root, cannot apt-get install"
            _missing[p.name] = f"{p.binary} not found ({why} {p.package})"
            print(f"[bench] skipping {p.name}: {_missing[p.name]}", file=sys.stderr)
    return _missing


def package_version(package: str) -> str:
    """The installed Debian version of a package, or 'absent'."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "absent"


def overlayd_version() -> str:
    """The git commit of the overlayd under test."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


_overlayd_problem: str | None = None
_overlayd_checked = False


def overlayd_problem() -> str | None:
    """Why overlayd cannot be measured (missing, or a trial boot fails), or None when it works."""
    global _overlayd_problem, _overlayd_checked
    if _overlayd_checked:
        return _overlayd_problem
    _overlayd_checked = True
    if not OVERLAYD.exists():
        _overlayd_problem = f"{OVERLAYD} not installed yet"
        return _overlayd_problem
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env = overlay_root(Path(tmp), {})
        try:
            out = subprocess.run(
                [*UNSHARE, str(OVERLAYD), "true"],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            _overlayd_problem = "trial `overlayd true` did not exit within 30 s"
            return _overlayd_problem
        if out.returncode != 0:
            tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
            _overlayd_problem = f"trial `overlayd true` exited {out.returncode}: {tail}"
    return _overlayd_problem


def unavailable(column: str) -> str | None:
    """Why a column cannot be measured on this machine, or None."""
    if column == "overlayd":
        return overlayd_problem()
    return ensure_peers().get(column)


# --------------------------------------------------------------------------- /proc


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat split after the command name: [state, ppid, ...] (field 3 onward)."""
    text = _read(f"/proc/{pid}/stat")
    return text[text.rindex(")") + 2 :].split() if text else None


def children_map() -> dict[int, list[int]]:
    """Every process's children, from one scan of /proc."""
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))):
            kids[int(fields[1])].append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    """pid and everything below it."""
    kids, found, todo = children_map(), [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(kids.get(p, ()))
    return found


def comm(pid: int) -> str:
    """A process's command name ('' once it is gone)."""
    return (_read(f"/proc/{pid}/comm") or "").strip()


def cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process, in clock ticks."""
    fields = stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def wakeups(pid: int) -> int:
    """Voluntary + involuntary context switches, summed over all threads."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            for line in (_read(f"/proc/{pid}/task/{tid}/status") or "").splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) in kB, from /proc/PID/smaps_rollup."""
    fields: dict[str, int] = defaultdict(int)
    for line in (_read(f"/proc/{pid}/smaps_rollup") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
            fields[key] = int(rest.split()[0])
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def ns_pid(pid: int) -> int | None:
    """A process's pid inside its innermost PID namespace."""
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None


# --------------------------------------------------------------------------- namespaces


class Namespace:
    """One program as PID 1 of a fresh PID namespace; taken down however it ends."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None
    ):
        self.argv = [*UNSHARE, *argv]
        # OVERLAY_S6_PATHS=0: a benchmark's PID 1 must not make /run/s6 on the host.
        self.env = {**os.environ, "OVERLAY_S6_PATHS": "0", **(env or {})}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._init: int | None = None
        self.t0 = 0.0

    def start(self) -> float:
        """Start it; return the start time in ms (taken just before the fork/exec)."""
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.t0 = now_ms()
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        if self.log:
            out.close()  # type: ignore[union-attr]
        return self.t0

    def __enter__(self) -> Namespace:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def init_pid(self) -> int:
        """The host pid of the namespace's PID 1 (the unshare process's only child)."""
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while self._init is None:
            kids = children_map().get(self.proc.pid)
            if kids:
                self._init = kids[0]
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"namespace did not start: {self.log_tail()}")
            else:
                time.sleep(0.001)
        return self._init

    @property
    def home(self) -> Path:
        """The scratch directory of this run: where its log, trees and sockets live."""
        assert self.log is not None
        return self.log.parent

    def running(self) -> bool:
        """True until unshare has exited (which is when the namespace is empty)."""
        return self.proc is not None and self.proc.poll() is None

    def supervision_tree(self) -> list[int]:
        """PID 1 and its descendants that are not services (see SERVICE_COMMS)."""
        return [p for p in descendants(self.init_pid) if comm(p) not in SERVICE_COMMS]

    def find(self, pid_inside: int) -> int | None:
        """The host pid of the process that is pid_inside within the namespace."""
        for p in descendants(self.init_pid):
            if ns_pid(p) == pid_inside:
                return p
        return None

    def signal(self, sig: int) -> None:
        """Send a signal to PID 1 (from outside, as `docker stop` does)."""
        if self.running():
            os.kill(self.init_pid, sig)

    def wait(self, timeout: float) -> float | None:
        """Wait for the namespace to end; return the time in ms, or None on timeout."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return now_ms()

    def close(self, natural: float = 0.0, grace: float = 15.0) -> None:
        """End it: wait `natural` s for it to exit alone, then SIGTERM, then SIGKILL PID 1."""
        if not self.running():
            return
        if natural and self.wait(natural) is not None:
            return
        with contextlib.suppress(ProcessLookupError, RuntimeError):
            self.signal(signal.SIGTERM)
            if self.wait(grace) is not None:
                return
            os.kill(self.init_pid, signal.SIGKILL)  # the kernel then kills the whole namespace
        self.wait(10)

    def log_tail(self) -> str:
        """The last line the init wrote, for error messages."""
        if not (self.log and self.log.exists()):
            return "no output"
        text = self.log.read_text(errors="replace").strip()
        return text.splitlines()[-1][:200] if text else "no output"


class Fifo:
    """A named pipe the benchmark reads: runs and CMDs write one line into it per event."""

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path)
        self._r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._w = os.open(path, os.O_WRONLY)  # held open so the reader never sees EOF
        self._poll = select.poll()
        self._poll.register(self._r, select.POLLIN)
        self._buf = b""
        self._lines: list[tuple[float, str]] = []

    def next(self, timeout: float) -> tuple[float, str]:
        """The next line and the time in ms it was read; TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not self._lines:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line in {self.path.name} within {timeout:g} s")
            if self._poll.poll(left * 1000):
                t = now_ms()
                self._buf += os.read(self._r, 65536)
                *done, self._buf = self._buf.split(b"\n")
                self._lines += [(t, line.decode(errors="replace")) for line in done]
        return self._lines.pop(0)

    def take(self, n: int, timeout: float) -> list[tuple[float, str]]:
        """The next n lines, all within `timeout` s."""
        deadline = time.monotonic() + timeout
        return [self.next(max(0.0, deadline - time.monotonic())) for _ in range(n)]

    def close(self) -> None:
        """Close both ends."""
        os.close(self._r)
        os.close(self._w)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh temporary directory for one run."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        yield Path(tmp)


# --------------------------------------------------------------------------- trees


def run_script(
    fifo: Path | None = None,
    tag: str = "up",
    ignore_term: bool = False,
    ready_fd: int | None = None,
) -> str:
    """A service: report '<tag> <pid>' on the fifo (and readiness on ready_fd), then idle."""
    lines = ["#!/bin/sh"]
    if ignore_term:
        lines.append("trap '' TERM")  # inherited by sleep across exec
    if fifo:
        lines.append(f"echo {tag} $$ >{fifo}")
    if ready_fd is not None:
        lines.append(f"echo >&{ready_fd}; exec {ready_fd}>&-")  # the s6 readiness protocol
    lines.append("exec sleep 1d")
    return "\n".join(lines) + "\n"


def write_exec(path: Path, text: str) -> Path:
    """Write an executable file (making its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def overlay_root(
    base: Path,
    services: dict[str, str],
    cont_init: dict[str, str] | None = None,
    grace_ms: int | None = None,
    ready_fd: int | None = None,
) -> dict[str, str]:
    """Lay out an OVERLAY_ROOT tree under base; return the environment for overlayd."""
    (base / "etc" / "services.d").mkdir(parents=True, exist_ok=True)
    (base / "etc" / "cont-init.d").mkdir(parents=True, exist_ok=True)
    for name, text in services.items():
        write_exec(base / "etc" / "services.d" / name / "run", text)
        if ready_fd is not None:
            (base / "etc" / "services.d" / name / "notification-fd").write_text(f"{ready_fd}\n")
    for name, text in (cont_init or {}).items():
        write_exec(base / "etc" / "cont-init.d" / name, text)
    env = {
        "OVERLAY_ROOT": str(base),
        "OVERLAY_RUN_DIR": str(base / "run"),
        "OVERLAY_SOCKET": str(base / "run" / "control.sock"),
        "OVERLAY_S6_PATHS": "0",  # a benchmark's PID 1 must not make /run/s6 on the host
    }
    if grace_ms is not None:
        env["S6_SERVICES_GRACETIME"] = str(grace_ms)
    return env


def s6_scandir(
    base: Path, services: dict[str, str], grace_ms: int | None = None, ready_fd: int | None = None
) -> Path:
    """Lay out an s6 scan directory; `grace_ms` becomes each service's timeout-kill."""
    scandir = base / "scandir"
    scandir.mkdir(parents=True, exist_ok=True)
    for name, text in services.items():
        write_exec(scandir / name / "run", text)
        if grace_ms is not None:
            (scandir / name / "timeout-kill").write_text(f"{grace_ms}\n")
        if ready_fd is not None:
            (scandir / name / "notification-fd").write_text(f"{ready_fd}\n")
    return scandir


def supervisord_conf(base: Path, services: dict[str, str], grace_ms: int | None = None) -> Path:
    """Write a supervisord.conf (with a unix socket for supervisorctl) running each script."""
    sock = base / "supervisor.sock"
    parts = [
        "[supervisord]",
        "nodaemon=true",
        "user=root" if IS_ROOT else "",
        f"logfile={base / 'supervisord.log'}",
        f"pidfile={base / 'supervisord.pid'}",
        f"childlogdir={base}",
        "loglevel=warn",
        "",
        "[unix_http_server]",
        f"file={sock}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{sock}",
    ]
    for name, text in services.items():
        script = write_exec(base / "programs" / name, text)
        parts += [
            "",
            f"[program:{name}]",
            f"command={script}",
            "autorestart=true",
            "stdout_logfile=NONE",
            "stderr_logfile=NONE",
        ]
        if grace_ms is not None:
            parts.append(f"stopwaitsecs={max(1, round(grace_ms / 1000))}")
    conf = base / "supervisord.conf"
    conf.write_text("\n".join(parts) + "\n")
    return conf


def supervisor_argv(
    column: str,
    base: Path,
    services: dict[str, str],
    *,
    cont_init: dict[str, str] | None = None,
    cmd: Sequence[str] = (),
    grace_ms: int | None = None,
    ready_fd: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that boot `column` (overlayd, s6 or supervisord) over services.

    s6-svscan and supervisord run no cont-init scripts and no CMD of their own: cont-init
    scripts run from a /bin/sh wrapper before the exec, as s6-overlay v2's stage 2 did.
    """
    if column == "overlayd":
        env = overlay_root(base, services, cont_init, grace_ms, ready_fd)
        return [str(OVERLAYD), *cmd], env
    if column == "s6":
        argv = ["s6-svscan", str(s6_scandir(base, services, grace_ms, ready_fd))]
    elif ready_fd is not None:
        raise ValueError(f"{column} has no readiness protocol")
    elif column == "supervisord":
        argv = ["supervisord", "-c", str(supervisord_conf(base, services, grace_ms))]
    else:
        raise ValueError(f"{column} supervises no services")
    if cont_init:
        ordered = sorted(cont_init.items())
        scripts = [str(write_exec(base / "cont-init.d" / n, t)) for n, t in ordered]
        argv = ["/bin/sh", "-c", "; ".join([*scripts, 'exec "$@"']), "sh", *argv]
    return argv, {}


@contextlib.contextmanager
def running(
    column: str,
    services: int,
    *,
    grace_ms: int | None = None,
    stubborn: int = 0,
    ready_fd: int | None = None,
) -> Iterator[tuple[Namespace, Fifo, list[tuple[float, str]]]]:
    """Boot `column` over n services (`exec sleep 1d`); yield once every one has reported.

    Yields the namespace, the fifo and the lines read so far: (ms, "up <pid in namespace>").

    The first `stubborn` services ignore SIGTERM; with ready_fd every service signals
    readiness on it. Whatever happens, the namespace is taken down on the way out.
    """
    with scratch() as base:
        fifo = Fifo(base / "events")
        runs = {
            f"svc{i:03d}": run_script(fifo.path, ignore_term=i < stubborn, ready_fd=ready_fd)
            for i in range(services)
        }
        argv, env = supervisor_argv(column, base, runs, grace_ms=grace_ms, ready_fd=ready_fd)
        ns = Namespace(argv, env, base / "init.log")
        try:
            ns.start()
            try:
                lines = fifo.take(services, 60 + services / 10)
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; init said: {ns.log_tail()}") from None
            yield ns, fifo, lines
        finally:
            ns.close(grace=5)
            fifo.close()


def init_argv(column: str, cmd: Sequence[str]) -> list[str]:
    """The argv that runs CMD under a single-child init (or bare, for column 'bare')."""
    return {
        "bare": [*cmd],
        "tini": ["tini", "--", *cmd],
        "dumb-init": ["dumb-init", *cmd],
        "catatonit": ["catatonit", "--", *cmd],
    }[column]


# --------------------------------------------------------------------------- samples & table


class Samples:
    """Repeated measurements keyed by (metric, column); a column that fails is dropped with why."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.errors: dict[str, str] = {}

    def skip(self, column: str) -> bool:
        """True when the column is unavailable or has already failed (recording why)."""
        if column not in self.errors and (why := unavailable(column)):
            self.errors[column] = why
        return column in self.errors

    def measure(self, column: str, fn: Callable[[], dict[str, float | list[float]]]) -> None:
        """Run one measurement of `column`; record each metric it returns, or the failure."""
        if self.skip(column):
            return
        try:
            for metric, value in fn().items():
                values = value if isinstance(value, list) else [value]
                self.data[(metric, column)].extend(values)
        except Exception as exc:  # a failing supervisor must not stop the suite
            self.errors[column] = f"{type(exc).__name__}: {exc}"
            print(f"[bench] {column} failed: {self.errors[column]}", file=sys.stderr)

    def add(self, metric: str, column: str, value: float) -> None:
        """Record one value directly."""
        self.data[(metric, column)].append(value)

    def values(self, metric: str, column: str) -> list[float]:
        """Every value of a metric for a column."""
        return self.data.get((metric, column), [])

    def median(self, metric: str, column: str) -> float | None:
        """The median of a metric for a column."""
        return median(self.values(metric, column))

    def row(
        self,
        figure: str,
        metric: str,
        columns: Sequence[str],
        unit: str,
        ref: str | None = None,
        target: str = "",
        transform: Callable[[float], float] = lambda v: v,
    ) -> Row:
        """A table row: the median of `metric` per column."""
        vals: dict[str, float | None] = {}
        for c in columns:
            m = self.median(metric, c)
            vals[c] = None if m is None else transform(m)
        notes = [f"{c}: n/a, {self.errors[c]}" for c in columns if c in self.errors]
        return Row(figure, unit, vals, ref, target, notes)


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    unit: str
    values: dict[str, float | None]  # column -> value; a column not present is "not applicable"
    ref: str | None = None  # the peer overlayd's ratio is taken against
    target: str = ""
    notes: list[str] = field(default_factory=list)

    def ratio(self) -> str:
        """overlayd / ref, as measured in the same run."""
        if not self.ref:
            return "—"
        mine, theirs = self.values.get("overlayd"), self.values.get(self.ref)
        if mine is None or theirs is None:
            return "n/a"
        if theirs == 0:
            return f"1.00x {self.ref}" if mine == 0 else f"n/a ({self.ref} = 0)"
        r = mine / theirs
        return f"{r:.2f}x {self.ref}" if abs(r) >= 0.1 else f"{r:.2g}x {self.ref}"


def fmt(value: float | None, unit: str) -> str:
    """A value with its unit, at a sensible precision."""
    if value is None:
        return "n/a"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    if float(value).is_integer():
        digits = 0
    return f"{value:,.{digits}f} {unit}".strip()


def table(rows: Sequence[Row]) -> str:
    """The markdown table (figure, overlayd, each peer, ratio, target) and its notes."""
    used = [c for c in COLUMNS if any(c in r.values for r in rows)]
    lines = [
        "| figure | " + " | ".join(used) + " | ratio | target |",
        "|---|" + "---:|" * len(used) + "---|---|",
    ]
    notes: list[str] = []
    for r in rows:
        cells = [fmt(r.values[c], r.unit) if c in r.values else "—" for c in used]
        marks = [str(len(notes) + i) for i in range(1, len(r.notes) + 1)]
        notes += r.notes
        mark = f" [{','.join(marks)}]" if marks else ""
        cells += [r.ratio(), r.target]
        lines.append(f"| {r.figure}{mark} | " + " | ".join(cells) + " |")
    if notes:
        lines.append("")
        lines += [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    """The CPU model name and core count."""
    model = "unknown CPU"
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores"


def header() -> str:
    """Date, machine and versions, for the top of the results file."""
    versions = ", ".join(f"{p.name} {package_version(p.package)}" for p in PEERS.values())
    return "\n".join(
        [
            "# overlayd benchmarks",
            "",
            f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            f"- CPU: {cpu_model()}; kernel {platform.release()}; "
            f"Python {platform.python_version()}",
            f"- overlayd: {overlayd_version()} ({OVERLAYD}); peers (Debian): {versions}",
            f"- mode: {'BENCH_QUICK=1 (smoke run, few repetitions)' if QUICK else 'full'}; "
            "each figure the median of interleaved runs, each in a fresh PID namespace",
            "",
        ]
    )


def main_for(run: Callable[[], list[Row]]) -> None:
    """Run one figure alone and print its table."""
    ensure_peers()
    print(table(run()), end="")


def boot_side_by_side(
    stack: contextlib.ExitStack, samples: Samples, columns: list[str], services: int
) -> dict[str, Namespace]:
    """Boot each column over `services` services, one after the other (each boot a sample of
    its column); every tree stays up until `stack` closes. Returns column → namespace."""
    trees: dict[str, Namespace] = {}

    def boot(column: str) -> dict[str, float]:
        trees[column] = stack.enter_context(running(column, services))[0]
        return {}

    for column in columns:
        samples.measure(column, lambda c=column: boot(c))
    return trees
