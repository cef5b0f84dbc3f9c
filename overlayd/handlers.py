"""One function per RPC method, over the narrow core (core.py; DESIGN §5).

rpc.py does transport, auth and validation; by the time a handler runs its params are bound and
type-checked by ``protocol.validate_request``. A handler returns the result, raises
``ProtocolError`` to answer with an error, or returns a ``Future`` (``wait``) that later resolves
with the result or a ``ProtocolError`` instance. Handlers never block and never keep state that
outlives their caller's connection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator

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
from protocol.states import (
    ALIVE,
    BACKOFF,
    DOWN,
    FAILED,
    K_LAST_EXIT,
    K_NAME,
    K_NORMALLY_UP,
    K_NOTIFICATION_FD,
    K_PGID,
    K_PID,
    K_READY,
    K_REASON,
    K_RESTARTS,
    K_SINCE,
    K_STARTED,
    K_STATE,
    K_WANT,
    SETTLED,
    STARTING,
    UP,
    WANT_UP,
    exit_record,
)

from . import __version__, log
from .loop import TIMED_OUT, Future
from .reaper import ExitStatus

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from typing import Any, Protocol

    from .core import Core as Container
    from .rc_run import RcRunner
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
    """A process is running and not being stopped; a oneshot: its `up` succeeded."""
    if getattr(service, "kind", None) == "oneshot":
        return service.state == UP
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


def _expand_bundles(container: Container, names: list[str]) -> list[str]:
    """A bundle name (s6-rc) stands for its member services, in name order."""
    rc = getattr(container, "rc", None)  # None before stage 2 has read the trees
    if rc is None:
        return names
    supervisor = container.supervisor
    out: list[str] = []
    for name in names:
        if supervisor.get(name) is None and name in rc.graph and rc.graph.kind(name) == "bundle":
            out.extend(sorted(a for a in rc.graph.atoms(name) if supervisor.get(a) is not None))
        else:
            out.append(name)
    return out


def lookup(container: Container, names: list[str]) -> list[Service]:
    """The named services (bundles expanded), in order, each once; ``no_such_service``
    naming every unknown one."""
    supervisor = container.supervisor
    names = _unique(_expand_bundles(container, names))
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
#
# Walking thousands of processes takes a second or more; done in one go it would stall PID 1.
# So a walk examines DETAILS_SLICE processes per loop turn (other clients are served between
# slices), only the services' own process trees are visited (through /proc/PID/task/TID/children,
# never the whole process table), and walks are shared: a details request made while a walk
# runs is answered by the next one, so any number of callers costs at most two walks.

#: Processes examined per loop turn by a details walk, and the time a slice may take.
DETAILS_SLICE = 64
DETAILS_SLICE_SECONDS = 0.005
NO_FIGURES: dict[str, object] = {"cpu_percent": None, "rss": None, "nprocs": None}
#: Processes whose CPU baseline psutil holds: (pid, create time) → psutil.Process.
_cpu_seen: dict[tuple[int, float], Any] = {}
_walking: Future | None = None  # the walk in progress
_after_walk: Future | None = None  # the walk that starts once it ends


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` from /proc (every thread's list)."""
    kids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                kids.extend(map(int, handle.read().split()))
        except OSError:
            continue
    return kids


def _walk(pids: list[int], out: dict[int, dict[str, object]]) -> Iterator[None]:
    """Fill ``out`` with each root pid's tree figures; yields every DETAILS_SLICE processes
    or DETAILS_SLICE_SECONDS, whichever comes first."""
    import psutil

    seen: dict[tuple[int, float], Any] = {}
    examined = 0
    slice_end = time.monotonic() + DETAILS_SLICE_SECONDS
    for root in pids:
        cpu, rss, count = 0.0, 0, 0
        pending = [root]
        while pending:
            pid = pending.pop()
            pending.extend(_children(pid))
            try:
                proc = psutil.Process(pid)
                key = (pid, proc.create_time())
                proc = _cpu_seen.get(key, proc)  # the one holding the CPU baseline
                seen[key] = proc
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    cpu += _cpu_percent(proc, key)
                count += 1
            except psutil.Error:
                pass  # exited meanwhile, or not ours to read
            examined += 1
            if examined % DETAILS_SLICE == 0 or time.monotonic() >= slice_end:
                yield
                slice_end = time.monotonic() + DETAILS_SLICE_SECONDS
        if count:
            out[root] = {"cpu_percent": round(cpu, 1), "rss": rss, "nprocs": count}
    _cpu_seen.clear()
    _cpu_seen.update(seen)


def _cpu_percent(proc: Any, key: tuple[int, float]) -> float:
    since_last = proc.cpu_percent(None)  # 0.0 the first time: it only sets the baseline
    if key in _cpu_seen:
        return since_last
    times = proc.cpu_times()
    age = time.time() - key[1]
    return 100.0 * (times.user + times.system) / age if age > 0 else 0.0


def _start_walk(container: Container) -> Future:
    """Walk every running service's tree, a slice per loop turn; resolves with pid → figures."""
    global _walking
    done = Future()
    _walking = done
    pids = [s.pid for s in _all_services(container) if s.pid is not None]
    figures: dict[int, dict[str, object]] = {}
    steps = _walk(pids, figures)
    loop = container.loop

    def step() -> None:
        global _walking
        try:
            next(steps)
        except StopIteration:
            pass
        except Exception:
            log.exception("status --details: walking the process trees failed")
        else:
            loop.call_soon(step)
            return
        _walking = None
        done.set_result(figures)

    loop.call_soon(step)
    return done


def process_figures_later(container: Container) -> Future:
    """A Future of pid → figures, from the walk in progress's successor or a new walk."""
    global _after_walk
    if _walking is None:
        return _start_walk(container)
    if _after_walk is None:
        queued = _after_walk = Future()

        def start_next(_ended: Future) -> None:
            global _after_walk
            _after_walk = None
            _start_walk(container).add_done_callback(lambda f: queued.set_result(f.result))

        _walking.add_done_callback(start_next)
    return _after_walk


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
    """Records of all services, or of the named ones; psutil figures when ``details``.

    With ``details`` the reply is a Future: the figures come from a walk done a slice per loop
    turn (see above), so PID 1 never stalls over thousands of processes.
    """
    container = session.container
    services = lookup(container, names) if names else _all_services(container)
    records = [service.record() for service in services]
    if not details:
        return records
    pids = [service.pid for service in services]
    reply = Future()

    def fill(walked: Future) -> None:
        from .logsource import describe

        for record, pid, service in zip(records, pids, services, strict=True):
            record.update(walked.result.get(pid, NO_FIGURES))
            record["log"] = describe(container, service)  # where its output goes
        reply.set_result(records)

    process_figures_later(session.container).add_done_callback(fill)
    return reply


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


def _along_dependencies(
    session: Session, method: str, names: list[str], direct: Callable[[Service], None],
    along: Callable[[RcRunner, list[str]], list[str]],
) -> list[str]:
    """start/stop: services of the dependency graph (DESIGN §10) go through it, the others
    (added by a later rescan) directly. Returns every name acted on, the extra ones first."""
    container = session.container
    services = lookup(container, names)
    _refuse_during_shutdown(container, method)
    if method == "start":
        _refuse_broken(services)
    rc = getattr(container, "rc", None)  # None before stage 2 has read the trees
    ordered = [s.name for s in services if rc is not None and s.name in rc.graph]
    for service in services:
        if service.name not in ordered:
            direct(service)
    extra = along(rc, ordered) if rc is not None and ordered else []
    return [*extra, *(s.name for s in services)]


def start(session: Session, names: list[str]) -> list[str]:
    """Want the services up and start them, their dependencies first."""
    return _along_dependencies(session, "start", names, lambda s: s.start(),
                               lambda rc, ordered: rc.request_up(ordered))


def stop(session: Session, names: list[str]) -> list[str]:
    """Want the services down and stop them (a broken one is already down: no error), what
    depends on them first."""
    return _along_dependencies(session, "stop", names, lambda s: s.stop(),
                               lambda rc, ordered: rc.request_down(ordered))


def _refuse_oneshots(services: list[Service], method: str) -> None:
    for service in services:
        if getattr(service, "kind", None) == "oneshot":
            raise ProtocolError(
                INVALID_STATE, f"{method}: {service.name} is a oneshot; use stop and start",
                {"name": service.name},
            )


def restart(session: Session, names: list[str]) -> list[str]:
    """Down signal now; the exit path starts them again."""
    _refuse_oneshots(lookup(session.container, names), "restart")
    return _act(session, "restart", names, lambda s: s.restart(), runs=True)


def once(session: Session, names: list[str]) -> list[str]:
    """Start the services without restarting them after they exit."""
    _refuse_oneshots(lookup(session.container, names), "once")
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


def logs(session: Session, name: str, lines: int, after: int | None) -> dict[str, object]:
    """Where ``name``'s output goes; with prefixing on, its last ``lines`` lines (after
    cursor ``after``) from the ring, and the cursor to follow from."""
    from .logsource import read_back

    (service,) = lookup(session.container, [name])
    return read_back(session.container, service, lines, after)


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
    from .service import Runtime  # its ESRCH rule: a group not yet made is its leader alone

    for service in services:
        Runtime.signal_group(service.pgid, signum)
    return [service.name for service in services]


def cmd_record(container: Container) -> dict[str, object] | None:
    """The CMD as a status row (name CMD), or None when there is no CMD."""
    cmd, pid, status, since = container.cmd()
    if not cmd:
        return None
    running = pid is not None
    last = None if status is None else exit_record(status.code, status.signal, since)
    return {
        K_NAME: CMD_NAME,
        K_STATE: UP if running else DOWN,
        K_WANT: WANT_UP,
        K_PID: pid,
        K_PGID: pid,
        K_SINCE: since,
        K_STARTED: since if running else None,
        K_RESTARTS: 0,
        K_LAST_EXIT: last,
        K_READY: running,
        K_NORMALLY_UP: True,
        K_NOTIFICATION_FD: None,
        K_REASON: None,
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
    if isinstance(records, Future):  # details: the services' figures come a slice per turn
        reply = Future()
        cmd.update(NO_FIGURES)
        records.add_done_callback(lambda done: reply.set_result([*done.result, cmd]))
        return reply  # type: ignore[return-value]
    return [*records, cmd]


def rescan(session: Session) -> dict[str, list[str]]:
    """Re-read services.d, as SIGHUP does without a CMD; what started and what stopped."""
    container = session.container
    _refuse_during_shutdown(container, "rescan")
    supervisor = container.supervisor
    wanted = {name: service.want for name, service in supervisor.services.items()}
    container.rescan("overlayctl rescan")  # deferred, as SIGHUP's, until services.d started
    now = supervisor.services
    return {
        "added": [name for name in now if name not in wanted],
        # stopped: wanted up before, and now wanted down or forgotten (its directory vanished)
        "stopped": [
            name for name, want in wanted.items()
            if want == "up" and (name not in now or now[name].want != "up")
        ],
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
    "logs": logs,
    "rescan": rescan,
}
