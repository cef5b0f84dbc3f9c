"""The set of supervised services: loading, rescanning, waiting on conditions, shutting down.

Loggers: a service with a `log/` directory gets a pipe that overlayd creates and holds open for
the life of the container; the service's stdout is its write end, the logger's stdin its read
end. A restart of either side therefore loses no line, and at shutdown the logger is stopped by
EOF (after its producer is down), so it writes out everything it was sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from . import log
from .loop import Future
from .scan import ServiceDef, scan
from .service import SETTLED, Runtime, Service

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from .outputs import Outputs

Predicate = Callable[[], bool]


class Supervisor:
    """Owns every Service and answers "tell me when this becomes true"."""

    def __init__(self, runtime: Runtime, services_dir: str) -> None:
        self.rt = runtime
        self.services_dir = services_dir
        self.services: dict[str, Service] = {}
        self._log_pipes: dict[str, tuple[int, int]] = {}
        self._waiters: list[tuple[Predicate, Future]] = []
        self._listeners: list[Callable[[Service], None]] = []
        self.outputs: Outputs | None = None  # set by stages: where each child's output goes

    # --- building --------------------------------------------------------------------------
    def load(self) -> list[Service]:
        """Scan services.d and create the services found; returns the new ones."""
        return self._add_new(self._scan())

    def _scan(self) -> list[ServiceDef]:
        definitions, notes = scan(self.services_dir)
        for note in notes:
            log.warn(note)
        return definitions

    def _add_new(self, definitions: list[ServiceDef]) -> list[Service]:
        return [self._add(d) for d in definitions if d.name not in self.services]

    def _add(self, definition: ServiceDef) -> Service:
        if definition.problem:
            log.error(f"{definition.problem}; the service is marked failed")
        stdout_fd = None
        if definition.logger is not None:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            self._log_pipes[definition.name] = (read_end, write_end)
            logger = Service(definition.logger, self.rt, stdin_fd=read_end)
            self._route_output(logger, False)
            logger.is_logger = True
            if definition.logger.problem:
                log.error(f"{definition.logger.problem}; the logger is marked failed")
            self.services[logger.name] = logger
            stdout_fd = write_end
        service = Service(definition, self.rt, stdout_fd=stdout_fd)
        self._route_output(service, definition.logger is not None)
        if definition.logger is not None:
            service.logger = self.services[definition.logger.name]
        self.services[service.name] = service
        return service

    def _route_output(self, service: Service, has_logger: bool) -> None:
        """Prefixed output (OVERLAY_LOG_PREFIX=1): the service's fds into the line prefixer."""
        if self.outputs is not None:
            stdout_fd, stderr_fd = self.outputs.service_fds(service.name, has_logger)
            if stdout_fd is not None:
                service.stdout_fd = stdout_fd
            service.stderr_fd = stderr_fd

    def start_normally_up(self, services: Iterable[Service]) -> None:
        """Start each service without a `down` file, its logger first."""
        for service in services:
            if not service.definition.normally_up:
                continue
            if service.logger is not None:
                service.logger.start()
            service.start()

    def rescan(self) -> None:
        """SIGHUP without a CMD: new directories start, removed ones stop."""
        definitions = self._scan()
        present = {d.name for d in definitions}
        new = self._add_new(definitions)
        self.start_normally_up(new)
        for service in self.main_services():
            if service.name not in present and service.want == "up":
                log.info(f"service {service.name}: directory removed; stopping it")
                service.stop()
        if new:
            log.info("rescan: started " + ", ".join(s.name for s in new))

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
        """Called by every Service on each state change."""
        for listener in list(self._listeners):
            try:
                listener(service)
            except Exception:
                log.exception("state listener failed")
        if self._waiters:
            self._check_waiters()

    def when(self, predicate: Predicate) -> Future:
        """A Future resolved (with True) as soon as predicate() holds after some change."""
        future = Future()
        if predicate():
            future.set_result(True)
        else:
            self._waiters.append((predicate, future))
        return future

    def recheck(self) -> None:
        """Re-evaluate pending `when` predicates after something outside the services changed."""
        self._check_waiters()

    def _check_waiters(self) -> None:
        still = []
        for predicate, future in self._waiters:
            if future.done:
                continue
            if predicate():
                future.set_result(True)
            else:
                still.append((predicate, future))
        self._waiters = still

    # --- shutdown --------------------------------------------------------------------------
    async def shut_down(self, grace_seconds: float, skip: Future) -> None:
        """Stage 3 step 2: every service down at once, SIGKILL after the grace, finish scripts."""
        self.rt.shutting_down = True
        mains = self.main_services()
        for service in mains:
            service.stop()
        await self._settle(mains, grace_seconds, skip)
        if skip.done:
            return
        # Loggers go last: EOF once their producers are gone, so every line is written out.
        for name in list(self._log_pipes):
            os.close(self._log_pipes.pop(name)[1])
        loggers = self.loggers()
        for logger in loggers:
            logger.want = "down"
        await self._settle(loggers, grace_seconds, skip)

    async def _settle(self, services: list[Service], grace: float, skip: Future) -> None:
        """Wait until every one is down or failed; SIGKILL the stragglers after `grace`."""
        def all_settled() -> bool:
            return skip.done or all(s.state in SETTLED for s in services)

        done = await self.rt.loop.with_timeout(self.when(all_settled), grace)
        if done is True:
            return
        for service in services:
            if service.pid is not None:
                log.warn(f"service {service.name} outlived the grace time; sending SIGKILL")
            service.kill_group()
        await self.when(all_settled)
