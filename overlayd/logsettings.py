"""The logging variables, read and checked once with the rest of the configuration.

S6_LOGGING              0 (default) no catch-all; 1 catch-all + copy to the console; 2 only
S6_LOGGING_SCRIPT       s6-log directives for the catch-all and logutil-service
                        (default `n20 s1000000 T`)
S6_CATCHALL_USER        the catch-all logger runs as this user (root containers only)
OVERLAY_UNCAUGHT_LOGS   the catch-all's logdir (default /run/uncaught-logs)
OVERLAY_LOG_PREFIX      1: service output reaches the container prefixed `NAME | `
OVERLAY_LOG_TIMESTAMPS  1: and an ISO 8601 time first
S6_CMD_USE_TERMINAL     1: with S6_LOGGING=2 and a terminal, the CMD keeps the terminal
"""

from __future__ import annotations

import os

from protocol.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_SCRIPT = "n20 s1000000 T"
DEFAULT_UNCAUGHT = "/run/uncaught-logs"
PACKAGE_HINT = "install the s6 package (Debian/Ubuntu: apt-get install s6; Alpine: apk add s6)"

LogSettings = record(
    "LogSettings", "mode script catchall_user uncaught_dir prefix timestamps cmd_use_terminal"
)


def script_words(text: str | None) -> tuple[str, ...]:
    """S6_LOGGING_SCRIPT as s6-log arguments (unset or empty: the default)."""
    return tuple((text or DEFAULT_SCRIPT).split()) or tuple(DEFAULT_SCRIPT.split())


def load(env: Mapping[str, str], mode: int) -> LogSettings:
    """The settings; raises config.ConfigError on a bad value (exit 100, nothing started)."""
    from .config import ConfigError

    def flag(name: str) -> bool:
        value = env.get(name) or "0"
        if value not in ("0", "1"):
            raise ConfigError(name, value, "0 or 1")
        return value == "1"

    user = env.get("S6_CATCHALL_USER") or None
    if user is not None and mode and os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            raise ConfigError("S6_CATCHALL_USER", user, "a user in /etc/passwd") from None
    uncaught = env.get("OVERLAY_UNCAUGHT_LOGS") or DEFAULT_UNCAUGHT
    if not os.path.isabs(uncaught):
        raise ConfigError("OVERLAY_UNCAUGHT_LOGS", uncaught, "an absolute path")
    script = env.get("S6_LOGGING_SCRIPT")
    if script is not None and ("\n" in script or "\0" in script):
        raise ConfigError("S6_LOGGING_SCRIPT", script, "s6-log directives on one line")
    return LogSettings(
        mode=mode,
        script=script_words(script),
        catchall_user=user,
        uncaught_dir=uncaught,
        prefix=flag("OVERLAY_LOG_PREFIX"),
        timestamps=flag("OVERLAY_LOG_TIMESTAMPS"),
        cmd_use_terminal=flag("S6_CMD_USE_TERMINAL"),
    )
