"""Every knob overlayd has, read once from the environment into one frozen object.

Configuration comes only from the environment so that every argument stays the CMD. A bad value
raises ConfigError naming the variable and what it accepts; __main__ turns that into one line on
stderr and exit code 100 before anything is started.
"""

from __future__ import annotations

import os

from protocol.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

EXIT_CONFIG_ERROR = 100


class ConfigError(Exception):
    """A variable holds a value overlayd cannot use."""

    def __init__(self, name: str, value: str, accepts: str) -> None:
        super().__init__(f"{name}={value!r} is not valid: it accepts {accepts}")
        self.name = name


_FIELDS = (
    "root",
    "run_dir",
    "socket_path",
    "socket_gid",
    "keep_env",
    "logging",
    "behaviour_if_stage2_fails",
    "cmd_wait_for_services",
    "cmd_wait_for_services_maxtime",
    "services_gracetime",
    "kill_finish_maxtime",
    "kill_gracetime",
    "services_readytime",
    "cmd_arg0",
    "cmd_receive_signals",
    "fix_attrs_hidden",
    "read_only_root",
    "sync_disks",
    "verbosity",
    "s6_paths",
    "log",
    "stage2_hook",
    "runtime_profile",
    "runtime_bundledir",
)


class Config(record("ConfigFields", _FIELDS)):
    """The validated configuration, one field per variable (see load()). Times are in
    milliseconds, as the S6_* variables are. A record (records.py), because importing
    typing (for NamedTuple) or collections costs PID 1 milliseconds at every boot."""

    __slots__ = ()

    def etc(self, name: str) -> str:
        """Path of one configuration tree, e.g. etc('services.d'); under
        `etc/cont-profile.d/NAME/` when S6_RUNTIME_PROFILE names a profile."""
        if self.runtime_profile:
            return os.path.join(self.root, "etc", "cont-profile.d", self.runtime_profile, name)
        return os.path.join(self.root, "etc", name)

    @property
    def s6_overlay_dir(self) -> str:
        """Where s6-rc.d/ and user-bundles.d/ are: etc/s6-overlay, or the profile's."""
        return self.etc("s6-overlay")

    @property
    def bundle_dir(self) -> str:
        """S6_RUNTIME_BUNDLEDIR (inside OVERLAY_ROOT), else <s6-overlay dir>/user-bundles.d."""
        if self.runtime_bundledir:
            return os.path.join(self.root, self.runtime_bundledir.lstrip("/"))
        return os.path.join(self.s6_overlay_dir, "user-bundles.d")

    @property
    def env_dir(self) -> str:
        return os.path.join(self.run_dir, "container_environment")

    @property
    def exitcode_path(self) -> str:
        return os.path.join(self.run_dir, "exitcode")


def _get(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value; unset and empty (`docker run -e X=`) both mean the default."""
    value = env.get(name)
    return value if value else None


def _choice(env: Mapping[str, str], name: str, default: int, allowed: range) -> int:
    value = _get(env, name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) not in allowed:
        accepts = " or ".join(str(n) for n in allowed)
        raise ConfigError(name, value, accepts)
    return int(value)


def _flag(env: Mapping[str, str], name: str) -> bool:
    return bool(_choice(env, name, 0, range(2)))


def _millis(env: Mapping[str, str], name: str, default: int, cap: int | None = None) -> int:
    value = _get(env, name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(name, value, "a whole number of milliseconds, e.g. 3000")
    number = int(value)
    if cap is not None and number > cap:
        raise ConfigError(name, value, f"at most {cap} milliseconds")
    return number


def _nonzero_int(env: Mapping[str, str], name: str) -> bool:
    """S6_KEEP_ENV: 0 or any other integer."""
    value = _get(env, name)
    if value is None:
        return False
    try:
        return int(value) != 0
    except ValueError:
        raise ConfigError(name, value, "0 or a non-zero integer") from None


def _group(env: Mapping[str, str], name: str) -> int | None:
    value = _get(env, name)
    if value is None:
        return None
    if value.isascii() and value.isdigit():
        return int(value)
    try:
        import grp  # only for a group given by name

        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise ConfigError(name, value, "an existing group name or a numeric gid") from None


def _path(env: Mapping[str, str], name: str, default: str) -> str:
    value = _get(env, name) or default
    if not os.path.isabs(value):
        raise ConfigError(name, value, "an absolute path")
    return value


def _profile(env: Mapping[str, str], name: str) -> str | None:
    value = _get(env, name)
    if value is not None and ("/" in value or value in (".", "..")):
        raise ConfigError(name, value, "a profile name (a directory of /etc/cont-profile.d)")
    return value


def load(env: Mapping[str, str]) -> Config:
    """Read and validate every variable; raise ConfigError on the first bad one."""
    from .logsettings import load as load_log_settings

    run_dir = _path(env, "OVERLAY_RUN_DIR", "/run/overlay")
    logging = _choice(env, "S6_LOGGING", 0, range(3))
    return Config(
        root=_path(env, "OVERLAY_ROOT", "/"),
        run_dir=run_dir,
        socket_path=_path(env, "OVERLAY_SOCKET", os.path.join(run_dir, "control.sock")),
        socket_gid=_group(env, "OVERLAY_SOCKET_GROUP"),
        keep_env=_nonzero_int(env, "S6_KEEP_ENV"),
        logging=logging,
        behaviour_if_stage2_fails=_choice(env, "S6_BEHAVIOUR_IF_STAGE2_FAILS", 0, range(3)),
        cmd_wait_for_services=_flag(env, "S6_CMD_WAIT_FOR_SERVICES"),
        cmd_wait_for_services_maxtime=_millis(env, "S6_CMD_WAIT_FOR_SERVICES_MAXTIME", 0),
        services_gracetime=_millis(env, "S6_SERVICES_GRACETIME", 3000),
        kill_finish_maxtime=_millis(env, "S6_KILL_FINISH_MAXTIME", 5000),
        kill_gracetime=_millis(env, "S6_KILL_GRACETIME", 3000, cap=300000),
        services_readytime=_millis(env, "S6_SERVICES_READYTIME", 50),
        cmd_arg0=tuple((_get(env, "S6_CMD_ARG0") or "").split()),
        cmd_receive_signals=_flag(env, "S6_CMD_RECEIVE_SIGNALS"),
        fix_attrs_hidden=_flag(env, "S6_FIX_ATTRS_HIDDEN"),
        read_only_root=_flag(env, "S6_READ_ONLY_ROOT"),
        sync_disks=_flag(env, "S6_SYNC_DISKS"),
        verbosity=_choice(env, "S6_VERBOSITY", 2, range(6)),
        # None: on exactly when PID 1 (s6paths.enabled)
        s6_paths=None if _get(env, "OVERLAY_S6_PATHS") is None
        else _choice(env, "OVERLAY_S6_PATHS", 0, range(2)),
        log=load_log_settings(env, logging),  # S6_LOGGING*, OVERLAY_LOG_* (logsettings.py)
        stage2_hook=tuple((_get(env, "S6_STAGE2_HOOK") or "").split()),
        runtime_profile=_profile(env, "S6_RUNTIME_PROFILE"),
        runtime_bundledir=_path(env, "S6_RUNTIME_BUNDLEDIR", "/") if _get(
            env, "S6_RUNTIME_BUNDLEDIR") else None,
    )
