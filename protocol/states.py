"""The words of a service's life, defined once for overlayd and overlayctl (DESIGN §4, §6).

Standard library free and import free: overlayd's boot path and a health check's start-up path
both import this module.
"""

DOWN = "down"
STARTING = "starting"  # `run` is running, has a notification-fd, readiness not yet signalled
UP = "up"  # `run` is running (without a notification-fd it counts as ready, as in s6)
READY = "ready"  # `run` is running and wrote a newline on its notification-fd
STOPPING = "stopping"  # the down signal was sent; waiting for `run` to exit
FINISHING = "finishing"  # `run` exited; `finish` is running
BACKOFF = "backoff"  # `run` died < 1 s after it started (or could not fork): waiting
FAILED = "failed"  # a broken directory, or `finish` exited 125 (permanent failure)

#: Every state, in the order of a service's life.
STATES: tuple[str, ...] = (DOWN, STARTING, UP, READY, STOPPING, FINISHING, BACKOFF, FAILED)
#: A `run` process exists.
RUNNING = frozenset((STARTING, UP, READY, STOPPING))
#: Running and not being stopped (the `wait --up` condition).
ALIVE = frozenset((STARTING, UP, READY))
#: Nothing runs and nothing will by itself (the `wait --down` condition).
SETTLED = frozenset((DOWN, FAILED))

#: Values of `want`.
WANT_UP = "up"
WANT_DOWN = "down"

# Status record keys (DESIGN §6): stable names, additions allowed, removals never.
K_NAME = "name"
K_STATE = "state"
K_WANT = "want"
K_PID = "pid"
K_PGID = "pgid"
K_SINCE = "since"
K_RESTARTS = "restarts"
K_LAST_EXIT = "last_exit"
K_READY = "ready"
K_NORMALLY_UP = "normally_up"
#: Keys every record carries.
RECORD_KEYS: tuple[str, ...] = (
    K_NAME, K_STATE, K_WANT, K_PID, K_PGID, K_SINCE, K_RESTARTS, K_LAST_EXIT, K_READY,
    K_NORMALLY_UP,
)
# Additions (optional for clients talking to an older overlayd).
K_STARTED = "started"  # epoch seconds the running `run` was started, or null
K_NOTIFICATION_FD = "notification_fd"
K_REASON = "reason"  # why `failed` (or what went wrong last), or null
K_TYPE = "type"  # "longrun" (a supervised process) or "oneshot" (an s6-rc up/down pair)
K_HEALTH = "health"  # HEALTHY, UNHEALTHY, or null (no health/ check, no verdict, not up)
K_HEALTH_CHECKED = "health_checked"  # epoch seconds the last health check ended, or null
K_HEALTH_OUTPUT = "health_output"  # the last health check's last output line (≤ 1 KB), or null
#: Values of `health` (DESIGN §13).
HEALTHY = "healthy"  # the last liveness check passed
UNHEALTHY = "unhealthy"  # `retries` liveness checks in a row failed
#: The health keys of a record without a verdict (no check, not up, a oneshot).
NO_HEALTH: dict[str, None] = {K_HEALTH: None, K_HEALTH_CHECKED: None, K_HEALTH_OUTPUT: None}
# `last_exit`'s keys.
K_CODE = "code"
K_SIGNAL = "signal"
K_AT = "at"


def exit_record(code: int | None, signum: int | None, at: float | None) -> dict[str, object]:
    """A record's `last_exit`: the exit code, or the signal it died of, and when."""
    return {K_CODE: code, K_SIGNAL: signum, K_AT: at}


def is_ready(state: str, has_notification_fd: bool) -> bool:
    """Ready: signalled on the notification-fd, or simply up without one (as in s6)."""
    return state == READY or (state == UP and not has_notification_fd)
