"""One function per RPC method, over the container's state (DESIGN §5).

rpc.py does transport, auth and validation; by the time a handler runs its params are bound and
type-checked by ``protocol.validate_request``. A handler returns the result, raises
``ProtocolError`` to answer with an error, or returns a ``Future`` (``wait``) that later resolves
with the result or a ``ProtocolError`` instance. Handlers never block and never keep state that
outlives their caller's connection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from protocol import (
    BAD_REQUEST,
    INVALID_STATE,
    METHODS,
    NO_SUCH_SERVICE,
    PROTOCOL_VERSION,
    SHUTTING_DOWN,
    TIMEOUT,
    ProtocolError,
)
from protocol.signals import signal_number as parse_signal

from . import __version__
from .loop import TIMED_OUT, Future
from .reaper import ExitStatus
from .service import BACKOFF, FAILED, READY, STARTING, UP, Service

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .stages import Container

    class Session(Protocol):
        """What a handler sees of its caller: rpc.Connection implements it."""

        container: Container
        read_only: bool

        @property
        def closed(self) -> bool:
            """True once the connection is gone: pending work for it may be dropped."""
            ...

        def subscribe(self) -> None:
            """Send this caller a ``state`` notification at every state change from now on."""
            ...


    Handler = Callable[..., Any]



# --- wait conditions ------------------------------------------------------------------------


def is_up(service: Service) -> bool:
    """A process is running and not being stopped."""
    return service.state in (STARTING, UP, READY)


def is_ready(service: Service) -> bool:
    """Ready: signalled on its notification-fd, or simply up when it has none (as in s6)."""
    if service.state == READY:
        return True
    return service.state == UP and service.definition.notification_fd is None


def is_down(service: Service) -> bool:
    """Not running and not about to run again by itself."""
    return service.state in ("down", FAILED)


CONDITIONS: dict[str, Callable[[Service], bool]] = {
    "up": is_up,
    "ready": is_ready,
    "down": is_down,
}


# --- helpers --------------------------------------------------------------------------------


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def lookup(container: Container, names: list[str]) -> list[Service]:
    """The named services, in order, each once; ``no_such_service`` naming every unknown one."""
    supervisor = container.supervisor
    names = _unique(names)
    missing = [name for name in names if supervisor.get(name) is None]
    if missing:
        raise ProtocolError(
            NO_SUCH_SERVICE, f"no such service: {', '.join(missing)}", {"names": missing}
        )
    return [supervisor.get(name) for name in names]


def _all_services(container: Container) -> list[Service]:
    return list(container.supervisor.services.values())


def _refuse_during_shutdown(container: Container, method: str) -> None:
    if container.stopping:
        raise ProtocolError(SHUTTING_DOWN, f"{method}: the container is shutting down")


def _refuse_broken(services: list[Service]) -> None:
    for service in services:
        if service.broken:
            raise ProtocolError(
                INVALID_STATE,
                f"service {service.name} cannot run: {service.reason or 'broken directory'}",
                {"name": service.name},
            )


def signal_number(sig: str | int) -> int:
    """A signal param (``HUP``, ``SIGHUP``, ``1``) as a number; ``bad_request`` when invalid."""
    try:
        return parse_signal(sig)
    except ValueError as exc:
        raise ProtocolError(BAD_REQUEST, f"signal: {exc}") from None


# --- psutil figures (status details) ---------------------------------------------------------

#: Processes whose CPU baseline psutil holds (pid, create time); pruned to the live trees.
_cpu_seen: set[tuple[int, float]] = set()
NO_FIGURES: dict[str, object] = {"cpu_percent": None, "rss": None, "nprocs": None}


def process_figures(pids: list[int | None]) -> list[dict[str, object]]:
    """cpu_percent, rss and nprocs of each pid's whole process tree (None for no pid).

    psutil is imported here only, when someone asks. ``process_iter`` keeps one cached Process
    per live pid, so cpu_percent is measured since the previous details call; a process seen
    for the first time reports its lifetime average instead of psutil's meaningless 0.0.
    """
    import psutil

    children: dict[int, list[Any]] = {}
    by_pid: dict[int, Any] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        by_pid[proc.pid] = proc
        if ppid is not None:
            children.setdefault(ppid, []).append(proc)
    seen: set[tuple[int, float]] = set()
    out = []
    for pid in pids:
        root = by_pid.get(pid) if pid is not None else None
        if root is None:
            out.append(dict(NO_FIGURES))
            continue
        cpu, rss, count = 0.0, 0, 0
        pending = [root]
        while pending:
            proc = pending.pop()
            pending.extend(children.get(proc.pid, ()))
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    cpu += _cpu_percent(proc, seen)
                count += 1
            except psutil.Error:
                continue  # exited meanwhile, or not ours to read
        out.append({"cpu_percent": round(cpu, 1), "rss": rss, "nprocs": count})
    _cpu_seen.clear()
    _cpu_seen.update(seen)
    return out


def _cpu_percent(proc: Any, seen: set[tuple[int, float]]) -> float:
    key = (proc.pid, proc.create_time())
    seen.add(key)
    since_last = proc.cpu_percent(None)  # 0.0 the first time: it only sets the baseline
    if key in _cpu_seen:
        return since_last
    times = proc.cpu_times()
    age = time.time() - key[1]
    return 100.0 * (times.user + times.system) / age if age > 0 else 0.0


# --- the methods ----------------------------------------------------------------------------


def hello(session: Session) -> dict[str, object]:
    """Who we are, what we speak, what this caller may do."""
    return {
        "server": "overlayd",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "methods": list(METHODS),
        "pid1": bool(session.container.is_pid1),
        "read_only": session.read_only,
        "orphans_reaped": session.container.reaper.unknown_reaped,
    }


def status(session: Session, names: list[str], details: bool) -> list[dict[str, object]]:
    """Records of all services, or of the named ones; psutil figures when ``details``."""
    container = session.container
    services = lookup(container, names) if names else _all_services(container)
    records = [service.record() for service in services]
    if details:
        figures = process_figures([service.pid for service in services])
        for record, extra in zip(records, figures, strict=True):
            record.update(extra)
    return records


def _act(
    session: Session, method: str, names: list[str], action: Callable[[Service], None], runs: bool
) -> list[str]:
    container = session.container
    services = lookup(container, names)
    _refuse_during_shutdown(container, method)
    if runs:
        _refuse_broken(services)
    for service in services:
        action(service)
    return [service.name for service in services]


def start(session: Session, names: list[str]) -> list[str]:
    """Want the services up and start them."""
    return _act(session, "start", names, lambda s: s.start(), runs=True)


def stop(session: Session, names: list[str]) -> list[str]:
    """Want the services down and stop them (a broken one is already down: no error)."""
    return _act(session, "stop", names, lambda s: s.stop(), runs=False)


def restart(session: Session, names: list[str]) -> list[str]:
    """Down signal now; the exit path starts them again."""
    return _act(session, "restart", names, lambda s: s.restart(), runs=True)


def once(session: Session, names: list[str]) -> list[str]:
    """Start the services without restarting them after they exit."""
    return _act(session, "once", names, lambda s: s.once(), runs=True)


def signal_(session: Session, sig: str | int, names: list[str], group: bool = False) -> list[str]:
    """Send a signal to each named service's process (or process group); all must be running."""
    signum = signal_number(sig)
    if group:
        return signal_groups(session, signum, names)
    services = lookup(session.container, names)
    for service in services:
        if service.pid is None:
            raise ProtocolError(
                INVALID_STATE,
                f"service {service.name} is not running (state {service.state})",
                {"name": service.name},
            )
    for service in services:
        service.send_signal(signum)
    return [service.name for service in services]


def wait(session: Session, condition: str, names: list[str], timeout: float | None) -> object:
    """True once every named service meets ``condition``; error ``timeout`` after ``timeout`` s.

    Never blocks: returns a Future. Its supervisor waiter is dropped as soon as the wait ends
    (met, timed out, or the caller gone), so abandoned waits cannot pile up in PID 1.
    """
    container = session.container
    services = lookup(container, names)
    met = CONDITIONS[condition]
    if all(met(s) for s in services):
        return True
    if container.stopping and condition != "down":
        raise ProtocolError(SHUTTING_DOWN, f"wait {condition}: the container is shutting down")
    supervisor = container.supervisor
    finished = False

    def predicate() -> bool:
        return finished or session.closed or all(met(s) for s in services)

    reply = Future()

    def done(future: Future) -> None:
        nonlocal finished
        finished = True
        if future.result is TIMED_OUT:
            # Our `when` waiter is still registered: let the next recheck drop it.
            container.loop.call_soon(supervisor.recheck)
            late = ", ".join(s.name for s in services if not met(s))
            reply.set_result(
                ProtocolError(TIMEOUT, f"wait {condition}: timed out after {timeout} s: {late}")
            )
        else:
            reply.set_result(True)

    container.loop.with_timeout(supervisor.when(predicate), timeout).add_done_callback(done)
    return reply


def _last_exit_text(service: Service) -> str:
    if service.last_exit is None:
        return "could not be started"
    code, signum, _at = service.last_exit
    return ExitStatus(code, signum).describe()


def _problem(service: Service) -> str | None:
    """Why this service makes the container unhealthy, or None (DESIGN §6)."""
    if service.broken:
        return service.reason or "broken service directory"
    if service.state == FAILED:
        return service.reason or "failed"
    if service.state == BACKOFF:
        return f"{_last_exit_text(service)} within 1 s of starting; restarting after a pause"
    if service.want != "up":
        return None  # stopped on request, or normally down and never started
    if service.definition.notification_fd is not None and service.state in (STARTING, UP):
        return "up but not ready"
    if not is_ready(service):
        return f"wanted up but {service.state}"
    return None


def check(session: Session) -> dict[str, object]:
    """Health: every wanted-up service up (and ready), nothing failed or crash-looping."""
    problems = []
    for service in _all_services(session.container):
        reason = _problem(service)
        if reason is not None:
            problems.append({"name": service.name, "state": service.state, "reason": reason})
    return {"healthy": not problems, "problems": problems}


def shutdown(session: Session, exit_code: int | None) -> bool:
    """Start stage 3 with this exit code; the reply goes out before stage 3 begins."""
    container = session.container
    if container.stopping:
        container.request_shutdown(exit_code, reason="overlayctl shutdown")  # records the code
        return True
    # Deferred one loop turn: rpc sends this reply first, so the caller always gets it.
    container.loop.call_soon(
        lambda: container.request_shutdown(exit_code, reason="overlayctl shutdown")
    )
    return True


def subscribe(session: Session) -> bool:
    """From now on, a ``state`` notification per state change on this connection."""
    session.subscribe()
    return True


# --- added for overlayctl's synchronous verbs and rescan (issue #14) ---------------------------

#: The name of the CMD's row in `status` (a service of that name, if any, wins).
CMD_NAME = "CMD"


def signal_groups(session: Session, signum: int, names: list[str]) -> list[str]:
    """`signal` with group=true: the whole process group of each running service."""
    services = lookup(session.container, names)
    for service in services:
        if service.pid is None or service.pgid is None:
            raise ProtocolError(
                INVALID_STATE,
                f"service {service.name} is not running (state {service.state})",
                {"name": service.name},
            )
    for service in services:
        try:
            os.killpg(service.pgid, signum)
        except ProcessLookupError:
            pass  # exited meanwhile: nothing left to signal
    return [service.name for service in services]


def _proc_start_time(pid: int) -> float | None:
    """Epoch seconds `pid` started, from /proc (None when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def cmd_record(container: Container) -> dict[str, object] | None:
    """The CMD as a status row (name CMD), or None when there is no CMD."""
    cmd = getattr(container, "cmd", None)
    if not cmd:
        return None
    pid = getattr(container, "cmd_pid", None)
    status = getattr(container, "cmd_status", None)
    last = None
    if status is not None:
        last = {"code": status.code, "signal": status.signal, "at": None}
    started = _proc_start_time(pid) if pid is not None else None
    return {
        "name": CMD_NAME,
        "state": "up" if pid is not None else "down",
        "want": "up",
        "pid": pid,
        "pgid": pid,
        "since": started,
        "started": started,
        "restarts": 0,
        "last_exit": last,
        "ready": pid is not None,
        "normally_up": True,
        "notification_fd": None,
        "reason": None,
        "cmd": list(cmd),
    }


def status_with_cmd(session: Session, names: list[str], details: bool) -> list[dict[str, object]]:
    """`status`, with the CMD's row last when no names are given or CMD is named."""
    container = session.container
    cmd = None
    if container.supervisor.get(CMD_NAME) is None and (not names or CMD_NAME in names):
        cmd = cmd_record(container)
    if cmd is None:
        return status(session, names, details)
    others = [name for name in names if name != CMD_NAME]
    records = status(session, others, details) if others or not names else []
    if details:
        cmd.update(process_figures([cmd["pid"]])[0])
    return [*records, cmd]


def rescan(session: Session) -> dict[str, list[str]]:
    """Re-read services.d, as SIGHUP does without a CMD; what started and what stopped."""
    container = session.container
    _refuse_during_shutdown(container, "rescan")
    supervisor = container.supervisor
    wanted = {name: service.want for name, service in supervisor.services.items()}
    supervisor.rescan()
    now = supervisor.services
    return {
        "added": [name for name in now if name not in wanted],
        "stopped": [n for n, s in now.items() if wanted.get(n) == "up" and s.want != "up"],
    }


HANDLERS: dict[str, Handler] = {
    "hello": hello,
    "status": status_with_cmd,
    "start": start,
    "stop": stop,
    "restart": restart,
    "once": once,
    "signal": signal_,
    "wait": wait,
    "check": check,
    "shutdown": shutdown,
    "subscribe": subscribe,
    "rescan": rescan,
}
