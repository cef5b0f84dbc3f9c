"""Driving dependency plans with real processes: the bridge from depgraph to the services.

`RcRunner.up(names)` brings names up along the graph: each service is launched as soon as its
plan says so — a oneshot runs its `up`, a longrun is started through its Service, a built-in
(fix-attrs, legacy-cont-init, legacy-services) runs overlayd's own step — and is reported up
when it is: a oneshot that exited 0, a longrun that is ready (with a notification-fd) or
running (without), bounded by its `timeout-up`. `down(names)` is the reverse: dependents first,
a oneshot's `down` in its turn, a longrun stopped and SIGKILLed after `timeout-down` (or the
caller's bound). Waiting is on the supervisor's state-change listener and on process exits;
nothing polls.
"""

from __future__ import annotations

from protocol.states import ALIVE, FAILED, SETTLED, STARTING, UP, WANT_UP, is_ready

from . import log
from .depgraph import LONGRUN, ONESHOT, dry_run
from .loop import Future, Task, first_of

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .depgraph import Graph, Plan
    from .loop import Loop, Timer
    from .oneshot import Oneshot
    from .rc_source import RcDef
    from .service import Service
    from .supervisor import Supervisor

    Report = Callable[[str, "str | None"], None]

class SharedEnv:
    """The oneshots' child environment, read once for all the starts of one turn.

    Reading it (contenv: a file per variable) costs about as much as the fork itself; the
    oneshots a plan makes runnable together start in one turn, before any of them can have
    run, so one reading serves them all (each gets its own copy). Outside `hold()`/`release()`
    every call reads afresh."""

    __slots__ = ("_depth", "_env", "read")

    def __init__(self, read: Callable[[], dict[str, str]]) -> None:
        self.read = read
        self._depth = 0
        self._env: dict[str, str] | None = None

    def __call__(self) -> dict[str, str]:
        if not self._depth:
            return self.read()
        if self._env is None:
            self._env = self.read()
        return dict(self._env)

    def hold(self) -> None:
        self._depth += 1

    def release(self) -> None:
        self._depth -= 1
        if not self._depth:
            self._env = None


class RcRunner:
    """Brings sets of services up and down in dependency order (see the module docstring)."""

    def __init__(
        self,
        loop: Loop,
        supervisor: Supervisor,
        graph: Graph,
        defs: dict[str, RcDef],
        oneshots: dict[str, Oneshot],
        builtins: dict[str, Callable[[], Awaitable[str | None]]],
        legacy_names: set[str],
        legacy_wait_ready: bool,
        create_legacy: Callable[[], None] = lambda: None,
        shared_env: SharedEnv | None = None,
    ) -> None:
        self.loop = loop
        self.supervisor = supervisor
        self.graph = graph
        self.defs = defs
        self.oneshots = oneshots
        self.builtins = builtins
        self.builtin_up: set[str] = set()
        self.legacy_names = legacy_names
        self.legacy_wait_ready = legacy_wait_ready
        self.create_legacy = create_legacy  # services.d's Services, made when first due
        self.shared_env = shared_env  # the oneshots' environment, one reading per turn
        self._watches: dict[str, list[Callable[[Service], None]]] = {}
        self._starting: dict[str, list[Report]] = {}  # name → the plans waiting on its start
        supervisor.add_listener(self._service_changed)

    # --- what is up ------------------------------------------------------------------------
    def _longrun_up(self, service: Service) -> bool:
        if service.name in self.legacy_names and not self.legacy_wait_ready:
            return service.state in ALIVE  # started is enough (see _start_longrun)
        return is_ready(service.state, service.definition.notification_fd is not None)

    def is_up(self, name: str) -> bool:
        if name in self.builtins:
            return name in self.builtin_up
        if name in self.oneshots:
            return self.oneshots[name].state == UP
        service = self.supervisor.get(name)
        return service is not None and service.want == WANT_UP and self._longrun_up(service)

    def is_active(self, name: str) -> bool:
        """Up or on its way: what a stop must take down."""
        if name in self.builtins:
            return name in self.builtin_up
        if name in self.oneshots:
            return self.oneshots[name].state in (UP, STARTING)
        service = self.supervisor.get(name)
        return service is not None and (service.want == WANT_UP or service.state not in SETTLED)

    def active(self) -> set[str]:
        return {name for name in self.graph.nodes if self.graph.kind(name) in (ONESHOT, LONGRUN)
                and self.is_active(name)}

    def request_up(self, names: list[str]) -> list[str]:
        """`overlayctl start`: bring `names` up in the background, dependencies first; returns
        the dependencies that start too."""
        up_now = {n for n in self.graph.up_closure(names) if self.is_up(n)}
        extra = [n for n in dry_run(self.graph.plan_up(names, up_now))
                 if n not in names and self.supervisor.get(n) is not None]
        Task(self.up(names), "start " + " ".join(names))
        return extra

    def request_down(self, names: list[str]) -> list[str]:
        """`overlayctl stop`: take `names` down in the background, dependents first; returns
        those dependents."""
        extra = [n for n in dry_run(self.graph.plan_down(names, self.active()))
                 if n not in names and self.supervisor.get(n) is not None]
        Task(self.down(names), "stop " + " ".join(names))
        return extra

    # --- transitions -----------------------------------------------------------------------
    async def up(
        self,
        names: list[str],
        *,
        deadline: Future | None = None,
    ) -> Plan:
        """Bring `names` up. Stops handing out new starts once `deadline` resolves (what was
        started is left running; the plan is then not `finished`)."""
        up_now = {n for n in self.graph.up_closure(names) if self.is_up(n)}
        plan = self.graph.plan_up(names, up_now)
        await self._drive(plan, self._launch_up, deadline)
        return plan

    async def down(self, names: list[str], bound_ms: int = 0) -> Plan:
        """Take `names` down, every active dependent first. `bound_ms` bounds a longrun's or a
        oneshot's stop where it has no timeout-down (0: no bound)."""
        plan = self.graph.plan_down(names, self.active())
        await self._drive(plan, lambda name, report: self._launch_down(name, report, bound_ms))
        return plan

    async def _drive(self, plan: Plan, launch: Callable[[str, Report], None],
                     deadline: Future | None = None) -> None:
        wake = Future()

        def report(name: str, why: str | None) -> None:
            if name in plan.done or name in plan.failed:
                return
            if why is None:
                plan.succeeded(name)
                if plan.going_up:
                    log.info(f"service {name}: up")
            else:
                if plan.going_up:
                    log.error(f"service {name}: failed to start: {why}")
                else:
                    log.warn(f"service {name}: {why}")
                blocked = plan.failed_with(name, why)
                if blocked:
                    log.error(f"not starting {', '.join(blocked)}: {name} failed")
            wake.set_result(None)

        while not plan.finished:
            if deadline is not None and deadline.done:
                return  # what was started goes on; nothing more is started
            wake = Future()
            shared = self.shared_env
            if shared is not None:
                shared.hold()
            try:
                for name in plan.runnable():
                    launch(name, report)
            finally:
                if shared is not None:
                    shared.release()
            if plan.finished or wake.done:
                continue
            await (wake if deadline is None else first_of(wake, deadline))

    def _launch_up(self, name: str, report: Report) -> None:
        """Start `name`; a start already under way (another plan's) is joined, not repeated."""
        joined = self._starting.get(name)
        if joined is not None:
            joined.append(report)
            return
        self._starting[name] = [report]

        def done(finished: str, why: str | None) -> None:
            for each in self._starting.pop(finished, ()):
                each(finished, why)

        self._start_one(name, done)

    def _start_one(self, name: str, report: Report) -> None:
        log.info(f"service {name}: starting")
        if name in self.builtins:
            self._run_task(name, self.builtins[name](), report, on_success=self.builtin_up.add)
        elif name in self.oneshots:
            self._run_task(name, self.oneshots[name].up(), report)
        else:
            self._start_longrun(name, report)

    def _launch_down(self, name: str, report: Report, bound_ms: int) -> None:
        if name in self.builtins:
            self.builtin_up.discard(name)
            report(name, None)
        elif name in self.oneshots:
            log.info(f"service {name}: stopping")
            self._run_task(name, self.oneshots[name].down(bound_ms), report)
        else:
            log.info(f"service {name}: stopping")
            self._stop_longrun(name, report, bound_ms)

    def _run_task(self, name: str, work: Awaitable[str | None], report: Report,
                  on_success: Callable[[str], None] | None = None) -> None:
        async def run() -> None:
            try:
                why = await work
            except Exception as exc:  # a bug in a step: its dependents must not start
                log.exception(f"service {name}: crashed")
                why = f"internal error: {exc}"
            if why is None and on_success is not None:
                on_success(name)
            report(name, why)

        Task(run(), f"service {name}")

    # --- longruns --------------------------------------------------------------------------
    def _timeout_ms(self, name: str, field: str) -> int:
        rc = self.defs.get(name)
        return getattr(rc, field) if rc is not None else 0

    def _start_longrun(self, name: str, report: Report) -> None:
        legacy = name in self.legacy_names
        if legacy:
            self.create_legacy()
        service = self.supervisor.get(name)
        if service is None:
            report(name, "no such service")
            return
        if service.broken:
            if legacy:  # s6-overlay starts services.d without waiting on it: counted, not fatal
                report(name, None)
            else:
                report(name, service.definition.problem or "its directory is broken")
            return
        if service.logger is not None:
            service.logger.start()
        service.start()
        if legacy and not self.legacy_wait_ready:
            report(name, None)  # legacy-services is up once its services are started
            return
        timer: list[Timer] = []

        def check(changed: Service) -> None:
            if self._longrun_up(changed):
                why = None
            elif changed.state == FAILED:
                why = changed.reason or "permanent failure"
            else:
                return
            self._unwatch(name, check)
            for t in timer:
                t.cancel()
            report(name, why)

        timeout = self._timeout_ms(name, "timeout_up_ms")
        if timeout:
            def expired() -> None:
                self._unwatch(name, check)
                service.stop()  # as s6-rc: a longrun that did not come up is brought down
                report(name, f"not up after timeout-up ({timeout} ms)")

            timer.append(self.loop.call_later(timeout / 1000, expired))
        self._watch(name, check)
        check(service)

    def _stop_longrun(self, name: str, report: Report, bound_ms: int) -> None:
        service = self.supervisor.get(name)
        if service is None:
            report(name, None)
            return
        service.stop()
        timer: list[Timer] = []

        def check(changed: Service) -> None:
            if changed.state in SETTLED:
                self._unwatch(name, check)
                for t in timer:
                    t.cancel()
                report(name, None)

        own = self._timeout_ms(name, "timeout_down_ms")
        bound = own or bound_ms
        if bound:
            def expired() -> None:
                if service.pid is not None:
                    what = f"timeout-down ({own} ms)" if own else "the grace time"
                    log.warn(f"service {name} outlived {what}; sending SIGKILL")
                service.kill_group()

            timer.append(self.loop.call_later(bound / 1000, expired))
        self._watch(name, check)
        check(service)

    def _watch(self, name: str, callback: Callable[[Service], None]) -> None:
        self._watches.setdefault(name, []).append(callback)

    def _unwatch(self, name: str, callback: Callable[[Service], None]) -> None:
        callbacks = self._watches.get(name, [])
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            self._watches.pop(name, None)

    def _service_changed(self, service: Service) -> None:
        for callback in list(self._watches.get(service.name, ())):
            callback(service)
