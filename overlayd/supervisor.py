"""The set of supervised services: loading, rescanning, waiting on conditions, shutting down.

The supervisor is built first and owns the services' Runtime: every state change comes to
`changed` directly, which tells the listeners and re-evaluates only the waits that name the
service that changed.

Loggers: a service with a `log/` directory gets a pipe that overlayd creates and holds open for
as long as the service exists; the service's stdout is its write end, the logger's stdin its
read end. A restart of either side therefore loses no line, and when the service goes away
(shutdown, or its directory removed and rescanned) the logger is stopped by EOF after its
producer is down, so it writes out everything it was sent.
"""

from __future__ import annotations

import os

from protocol.states import SETTLED

from . import log
from .loop import TIMED_OUT, Future, first_of
from .scan import ServiceDef, scan
from .service import Runtime, Service

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from .loop import Loop
    from .reaper import Reaper

    Predicate = Callable[[], bool]

#: Seconds a retired service's logger gets to end by itself after its EOF before it is stopped.
LOGGER_EOF_GRACE = 3.0


class Wait:
    """A pending condition over named services: `future` resolves with True when `predicate`
    holds after one of them changed (or at `recheck`). `cancel()` drops it at once."""

    __slots__ = ("_supervisor", "future", "predicate", "services")

    def __init__(
        self, supervisor: Supervisor, services: list[Service], predicate: Predicate
    ) -> None:
        self._supervisor = supervisor
        self.services = services
        self.predicate = predicate
        self.future = Future()

    def cancel(self) -> None:
        self._supervisor._drop(self)

    def _check(self) -> None:
        if not self.future.done and self.predicate():
            self._supervisor._drop(self)
            self.future.set_result(True)


class Supervisor:
    """Owns every Service and answers "tell me when this becomes true of these services"."""

    def __init__(
        self,
        loop: Loop,
        reaper: Reaper,
        child_env: Callable[[], dict[str, str]],
        services_dir: str,
    ) -> None:
        self.loop = loop
        self.rt = Runtime(loop, reaper, child_env, self.changed)
        self.services_dir = services_dir
        self.services: dict[str, Service] = {}
        self._pipes: dict[Service, tuple[int, int | None]] = {}  # main service → its log pipe
        self._retiring: dict[Service, None] = {}  # removed from `services`, not yet down
        # Service → the waits naming it; None → waits naming none (checked only at recheck).
        self._waits: dict[Service | None, dict[Wait, None]] = {}
        self._listeners: list[Callable[[Service], None]] = []

    # --- building --------------------------------------------------------------------------
    def load(self) -> list[Service]:
        """Scan services.d and create the services found; returns the new ones."""
        return [self._add(d) for d in self._scan() if d.name not in self.services]

    def _scan(self) -> list[ServiceDef]:
        definitions, notes = scan(self.services_dir)
        for note in notes:
            log.warn(note)
        return definitions

    def _add(self, definition: ServiceDef) -> Service:
        if definition.problem:
            log.error(f"{definition.problem}; the service is marked failed")
        service = Service(definition, self.rt)
        if definition.logger is not None:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            self._pipes[service] = (read_end, write_end)
            logger = Service(definition.logger, self.rt, stdin_fd=read_end)
            logger.is_logger = True
            if definition.logger.problem:
                log.error(f"{definition.logger.problem}; the logger is marked failed")
            self.services[logger.name] = logger
            service.stdout_fd = write_end
            service.logger = logger
        self.services[service.name] = service
        return service

    def start_normally_up(self, services: Iterable[Service]) -> None:
        """Start each service without a `down` file, its logger first."""
        for service in services:
            if not service.definition.normally_up:
                continue
            if service.logger is not None:
                service.logger.start()
            service.start()

    def rescan(self) -> None:
        """SIGHUP without a CMD (DESIGN §4): a vanished directory is stopped and forgotten (its
        logger and pipe closed), one that comes back is a new service, changed files take
        effect at the next start. A change a running service cannot take (a logger added or
        removed, a directory broken or mended) replaces it: the old one retires, a new one
        starts."""
        definitions = {d.name: d for d in self._scan()}
        for service in self.main_services():
            found = definitions.get(service.name)
            if found is None:
                log.info(f"service {service.name}: directory removed; stopping and forgetting it")
                self._retire(service)
            elif _replaced(service.definition, found):
                log.info(f"service {service.name}: directory changed; replacing the service")
                self._retire(service)
            else:
                service.redefine(found)
                if service.logger is not None and found.logger is not None:
                    service.logger.redefine(found.logger)
        new = [self._add(d) for name, d in definitions.items() if name not in self.services]
        self.start_normally_up(new)
        if new:
            log.info("rescan: added " + ", ".join(s.name for s in new))

    def _retire(self, service: Service) -> None:
        """Forget `service` now; stop it, then its logger (EOF first), then close its pipe."""
        del self.services[service.name]
        if service.logger is not None:
            self.services.pop(service.logger.name, None)
        self._retiring[service] = None
        service.stop()
        self.wait_for([service], lambda: service.state in SETTLED).future.add_done_callback(
            lambda _f: self._producer_gone(service)
        )

    def _producer_gone(self, service: Service) -> None:
        self._retiring.pop(service, None)
        logger = service.logger
        self._close_write_end(service)
        if logger is None:
            self._close_read_end(service)
            return
        self._retiring[logger] = None
        logger.release()
        done = self.wait_for([logger], lambda: logger.state in SETTLED)
        timer = self.loop.call_later(LOGGER_EOF_GRACE, logger.stop)

        def logger_gone(_f: Future) -> None:
            timer.cancel()
            self._retiring.pop(logger, None)
            self._close_read_end(service)

        done.future.add_done_callback(logger_gone)

    def _close_write_end(self, service: Service) -> None:
        pipe = self._pipes.get(service)
        if pipe is not None and pipe[1] is not None:
            os.close(pipe[1])
            self._pipes[service] = (pipe[0], None)
            service.stdout_fd = None

    def _close_read_end(self, service: Service) -> None:
        pipe = self._pipes.pop(service, None)
        if pipe is not None:
            os.close(pipe[0])
            if pipe[1] is not None:
                os.close(pipe[1])
            if service.logger is not None:
                service.logger.stdin_fd = None

    # --- queries ---------------------------------------------------------------------------
    def main_services(self) -> list[Service]:
        return [s for s in self.services.values() if not s.is_logger]

    def loggers(self) -> list[Service]:
        return [s.logger for s in self.services.values() if s.logger is not None]

    def get(self, name: str) -> Service | None:
        return self.services.get(name)

    # --- events ----------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[Service], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[Service], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def changed(self, service: Service) -> None:
        """Every Service calls this on each state change (the Runtime's on_change)."""
        for listener in list(self._listeners):
            try:
                listener(service)
            except Exception:
                log.exception("state listener failed")
        waits = self._waits.get(service)
        if waits:
            for wait in list(waits):
                wait._check()

    def wait_for(self, services: list[Service], predicate: Predicate) -> Wait:
        """A Wait resolved as soon as predicate() holds: checked now, then after each change
        of one of `services` (and at `recheck`). Cancel it when it is no longer wanted."""
        wait = Wait(self, services, predicate)
        if predicate():
            wait.future.set_result(True)
            return wait
        for key in _keys(wait):
            self._waits.setdefault(key, {})[wait] = None
        return wait

    def _drop(self, wait: Wait) -> None:
        for key in _keys(wait):
            waits = self._waits.get(key)
            if waits is not None:
                waits.pop(wait, None)
                if not waits:
                    del self._waits[key]

    def recheck(self) -> None:
        """Re-evaluate every pending wait after something outside the services changed (a
        client gone: its waits' predicates say so)."""
        pending = {w: None for waits in self._waits.values() for w in waits}
        for wait in pending:
            wait._check()

    def pending_waits(self) -> int:
        """How many waits are registered (tests and `hello` figures)."""
        return len({w for waits in self._waits.values() for w in waits})

    # --- shutdown --------------------------------------------------------------------------
    async def shut_down(self, grace_seconds: float, skip: Future) -> None:
        """Stage 3 step 2: every service down at once, SIGKILL after the grace, finish scripts;
        then the loggers, by EOF."""
        self.rt.shutting_down = True
        every = [*self.services.values(), *self._retiring]
        mains = [s for s in every if not s.is_logger]
        for service in mains:
            service.stop()
        await self._settle(mains, grace_seconds, skip)
        if skip.done:
            return
        # Loggers go last: EOF once their producers are gone, so every line is written out.
        for service in list(self._pipes):
            self._close_write_end(service)
        loggers = [s for s in every if s.is_logger]
        for logger in loggers:
            logger.release()
        await self._settle(loggers, grace_seconds, skip)

    async def _settle(self, services: list[Service], grace: float, skip: Future) -> None:
        """Wait until every one is down or failed; SIGKILL the stragglers after `grace`."""
        wait = self.wait_for(services, lambda: all(s.state in SETTLED for s in services))
        try:
            done = await self.loop.with_timeout(first_of(wait.future, skip), grace)
            if done is not TIMED_OUT or skip.done:
                return
            for service in services:
                if service.pid is not None:
                    log.warn(f"service {service.name} outlived the grace time; sending SIGKILL")
                service.kill_group()
            await first_of(wait.future, skip)
        finally:
            wait.cancel()


def _keys(wait: Wait) -> list[Service | None]:
    return list(wait.services) if wait.services else [None]


def _replaced(old: ServiceDef, new: ServiceDef) -> bool:
    """A change only a new Service can take: logger added/removed, broken/mended."""
    return (old.logger is None) != (new.logger is None) or (old.problem is None) != (
        new.problem is None
    ) or (
        old.logger is not None
        and new.logger is not None
        and (old.logger.problem is None) != (new.logger.problem is None)
    )
