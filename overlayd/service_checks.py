"""The checks and give-up policy of one service, as events for its state machine.

A `ServiceChecks` sits beside a Service and turns what its checks and policy find into the
Service's events: `ready` (the polled `data/check` passed), `unhealthy` (a liveness check failed
`retries` times; the Service restarts, or the container stops), `timeout_up` (not ready within
`timeout-up`). The Service tells it what happened in return: spawned, state changed, died.
"""

from __future__ import annotations

from protocol.states import (
    DOWN,
    K_HEALTH,
    K_HEALTH_CHECKED,
    K_HEALTH_OUTPUT,
    READY,
    STARTING,
    UNHEALTHY,
    UP,
)

from .give_up import DeathTally, StartFailures
from .liveness import Liveness
from .readiness_check import ReadinessPoller

TYPE_CHECKING = False  # typing costs ~7 ms of PID 1's boot; annotations need none of it
if TYPE_CHECKING:
    from collections.abc import Callable

    from .check_specs import ChecksSpec
    from .loop import Timer
    from .service import Runtime

UP_STATES = frozenset((UP, READY))


class ServiceChecks:
    """Readiness polling, liveness checks, the death tally and start retries of one service.

    `emit(event, why)` feeds the owning Service: ("ready", ""), ("unhealthy", why) with the
    health action in `action`, ("timeout_up", why). `on_change()` says the record changed.
    """

    __slots__ = (
        "_emit", "_host", "_on_change", "_timeout_up", "directory", "failures", "liveness",
        "name", "poller", "spec", "tally",
    )

    def __init__(
        self,
        host: Runtime,
        spec: ChecksSpec,
        name: str,
        directory: str,
        emit: Callable[[str, str], None],
        on_change: Callable[[], None],
    ) -> None:
        self._host = host
        self.spec = spec
        self.name = name
        self.directory = directory
        self._emit = emit
        self._on_change = on_change
        self._timeout_up: Timer | None = None
        self.tally = DeathTally(spec.give_up.max_death_tally)
        self.failures = StartFailures(spec.give_up)
        self.liveness: Liveness | None = None
        if spec.health is not None:
            self.liveness = Liveness(
                host, spec.health, name, directory, on_change, self._health_action
            )
        self.poller: ReadinessPoller | None = None
        if spec.poll is not None:
            self.poller = ReadinessPoller(
                host, spec.poll, name, directory, lambda: self._emit("ready", "")
            )

    @property
    def action(self) -> str:
        return self.spec.health.action if self.spec.health is not None else "restart"

    # --- what the service tells us ------------------------------------------------------------
    def spawned(self, has_notification_fd: bool, directory: str) -> None:
        """`run` was just started, in `directory` (its live directory under DESIGN §11's paths):
        the checks run there too, and the death tally goes to its supervise/."""
        self.directory = directory
        for loop in (self.liveness, self.poller):
            if loop is not None:
                loop.cwd = directory
        if self.poller is not None:
            self.poller.start()
        timeout_up = self.spec.give_up.timeout_up_ms
        if has_notification_fd and timeout_up:
            self._cancel_timeout_up()
            self._timeout_up = self._host.call_later(timeout_up / 1000, self._up_too_late)

    def state_changed(self, state: str) -> None:
        if state in UP_STATES:
            if self.liveness is not None:
                self.liveness.service_up()
        elif self.liveness is not None:
            self.liveness.service_down()
        if state != STARTING:
            self._cancel_timeout_up()
            if self.poller is not None:
                self.poller.stop()

    def died(self, code: int | None, signum: int | None) -> None:
        """`run` ended, asked to or not: into the death tally."""
        self.tally.add(self._host.wall(), code, signum)
        self.tally.write_for_s6(self.directory)

    def start_ended(self, lived: float) -> str | None:
        """`run` died by itself `lived` s after its start; the reason to give up, or None."""
        return self.failures.death(lived)

    def started_by_hand(self) -> None:
        """A start request: the retry count starts again (a `failed` service gets its chances)."""
        self.failures.reset()

    def close(self) -> None:
        """The service is forgotten (rescan): no timer, no process left behind."""
        self.state_changed(DOWN)

    # --- record -------------------------------------------------------------------------------
    @property
    def health(self) -> str | None:
        return self.liveness.health if self.liveness is not None else None

    def record(self) -> dict[str, object]:
        """Keys added to the service's status record."""
        live = self.liveness
        return {
            K_HEALTH: self.health,
            K_HEALTH_CHECKED: live.checked_at if live is not None else None,
            K_HEALTH_OUTPUT: live.last_output if live is not None and live.checked_at else None,
        }

    def problem(self) -> str | None:
        """Why `overlayctl check` should fail for this service's checks, or None."""
        live = self.liveness
        if live is not None and live.health == UNHEALTHY:
            return f"unhealthy: {self.spec.health.check}: {live.describe_failure()}"
        if self.poller is not None and self.poller.gave_up:
            return f"never ready: {self.poller.gave_up}"
        return None

    # --- internals ----------------------------------------------------------------------------
    def _health_action(self, action: str, why: str) -> None:
        self._emit("unhealthy", why)

    def _up_too_late(self) -> None:
        self._timeout_up = None
        self._emit("timeout_up", self.failures.timed_out_reason())

    def _cancel_timeout_up(self) -> None:
        if self._timeout_up is not None:
            self._timeout_up.cancel()
            self._timeout_up = None
