"""Configuration: every variable validated at boot; a bad value stops overlayd before it starts."""

from __future__ import annotations

import pytest

from overlayd.config import ConfigError, load
from tests.conftest import needs_root
from tests.harness import Tree

BAD_VALUES = [
    ("S6_KILL_GRACETIME", "soon", "whole number of milliseconds"),
    ("S6_KILL_GRACETIME", "400000", "at most 300000"),
    ("S6_SERVICES_GRACETIME", "-1", "whole number of milliseconds"),
    ("S6_KILL_FINISH_MAXTIME", "1.5", "whole number of milliseconds"),
    ("S6_CMD_WAIT_FOR_SERVICES_MAXTIME", "5s", "whole number of milliseconds"),
    ("S6_SERVICES_READYTIME", "fast", "whole number of milliseconds"),
    ("S6_BEHAVIOUR_IF_STAGE2_FAILS", "3", "0 or 1 or 2"),
    ("S6_LOGGING", "yes", "0 or 1 or 2"),
    ("S6_VERBOSITY", "9", "0 or 1 or 2 or 3 or 4 or 5"),
    ("S6_CMD_WAIT_FOR_SERVICES", "true", "0 or 1"),
    ("S6_CMD_RECEIVE_SIGNALS", "2", "0 or 1"),
    ("S6_FIX_ATTRS_HIDDEN", "on", "0 or 1"),
    ("S6_READ_ONLY_ROOT", "x", "0 or 1"),
    ("S6_SYNC_DISKS", "maybe", "0 or 1"),
    ("S6_KEEP_ENV", "please", "0 or a non-zero integer"),
    ("OVERLAY_ROOT", "relative/path", "an absolute path"),
    ("OVERLAY_RUN_DIR", "run", "an absolute path"),
    ("OVERLAY_SOCKET", "ctl.sock", "an absolute path"),
    ("OVERLAY_SOCKET_GROUP", "no-such-group-xyz", "an existing group name"),
    ("OVERLAY_LOG_PREFIX", "yes", "0 or 1"),
    ("OVERLAY_LOG_TIMESTAMPS", "2", "0 or 1"),
    ("OVERLAY_UNCAUGHT_LOGS", "logs", "an absolute path"),
    ("S6_CMD_USE_TERMINAL", "y", "0 or 1"),
    ("S6_LOGGING_SCRIPT", "n20\nT", "s6-log directives on one line"),
]


@pytest.mark.parametrize(("name", "value", "accepts"), BAD_VALUES)
def test_bad_value_names_variable_and_what_it_accepts(name: str, value: str, accepts: str) -> None:
    env = {"OVERLAY_ROOT": "/tmp/x", "OVERLAY_RUN_DIR": "/tmp/y", name: value}
    with pytest.raises(ConfigError) as caught:
        load(env)
    assert caught.value.name == name
    assert name in str(caught.value) and accepts in str(caught.value)


def test_defaults_match_s6_overlay() -> None:
    config = load({})
    assert config.root == "/"
    assert config.run_dir == "/run/overlay"
    assert config.socket_path == "/run/overlay/control.sock"
    assert (config.services_gracetime, config.kill_finish_maxtime, config.kill_gracetime) == (
        3000,
        5000,
        3000,
    )
    assert config.behaviour_if_stage2_fails == 0
    assert config.verbosity == 2
    assert config.cmd_arg0 == ()


def test_logging_defaults_match_s6_overlay() -> None:
    settings = load({}).log
    assert (settings.mode, settings.script) == (0, ("n20", "s1000000", "T"))
    assert settings.uncaught_dir == "/run/uncaught-logs"
    assert (settings.prefix, settings.timestamps, settings.catchall_user) == (False, False, None)
    assert load({"S6_LOGGING_SCRIPT": "n3 s4096"}).log.script == ("n3", "s4096")


def test_empty_value_means_default() -> None:
    """`docker run -e S6_KILL_GRACETIME=` must not be an error."""
    assert load({"S6_KILL_GRACETIME": ""}).kill_gracetime == 3000


def test_values_are_read() -> None:
    config = load(
        {
            "S6_KILL_GRACETIME": "0",
            "S6_CMD_ARG0": "/bin/sh -c",
            "S6_KEEP_ENV": "5",
            "OVERLAY_SOCKET_GROUP": "0",
            "OVERLAY_RUN_DIR": "/tmp/r",
        }
    )
    assert config.kill_gracetime == 0
    assert config.cmd_arg0 == ("/bin/sh", "-c")
    assert config.keep_env is True
    assert config.socket_gid == 0
    assert config.socket_path == "/tmp/r/control.sock"


@needs_root
def test_bad_value_at_boot_is_one_line_exit_100_and_nothing_started(boot, tree: Tree) -> None:
    marker = tree.base / "cont-init-ran"
    tree.script("cont-init.d", "10-mark", f"touch {marker}")
    tree.service("svc", f"touch {tree.base}/service-ran; exec sleep 100")
    booted = boot("touch", str(tree.base / "cmd-ran"), env={"S6_KILL_GRACETIME": "soon"})
    assert booted.wait() == 100
    assert booted.lines == [
        "[overlayd] fatal: S6_KILL_GRACETIME='soon' is not valid: "
        "it accepts a whole number of milliseconds, e.g. 3000"
    ]
    assert not marker.exists()
    assert not (tree.base / "service-ran").exists()
    assert not (tree.base / "cmd-ran").exists()
