"""One-shot scripts: cont-init.d and cont-finish.d, run one at a time in byte order."""

from __future__ import annotations

import _signal
import os

from . import log, spawn
from .loop import TIMED_OUT, Future, Loop, first_of
from .reaper import ExitStatus, Reaper


def list_scripts(directory: str) -> list[str]:
    """Entries of `directory` in byte order, dotfiles skipped.

    Anything that is not a regular file (a directory, a dangling link) is still listed, so that
    running it fails loudly and counts as a stage-2 failure instead of vanishing silently.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error(f"cannot read {directory}: {exc.strerror}")
        return []
    names = [n for n in names if not n.startswith(".")]
    names.sort(key=os.fsencode)
    return [os.path.join(directory, n) for n in names]


async def run_script(
    loop: Loop,
    reaper: Reaper,
    env: dict[str, str],
    path: str,
    *,
    timeout: float | None = None,
    abandon: Future | None = None,
) -> ExitStatus | None:
    """Run one script in its own process group and wait for it.

    Killed (whole group) after `timeout` seconds. Returns None when it could not be started or
    when `abandon` resolved first (the script is then left to the final kill).
    """
    name = os.path.basename(os.path.dirname(path)) + "/" + os.path.basename(path)
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "not a regular file"
        log.error(f"{name} is {what}; it cannot be run")
        return ExitStatus(126, None)
    argv, warning = spawn.script_argv(path)
    if warning:
        log.warn(warning)
    try:
        pid = spawn.spawn(argv, env, new_group=True, stdin=spawn.devnull())
    except OSError as exc:
        log.error(f"{name}: cannot start: {exc.strerror}")
        return None
    exited = reaper.exit_future(pid)
    waiting = exited if abandon is None else first_of(exited, abandon)
    result = await loop.with_timeout(waiting, timeout)
    if result is TIMED_OUT:
        log.warn(f"{name}: still running after {timeout:g} s; killing it")
        try:
            os.killpg(pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        result = await (exited if abandon is None else first_of(exited, abandon))
    return result if isinstance(result, ExitStatus) else None
