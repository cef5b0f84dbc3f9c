"""Liveness checks (DESIGN §13): a service's `health/` directory (check_specs.py reads it),
run while the service is up.

    health/check     executable (or run through its `#!`), cwd the service directory
    health/interval  ms from the end of one check to the start of the next (default 10000);
                     the first check runs one interval after the service is up
    health/timeout   ms a check may run before SIGKILL to its process group (default 5000)
    health/retries   consecutive failures that trigger the action (default 3)
    health/action    restart (default) | mark | shutdown

Checks never overlap: the next one is scheduled only when the previous one has ended. Health is
null until a check has a verdict, "healthy" after a pass, "unhealthy" after `retries`
consecutive failures (fewer leave it as it was, as Docker does). The `Liveness` object is the
only per-service cost while idle: one timer, no process.
"""

from __future__ import annotations

from protocol.states import HEALTHY, UNHEALTHY

from . import log, spawn
from .check_process import CheckLoop, CheckResult

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable

    from .check_specs import HealthSpec
    from .service import Runtime


class Liveness(CheckLoop):
    """The liveness checks of one service.

    `on_change()` is called whenever `health` changes; `on_action(action, why)` once `retries`
    consecutive checks have failed (for restart and shutdown: the owner acts on it).
    """

    __slots__ = (
        "_on_action", "_on_change", "checked_at", "failures", "health", "last_output",
        "last_what", "spec",
    )

    def __init__(
        self,
        host: Runtime,
        spec: HealthSpec,
        name: str,
        cwd: str,
        on_change: Callable[[], None],
        on_action: Callable[[str, str], None],
    ) -> None:
        super().__init__(host, name, cwd)
        self.spec = spec
        self._on_change = on_change
        self._on_action = on_action
        self.health: str | None = None
        self.failures = 0
        self.checked_at: float | None = None  # epoch seconds the last check ended
        self.last_output = ""
        self.last_what = ""

    def service_up(self) -> None:
        """The service is up (or ready): the first check runs one interval from now."""
        if not self.active:
            self.failures = 0
            self._schedule()

    def service_down(self) -> None:
        """The service is no longer up: no timer, no check process, no verdict."""
        self._halt()
        self.failures = 0
        self._set_health(None)

    def _schedule(self) -> None:
        self._after(self.spec.interval_ms / 1000, self._start_check)

    def _start_check(self) -> None:
        argv, warning = spawn.script_argv(self.spec.check)
        if warning:
            log.debug(warning)  # said once per check otherwise: every interval
        self._check(argv, self.spec.timeout_ms / 1000)

    def _ended(self, result: CheckResult) -> None:
        self.checked_at = self._host.wall()
        self.last_output = result.output
        self.last_what = result.what
        if result.passed:
            self.failures = 0
            if self.health == UNHEALTHY:
                log.info(f"service {self.name}: health check passes again: healthy")
            self._set_health(HEALTHY)
            self._schedule()
            return
        self.failures += 1
        log.debug(f"service {self.name}: health check failed ({self.describe_failure()})")
        if self.failures < self.spec.retries:
            self._schedule()
            return
        why = (
            f"health check failed {self.failures} time(s) in a row: {self.describe_failure()}"
        )
        if self.health != UNHEALTHY:
            log.warn(f"service {self.name}: {why}; action {self.spec.action}")
        self._set_health(UNHEALTHY)
        if self.spec.action == "mark":
            self._schedule()  # keep checking: a pass makes it healthy again
            return
        self._on_action(self.spec.action, why)

    def describe_failure(self) -> str:
        """What the last check did: its exit and its last output line."""
        if self.last_output:
            return f"{self.last_what}: {self.last_output}"
        return self.last_what

    def _set_health(self, health: str | None) -> None:
        if health != self.health:
            self.health = health
            self._on_change()
