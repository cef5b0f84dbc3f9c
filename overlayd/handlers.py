"""One function per RPC method, over the narrow core (core.py; DESIGN §5).

rpc.py does transport, auth and validation; by the time a handler runs its params are bound and
type-checked by ``protocol.validate_request``. A handler returns the result, raises
``ProtocolError`` to answer with an error, or returns a ``Future`` (``wait``) that later resolves
with the result or a ``ProtocolError`` instance. Handlers never block and never keep state that
outlives their caller's connection.
"""

from __future__ import annotations

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
from protocol.states import ALIVE, BACKOFF, FAILED, SETTLED, STARTING, UP, WANT_UP

from . import __version__
from .loop import TIMED_OUT, Future
from .reaper import ExitStatus

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .core import Core as Container
    from .service import Service

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
    return service.state in ALIVE


def is_ready(service: Service) -> bool:
    """Ready: signalled on its notification-fd, or simply up when it has none (as in s6)."""
    return service.ready


def is_down(service: Service) -> bool:
    """Not running and not about to run again by itself."""
    return service.state in SETTLED


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
    info = session.container.info()
    return {
        "server": "overlayd",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "methods": list(METHODS),
        "pid1": bool(info["pid1"]),
        "read_only": session.read_only,
        "orphans_reaped": info["orphans_reaped"],
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


def signal_(session: Session, sig: str | int, names: list[str]) -> list[str]:
    """Send a signal to each named service's process; all must be running."""
    signum = signal_number(sig)
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
    # Evaluated only when one of `services` changes, or at a recheck (the caller gone).
    handle = container.supervisor.wait_for(
        services, lambda: session.closed or all(met(s) for s in services)
    )
    reply = Future()

    def done(future: Future) -> None:
        handle.cancel()
        if future.result is TIMED_OUT:
            late = ", ".join(s.name for s in services if not met(s))
            reply.set_result(
                ProtocolError(TIMEOUT, f"wait {condition}: timed out after {timeout} s: {late}")
            )
        else:
            reply.set_result(True)

    container.loop.with_timeout(handle.future, timeout).add_done_callback(done)
    return reply


def _last_exit_text(service: Service) -> str:
    if service.last_exit is None:
        return "could not be started"
    code, signum, _at = service.last_exit
    return ExitStatus(code, signum).describe()


def _problem(service: Service) -> str | None:
    """Why this service makes the container unhealthy, or None (DESIGN §6)."""
    if service.state == FAILED:  # a broken directory, or finish exited 125
        return service.reason or "failed"
    if service.state == BACKOFF:
        return f"{_last_exit_text(service)} within 1 s of starting; restarting after a pause"
    if service.want != WANT_UP:
        return None  # stopped on request, or normally down and never started
    checks = service.checks.problem() if service.checks is not None else None
    if checks is not None:
        return checks
    if service.definition.notification_fd is not None and service.state in (STARTING, UP):
        return "up but not ready"
    if not is_ready(service):
        return f"wanted up but {service.state}"
    return None


def check(session: Session) -> dict[str, object]:
    """Health: every wanted-up service up (and ready), nothing failed, crash-looping or
    unhealthy (its liveness check failing `retries` times in a row)."""
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


HANDLERS: dict[str, Handler] = {
    "hello": hello,
    "status": status,
    "start": start,
    "stop": stop,
    "restart": restart,
    "once": once,
    "signal": signal_,
    "wait": wait,
    "check": check,
    "shutdown": shutdown,
    "subscribe": subscribe,
}
