"""Reading s6 service directories (`services.d/NAME/`) into service definitions.

A broken directory never stops the scan: its definition carries a `problem` (one line, naming
the directory and what is wrong), and the service shows as `failed` instead of being started.
"""

from __future__ import annotations

import _signal
import os

from protocol.records import record

from .check_specs import NO_CHECKS, read_checks
from .smallfile import read_text

DEFAULT_TIMEOUT_FINISH_MS = 5000


ServiceDef = record(
    "ServiceDef",
    (
        "name",
        "directory",
        "run",
        "finish",
        "normally_up",
        "notification_fd",
        "down_signal",
        "timeout_kill_ms",
        "timeout_finish_ms",
        "logger",
        "problem",
        "checks",
    ),
    defaults=(None,),
)
ServiceDef.__doc__ = """What one service directory says. `finish`, `notification_fd`,
`logger` (the log/ ServiceDef), `problem` (what is broken, one line) and `checks` (readiness,
health and give-up, service_checks.ChecksSpec) may be None."""




def _read_ms(directory: str, filename: str, default: int) -> int:
    value = read_text(os.path.join(directory, filename))
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{filename} holds {value!r}, not a whole number of milliseconds")
    return int(value)


def shown_name(name: str) -> str:
    """A directory name as services are called: bytes that are not UTF-8 shown as `\\xff`.

    Names come from the file system as str with surrogate escapes, which no UTF-8 encoder
    (msgpack, a terminal) accepts: one such name would break `status` for every service.
    The escaped form is valid text, and what `overlayctl` accepts as the name.
    """
    if name.isascii():
        return name
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_service(name: str, directory: str, *, is_logger: bool = False) -> ServiceDef:
    """Read one service directory; problems go into `.problem`, never raised."""
    problem = None
    finish_path = os.path.join(directory, "finish")
    finish = finish_path if os.path.isfile(finish_path) else None
    notification_fd = None
    down_signal = int(_signal.SIGTERM)
    timeout_kill = 0
    timeout_finish = DEFAULT_TIMEOUT_FINISH_MS
    checks = None
    run = os.path.join(directory, "run")
    try:
        if not os.path.isfile(run):
            what = "is not a regular file" if os.path.lexists(run) else "is missing"
            raise ValueError(f"run {what}")
        fd_text = read_text(os.path.join(directory, "notification-fd"))
        if fd_text is not None:
            if not (fd_text.isascii() and fd_text.isdigit()) or not 3 <= int(fd_text) < 1024:
                raise ValueError(f"notification-fd holds {fd_text!r}, not a number from 3 to 1023")
            notification_fd = int(fd_text)
        signal_text = read_text(os.path.join(directory, "down-signal"))
        if signal_text:
            # Imported here: `protocol` as a package pulls in msgpack, which stage 1 defers.
            from protocol.signals import signal_number

            down_signal = signal_number(signal_text)
        timeout_kill = _read_ms(directory, "timeout-kill", 0)
        timeout_finish = _read_ms(directory, "timeout-finish", DEFAULT_TIMEOUT_FINISH_MS)
        checks = read_checks(directory, notification_fd)
    except (ValueError, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = f"service {name} ({shown_name(directory)}): {detail}"
    logger = None
    log_dir = os.path.join(directory, "log")
    if not is_logger and os.path.isdir(log_dir):
        logger = read_service(name + "/log", log_dir, is_logger=True)
    return ServiceDef(
        name=name,
        directory=directory,
        run=run,
        finish=finish,
        normally_up=not os.path.lexists(os.path.join(directory, "down")),
        notification_fd=notification_fd,
        down_signal=down_signal,
        timeout_kill_ms=timeout_kill,
        timeout_finish_ms=timeout_finish,
        logger=logger,
        problem=problem,
        checks=checks if checks is not NO_CHECKS else None,
    )


def scan(services_dir: str) -> tuple[list[ServiceDef], list[str]]:
    """Every subdirectory of `services_dir` (dotted names skipped), sorted by name.

    Returns the definitions and the lines to log about entries that are not services.
    """
    notes: list[str] = []
    try:
        entries = sorted(os.scandir(services_dir), key=lambda entry: entry.name)
    except FileNotFoundError:
        return [], notes
    except OSError as exc:
        return [], [f"cannot read {services_dir}: {exc.strerror}"]
    definitions = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            notes.append(f"{entry.path} is not a directory; skipped")
            continue
        definitions.append(read_service(shown_name(entry.name), entry.path))
    return definitions, notes
