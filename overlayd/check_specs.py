"""What a service directory says about readiness, health and giving up (DESIGN §13).

Only reading, so that PID 1's boot imports this and nothing else of the checks: the classes
that run checks (liveness.py, readiness_check.py, give_up.py, service_checks.py) are imported
the first time a service that has checks is set up. Every reader raises ValueError naming the
file when a value is bad; the scan turns that into the service's `problem`.
"""

from __future__ import annotations

import os

from protocol.records import record

from .smallfile import read_small, read_text

# --- health/ (liveness.py) ------------------------------------------------------------------
DEFAULT_INTERVAL_MS = 10000
DEFAULT_TIMEOUT_MS = 5000
DEFAULT_RETRIES = 3
MIN_INTERVAL_MS = 10  # a 0 interval would fork checks back to back forever
ACTIONS = ("restart", "mark", "shutdown")

HealthSpec = record("HealthSpec", ("check", "interval_ms", "timeout_ms", "retries", "action"))
HealthSpec.__doc__ = "What a service's health/ directory says (times in ms)."


def read_number(path: str, default: int, minimum: int = 0) -> int:
    """A whole number from a one-line file; `default` when absent or empty; ValueError if bad."""
    text = read_text(path)
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < minimum:
        name = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
        raise ValueError(f"{name} holds {text!r}, not a whole number ≥ {minimum}")
    return int(text)


def read_health(directory: str) -> HealthSpec | None:
    """The service's health/ directory, or None without one. Raises ValueError naming the file."""
    health = os.path.join(directory, "health")
    if not os.path.isdir(health):
        return None
    check = os.path.join(health, "check")
    if not os.path.isfile(check):
        raise ValueError("health/check is missing")
    action = read_text(os.path.join(health, "action")) or "restart"
    if action not in ACTIONS:
        raise ValueError(f"health/action holds {action!r}, not one of {', '.join(ACTIONS)}")
    return HealthSpec(
        check=check,
        interval_ms=read_number(
            os.path.join(health, "interval"), DEFAULT_INTERVAL_MS, MIN_INTERVAL_MS
        ),
        timeout_ms=read_number(os.path.join(health, "timeout"), DEFAULT_TIMEOUT_MS, 1),
        retries=read_number(os.path.join(health, "retries"), DEFAULT_RETRIES, 1),
        action=action,
    )


# --- data/check polling (readiness_check.py) ------------------------------------------------
OPTIONS_FILE = "notifyoncheck-options"
TOOL = b"s6-notifyoncheck"

PollOptions = record(
    "PollOptions",
    ("initial_sleep_ms", "global_timeout_ms", "local_timeout_ms", "wait_ms", "tries", "checkprog"),
)
PollOptions.__doc__ = "s6-notifyoncheck's -s -T -t -w -n -c, in ms and counts."
DEFAULTS = PollOptions(10, 0, 0, 1000, 7, None)
_NUMERIC = {"-s": 0, "-T": 1, "-t": 2, "-w": 3, "-n": 4}


def parse_options(words: list[str]) -> PollOptions:
    """s6-notifyoncheck's options (`-d` and `-3 fd` accepted and ignored); ValueError if bad."""
    values = list(DEFAULTS)
    i = 0
    while i < len(words):
        word = words[i]
        flag, attached = word[:2], word[2:]
        if flag == "-d" and not attached:
            i += 1
            continue
        if flag not in (*_NUMERIC, "-c", "-3") or not word.startswith("-"):
            raise ValueError(f"{OPTIONS_FILE}: unknown option {word!r}")
        if attached:
            value = attached
        elif i + 1 < len(words):
            i += 1
            value = words[i]
        else:
            raise ValueError(f"{OPTIONS_FILE}: {flag} needs a value")
        i += 1
        if flag == "-c":
            values[5] = value
        elif flag in _NUMERIC:
            if not (value.isascii() and value.isdigit()):
                raise ValueError(f"{OPTIONS_FILE}: {flag} {value!r} is not a whole number")
            values[_NUMERIC[flag]] = int(value)
    return PollOptions(*values)


def _run_calls_the_tool(run: str) -> bool:
    """Does the run script call s6-notifyoncheck itself? (its first 64 KB, comments skipped)"""
    try:
        text = read_small(run, 65536) or b""
    except OSError:
        return False
    return any(TOOL in line.split(b"#", 1)[0] for line in text.splitlines())


def read_poll_options(directory: str, has_notification_fd: bool) -> PollOptions | None:
    """How overlayd polls this service for readiness, or None when it does not.

    None without a notification-fd, without `data/check` (unless `-c` names a check), or when
    `run` calls s6-notifyoncheck itself. Raises ValueError for a bad options file.
    """
    if not has_notification_fd:
        return None
    options = DEFAULTS
    words = read_text(os.path.join(directory, OPTIONS_FILE))
    if words is not None:
        options = parse_options(words.split())
    has_check = os.path.isfile(os.path.join(directory, "data", "check"))
    if not has_check and options.checkprog is None:
        return None
    if _run_calls_the_tool(os.path.join(directory, "run")):
        return None
    return options


# --- giving up (give_up.py) -----------------------------------------------------------------
DEFAULT_MAX_DEATH_TALLY = 100
MAX_DEATH_TALLY = 4096
DEFAULT_START_SECS = 1.0

GiveUpPolicy = record(
    "GiveUpPolicy", ("max_death_tally", "start_retries", "start_secs", "timeout_up_ms")
)
GiveUpPolicy.__doc__ = "start_retries None: never give up; timeout_up_ms 0: no bound."
DEFAULT_POLICY = GiveUpPolicy(DEFAULT_MAX_DEATH_TALLY, None, DEFAULT_START_SECS, 0)


def read_give_up(directory: str) -> GiveUpPolicy:
    """The policy a service directory states; ValueError naming the file when one is bad."""
    tally = min(
        read_number(os.path.join(directory, "max-death-tally"), DEFAULT_MAX_DEATH_TALLY),
        MAX_DEATH_TALLY,
    )
    retries = None
    if read_text(os.path.join(directory, "start-retries")):
        retries = read_number(os.path.join(directory, "start-retries"), 0)
    start_secs = DEFAULT_START_SECS
    text = read_text(os.path.join(directory, "start-secs"))
    if text:
        try:
            start_secs = float(text)
        except ValueError:
            start_secs = -1.0
        if not 0 <= start_secs < 1e9:
            raise ValueError(f"start-secs holds {text!r}, not a number of seconds")
    timeout_up = read_number(os.path.join(directory, "timeout-up"), 0)
    return GiveUpPolicy(tally, retries, start_secs, timeout_up)


# --- all of it ------------------------------------------------------------------------------
ChecksSpec = record("ChecksSpec", ("health", "poll", "give_up"))
ChecksSpec.__doc__ = "health/ (HealthSpec|None), data/check polling (PollOptions|None), policy."
NO_CHECKS = ChecksSpec(None, None, DEFAULT_POLICY)


def read_checks(directory: str, notification_fd: int | None) -> ChecksSpec:
    """Everything §13 reads from a service directory; ValueError naming the bad file."""
    health: HealthSpec | None = read_health(directory)
    poll: PollOptions | None = read_poll_options(directory, notification_fd is not None)
    give_up: GiveUpPolicy = read_give_up(directory)
    if health is None and poll is None and give_up == DEFAULT_POLICY:
        return NO_CHECKS
    return ChecksSpec(health, poll, give_up)
